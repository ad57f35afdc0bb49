package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	wmschema "github.com/whalemountain/wm/schema"
)

// testManager is the field manager the test applies the manifests with.
const testManager = "wm-deploy-test"

// installed is deploy/kubernetes applied to the test control plane: in a
// namespace of the test's own for "whalemountain", with cluster-scoped
// names made unique to the test, as a kustomize namespace and suffix
// would (plus the user name the admission policy matches).
type installed struct {
	ns     string
	suffix string
	objs   []manifest
}

// user is the Kubernetes user name of wm's ServiceAccount.
func (in installed) user() string { return "system:serviceaccount:" + in.ns + ":wm" }

// rewrite moves o from the manifests' namespace to the test's.
func (in installed) rewrite(t *testing.T, o *unstructured.Unstructured) {
	t.Helper()
	if o.GetNamespace() == manifestNamespace {
		o.SetNamespace(in.ns)
	}
	set := func(value any, fields ...string) {
		if err := unstructured.SetNestedField(o.Object, value, fields...); err != nil {
			t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	switch o.GetKind() {
	case "Namespace":
		o.SetName(in.ns)
	case "ClusterRole", "ValidatingAdmissionPolicy":
		o.SetName(o.GetName() + in.suffix)
	case "ClusterRoleBinding":
		o.SetName(o.GetName() + in.suffix)
		name, _, _ := unstructured.NestedString(o.Object, "roleRef", "name")
		set(name+in.suffix, "roleRef", "name")
	case "ValidatingAdmissionPolicyBinding":
		o.SetName(o.GetName() + in.suffix)
		name, _, _ := unstructured.NestedString(o.Object, "spec", "policyName")
		set(name+in.suffix, "spec", "policyName")
	}
	if conds, ok, _ := unstructured.NestedSlice(o.Object, "spec", "matchConditions"); ok {
		for _, c := range conds {
			c := c.(map[string]any)
			c["expression"] = strings.ReplaceAll(c["expression"].(string),
				"system:serviceaccount:"+manifestNamespace+":", "system:serviceaccount:"+in.ns+":")
		}
		set(conds, "spec", "matchConditions")
	}
	if subjects, ok, _ := unstructured.NestedSlice(o.Object, "subjects"); ok {
		for _, s := range subjects {
			if s := s.(map[string]any); s["namespace"] == manifestNamespace {
				s["namespace"] = in.ns
			}
		}
		set(subjects, "subjects")
	}
}

// applier sends objects with server-side apply, strict about fields.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(t *testing.T, cfg *rest.Config) applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cs.Discovery()))}
}

// apply applies o, only as a dry run when dryRun.
func (a applier) apply(ctx context.Context, o *unstructured.Unstructured, dryRun bool) error {
	gvk := o.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("the apiserver serves no %s: %w", gvk, err)
	}
	var r dynamic.ResourceInterface = a.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		r = a.dyn.Resource(m.Resource).Namespace(o.GetNamespace())
	}
	body, err := o.MarshalJSON()
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{FieldManager: testManager, Force: new(true), FieldValidation: "Strict"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = r.Patch(ctx, o.GetName(), types.ApplyPatchType, body, opts)
	return err
}

