package kube_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/schema"
)

// mutations counts the requests that change something (everything but
// GET, LIST and WATCH).
type mutations struct{ n atomic.Int64 }

func (m *mutations) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			m.n.Add(1)
		}
		return rt.RoundTrip(r)
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// setup returns a backend with its own namespace prefix (so tests never
// share namespaces) acting as admin, and a counter of its mutations.
func setup(t *testing.T, cluster *kubetest.Cluster) (*kube.Backend, *mutations, string) {
	t.Helper()
	prefix := cluster.Namespace(t, "wmt") + "-"
	m := &mutations{}
	cfg := rest.CopyConfig(cluster.AdminConfig())
	cfg.Wrap(m.wrap)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	set := kube.Settings{
		Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu",
			GPUNodeSelector: map[string]string{"gpu": "true"}, GPUTolerations: []schema.Toleration{{Key: "nvidia.com/gpu", Operator: "Exists", Effect: "NoSchedule"}}},
		Quota:    schema.Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi"},
		Defaults: schema.Limits{CPUs: 1, Memory: "2Gi"},
	}
	b := kube.New(client, set)
	for _, s := range cluster.Students() {
		ns := set.Namespace(s)
		t.Cleanup(func() {
			_ = cluster.AdminClient(t).CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		})
	}
	return b, m, prefix
}

func pod(owner, name string, gpus int) core.PodSpec {
	return core.PodSpec{Owner: owner, Repo: owner + "/ml", Name: name, Image: "registry.test/" + owner + "/ml:abc",
		Command: []string{"python", "train.py"}, GPUs: gpus, CPUs: 1, MemoryBytes: 1 << 30, Restart: "Never"}
}

