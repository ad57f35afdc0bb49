package gitlab

import (
	"errors"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/schema"
)

func TestThePlanNoteSaysWhatMergingWouldDo(t *testing.T) {
	quota := schema.Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi", Ports: 20}
	web := &core.ContainerSpec{Name: "alice_web", Image: "r/alice/web:abc", Running: true, Ports: []core.PortBinding{{Guest: 80, Host: 50001}}}
	db := &core.ContainerSpec{Name: "alice_db", Image: "r/alice/web:abc", Running: false, Ports: []core.PortBinding{{Guest: 5432}}}
	res := reconciler.Result{
		Revision: "abcdef0123456789",
		Plan: reconciler.Plan{Unchanged: 1, Actions: []reconciler.Action{
			{Kind: reconciler.ActionCreate, Resource: reconciler.Container, Name: "alice_db", Host: "h1", Spec: db},
			{Kind: reconciler.ActionRecreate, Resource: reconciler.Container, Name: "alice_web", Host: "h1", Spec: web},
			{Kind: reconciler.ActionCreate, Resource: reconciler.Pod, Name: "train", Pod: &core.PodSpec{Name: "train", Image: "r/alice/web:abc", GPUs: 1, CPUs: 4, MemoryBytes: 16 << 30, Restart: "Never"}},
			{Kind: reconciler.ActionRemove, Resource: reconciler.Container, Name: "alice_old", Host: "h1"},
			{Kind: reconciler.ActionRemove, Resource: reconciler.Pod, Name: "eval"},
			{Kind: reconciler.ActionRemove, Resource: reconciler.SIF, Name: "env"},
		}},
		OwnerUsage: core.Usage{Containers: 3, Pods: 1, GPUs: 1, CPUs: 2.5, MemoryBytes: 3 << 30, Ports: 2},
	}
	body := RenderPlan(res, nil, "main", quota)
	for _, want := range []string{
		PlanMarker, "plan for `abcdef012345`", "Merging into `main` would:",
		"| ➕ | create | container | `alice_db` | h1 | `r/alice/web:abc` | 5432 → new (stopped) |",
		"| 🔁 | recreate | container | `alice_web` | h1 | `r/alice/web:abc` | 80 → 50001 |",
		"| ➕ | create | pod | `train` | kubernetes | `r/alice/web:abc` | 1 GPU(s), 4 CPU(s), 16Gi, restart Never |",
		"| ➖ | remove | container | `alice_old` | h1 |  |  |",
		"| ➖ | remove | pod | `eval` | kubernetes |  |  |",
		"| ➖ | remove | sif | `env` | artifacts |  |  |",
		"1 other container(s), pod(s) or SIF(s) stay as they are.",
		"3 of 5 containers, 1 of 5 pods, 1 of 1 GPUs, 2.5 of 8 CPUs, 3Gi of 32Gi memory, 2 of 20 host ports",
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
