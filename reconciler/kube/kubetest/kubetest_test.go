package kubetest_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
)

const gpu corev1.ResourceName = "nvidia.com/gpu"

func TestTheClusterAnswers(t *testing.T) {
	t.Parallel()
	c := kubetest.Env(t)

	v, err := c.AdminClient(t).Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	if v.Major != "1" || !strings.HasPrefix(v.GitVersion, "v1.") {
		t.Errorf("server version = %+v, want a v1.x apiserver", v)
	}
	if !strings.HasPrefix(c.Server(), "https://127.0.0.1:") {
		t.Errorf("Server() = %q, want https on loopback", c.Server())
	}
	if !strings.Contains(string(c.CAData()), "BEGIN CERTIFICATE") {
		t.Errorf("CAData() holds no PEM certificate")
	}
	if b, err := os.ReadFile(c.Kubeconfig()); err != nil || !strings.Contains(string(b), c.Server()) {
		t.Errorf("kubeconfig %s does not name %s (err %v)", c.Kubeconfig(), c.Server(), err)
	}
	if got := c.Students(); !slices.Contains(got, "alice") || !slices.Contains(got, "bob") {
		t.Errorf("Students() = %v, want alice and bob among them", got)
	}
}

func TestANewNamespaceGetsADefaultServiceAccount(t *testing.T) {
	t.Parallel()
	c := kubetest.Env(t)
	admin := c.AdminClient(t)
	ns := createNamespace(t, c, "sa", nil)

	waitFor(t, "the default service account in "+ns, func(ctx context.Context) (bool, error) {
		_, err := admin.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
}

func TestAQuotaOfOneGPURefusesAPodAskingTwoAndAdmitsOneAskingOne(t *testing.T) {
	t.Parallel()
	c := kubetest.Env(t)
	admin := c.AdminClient(t)
	ns := createNamespace(t, c, "quota", nil)
	ctx := context.Background()

	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "gpus"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{
			"requests." + gpu: resource.MustParse("1"),
		}},
	}
	if _, err := admin.CoreV1().ResourceQuotas(ns).Create(ctx, quota, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create quota: %v", err)
	}
	// Until the quota controller writes its status, admission refuses every
	// pod the quota constrains ("status unknown for quota").
	waitFor(t, "the quota's status", func(ctx context.Context) (bool, error) {
		q, err := admin.CoreV1().ResourceQuotas(ns).Get(ctx, "gpus", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		_, ok := q.Status.Hard["requests."+gpu]
		return ok, nil
	})

	_, err := admin.CoreV1().Pods(ns).Create(ctx, gpuPod("two", 2), metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "exceeded quota") {
		t.Fatalf("pod asking 2 GPUs: err = %v, want forbidden: exceeded quota", err)
	}
	pod, err := admin.CoreV1().Pods(ns).Create(ctx, gpuPod("one", 1), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("pod asking 1 GPU: %v", err)
	}
	if pod.Status.Phase != corev1.PodPending {
		t.Errorf("pod asking 1 GPU is %q, want Pending (its namespace is not let on the node)", pod.Status.Phase)
	}
}

func TestARestrictedNamespaceRefusesAPrivilegedPod(t *testing.T) {
	t.Parallel()
	c := kubetest.Env(t)
	admin := c.AdminClient(t)
	ns := createNamespace(t, c, "restricted", map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
	})
	ctx := context.Background()

	privileged := gpuPod("privileged", 0)
	privileged.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: new(true)}
	_, err := admin.CoreV1().Pods(ns).Create(ctx, privileged, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("privileged pod: err = %v, want forbidden: violates PodSecurity", err)
	}

	// The same namespace admits a pod that meets the restricted profile, so
	// the refusal above is PodSecurity's and not something else's.
	ok := gpuPod("restricted", 0)
	ok.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot:   new(true),
		RunAsUser:      new(int64(1000)),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	ok.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
		AllowPrivilegeEscalation: new(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
	if _, err := admin.CoreV1().Pods(ns).Create(ctx, ok, metav1.CreateOptions{}); err != nil {
		t.Fatalf("restricted pod: %v", err)
	}
}