func TestAStudentGetsANamespaceWithRBACQuotaAndPods(t *testing.T) {
	cluster := kubetest.Env(t)
	b, m, prefix := setup(t, cluster)
	ctx := context.Background()
	admin := cluster.AdminClient(t)
	students := cluster.Students()
	alice, bob := students[0], students[1]

	for _, owner := range []string{alice, bob} {
		if n, err := b.EnsureOwner(ctx, owner); err != nil || n != 6 {
			t.Fatalf("ensure %s: %d objects applied, %v", owner, n, err)
		}
	}
	nsA, nsB := prefix+alice, prefix+bob
	waitForQuota(t, admin, nsA)
	waitForQuota(t, admin, nsB)

	t.Run("a resync with nothing changed sends no mutating request", func(t *testing.T) {
		before := m.n.Load()
		if n, err := b.EnsureOwner(ctx, alice); err != nil || n != 0 {
			t.Fatalf("resync applied %d, %v", n, err)
		}
		if got := m.n.Load() - before; got != 0 {
			t.Errorf("%d mutating requests on a no-op resync", got)
		}
	})

	t.Run("the namespace enforces Pod Security restricted", func(t *testing.T) {
		ns, err := admin.CoreV1().Namespaces().Get(ctx, nsA, metav1.GetOptions{})
		if err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" || ns.Labels[kube.LabelOwner] != alice {
			t.Fatalf("namespace %+v, %v", ns.Labels, err)
		}
	})

	train := pod(alice, "train", 1)
	if err := b.CheckPod(ctx, train, false); err != nil {
		t.Fatalf("check: %v", err)
	}
	if err := b.ApplyPod(ctx, train, false); err != nil {
		t.Fatalf("apply: %v", err)
	}

	t.Run("a pod is restricted-compliant, placed on GPU nodes and asks for its GPU", func(t *testing.T) {
		p, err := admin.CoreV1().Pods(nsA).Get(ctx, "train", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := p.Spec.Containers[0]
		tolerated := slices.ContainsFunc(p.Spec.Tolerations, func(t corev1.Toleration) bool { return t.Key == "nvidia.com/gpu" && t.Effect == "NoSchedule" })
		if q := c.Resources.Limits["nvidia.com/gpu"]; q.Value() != 1 || p.Spec.NodeSelector["gpu"] != "true" || !tolerated {
			t.Errorf("gpu placement: %+v %+v", c.Resources, p.Spec)
		}
		if sc := c.SecurityContext; sc == nil || *sc.AllowPrivilegeEscalation || !*sc.RunAsNonRoot || sc.Capabilities.Drop[0] != "ALL" {
			t.Errorf("security context: %+v", sc)
		}
		if p.Spec.RestartPolicy != corev1.RestartPolicyNever || c.Args[0] != "python" || p.Status.Phase != corev1.PodPending {
			t.Errorf("pod: %s %v %s", p.Spec.RestartPolicy, c.Args, p.Status.Phase)
		}
		if p.ManagedFields[0].Manager != kube.FieldManager {
			t.Errorf("field manager %q", p.ManagedFields[0].Manager)
		}
	})

	t.Run("a student may get, log and exec their own pods, and not another's", func(t *testing.T) {
		for _, tc := range []struct {
			verb, sub, ns string
			want          bool
		}{
			{"get", "", nsA, true}, {"list", "", nsA, true}, {"watch", "", nsA, true},
			{"get", "log", nsA, true}, {"create", "exec", nsA, true}, {"get", "exec", nsA, true},
			{"delete", "", nsA, false}, {"create", "", nsA, false},
			{"get", "", nsB, false}, {"get", "log", nsB, false}, {"create", "exec", nsB, false},
		} {
			if got := cluster.Can(t, alice, tc.verb, "pods", tc.sub, tc.ns); got != tc.want {
				t.Errorf("%s %s pods/%s in %s: %v, want %v", alice, tc.verb, tc.sub, tc.ns, got, tc.want)
			}
		}
		as := cluster.StudentClient(t, alice)
		if list, err := as.CoreV1().Pods(nsA).List(ctx, metav1.ListOptions{}); err != nil || len(list.Items) != 1 {
			t.Errorf("alice lists her pods: %v", err)
		}
		if _, err := as.CoreV1().Pods(nsB).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("alice lists bob's pods: %v", err)
		}
	})

	t.Run("a student may not change their quota, role or binding", func(t *testing.T) {
		for _, res := range []string{"resourcequotas", "roles", "rolebindings", "limitranges", "networkpolicies", "namespaces"} {
			for _, verb := range []string{"update", "patch", "delete"} {
				if cluster.Can(t, alice, verb, res, "", nsA) {
					t.Errorf("alice may %s %s", verb, res)
				}
			}
		}
		as := cluster.StudentClient(t, alice)
		q, err := admin.CoreV1().ResourceQuotas(nsA).Get(ctx, kube.QuotaName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		q.Spec.Hard["requests.nvidia.com/gpu"] = q.Spec.Hard["pods"]
		if _, err := as.CoreV1().ResourceQuotas(nsA).Update(ctx, q, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("alice updated her quota: %v", err)
		}
	})

	t.Run("a pod over the GPU quota is refused by the check and by the apply, and says why", func(t *testing.T) {
		more := pod(alice, "more", 1)
		for _, tc := range []struct {
			verb string
			call func() error
		}{
			{"CheckPod", func() error { return b.CheckPod(ctx, more, false) }},
			{"ApplyPod", func() error { return b.ApplyPod(ctx, more, false) }},
		} {
			err := tc.call()
			if !errors.Is(err, kube.ErrRefused) || !errors.Is(err, fault.Refused) ||
				!strings.Contains(err.Error(), "pods.more: refused by your quota") || !strings.Contains(err.Error(), "nvidia.com/gpu") {
				t.Errorf("%s: %v, want a quota refusal of pods.more that names the GPUs", tc.verb, err)
			}
		}
		if names := ownerPodNames(t, b, alice); !slices.Equal(names, []string{"train"}) {
			t.Errorf("alice's pods after the refusals: %v, want [train]", names)
		}
	})

	t.Run("a privileged pod is refused by Pod Security", func(t *testing.T) {
		priv := true
		_, err := admin.CoreV1().Pods(nsA).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "root"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x",
				SecurityContext: &corev1.SecurityContext{Privileged: &priv}}}},
		}, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
			t.Errorf("privileged pod: %v", err)
		}
	})

	t.Run("a changed pod is recreated, an undeclared one deleted, another repo's left alone", func(t *testing.T) {
		other := pod(alice, "notebook", 0)
		other.Repo = alice + "/other"
		if err := b.ApplyPod(ctx, other, false); err != nil {
			t.Fatal(err)
		}
		live := func(name string) *corev1.Pod {
			t.Helper()
			p, err := admin.CoreV1().Pods(nsA).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("pod %s: %v", name, err)
			}
			return p
		}
		old := live("train")
		changed := pod(alice, "train", 1)
		changed.Env = map[string]string{"EPOCHS": "3"}
		if b.PodHash(changed) == b.PodHash(train) {
			t.Fatal("a changed pod has the hash of the old one: the plan would not recreate it")
		}
		// The old pod still holds the only GPU: the check judges the quota
		// as it will be once the old pod is gone.
		if err := b.CheckPod(ctx, changed, true); err != nil {
			t.Fatalf("check the replacement: %v", err)
		}
		if err := b.ApplyPod(ctx, changed, true); err != nil {
			t.Fatalf("recreate: %v", err)
		}
		if p := live("train"); p.UID == old.UID || p.Annotations[kube.AnnotationHash] != b.PodHash(changed) {
			t.Errorf("train was not recreated from the change: uid %s (was %s), hash %q", p.UID, old.UID, p.Annotations[kube.AnnotationHash])
		}

		if err := b.DeletePod(ctx, alice, alice+"/ml", "notebook"); err == nil || !strings.Contains(err.Error(), "left alone") {
			t.Errorf("alice/ml deletes the pod of alice/other: %v, want it left alone", err)
		}
		if err := b.DeletePod(ctx, alice, alice+"/ml", "train"); err != nil {
			t.Fatalf("delete: %v", err)
		}
		if err := b.DeletePod(ctx, alice, alice+"/ml", "train"); err != nil {
			t.Errorf("deleting a pod already gone: %v", err)
		}
		if p := live("notebook"); p.DeletionTimestamp != nil {
			t.Error("another repo's pod is going")
		}

		before := m.n.Load()
		pods, err := b.OwnerPods(ctx, alice)
		if err != nil || len(pods) != 1 || pods[0].Name != "notebook" || pods[0].Repo != alice+"/other" || pods[0].Hash != b.PodHash(other) {
			t.Errorf("OwnerPods = %+v, %v; want the notebook alone, with the hash of its spec (a resync pairs it and sends nothing)", pods, err)
		}
		if st, err := b.PodStatuses(ctx, alice, alice+"/other"); err != nil || len(st) != 1 || st[0].Name != "notebook" || st[0].Phase != "Pending" {
			t.Errorf("PodStatuses of alice/other = %+v, %v", st, err)
		}
		if st, err := b.PodStatuses(ctx, alice, alice+"/ml"); err != nil || len(st) != 0 {
			t.Errorf("PodStatuses of alice/ml = %+v, %v; want none", st, err)
		}
		if got := m.n.Load() - before; got != 0 {
			t.Errorf("reading the pods back sent %d mutating requests", got)
		}
	})
}

// waitForQuota waits until the quota controller has written the status of
// a new ResourceQuota: until then admission refuses every pod.
func waitForQuota(t *testing.T, admin kubernetes.Interface, ns string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := admin.CoreV1().ResourceQuotas(ns).Get(context.Background(), kube.QuotaName, metav1.GetOptions{})
		if err == nil && len(q.Status.Hard) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the quota of %s has no status: %v", ns, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
