package reconciler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/schema"
)

const trainPod = `version: 1
pods:
  train:
    image: self
    command: ["python", "train.py"]
    gpus: 1
    cpus: 2
    memory: 4Gi
    restart: OnFailure
`

func TestPodsWithoutAClusterAreAnAdminMatter(t *testing.T) {
	w := newWorld(t)
	_, err := w.reconcile(w.push("alice/ml", trainPod))
	wantReason(t, err, Stalled, core.NoKubernetes)
}

// TestAOneGPUPodOnARealControlPlane: a wm.yaml with a 1-GPU pod produces
// the student's namespace, RBAC, quota and the pod; a second GPU pod is
// refused by the quota and the status says so.
func TestAOneGPUPodOnARealControlPlane(t *testing.T) {
	cluster := kubetest.Env(t)
	prefix := cluster.Namespace(t, "wmr") + "-"
	student := cluster.Students()[0]
	// The prune limit counts the containers and pods it sees: here the
	// student's one pod is all there is.
	w := newWorld(t, func(c *schema.ServerConfig) { c.Policy.MaxPrunePercent = 100 })
	backend := kube.New(cluster.AdminClient(t), kube.Settings{
		Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
		Quota:      w.cfg.Policy.Quota, Defaults: w.cfg.Policy.Defaults,
	})
	w.rec.cluster = backend
	ns := prefix + student
	t.Cleanup(func() {
		_ = cluster.AdminClient(t).CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})

	repo := w.push(student+"/ml", trainPod)
	res, err := w.reconcileWhenQuotaReady(repo)
	if err != nil {
		t.Fatalf("pass: %v", err)
	}
	// No kubelet runs here: the pod is admitted and stays Pending.
	if res.Ready || len(res.Pods) != 1 || res.Pods[0].Phase != "Pending" || !strings.Contains(res.Message, "pod train: pending") {
		t.Errorf("result: ready %v, pods %+v, message %q", res.Ready, res.Pods, res.Message)
	}
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Get(ctx, kube.RoleName, metav1.GetOptions{}); err != nil {
		t.Error(err)
	}
	if q, err := admin.CoreV1().ResourceQuotas(ns).Get(ctx, kube.QuotaName, metav1.GetOptions{}); err != nil || q.Spec.Hard.Name("requests.nvidia.com/gpu", "").Value() != 1 {
		t.Errorf("quota: %v", err)
	}
	p, err := admin.CoreV1().Pods(ns).Get(ctx, "train", metav1.GetOptions{})
	if err != nil || p.Spec.RestartPolicy != "OnFailure" || p.Spec.Containers[0].Image != testRegistry+"/"+student+"/ml:"+res.Revision {
		t.Fatalf("pod: %+v, %v", p, err)
	}
	if !cluster.Can(t, student, "create", "pods", "exec", ns) {
		t.Error("the student cannot exec into their pod")
	}

	// One quota over Docker and Kubernetes: WhaleMountain refuses the
	// second GPU before the cluster is asked, and the first pod stays.
	w.push(student+"/ml", trainPod+"  second:\n    image: self\n    gpus: 1\n")
	_, err = w.reconcile(repo)
	wantReason(t, err, Stalled, core.QuotaExceeded)
	if !strings.Contains(err.Error(), "2 GPUs (quota 1)") {
		t.Errorf("message: %v", err)
	}
	st, _, _ := w.store.Repo(student + "/ml")
	if c := st.Condition(core.Stalled); c == nil || !strings.Contains(c.Message, "2 GPUs (quota 1)") {
		t.Errorf("status: %+v", st.Conditions)
	}
	if _, err := admin.CoreV1().Pods(ns).Get(ctx, "train", metav1.GetOptions{}); err != nil {
		t.Errorf("the running pod went with the refused change: %v", err)
	}

	// No pods any more: they go, the namespace stays (the admins decide).
	w.push(student+"/ml", "version: 1\n")
	if _, err := w.reconcile(repo); err != nil {
		t.Fatal(err)
	}
	if list, err := admin.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err != nil || len(list.Items) != 0 {
		t.Errorf("pods left: %v", err)
	}
	if _, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err != nil {
		t.Errorf("the namespace went without the admins' word: %v", err)
	}
	// With pruneNamespaces, it goes too.
	w.cfg.Kubernetes = &schema.Kubernetes{PruneNamespaces: true}
	w.push(student+"/ml", "version: 1\n# again\n")
	if _, err := w.reconcile(repo); err != nil {
		t.Fatal(err)
	}
	if n, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); err == nil && n.DeletionTimestamp == nil {
		t.Error("the namespace stays despite pruneNamespaces")
	}
}