func TestAStudentWithoutRBACCannotListPods(t *testing.T) {
	t.Parallel()
	c := kubetest.Env(t)
	admin := c.AdminClient(t)
	ns := createNamespace(t, c, "rbac", nil)
	ctx := context.Background()

	if c.Can(t, "alice", "list", "pods", "", ns) {
		t.Errorf("SubjectAccessReview: alice may list pods in %s with no RBAC", ns)
	}
	_, err := c.StudentClient(t, "alice").CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("alice lists pods with no RBAC: err = %v, want 403", err)
	}

	// Granted the aggregated "edit" role in that namespace, alice may, and
	// bob still may not: RBAC and the role aggregation controller both work.
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "alice-edit"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "alice"}},
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create role binding: %v", err)
	}
	waitFor(t, "alice may list pods", func(context.Context) (bool, error) {
		return c.Can(t, "alice", "list", "pods", "", ns), nil
	})
	if _, err := c.StudentClient(t, "alice").CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("alice lists pods with edit: %v", err)
	}
	if c.Can(t, "alice", "create", "pods", "exec", "default") {
		t.Errorf("alice may exec into pods in the default namespace")
	}
	if c.Can(t, "bob", "list", "pods", "", ns) {
		t.Errorf("bob may list pods in %s", ns)
	}
}

// A pod runs on the node only in a namespace that lets it on; the same pod
// elsewhere stays Pending, unschedulable for the node's taint.
func TestAPodRunsOnTheNodeOnlyWhereItsNamespaceLetsItOn(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Kubernetes node (ci/kube-up)")
	}
	t.Parallel()
	c := kubetest.Env(t)
	node := c.Node(t)
	admin := c.AdminClient(t)
	reg := registrytest.Start(t)
	image := reg.Ref("wm/busybox", "1")
	reg.Push(t, image, registrytest.BusyboxImage(t, map[string]string{"bin/sleep": registrytest.SymlinkPrefix + "busybox"}))
	allowed := createNamespace(t, c, "node", nil)
	c.AllowOnNode(t, allowed)
	other := createNamespace(t, c, "nonode", nil)
	ctx := context.Background()
	for _, ns := range []string{allowed, other} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "sleep"},
			Spec: corev1.PodSpec{
				AutomountServiceAccountToken:  new(false),
				TerminationGracePeriodSeconds: new(int64(1)),
				Containers: []corev1.Container{{
					Name: "main", Image: image, Command: []string{"sh", "-c", "echo up; exec sleep 3600"},
					Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
						corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi"),
					}},
				}},
			},
		}
		if _, err := admin.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod in %s: %v", ns, err)
		}
	}

	if pod := c.WaitRunning(t, allowed, "sleep", time.Minute); pod.Spec.NodeName != node {
		t.Errorf("the pod runs on %q, want %q", pod.Spec.NodeName, node)
	}
	waitFor(t, "the pod's output through the apiserver", func(ctx context.Context) (bool, error) {
		logs, err := admin.CoreV1().Pods(allowed).GetLogs("sleep", &corev1.PodLogOptions{}).DoRaw(ctx)
		return string(logs) == "up\n", err
	})
	waitFor(t, "the other pod to be unschedulable", func(ctx context.Context) (bool, error) {
		pod, err := admin.CoreV1().Pods(other).Get(ctx, "sleep", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
				return pod.Status.Phase == corev1.PodPending && pod.Spec.NodeName == "", nil
			}
		}
		return false, nil
	})
}

// createNamespace creates a namespace from c.Namespace, which deletes it at
// cleanup.
func createNamespace(t *testing.T, c *kubetest.Cluster, prefix string, labels map[string]string) string {
	t.Helper()
	name := c.Namespace(t, prefix)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.AdminClient(t).CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	return name
}

// gpuPod is a pod of one container asking gpus GPUs (none when 0). Its image
// is never pulled: the pod never leaves Pending unless its namespace is let
// on the node.
func gpuPod(name string, gpus int64) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "main",
			Image: "registry.invalid/wm/busybox:1",
		}}},
	}
	if gpus > 0 {
		pod.Spec.Containers[0].Resources.Limits = corev1.ResourceList{gpu: *resource.NewQuantity(gpus, resource.DecimalSI)}
	}
	return pod
}

// waitFor polls cond every 100 ms for up to 30 s.
func waitFor(t *testing.T, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ok, err := cond(ctx)
		cancel()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s (last error: %v)", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
