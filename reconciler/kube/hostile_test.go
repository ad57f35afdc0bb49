package kube_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/schema"
)

// Students are hostile to each other and to the hosts: these tests hold
// what the backend must never do whatever an account is called.

// snapshot is the resourceVersion of every object of the kinds the backend
// writes (and of the namespace itself) in ns: equal snapshots mean nothing
// there was written.
func snapshot(t *testing.T, admin kubernetes.Interface, ns string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	n, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("snapshot %s: %v", ns, err)
	}
	out["Namespace"] = n.ResourceVersion
	add := func(kind string, items []metav1.Object, err error) {
		if err != nil {
			t.Fatalf("snapshot %s: list %s: %v", ns, kind, err)
		}
		for _, o := range items {
			out[kind+"/"+o.GetName()] = o.GetResourceVersion()
		}
	}
	l := metav1.ListOptions{}
	roles, err := admin.RbacV1().Roles(ns).List(ctx, l)
	add("Role", metas(roles.Items), err)
	bindings, err := admin.RbacV1().RoleBindings(ns).List(ctx, l)
	add("RoleBinding", metas(bindings.Items), err)
	quotas, err := admin.CoreV1().ResourceQuotas(ns).List(ctx, l)
	add("ResourceQuota", metas(quotas.Items), err)
	limits, err := admin.CoreV1().LimitRanges(ns).List(ctx, l)
	add("LimitRange", metas(limits.Items), err)
	policies, err := admin.NetworkingV1().NetworkPolicies(ns).List(ctx, l)
	add("NetworkPolicy", metas(policies.Items), err)
	secrets, err := admin.CoreV1().Secrets(ns).List(ctx, l)
	add("Secret", metas(secrets.Items), err)
	pods, err := admin.CoreV1().Pods(ns).List(ctx, l)
	add("Pod", metas(pods.Items), err)
	return out
}

func metas[T any, P interface {
	*T
	metav1.Object
}](items []T) []metav1.Object {
	out := make([]metav1.Object, len(items))
	for i := range items {
		out[i] = P(&items[i])
	}
	return out
}

// foreignNamespace is a namespace someone else made (the admins, the GPU
// operator, WhaleMountain's own deployment), with labels, a pod that looks
// like one of WhaleMountain's, and a secret named like its pull secret.
func foreignNamespace(t *testing.T, admin kubernetes.Interface, name string, labels map[string]string, lookalikeOwner string) {
	t.Helper()
	ctx := context.Background()
	_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	_, err = admin.CoreV1().Secrets(name).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: kube.PullSecretName},
		StringData: map[string]string{"token": "theirs"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.CoreV1().Pods(name).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "controller",
			Labels:      map[string]string{kube.LabelManagedBy: kube.ManagedByValue, kube.LabelOwner: lookalikeOwner, kube.LabelRepo: lookalikeOwner + ".ml"},
			Annotations: map[string]string{kube.AnnotationRepo: lookalikeOwner + "/ml"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.test/ops/controller:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// wantNotOurs checks that err refuses the namespace and says why: it names
// the namespace and tells the admins what to do.
func wantNotOurs(t *testing.T, what string, err error, ns string, more ...string) {
	t.Helper()
	t.Logf("%s: %v", what, err)
	if !errors.Is(err, kube.ErrNamespaceNotOurs) || !errors.Is(err, fault.Conflict) {
		t.Errorf("%s: %v, want an error wrapping ErrNamespaceNotOurs, of the kind fault.Conflict", what, err)
		return
	}
	for _, s := range append([]string{ns, "admins"}, more...) {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: %q does not say %q", what, err, s)
		}
	}
}

// wantPodWritesRefused checks that every verb with which the pass writes
// pods refuses ns, the namespace of p's owner, with ErrNamespaceNotOurs:
// the check of p (a dry run is a write request too), its creation, its
// replacement, and the deletion of the pod called remove of p's repo.
func wantPodWritesRefused(t *testing.T, b *kube.Backend, p core.PodSpec, remove, ns string) {
	t.Helper()
	ctx := context.Background()
	for _, w := range []struct {
		verb string
		call func() error
	}{
		{"CheckPod of a new pod", func() error { return b.CheckPod(ctx, p, false) }},
		{"CheckPod of a replacement", func() error { return b.CheckPod(ctx, p, true) }},
		{"ApplyPod creating", func() error { return b.ApplyPod(ctx, p, false) }},
		{"ApplyPod replacing", func() error { return b.ApplyPod(ctx, p, true) }},
		{"DeletePod of " + remove, func() error { return b.DeletePod(ctx, p.Owner, p.Repo, remove) }},
	} {
		wantNotOurs(t, w.verb, w.call(), ns)
	}
}

func TestAnAccountWhoseNamespaceExistsAndIsNotItsOwnTakesNothingOverAndIsToldWhy(t *testing.T) {
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	students := cluster.Students()
	bob, dave := students[1], students[3]

	for _, tc := range []struct {
		name   string
		labels map[string]string
		says   []string
	}{
		{"a namespace without WhaleMountain's labels, such as the one WhaleMountain runs in",
			map[string]string{"app.kubernetes.io/name": "whalemountain"}, []string{"reservedNamespaces"}},
		{"a namespace WhaleMountain manages for another owner",
			map[string]string{kube.LabelManagedBy: kube.ManagedByValue, kube.LabelOwner: dave}, []string{dave}},
		{"a namespace with the managed-by label but no owner",
			map[string]string{kube.LabelManagedBy: kube.ManagedByValue}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _, prefix := setup(t, cluster)
			set := b.Settings()
			set.PullSecret = []byte(`{"auths":{}}`)
			b = kube.New(admin, set)
			ns := prefix + bob
			foreignNamespace(t, admin, ns, tc.labels, bob)
			before := snapshot(t, admin, ns)

			if problem := set.NamespaceProblem(bob); problem != "" {
				t.Errorf("NamespaceProblem(%s) = %q; the name itself is fine, the namespace's labels are not", bob, problem)
			}
			_, err := b.EnsureOwner(ctx, bob)
			wantNotOurs(t, "EnsureOwner", err, ns, tc.says...)
			// "controller" looks like a pod of bob/ml: deleting it is refused too.
			wantPodWritesRefused(t, b, pod(bob, "train", 0), "controller", ns)
			err = b.RemoveOwner(ctx, bob)
			wantNotOurs(t, "RemoveOwner", err, ns)

			if after := snapshot(t, admin, ns); !maps.Equal(before, after) {
				t.Errorf("the namespace was written to:\nbefore %v\nafter  %v", before, after)
			}
			if n, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil || n.DeletionTimestamp != nil {
				t.Errorf("the namespace is going: %v", err)
			}
			if cluster.Can(t, bob, "create", "pods", "exec", ns) || cluster.Can(t, bob, "get", "pods", "", ns) {
				t.Errorf("%s was given access to the pods of %s", bob, ns)
			}
		})
	}
}