// TestARefusedPodChangeLeavesTheOldPodRunningAndSaysWhy: a change the
// cluster will refuse is asked about (a server-side dry run) before the
// pod it replaces is deleted; the old pod stays, the status says why, and
// a plan that drops the pod shows its removal.
func TestARefusedPodChangeLeavesTheOldPodRunningAndSaysWhy(t *testing.T) {
	cluster := kubetest.Env(t)
	prefix := cluster.Namespace(t, "wmd") + "-"
	student := cluster.Students()[2]
	w := newWorld(t, func(c *schema.ServerConfig) { c.Policy.Quota.GPUs, c.Policy.MaxPrunePercent = 2, 100 })
	// The cluster's quota is stricter than WhaleMountain's own: only the
	// cluster can refuse the second GPU.
	strict := w.cfg.Policy.Quota
	strict.GPUs = 1
	w.rec.cluster = kube.New(cluster.AdminClient(t), kube.Settings{
		Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
		Quota:      strict, Defaults: w.cfg.Policy.Defaults,
	})
	ns := prefix + student
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}) })

	pod := func(gpus int) string {
		return fmt.Sprintf("version: 1\npods:\n  train: {image: self, gpus: %d, memory: 64Mi, cpus: 0.5}\n", gpus)
	}
	repo := w.push(student+"/ml", pod(1))
	if _, err := w.reconcileWhenQuotaReady(repo); err != nil {
		t.Fatalf("first pod: %v", err)
	}
	before, err := admin.CoreV1().Pods(ns).Get(ctx, "train", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	w.push(student+"/ml", pod(2))
	_, err = w.reconcile(repo)
	wantReason(t, err, Stalled, core.PodRefused)
	if !strings.Contains(err.Error(), "pods.train: refused by your quota") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("message: %v", err)
	}
	after, gerr := admin.CoreV1().Pods(ns).Get(ctx, "train", metav1.GetOptions{})
	if gerr != nil || after.UID != before.UID {
		t.Fatalf("the old pod did not stay: %v", gerr)
	}
	st, _, _ := w.store.Repo(repo.Key)
	if c := st.Condition(core.Stalled); c == nil || !strings.Contains(c.Message, "refused by your quota") || len(st.Pods) != 1 || st.Pods[0].Phase != "Pending" {
		t.Errorf("status: %+v, pods %+v", st.Conditions, st.Pods)
	}

	w.push(student+"/ml", "version: 1\n")
	plan, err := w.rec.Plan(ctx, repo)
	if err != nil || len(plan.Plan.Actions) != 1 || plan.Plan.Actions[0].Resource != Pod || plan.Plan.Actions[0].Kind != ActionRemove {
		t.Errorf("the plan of a commit that drops the pod: %+v, %v", plan.Plan.Actions, err)
	}
}

// TestAPodNameTwoReposOfOneOwnerDeclareStaysWithTheFirst: a pod's name is
// its name in the owner's one namespace, so a second repo of the owner
// declaring it is refused and the first repo's pod is left as it is.
func TestAPodNameTwoReposOfOneOwnerDeclareStaysWithTheFirst(t *testing.T) {
	cluster := kubetest.Env(t)
	prefix := cluster.Namespace(t, "wmn") + "-"
	student := cluster.Students()[1]
	w := newWorld(t, func(c *schema.ServerConfig) { c.Policy.Quota.GPUs = 2 })
	w.rec.cluster = kube.New(cluster.AdminClient(t), kube.Settings{
		Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
		Quota:      w.cfg.Policy.Quota, Defaults: w.cfg.Policy.Defaults,
	})
	ns := prefix + student
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}) })

	const pod = "version: 1\npods:\n  train: {image: self, memory: 64Mi, cpus: 0.5}\n"
	first := w.push(student+"/ml", pod)
	if _, err := w.reconcileWhenQuotaReady(first); err != nil {
		t.Fatalf("first repo: %v", err)
	}
	before, err := admin.CoreV1().Pods(ns).Get(ctx, "train", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.reconcile(w.push(student+"/other", pod))
	wantReason(t, err, Stalled, core.NameTaken)
	if !strings.Contains(err.Error(), "pods.train") || !strings.Contains(err.Error(), student+"/ml") {
		t.Errorf("message: %v", err)
	}
	after, err := admin.CoreV1().Pods(ns).Get(ctx, "train", metav1.GetOptions{})
	if err != nil || after.UID != before.UID || after.Annotations[kube.AnnotationRepo] != student+"/ml" {
		t.Errorf("the first repo's pod changed: %+v, %v", after.Annotations, err)
	}
}

// TestARepoWithoutPodsGoesOnWhileTheClusterIsDown: a cluster that cannot
// be reached stalls only repos that have pods there.
func TestARepoWithoutPodsGoesOnWhileTheClusterIsDown(t *testing.T) {
	w := newWorld(t)
	// A closed port: nothing answers there.
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: 2 * time.Second}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.rec.cluster = kube.New(client, kube.Settings{Kubernetes: schema.Kubernetes{NamespacePrefix: "wm-", GPUResource: "nvidia.com/gpu"}, Quota: w.cfg.Policy.Quota, Defaults: w.cfg.Policy.Defaults})
	w.mustReconcile(w.push("alice/web", webV1))
	_, err = w.reconcile(w.push("alice/ml", trainPod))
	wantReason(t, err, Waiting, core.ClusterUnreachable)
}

// reconcileWhenQuotaReady runs passes of repo until the new namespace's
// quota has been counted by its controller (until then admission refuses
// every pod, and the pass waits as the loop would), at most 30 seconds.
func (w *world) reconcileWhenQuotaReady(repo Repo) (Result, error) {
	w.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		res, err := w.reconcile(repo)
		if _, reason := Classify(err); reason != "QuotaNotReady" || time.Now().After(deadline) {
			return res, err
		}
	}
}
