package gitlab

import (
	"errors"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

func TestThePlanNoteSaysWhatMergingWouldDo(t *testing.T) {
	quota := schema.Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi"}
	web := &docker.Spec{Name: "alice-web", Image: "r/alice/web:abc", Running: true, Ports: []docker.PortBinding{{Guest: 80, Host: 50001}}}
	db := &docker.Spec{Name: "alice-db", Image: "r/alice/web:abc", Running: false, Ports: []docker.PortBinding{{Guest: 5432}}}
	res := reconciler.Result{
		Revision: "abcdef0123456789",
		Plan: reconciler.Plan{Unchanged: 1, Actions: []reconciler.Action{
			{Kind: reconciler.ActionCreate, Name: "alice-db", Host: "h1", Spec: db},
			{Kind: reconciler.ActionRecreate, Name: "alice-web", Host: "h1", Spec: web},
			{Kind: reconciler.ActionRemove, Name: "alice-old", Host: "h1"},
		}},
		DeclaredPods: []kube.Pod{{Name: "train", Image: "r/alice/web:abc", GPUs: 1, CPUs: 4, MemoryBytes: 16 << 30, Restart: "Never"}},
		OwnerUsage:   store.Usage{Containers: 3, GPUs: 1, CPUs: 2.5, MemoryBytes: 3 << 30},
	}
	body := RenderPlan(res, nil, "main", quota)
	for _, want := range []string{
		PlanMarker, "plan for `abcdef012345`", "Merging into `main` would:",
		"| ➕ | create | `alice-db` | h1 | `r/alice/web:abc` | 5432 → new (stopped) |",
		"| 🔁 | recreate | `alice-web` | h1 | `r/alice/web:abc` | 80 → 50001 |",
		"| ➖ | remove | `alice-old` | h1 |  |  |",
		"1 other container(s) stay as they are.",
		"| `train` | `r/alice/web:abc` | 1 | 4 | 16Gi | Never |",
		"3 of 5 containers, 1 of 1 GPUs, 2.5 of 8 CPUs, 3Gi of 32Gi memory",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("note lacks %q:\n%s", want, body)
		}
	}
	bad := RenderPlan(reconciler.Result{Revision: "abc"}, errors.New("wm.yaml:3:1: x: boom"), "main", quota)
	if !strings.Contains(bad, "cannot be rolled out") || !strings.Contains(bad, "wm.yaml:3:1: x: boom") {
		t.Errorf("error note:\n%s", bad)
	}
}