func TestANamespaceTheAdminsTookBackIsNoLongerWrittenToNorDeleted(t *testing.T) {
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	alice := cluster.Students()[0]
	b, _, prefix := setup(t, cluster)
	ns := prefix + alice
	if _, err := b.EnsureOwner(ctx, alice); err != nil {
		t.Fatal(err)
	}
	n, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(n.Labels, kube.LabelManagedBy)
	n.Labels["team"] = "ops"
	if _, err := admin.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// What the admins changed since: the quota, the network policy.
	if err := admin.CoreV1().ResourceQuotas(ns).Delete(ctx, kube.QuotaName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := admin.NetworkingV1().NetworkPolicies(ns).Delete(ctx, kube.NetworkPolicyName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, admin, ns)

	_, err = b.EnsureOwner(ctx, alice)
	wantNotOurs(t, "EnsureOwner", err, ns)
	wantPodWritesRefused(t, b, pod(alice, "train", 0), "train", ns)
	wantNotOurs(t, "RemoveOwner", b.RemoveOwner(ctx, alice), ns)
	if after := snapshot(t, admin, ns); !maps.Equal(before, after) {
		t.Errorf("the namespace was written to:\nbefore %v\nafter  %v", before, after)
	}
}

func TestAnAccountNamedLikeASystemOrReservedNamespaceIsRefusedAndSaysWhy(t *testing.T) {
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	b, _, prefix := setup(t, cluster)

	t.Run("names are judged by the namespace they make", func(t *testing.T) {
		empty := b.Settings()
		empty.Kubernetes.NamespacePrefix = ""
		empty.Kubernetes.ReservedNamespaces = []string{"whalemountain", "gpu-*"}
		prefixed := b.Settings()
		prefixed.Kubernetes.NamespacePrefix = "kube-"
		for _, tc := range []struct {
			set   kube.Settings
			owner string
			says  string // "" when the name is fine
		}{
			{empty, "kube-system", "kube-system"},
			{empty, "kube-public", "kube-public"},
			{empty, "kube-node-lease", "kube-node-lease"},
			{empty, "default", "default"},
			{empty, "whalemountain", "kubernetes.reservedNamespaces"},
			{empty, "gpu-operator", "kubernetes.reservedNamespaces"},
			{empty, "alice", ""},
			{empty, "gpu", ""},
			{prefixed, "system", "kube-system"},
			{b.Settings(), "system", ""},
			{b.Settings(), "default", ""},
		} {
			got := tc.set.NamespaceProblem(tc.owner)
			if tc.says == "" && got != "" || tc.says != "" && !strings.Contains(got, tc.says) {
				t.Errorf("prefix %q, account %s: %q, want it to say %q", tc.set.Kubernetes.NamespacePrefix, tc.owner, got, tc.says)
			}
		}
	})

	t.Run("with an empty prefix, the account kube-system does not touch kube-system", func(t *testing.T) {
		set := b.Settings()
		set.Kubernetes.NamespacePrefix = ""
		sys := kube.New(admin, set)
		before := snapshot(t, admin, "kube-system")
		t.Cleanup(func() { undoInKubeSystem(t, admin) })
		_, err := sys.EnsureOwner(ctx, "kube-system")
		wantNotOurs(t, "EnsureOwner", err, "kube-system", "kube-*")
		wantPodWritesRefused(t, sys, pod("kube-system", "train", 0), "kube-proxy", "kube-system")
		wantNotOurs(t, "RemoveOwner", sys.RemoveOwner(ctx, "kube-system"), "kube-system")
		if after := snapshot(t, admin, "kube-system"); !maps.Equal(before, after) {
			t.Errorf("kube-system was written to:\nbefore %v\nafter  %v", before, after)
		}
	})

	t.Run("a reserved namespace that does not exist yet is not created", func(t *testing.T) {
		set := b.Settings()
		set.Kubernetes.ReservedNamespaces = []string{prefix + "gpu-*"}
		r := kube.New(admin, set)
		ns := prefix + "gpu-operator"
		t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
		_, err := r.EnsureOwner(ctx, "gpu-operator")
		wantNotOurs(t, "EnsureOwner", err, ns, "kubernetes.reservedNamespaces")
		if _, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the reserved namespace %s was created: %v", ns, err)
		}
	})
}

