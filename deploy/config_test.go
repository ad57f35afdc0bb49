package deploy_test

import (
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"

	wmschema "github.com/whalemountain/wm/schema"
)

// clusterScoped are the kinds of deploy/kubernetes that have no namespace.
var clusterScoped = []string{"Namespace", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

func TestTheManifestsAreWellFormed(t *testing.T) {
	ms := manifests(t)
	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{"the kustomization lists every manifest file, once", func(t *testing.T) {
			listed := kustomization(t)
			sorted := slices.Sorted(slices.Values(listed))
			if !slices.Equal(sorted, slices.Compact(slices.Clone(sorted))) {
				t.Errorf("kustomization.yaml lists a file twice: %v", listed)
			}
			if files := yamlFiles(t); !slices.Equal(sorted, files) {
				t.Errorf("kustomization.yaml lists %v; deploy/kubernetes has %v", sorted, files)
			}
		}},
		{"every object is one of the API's own types, with no field it does not know", func(t *testing.T) {
			for _, m := range ms {
				gvk := schema.FromAPIVersionAndKind(m.obj.GetAPIVersion(), m.obj.GetKind())
				out, err := scheme.Scheme.New(gvk)
				if err != nil {
					t.Errorf("%s: %s: %v", m.file, gvk, err)
					continue
				}
				typed(t, m.obj, out)
			}
		}},
		{"every object is labelled as wm's", func(t *testing.T) {
			for _, m := range ms {
				if got := m.obj.GetLabels()["app.kubernetes.io/name"]; got != "wm" {
					t.Errorf("%s: %s %s has app.kubernetes.io/name %q, want wm", m.file, m.obj.GetKind(), m.obj.GetName(), got)
				}
			}
		}},
		{"every namespaced object is in wm's namespace, and the others in none", func(t *testing.T) {
			for _, m := range ms {
				want := manifestNamespace
				if slices.Contains(clusterScoped, m.obj.GetKind()) {
					want = ""
				}
				if got := m.obj.GetNamespace(); got != want {
					t.Errorf("%s: %s %s is in namespace %q, want %q", m.file, m.obj.GetKind(), m.obj.GetName(), got, want)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.check)
	}
}

// pod is what the tests below need of the manifests.
type pod struct {
	cfg        *wmschema.ServerConfig
	kubeconfig []byte
	deploy     appsv1.Deployment
	container  corev1.Container
	// provided maps each file of the projected config volume (its path in
	// the container) to "<kind> <name> <key>" of where it comes from.
	provided map[string]string
}

// readPod parses the Deployment, the server config and the kubeconfig of
// the ConfigMap, and lists the files the pod's config volume holds.
func readPod(t *testing.T, ms []manifest) pod {
	t.Helper()
	var p pod
	typed(t, find(t, ms, "Deployment", "wm"), &p.deploy)
	if n := len(p.deploy.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("the deployment has %d containers, want 1", n)
	}
	p.container = p.deploy.Spec.Template.Spec.Containers[0]
	var cm corev1.ConfigMap
	typed(t, find(t, ms, "ConfigMap", "wm-config"), &cm)
	cfg, err := wmschema.ParseServer("configmap.yaml wm-server.yaml", strings.NewReader(cm.Data["wm-server.yaml"]), "/")
	if err != nil {
		t.Fatalf("the server config of configmap.yaml: %v", err)
	}
	p.cfg, p.kubeconfig = cfg, []byte(cm.Data["kubeconfig"])

	p.provided = map[string]string{}
	for _, vm := range p.container.VolumeMounts {
		i := slices.IndexFunc(p.deploy.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 {
			t.Fatalf("volume mount %s names no volume", vm.Name)
		}
		proj := p.deploy.Spec.Template.Spec.Volumes[i].Projected
		if proj == nil {
			continue
		}
		for _, src := range proj.Sources {
			switch {
			case src.ConfigMap != nil:
				for _, it := range src.ConfigMap.Items {
					p.provided[filepath.Join(vm.MountPath, it.Path)] = "ConfigMap " + src.ConfigMap.Name + " " + it.Key
				}
			case src.Secret != nil:
				for _, it := range src.Secret.Items {
					p.provided[filepath.Join(vm.MountPath, it.Path)] = "Secret " + src.Secret.Name + " " + it.Key
				}
			case src.ServiceAccountToken != nil:
				p.provided[filepath.Join(vm.MountPath, src.ServiceAccountToken.Path)] = "ServiceAccountToken"
			}
		}
	}
	return p
}

// hasKey reports whether the manifests' ConfigMap or Secret name holds
// key; kube-root-ca.crt is the one every namespace gets from the cluster.
func hasKey(t *testing.T, ms []manifest, kind, name, key string) bool {
	t.Helper()
	if kind == "ConfigMap" && name == "kube-root-ca.crt" {
		return key == "ca.crt"
	}
	o := find(t, ms, kind, name)
	for _, field := range []string{"data", "stringData"} {
		if m, ok := o.Object[field].(map[string]any); ok {
			if _, ok := m[key]; ok {
				return true
			}
		}
	}
	return false
}

// mountFor is the volume mount path lies under, the deepest one.
func mountFor(c corev1.Container, path string) (corev1.VolumeMount, bool) {
	var best corev1.VolumeMount
	found := false
	for _, vm := range c.VolumeMounts {
		if (path == vm.MountPath || strings.HasPrefix(path, vm.MountPath+"/")) && len(vm.MountPath) > len(best.MountPath) {
			best, found = vm, true
		}
	}
	return best, found
}

func TestTheServerConfigNamesWhatThePodHas(t *testing.T) {
	ms := manifests(t)
	p := readPod(t, ms)
	cfg := p.cfg
	kc, err := clientcmd.Load(p.kubeconfig)
	if err != nil {
		t.Fatalf("the kubeconfig of configmap.yaml: %v", err)
	}
	kctx := kc.Contexts[kc.CurrentContext]
	if kctx == nil || kc.Clusters[kctx.Cluster] == nil || kc.AuthInfos[kctx.AuthInfo] == nil {
		t.Fatalf("the kubeconfig of configmap.yaml has no current context with a cluster and a user: %+v", kc)
	}
	host := cfg.Docker.Hosts[0]
	if host.TLS == nil || cfg.Sources.GitLab == nil || cfg.Kubernetes == nil {
		t.Fatalf("the server config has no Docker TLS, GitLab or Kubernetes section: %+v", cfg)
	}

	t.Run("every file the config names is in the pod, from a key that exists", func(t *testing.T) {
		files := []struct{ field, path string }{
			{"--config", p.container.Args[len(p.container.Args)-1]},
			{"sources.gitlab.tokenFile", cfg.Sources.GitLab.TokenFile},
			{"webhook.secretFile", cfg.Webhook.SecretFile},
			{"registry.passwordFile", cfg.Registry.PasswordFile},
			{"kubernetes.kubeconfig", cfg.Kubernetes.Kubeconfig},
			{"docker.hosts[0].tls.caFile", host.TLS.CAFile},
			{"docker.hosts[0].tls.certFile", host.TLS.CertFile},
			{"docker.hosts[0].tls.keyFile", host.TLS.KeyFile},
			{"the kubeconfig's tokenFile", kc.AuthInfos[kctx.AuthInfo].TokenFile},
			{"the kubeconfig's certificate-authority", kc.Clusters[kctx.Cluster].CertificateAuthority},
		}
		for _, f := range files {
			from, ok := p.provided[f.path]
			if !ok {
				t.Errorf("%s is %q, which the pod's config volume does not hold (it holds %v)", f.field, f.path, p.provided)
				continue
			}
			if kind, rest, _ := strings.Cut(from, " "); kind != "ServiceAccountToken" {
				name, key, _ := strings.Cut(rest, " ")
				if !hasKey(t, ms, kind, name, key) {
					t.Errorf("%s %s comes from %s, which has no such key", f.field, f.path, from)
				}
			}
		}
	})

	t.Run("every folder wm writes to is a writable volume, the root being read-only", func(t *testing.T) {
		if sc := p.container.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("the root file system is writable: %+v", sc)
		}
		folders := []struct{ field, path string }{
			{"stateDir", cfg.StateDir},
			{"artifactsDir", cfg.ArtifactsDir},
			{"adminListen's folder", filepath.Dir(cfg.AdminSocket())},
			{"sif.tempDir", cfg.SIF.TempDir},
		}
		for _, f := range folders {
			vm, ok := mountFor(p.container, f.path)
			if !ok || vm.ReadOnly {
				t.Errorf("%s %s is on no writable volume (%+v)", f.field, f.path, vm)
			}
		}
		vm, _ := mountFor(p.container, cfg.StateDir)
		i := slices.IndexFunc(p.deploy.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
		if i < 0 || p.deploy.Spec.Template.Spec.Volumes[i].PersistentVolumeClaim == nil {
			t.Fatalf("stateDir %s is not on a persistent volume", cfg.StateDir)
		}
		find(t, ms, "PersistentVolumeClaim", p.deploy.Spec.Template.Spec.Volumes[i].PersistentVolumeClaim.ClaimName)
	})

	t.Run("the public listener is the container's http port, which the probes, the Service and the NetworkPolicy use", func(t *testing.T) {
		_, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(portStr)
		i := slices.IndexFunc(p.container.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == "http" })
		if i < 0 || int(p.container.Ports[i].ContainerPort) != port {
			t.Fatalf("listen is %s; the container's ports are %+v", cfg.Listen, p.container.Ports)
		}
		for name, probe := range map[string]*corev1.Probe{"startup": p.container.StartupProbe, "liveness": p.container.LivenessProbe, "readiness": p.container.ReadinessProbe} {
			if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.String() != "http" {
				t.Errorf("the %s probe does not ask the public listener: %+v", name, probe)
			}
		}
		if p.container.LivenessProbe.HTTPGet.Path != "/livez" || p.container.ReadinessProbe.HTTPGet.Path != "/readyz" {
			t.Errorf("the probes ask %s and %s, want /livez and /readyz", p.container.LivenessProbe.HTTPGet.Path, p.container.ReadinessProbe.HTTPGet.Path)
		}
		var svc corev1.Service
		typed(t, find(t, ms, "Service", "wm"), &svc)
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort.String() != "http" {
			t.Errorf("the Service forwards to %+v, want the http port only", svc.Spec.Ports)
		}
		for k, v := range svc.Spec.Selector {
			if p.deploy.Spec.Template.Labels[k] != v {
				t.Errorf("the Service selects %s=%s, which the pod does not carry", k, v)
			}
		}
		var np netv1.NetworkPolicy
		typed(t, find(t, ms, "NetworkPolicy", "wm"), &np)
		var open []string
		for _, r := range np.Spec.Ingress {
			for _, pp := range r.Ports {
				open = append(open, pp.Port.String())
			}
		}
		if !slices.Equal(open, []string{portStr}) {
			t.Errorf("the NetworkPolicy lets in ports %v, want %s only", open, portStr)
		}
		for k, v := range np.Spec.PodSelector.MatchLabels {
			if p.deploy.Spec.Template.Labels[k] != v {
				t.Errorf("the NetworkPolicy selects %s=%s, which the pod does not carry", k, v)
			}
		}
	})

	t.Run("the pod runs wm serve with the mounted config, as the ServiceAccount the RBAC and the admission policy name", func(t *testing.T) {
		want := []string{"serve", "--config", "/etc/wm/wm-server.yaml"}
		if !slices.Equal(p.container.Args, want) {
			t.Errorf("args %v, want %v", p.container.Args, want)
		}
		sa := p.deploy.Spec.Template.Spec.ServiceAccountName
		find(t, ms, "ServiceAccount", sa)
		subject := rbacv1.Subject{Kind: "ServiceAccount", Name: sa, Namespace: manifestNamespace}
		var crb rbacv1.ClusterRoleBinding
		typed(t, find(t, ms, "ClusterRoleBinding", "whalemountain"), &crb)
		var rb rbacv1.RoleBinding
		typed(t, find(t, ms, "RoleBinding", "wm-leader-election"), &rb)
		for _, subjects := range [][]rbacv1.Subject{crb.Subjects, rb.Subjects} {
			if !slices.Equal(subjects, []rbacv1.Subject{subject}) {
				t.Errorf("a binding's subjects are %+v, want %+v", subjects, subject)
			}
		}
		var vap admissionv1.ValidatingAdmissionPolicy
		typed(t, find(t, ms, "ValidatingAdmissionPolicy", "whalemountain-managed-namespaces-only"), &vap)
		user := fmt.Sprintf("'system:serviceaccount:%s:%s'", manifestNamespace, sa)
		if len(vap.Spec.MatchConditions) != 1 || !strings.Contains(vap.Spec.MatchConditions[0].Expression, user) {
			t.Errorf("the admission policy matches %+v, want the user %s", vap.Spec.MatchConditions, user)
		}
	})

	t.Run("no student account can be given wm's own namespace", func(t *testing.T) {
		if !slices.Contains(cfg.Kubernetes.ReservedNamespaces, manifestNamespace) {
			t.Errorf("kubernetes.reservedNamespaces is %v, without %s", cfg.Kubernetes.ReservedNamespaces, manifestNamespace)
		}
	})
}
