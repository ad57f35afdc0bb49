package kube_test

import (
	"context"
	"errors"
	"maps"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/schema"
)

// otherInstance is the instance the tests set beside the default one.
const otherInstance = "wm-staging"

// asInstance is b's backend, acting as instance, on the same cluster and
// with the same namespace prefix.
func asInstance(t *testing.T, cluster *kubetest.Cluster, b *kube.Backend, instance string) *kube.Backend {
	t.Helper()
	set := b.Settings()
	set.Instance = instance
	return kube.New(cluster.AdminClient(t), set)
}

// ownerPodNames lists the names of owner's pods b reports.
func ownerPodNames(t *testing.T, b *kube.Backend, owner string) []string {
	t.Helper()
	got, err := b.OwnerPods(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range got {
		names = append(names, p.Name)
	}
	return names
}

func TestTwoInstancesOnOneClusterLeaveEachOtherAlone(t *testing.T) {
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	students := cluster.Students()
	alice, bob := students[0], students[1]
	def, _, prefix := setup(t, cluster)
	other := asInstance(t, cluster, def, otherInstance)

	if _, err := def.EnsureOwner(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := other.EnsureOwner(ctx, bob); err != nil {
		t.Fatal(err)
	}
	for owner, inst := range map[string]string{alice: core.DefaultInstance, bob: otherInstance} {
		n, err := admin.CoreV1().Namespaces().Get(ctx, prefix+owner, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Labels[kube.LabelInstance] != inst {
			t.Errorf("namespace %s has instance %q, want %q", n.Name, n.Labels[kube.LabelInstance], inst)
		}
	}
	waitForQuota(t, admin, prefix+alice)
	waitForQuota(t, admin, prefix+bob)
	if err := def.ApplyPod(ctx, pod(alice, "train", 0), false); err != nil {
		t.Fatal(err)
	}
	if err := other.ApplyPod(ctx, pod(bob, "train", 0), false); err != nil {
		t.Fatal(err)
	}
	p, err := admin.CoreV1().Pods(prefix+alice).Get(ctx, "train", metav1.GetOptions{})
	if err != nil || p.Labels[kube.LabelInstance] != core.DefaultInstance {
		t.Errorf("alice's pod: %v, instance label %q, want %q", err, p.Labels[kube.LabelInstance], core.DefaultInstance)
	}

	cases := []struct {
		name          string
		b             *kube.Backend
		owner, holder string
	}{
		{"another instance's namespace is a conflict to make, and nothing in it is listed, changed or removed", other, alice, core.DefaultInstance},
		{"the default instance leaves another instance's namespace alone just the same", def, bob, otherInstance},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := prefix + tc.owner
			before := snapshot(t, admin, ns)
			_, err := tc.b.EnsureOwner(ctx, tc.owner)
			wantNotOurs(t, "EnsureOwner", err, ns, tc.holder)
			if !errors.Is(err, fault.Conflict) {
				t.Errorf("EnsureOwner: %v, want fault.Conflict", err)
			}
			if names := ownerPodNames(t, tc.b, tc.owner); len(names) != 0 {
				t.Errorf("OwnerPods = %v, want none", names)
			}
			if st, err := tc.b.PodStatuses(ctx, tc.owner, tc.owner+"/ml"); err != nil || len(st) != 0 {
				t.Errorf("PodStatuses = %v, %v; want none", st, err)
			}
			// The other instance's pod train is neither replaced nor deleted.
			wantPodWritesRefused(t, tc.b, pod(tc.owner, "train", 0), "train", ns)
			wantNotOurs(t, "RemoveOwner", tc.b.RemoveOwner(ctx, tc.owner), ns)
			if after := snapshot(t, admin, ns); !maps.Equal(before, after) {
				t.Errorf("the namespace was written to:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	t.Run("each instance lists its own pods", func(t *testing.T) {
		if names := ownerPodNames(t, def, alice); len(names) != 1 || names[0] != "train" {
			t.Errorf("default instance: alice's pods %v, want [train]", names)
		}
		if names := ownerPodNames(t, other, bob); len(names) != 1 || names[0] != "train" {
			t.Errorf("other instance: bob's pods %v, want [train]", names)
		}
	})
}

func TestWhatWasMadeBeforeInstancesExistedIsTheDefaultInstances(t *testing.T) {
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	ctx := context.Background()
	carol := cluster.Students()[2]
	def, _, prefix := setup(t, cluster)
	other := asInstance(t, cluster, def, otherInstance)
	ns := prefix + carol
	// A namespace and a pod labelled as WhaleMountain labelled them before
	// the instance label.
	foreignNamespace(t, admin, ns, map[string]string{kube.LabelManagedBy: kube.ManagedByValue, kube.LabelOwner: carol}, carol)

	if names := ownerPodNames(t, other, carol); len(names) != 0 {
		t.Errorf("another instance lists %v, want none", names)
	}
	_, err := other.EnsureOwner(ctx, carol)
	wantNotOurs(t, "another instance's EnsureOwner", err, ns)
	if names := ownerPodNames(t, def, carol); len(names) != 1 || names[0] != "controller" {
		t.Errorf("the default instance lists %v, want the old pod", names)
	}
	if _, err := def.EnsureOwner(ctx, carol); err != nil {
		t.Errorf("the default instance does not adopt its old namespace: %v", err)
	}
}

func TestADownAPIServerIsUnreachable(t *testing.T) {
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "https://127.0.0.1:1", Timeout: 5e9})
	if err != nil {
		t.Fatal(err)
	}
	b := kube.New(client, kube.Settings{Kubernetes: schema.Kubernetes{NamespacePrefix: "wm-"}})
	ctx := context.Background()
	p := pod("alice", "train", 0)
	calls := []struct {
		name string
		call func() error
	}{
		{"EnsureOwner", func() error { _, err := b.EnsureOwner(ctx, "alice"); return err }},
		{"OwnerPods", func() error { _, err := b.OwnerPods(ctx, "alice"); return err }},
		{"PodStatuses", func() error { _, err := b.PodStatuses(ctx, "alice", "alice/ml"); return err }},
		{"CheckPod", func() error { return b.CheckPod(ctx, p, false) }},
		{"ApplyPod", func() error { return b.ApplyPod(ctx, p, false) }},
		{"DeletePod", func() error { return b.DeletePod(ctx, "alice", "alice/ml", "train") }},
		{"RemoveOwner", func() error { return b.RemoveOwner(ctx, "alice") }},
	}
	for _, c := range calls {
		t.Run(c.name+" says the cluster is unreachable", func(t *testing.T) {
			if err := c.call(); !errors.Is(err, fault.Unreachable) {
				t.Errorf("%s: %v, want fault.Unreachable", c.name, err)
			}
		})
	}
}

func TestEverySentinelIsOfItsKind(t *testing.T) {
	cases := []struct {
		name      string
		err, kind error
	}{
		{"a refusal by admission is Refused: the student must change wm.yaml", kube.ErrRefused, fault.Refused},
		{"a quota without status yet is NotReady: try again shortly", kube.ErrQuotaNotReady, fault.NotReady},
		{"a namespace that is not this instance's for the owner is a Conflict", kube.ErrNamespaceNotOurs, fault.Conflict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := fault.Of(c.err); got != c.kind {
				t.Errorf("kind %v, want %v", got, c.kind)
			}
		})
	}
}