// install applies every manifest to the control plane: each first as a
// server-side dry run, then for real, in the kustomization's order. The
// cluster-scoped objects are deleted at cleanup, the namespace with
// everything in it by kubetest, and the test waits for it to go.
func install(t *testing.T, c *kubetest.Cluster) installed {
	t.Helper()
	in := installed{ns: c.Namespace(t, "wm-deploy")}
	in.suffix = strings.TrimPrefix(in.ns, "wm-deploy")
	a := newApplier(t, c.AdminConfig())
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, m := range manifests(t) {
		m.obj = m.obj.DeepCopy()
		in.rewrite(t, m.obj)
		in.objs = append(in.objs, m)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, m := range in.objs {
			o := m.obj
			if o.GetKind() == "PersistentVolumeClaim" {
				// Admission gives a claim the pvc-protection finalizer,
				// which only a controller the test control plane does not
				// run removes: without this, the namespace never goes.
				_, err := a.dyn.Resource(corev1.SchemeGroupVersion.WithResource("persistentvolumeclaims")).Namespace(o.GetNamespace()).
					Patch(ctx, o.GetName(), types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
				if err != nil && !apierrors.IsNotFound(err) {
					t.Errorf("let %s %s go: %v", o.GetKind(), o.GetName(), err)
				}
			}
			if o.GetNamespace() != "" || o.GetKind() == "Namespace" {
				continue
			}
			gvk := o.GroupVersionKind()
			mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err == nil {
				err = a.dyn.Resource(mapping.Resource).Delete(ctx, o.GetName(), metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete %s %s: %v", o.GetKind(), o.GetName(), err)
			}
		}
		// Nothing of the manifests may keep the namespace from going.
		nss := a.dyn.Resource(corev1.SchemeGroupVersion.WithResource("namespaces"))
		if err := nss.Delete(ctx, in.ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", in.ns, err)
			return
		}
		for {
			ns, err := nss.Get(ctx, in.ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return
			}
			if ctx.Err() != nil {
				var conds []any
				if err == nil {
					conds, _, _ = unstructured.NestedSlice(ns.Object, "status", "conditions")
				}
				t.Errorf("namespace %s is still there after 30s (%v): %v", in.ns, err, conds)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	// The namespace first, so that the dry runs of what goes in it are
	// judged in it.
	for _, m := range in.objs {
		if m.obj.GetKind() != "Namespace" {
			continue
		}
		for _, dry := range []bool{true, false} {
			if err := a.apply(ctx, m.obj, dry); err != nil {
				t.Fatalf("%s: Namespace (dry run %v): %v", m.file, dry, err)
			}
		}
	}
	for _, m := range in.objs {
		if err := a.apply(ctx, m.obj, true); err != nil {
			t.Errorf("%s: %s %s is refused by a server-side dry run: %v", m.file, m.obj.GetKind(), m.obj.GetName(), err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, m := range in.objs {
		if err := a.apply(ctx, m.obj, false); err != nil {
			t.Fatalf("%s: %s %s: %v", m.file, m.obj.GetKind(), m.obj.GetName(), err)
		}
	}
	return in
}

// waitUntil polls cond every 100 ms until it holds, for up to a minute.
func waitUntil(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		ok, err := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s (last error: %v)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// The manifests are applied to the real control plane, and the kube
// backend and the access API's credentials run as their ServiceAccount,
// through the kubeconfig of their ConfigMap: everything wm does is
// allowed, and what it does not do is refused.
func TestTheManifestsOnTheRealControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the test control plane (ci/kube-up)")
	}
	t.Parallel()
	c := kubetest.Env(t)
	admin := c.AdminClient(t)
	in := install(t, c)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	t.Run("the deployment's pod is admitted under Pod Security restricted", func(t *testing.T) {
		waitUntil(t, "the deployment's pod", func(ctx context.Context) (bool, error) {
			pods, err := admin.CoreV1().Pods(in.ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=wm"})
			if err != nil || len(pods.Items) == 0 {
				rs, _ := admin.AppsV1().ReplicaSets(in.ns).List(ctx, metav1.ListOptions{})
				if rs != nil && len(rs.Items) > 0 {
					for _, cond := range rs.Items[0].Status.Conditions {
						err = errors.Join(err, fmt.Errorf("%s: %s", cond.Reason, cond.Message))
					}
				}
				return false, err
			}
			return true, nil
		})
		ns, err := admin.CoreV1().Namespaces().Get(ctx, in.ns, metav1.GetOptions{})
		if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			t.Errorf("namespace %s enforces %q (%v), want restricted", in.ns, ns.Labels["pod-security.kubernetes.io/enforce"], err)
		}
	})

	wm, wmConfig := serviceAccountClient(t, c, in)
	// RBAC and the admission policy take a moment to reach the apiserver's
	// caches. The policy is in force once it refuses a dry-run delete of a
	// namespace wm did not make (which RBAC alone allows).
	waitUntil(t, "wm's RBAC", func(context.Context) (bool, error) {
		return c.Can(t, in.user(), "create", "namespaces", "", ""), nil
	})
	notWM := c.Namespace(t, "not-wm")
	for _, name := range []string{notWM} {
		if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "the admission policy to refuse wm deleting a namespace it did not make", func(ctx context.Context) (bool, error) {
		err := wm.CoreV1().Namespaces().Delete(ctx, notWM, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		return apierrors.IsForbidden(err), err
	})

	prefix := c.Namespace(t, "wmdep") + "-"
	set := kube.Settings{
		Kubernetes: wmschema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu", DNS: wmschema.DefaultDNS(),
			ReservedNamespaces: []string{in.ns}},
		Quota:      wmschema.Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi"},
		Defaults:   wmschema.Limits{CPUs: 1, Memory: "2Gi"},
		PullSecret: []byte(`{"auths":{"registry.test":{"username":"wm-reader","password":"x","auth":"d20tcmVhZGVyOng="}}}`),
	}
	backend := kube.New(wm, set)
	const owner = "alice"
	studentNS := set.Namespace(owner)
	t.Cleanup(func() {
		_ = admin.CoreV1().Namespaces().Delete(context.Background(), studentNS, metav1.DeleteOptions{})
	})
	train := core.PodSpec{Owner: owner, Repo: owner + "/ml", Name: "train", Image: "registry.test/alice/ml:abc",
		Command: []string{"python", "train.py"}, CPUs: 1, MemoryBytes: 1 << 30, Restart: "Never"}
	retrain := train
	retrain.Image = "registry.test/alice/ml:def"
	cluster := &access.Kube{Client: wm, Config: wmConfig, Settings: set, Server: c.Server(), CA: c.CAData()}

	// What wm does, in the order a pass and the access API do it: each step
	// must be allowed.
	steps := []struct {
		name string
		do   func(t *testing.T) error
	}{
		{"wm serve's readiness check of the apiserver (its /readyz) answers", func(t *testing.T) error {
			return wm.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
		}},
		{"EnsureOwner makes the student's namespace, RBAC, quota, limits, network policy and pull secret", func(t *testing.T) error {
			n, err := backend.EnsureOwner(ctx, owner)
			if err == nil && n != 7 {
				err = fmt.Errorf("%d objects applied, want 7", n)
			}
			return err
		}},
		{"EnsureOwner again reads everything back and sends nothing", func(t *testing.T) error {
			n, err := backend.EnsureOwner(ctx, owner)
			if err == nil && n != 0 {
				err = fmt.Errorf("%d objects applied on a resync, want 0", n)
			}
			return err
		}},
		{"CheckPod asks admission with a dry run", func(t *testing.T) error {
			waitUntil(t, "the quota's status", func(ctx context.Context) (bool, error) {
				q, err := admin.CoreV1().ResourceQuotas(studentNS).Get(ctx, kube.QuotaName, metav1.GetOptions{})
				return err == nil && len(q.Status.Hard) > 0, err
			})
			return backend.CheckPod(ctx, train, false)
		}},
		{"ApplyPod creates the pod", func(t *testing.T) error { return backend.ApplyPod(ctx, train, false) }},
		{"OwnerPods and PodStatuses list it", func(t *testing.T) error {
			pods, err := backend.OwnerPods(ctx, owner)
			if err != nil {
				return err
			}
			statuses, err := backend.PodStatuses(ctx, owner, train.Repo)
			if err == nil && (len(pods) != 1 || len(statuses) != 1) {
				err = fmt.Errorf("pods %+v, statuses %+v, want one each", pods, statuses)
			}
			return err
		}},
		{"ApplyPod replaces the pod when its image changes", func(t *testing.T) error {
			if err := backend.CheckPod(ctx, retrain, true); err != nil {
				return err
			}
			return backend.ApplyPod(ctx, retrain, true)
		}},
		{"the access API issues the student a credential that works in their namespace", func(t *testing.T) error {
			cred, err := cluster.Credential(ctx, owner, time.Hour)
			if err != nil {
				return err
			}
			student, err := kubernetes.NewForConfig(&rest.Config{Host: cred.Server, BearerToken: cred.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cred.CA}})
			if err != nil {
				return err
			}
			waitUntil(t, "the student's credential to list their pods", func(ctx context.Context) (bool, error) {
				_, err := student.CoreV1().Pods(cred.Namespace).List(ctx, metav1.ListOptions{})
				return err == nil, err
			})
			return nil
		}},
		{"the access API reads the pod for its logs (it is not running: no kubelet)", func(t *testing.T) error {
			_, err := cluster.PodLogs(ctx, owner, "train", docker.LogOptions{})
			if !errors.Is(err, fault.Conflict) {
				return fmt.Errorf("logs of a pending pod: %w, want the pod-not-running conflict", err)
			}
			return nil
		}},
		{"exec in the student's pod gets past authorization and admission (and fails on the missing node)", func(t *testing.T) error {
			err := postExec(ctx, wm, studentNS, "train")
			if err == nil || apierrors.IsForbidden(err) {
				return fmt.Errorf("exec: %v, want refused for want of a node, not forbidden", err)
			}
			return nil
		}},
		{"leader election takes a Lease in wm's namespace", func(t *testing.T) error {
			lease := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "wm-leader"}, Spec: coordv1.LeaseSpec{HolderIdentity: new("wm-0")}}
			got, err := wm.CoordinationV1().Leases(in.ns).Create(ctx, lease, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			if got, err = wm.CoordinationV1().Leases(in.ns).Get(ctx, got.Name, metav1.GetOptions{}); err != nil {
				return err
			}
			got.Spec.HolderIdentity = new("wm-1")
			_, err = wm.CoordinationV1().Leases(in.ns).Update(ctx, got, metav1.UpdateOptions{})
			return err
		}},
	}
	for _, s := range steps {
		// Each step needs the ones before it.
		if !t.Run(s.name, func(t *testing.T) {
			if err := s.do(t); err != nil {
				t.Fatal(err)
			}
		}) {
			t.FailNow()
		}
	}
	for _, can := range []struct{ verb, resource, sub string }{{"get", "pods", "log"}, {"create", "pods", "exec"}} {
		if !c.Can(t, in.user(), can.verb, can.resource, can.sub, studentNS) {
			t.Errorf("wm may not %s %s/%s in %s", can.verb, can.resource, can.sub, studentNS)
		}
	}

	// What wm never does: each must be refused (403), by RBAC or by the
	// admission policy.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "notes"}, StringData: map[string]string{"k": "v"}}
	for _, ns := range []string{studentNS, notWM} {
		if _, err := admin.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bystander := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bystander"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.test/x:1"}}}}
	if _, err := admin.CoreV1().Pods(notWM).Create(ctx, bystander, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	refused := []struct {
		name string
		do   func() error
	}{
		{"reading a secret in a student's namespace", func() error {
			_, err := wm.CoreV1().Secrets(studentNS).Get(ctx, "notes", metav1.GetOptions{})
			return err
		}},
		{"listing the secrets of a student's namespace", func() error {
			_, err := wm.CoreV1().Secrets(studentNS).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"reading a secret of a namespace wm did not make", func() error {
			_, err := wm.CoreV1().Secrets(notWM).Get(ctx, "notes", metav1.GetOptions{})
			return err
		}},
		{"reading config maps", func() error {
			_, err := wm.CoreV1().ConfigMaps(studentNS).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"a token of another service account", func() error {
			_, err := wm.CoreV1().ServiceAccounts(studentNS).CreateToken(ctx, "default", &authv1.TokenRequest{}, metav1.CreateOptions{})
			return err
		}},
		{"a student's Role granting more than wm holds (secrets)", func() error {
			return applyRole(ctx, wm, studentNS, "secrets")
		}},
		{"a ClusterRoleBinding", func() error {
			crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "wm-more" + in.suffix},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "wm", Namespace: in.ns}}}
			_, err := wm.RbacV1().ClusterRoleBindings().Create(ctx, crb, dry)
			return err
		}},
		{"listing nodes", func() error {
			_, err := wm.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		}},
		{"deleting a namespace wm did not make", func() error {
			return wm.CoreV1().Namespaces().Delete(ctx, notWM, metav1.DeleteOptions{})
		}},
		{"labelling a namespace wm did not make as wm's", func() error {
			patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q,%q:%q}}}`, kube.LabelManagedBy, kube.ManagedByValue, kube.LabelOwner, owner)
			_, err := wm.CoreV1().Namespaces().Patch(ctx, notWM, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
			return err
		}},
		{"creating a pod in a namespace wm did not make", func() error {
			p := bystander.DeepCopy()
			p.Name = "intruder"
			_, err := wm.CoreV1().Pods(notWM).Create(ctx, p, dry)
			return err
		}},
		{"deleting a pod in a namespace wm did not make", func() error {
			return wm.CoreV1().Pods(notWM).Delete(ctx, "bystander", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
		{"exec in a pod of a namespace wm did not make", func() error {
			return postExec(ctx, wm, notWM, "bystander")
		}},
		{"a student's Role in a namespace wm did not make", func() error {
			return applyRole(ctx, wm, notWM, "pods")
		}},
		{"handing a student its own rights in a namespace wm did not make", func() error {
			rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "wm-student"},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "whalemountain" + in.suffix},
				Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: owner}}}
			_, err := wm.RbacV1().RoleBindings(notWM).Create(ctx, rb, dry)
			return err
		}},
		{"a Lease outside wm's namespace", func() error {
			_, err := wm.CoordinationV1().Leases(notWM).Create(ctx, &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "wm-leader"}}, dry)
			return err
		}},
	}
	for _, r := range refused {
		t.Run("wm is refused "+r.name, func(t *testing.T) {
			err := r.do()
			if !apierrors.IsForbidden(err) {
				t.Fatalf("err = %v, want 403 Forbidden", err)
			}
			t.Log(err)
		})
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, notWM, metav1.GetOptions{}); err != nil {
		t.Errorf("the namespace wm did not make: %v", err)
	}

	t.Run("pruning deletes the student's pod and then the namespace wm made", func(t *testing.T) {
		if err := backend.DeletePod(ctx, owner, retrain.Repo, retrain.Name); err != nil {
			t.Fatal(err)
		}
		if err := backend.RemoveOwner(ctx, owner); err != nil {
			t.Fatal(err)
		}
		ns, err := admin.CoreV1().Namespaces().Get(ctx, studentNS, metav1.GetOptions{})
		if err == nil && ns.DeletionTimestamp == nil {
			t.Errorf("namespace %s is still there, not terminating", studentNS)
		}
	})
}

// applyRole applies, as a dry run, the student's Role (kube.RoleName) in
// ns granting get on resource, as EnsureOwner applies it.
func applyRole(ctx context.Context, cs kubernetes.Interface, ns, resource string) error {
	role := rbacv1ac.Role(kube.RoleName, ns).WithRules(rbacv1ac.PolicyRule().WithAPIGroups("").WithResources(resource).WithVerbs("get"))
	_, err := cs.RbacV1().Roles(ns).Apply(ctx, role, metav1.ApplyOptions{FieldManager: kube.FieldManager, Force: true, DryRun: []string{metav1.DryRunAll}})
	return err
}

// postExec asks the apiserver for an exec in a pod, as wm exec --pod does
// (a POST to pods/exec), without the stream upgrade: authorization and
// admission answer first, then the pod's missing node does.
func postExec(ctx context.Context, cs kubernetes.Interface, ns, pod string) error {
	return cs.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name(pod).SubResource("exec").
		Param("command", "true").Param("stdout", "true").Do(ctx).Error()
}

// serviceAccountClient returns a client acting as wm's ServiceAccount
// through the kubeconfig of the manifests' ConfigMap, its server, CA and
// token file pointed at the test control plane and at a token of the
// ServiceAccount issued by TokenRequest, as the kubelet would project it.
func serviceAccountClient(t *testing.T, c *kubetest.Cluster, in installed) (kubernetes.Interface, *rest.Config) {
	t.Helper()
	var cm corev1.ConfigMap
	typed(t, find(t, in.objs, "ConfigMap", "wm-config"), &cm)
	kc, err := clientcmd.Load([]byte(cm.Data["kubeconfig"]))
	if err != nil {
		t.Fatal(err)
	}
	kctx := kc.Contexts[kc.CurrentContext]
	tr, err := c.AdminClient(t).CoreV1().ServiceAccounts(in.ns).CreateToken(t.Context(), "wm",
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	token, ca := filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(token, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ca, c.CAData(), 0o600); err != nil {
		t.Fatal(err)
	}
	kc.Clusters[kctx.Cluster].Server = c.Server()
	kc.Clusters[kctx.Cluster].CertificateAuthority = ca
	kc.AuthInfos[kctx.AuthInfo].TokenFile = token
	path := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs, cfg
}