// undoInKubeSystem takes back what a backend that wrongly took kube-system
// over would have written there, so a failing run leaves the shared
// control plane as it was.
func undoInKubeSystem(t *testing.T, admin kubernetes.Interface) {
	ctx := context.Background()
	mine := kube.LabelManagedBy + "=" + kube.ManagedByValue
	del := metav1.DeleteOptions{}
	l := metav1.ListOptions{LabelSelector: mine}
	_ = admin.RbacV1().Roles("kube-system").DeleteCollection(ctx, del, l)
	_ = admin.RbacV1().RoleBindings("kube-system").DeleteCollection(ctx, del, l)
	_ = admin.CoreV1().ResourceQuotas("kube-system").DeleteCollection(ctx, del, l)
	_ = admin.CoreV1().LimitRanges("kube-system").DeleteCollection(ctx, del, l)
	_ = admin.NetworkingV1().NetworkPolicies("kube-system").DeleteCollection(ctx, del, l)
	_ = admin.CoreV1().Pods("kube-system").DeleteCollection(ctx, del, l)
	n, err := admin.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil || n.Labels[kube.LabelManagedBy] == "" {
		return
	}
	for k := range n.Labels {
		if k == kube.LabelManagedBy || k == kube.LabelOwner || strings.HasPrefix(k, "pod-security.kubernetes.io/") {
			delete(n.Labels, k)
		}
	}
	delete(n.Annotations, kube.AnnotationHash)
	if _, err := admin.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Errorf("give kube-system back: %v", err)
	}
}

func TestPodsMaySendDNSOnlyToTheClusterDNS(t *testing.T) {
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	alice := cluster.Students()[0]
	b, _, prefix := setup(t, cluster)
	ns := prefix + alice

	check := func(t *testing.T, wantNS, wantPods map[string]string) {
		t.Helper()
		np, err := admin.NetworkingV1().NetworkPolicies(ns).Get(ctx, kube.NetworkPolicyName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(np.Spec.Ingress) != 0 || !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || len(np.Spec.Egress) != 1 {
			t.Fatalf("policy: ingress %v, egress %v, types %v", np.Spec.Ingress, np.Spec.Egress, np.Spec.PolicyTypes)
		}
		rule := np.Spec.Egress[0]
		if len(rule.To) != 1 {
			t.Fatalf("DNS egress goes to %d peers, want exactly the cluster DNS: %+v", len(rule.To), rule.To)
		}
		peer := rule.To[0]
		if peer.IPBlock != nil || peer.NamespaceSelector == nil || peer.PodSelector == nil ||
			len(peer.NamespaceSelector.MatchExpressions) != 0 || len(peer.PodSelector.MatchExpressions) != 0 ||
			!maps.Equal(peer.NamespaceSelector.MatchLabels, wantNS) || !maps.Equal(peer.PodSelector.MatchLabels, wantPods) {
			t.Errorf("DNS peer %+v, want namespaces %v and pods %v", peer, wantNS, wantPods)
		}
		var ports []string
		for _, p := range rule.Ports {
			ports = append(ports, string(*p.Protocol)+"/"+p.Port.String())
		}
		if slices.Sort(ports); !slices.Equal(ports, []string{"TCP/53", "UDP/53"}) {
			t.Errorf("DNS ports %v", ports)
		}
	}

	if _, err := b.EnsureOwner(ctx, alice); err != nil {
		t.Fatal(err)
	}
	t.Run("by default the peer is kube-dns in kube-system", func(t *testing.T) {
		check(t, map[string]string{"kubernetes.io/metadata.name": "kube-system"}, map[string]string{"k8s-app": "kube-dns"})
	})

	t.Run("the admins' DNS selector replaces it on the next pass", func(t *testing.T) {
		set := b.Settings()
		set.Kubernetes.DNS = schema.DNSPeer{
			NamespaceSelector: map[string]string{"kubernetes.io/metadata.name": "dns"},
			PodSelector:       map[string]string{"app": "unbound"},
		}
		if n, err := kube.New(admin, set).EnsureOwner(ctx, alice); err != nil || n != 1 {
			t.Fatalf("applied %d, %v; want the network policy alone", n, err)
		}
		check(t, map[string]string{"kubernetes.io/metadata.name": "dns"}, map[string]string{"app": "unbound"})
	})
}

func TestOwnerPodsCountsAnOwnersManagedPodsOverAllTheirReposAndNothingElse(t *testing.T) {
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	students := cluster.Students()
	alice, bob, carol := students[0], students[1], students[2]
	b, _, prefix := setup(t, cluster)

	for _, owner := range []string{alice, bob} {
		if _, err := b.EnsureOwner(ctx, owner); err != nil {
			t.Fatal(err)
		}
		waitForQuota(t, admin, prefix+owner)
	}
	train := pod(alice, "train", 1)
	notebook := pod(alice, "notebook", 0)
	notebook.Repo, notebook.CPUs, notebook.MemoryBytes = alice+"/other", 0.5, 512<<20
	for _, p := range []core.PodSpec{train, notebook, pod(bob, "train", 1)} {
		if err := b.ApplyPod(ctx, p, false); err != nil {
			t.Fatal(err)
		}
	}
	// A pod the admins put in alice's namespace by hand is not hers to count.
	nonroot, no := true, false
	_, err := admin.CoreV1().Pods(prefix+alice).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "debug"},
		Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &nonroot,
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
			Containers: []corev1.Container{{Name: "c", Image: "busybox", SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: &no, Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The notebook failed: it stays, listed, for its logs.
	nb, err := admin.CoreV1().Pods(prefix+alice).Get(ctx, "notebook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nb.Status.Phase = corev1.PodFailed
	if _, err := admin.CoreV1().Pods(prefix+alice).UpdateStatus(ctx, nb, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	got, err := b.OwnerPods(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	// The hash is what a plan pairs a live pod with its spec by.
	specs := map[string]core.PodSpec{train.Name: train, notebook.Name: notebook}
	for i := range got {
		if want := b.PodHash(specs[got[i].Name]); got[i].Hash != want {
			t.Errorf("pod %s has the hash %q, want %q (PodHash of its spec)", got[i].Name, got[i].Hash, want)
		}
		got[i].Hash = ""
	}
	want := []core.Pod{
		{Repo: alice + "/ml", Name: "train", Phase: "Pending", GPUs: 1, CPUs: 1, MemoryBytes: 1 << 30},
		{Repo: alice + "/other", Name: "notebook", Phase: "Failed", GPUs: 0, CPUs: 0.5, MemoryBytes: 512 << 20},
	}
	if !slices.Equal(got, want) {
		t.Errorf("OwnerPods(%s) =\n%+v\nwant\n%+v", alice, got, want)
	}
	if got, err := b.OwnerPods(ctx, carol); err != nil || len(got) != 0 {
		t.Errorf("an owner without a namespace: %+v, %v", got, err)
	}
}
