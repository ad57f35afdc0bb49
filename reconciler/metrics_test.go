package reconciler

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/sif"
)

// stepCounts returns how many observations wm_pass_step_duration_seconds
// holds per step, and whether each has a positive sum once observed.
func stepCounts(t *testing.T, reg *prometheus.Registry) map[string]uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "wm_pass_step_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[label(m, "step")] = m.GetHistogram().GetSampleCount()
			if m.GetHistogram().GetSampleCount() > 0 && m.GetHistogram().GetSampleSum() <= 0 {
				t.Errorf("step %s: %d observations summing to %v", label(m, "step"), m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum())
			}
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestPassesAreMeasuredByStepCountedByReasonAndWhatOwnersHoldIsKept(t *testing.T) {
	w := newWorld(t)
	fake := sif.NewFake()
	w.rec.sif = fake
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	w.rec.SetMetrics(m)
	if n := len(stepCounts(t, reg)); n != len(w.rec.steps(false)) {
		t.Errorf("%d step series before any pass, want one per step (%d)", n, len(w.rec.steps(false)))
	}

	web := w.push("alice/web", `version: 1
containers:
  web: {image: self, ports: [8000]}
  train: {image: self, gpus: 1}
singularity:
  env: {image: self}
`)
	w.mustReconcileAfterCI(web, fake)
	other := w.push("alice/other", "version: 1\ncontainers:\n  db: {image: self, state: stopped}\n")
	w.mustReconcile(other)
	w.mustReconcile(w.push("bob/web", "version: 1\ncontainers:\n  web: {image: self}\n"))
	_, err = w.reconcile(w.push("carol/web", "version: 1\ncontainers: [oops]\n"))
	wantReason(t, err, Stalled, core.ValidationFailed)
	// A plan (wm plan, a merge request's note) is not a pass.
	if _, err := w.rec.Plan(context.Background(), web); err != nil {
		t.Fatal(err)
	}

	steps := stepCounts(t, reg)
	for step, want := range map[string]uint64{"fetch source": 4, "parse wm.yaml": 4, "list containers": 3, "apply containers": 3, "build SIFs": 3, "check health": 3} {
		if steps[step] != want {
			t.Errorf("step %q observed %d times, want %d", step, steps[step], want)
		}
	}
	for _, tc := range []struct{ outcome, reason string }{{"Ready", "Applied"}, {"Stalled", "ValidationFailed"}} {
		want := map[string]float64{"Applied": 3, "ValidationFailed": 1}[tc.reason]
		if got := testutil.ToFloat64(m.passes.WithLabelValues(tc.outcome, tc.reason)); got != want {
			t.Errorf("wm_passes_total{outcome=%s,reason=%s} = %v, want %v", tc.outcome, tc.reason, got, want)
		}
	}
	held := func(want string) {
		t.Helper()
		err := testutil.CollectAndCompare((*heldCollector)(m), strings.NewReader(want), "wm_owner_resources", "wm_owner_gpus")
		if err != nil {
			t.Error(err)
		}
	}
	const header = `
# HELP wm_owner_gpus GPUs each owner holds: by their running containers, per Docker host, and by their pods that are not done, as host kubernetes; as the last pass of each repo found them.
# TYPE wm_owner_gpus gauge
# HELP wm_owner_resources Containers, pods and SIFs of each owner, by kind and where they are (a container's Docker host, kubernetes for a pod, artifacts for a SIF), as the last pass of each repo found them.
# TYPE wm_owner_resources gauge
`
	held(header + `
wm_owner_gpus{host="h1",owner="alice"} 1
wm_owner_resources{host="artifacts",kind="sif",owner="alice"} 1
wm_owner_resources{host="h1",kind="container",owner="alice"} 3
wm_owner_resources{host="h1",kind="container",owner="bob"} 1
`)

	// alice's other repo goes: what it held goes from her count.
	if _, err := w.rec.Retire(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	// A pass that dropped the GPU container.
	w.push("alice/web", "version: 1\ncontainers:\n  web: {image: self, ports: [8000]}\nsingularity:\n  env: {image: self}\n")
	w.mustReconcileAfterCI(web, fake)
	held(header + `
wm_owner_resources{host="artifacts",kind="sif",owner="alice"} 1
wm_owner_resources{host="h1",kind="container",owner="alice"} 1
wm_owner_resources{host="h1",kind="container",owner="bob"} 1
`)
}

func TestWhatARepoHoldsIsReadFromItsState(t *testing.T) {
	running := core.ContainerStatus{Name: "web", Host: "h1", State: "running"}
	gpu := core.ContainerStatus{Name: "train", Host: "h2", State: "running", GPUs: []string{"0", "1"}}
	stopped := core.ContainerStatus{Name: "db", Host: "h1", State: "exited"}
	missing := core.ContainerStatus{Name: "new", Host: "h1"}
	unknown := core.ContainerStatus{Name: "far", Host: "h3", State: "unknown"}
	for _, tc := range []struct {
		name  string
		state core.RepoState
		pods  []core.PodSpec
		count map[[2]string]int
		gpus  map[string]int
	}{
		{"containers count where they are, a missing one not at all, one on a host that did not answer where it was",
			core.RepoState{Containers: []core.ContainerStatus{running, gpu, stopped, missing, unknown}}, nil,
			map[[2]string]int{{"container", "h1"}: 2, {"container", "h2"}: 1, {"container", "h3"}: 1}, map[string]int{"h2": 2}},
		{"pods count unless refused, and hold their specs' GPUs while not done",
			core.RepoState{Pods: []core.PodStatus{{Name: "a", Phase: "Running"}, {Name: "b", Phase: "Succeeded"}, {Name: "c", Phase: "Refused"}, {Name: "d", Phase: "Pending"}}},
			[]core.PodSpec{{Name: "a", GPUs: 1}, {Name: "b", GPUs: 4}, {Name: "c", GPUs: 8}, {Name: "d", GPUs: 2}},
			map[[2]string]int{{"pod", "kubernetes"}: 3}, map[string]int{"kubernetes": 3}},
		{"without the specs, pods hold what the usage counts beyond the containers' GPUs",
			core.RepoState{Containers: []core.ContainerStatus{gpu}, Pods: []core.PodStatus{{Name: "a", Phase: "Running"}}, Usage: core.Usage{GPUs: 3}}, nil,
			map[[2]string]int{{"container", "h2"}: 1, {"pod", "kubernetes"}: 1}, map[string]int{"h2": 2, "kubernetes": 1}},
		{"without the specs, finished pods hold nothing",
			core.RepoState{Pods: []core.PodStatus{{Name: "a", Phase: "Failed"}}, Usage: core.Usage{GPUs: 3}}, nil,
			map[[2]string]int{{"pod", "kubernetes"}: 1}, map[string]int{}},
		{"SIFs count in the artifacts",
			core.RepoState{SIFs: []core.SIFStatus{{Name: "a"}, {Name: "b"}}}, nil,
			map[[2]string]int{{"sif", "artifacts"}: 2}, map[string]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := holdingOf(tc.state, tc.pods)
			if !equalMaps(h.count, tc.count) || !equalMaps(h.gpus, tc.gpus) {
				t.Errorf("got %v %v, want %v %v", h.count, h.gpus, tc.count, tc.gpus)
			}
		})
	}
}

func equalMaps[K comparable](a, b map[K]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestWhatTheStoreRecordedIsHeldUntilTheFirstPass(t *testing.T) {
	m, err := NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Seed([]core.RepoState{
		{Key: "alice/web", Owner: "alice", Containers: []core.ContainerStatus{{Host: "h1", State: "running", GPUs: []string{"0"}}}},
		{Key: "alice/ml", Owner: "alice", Containers: []core.ContainerStatus{{Host: "h1", State: "exited"}}},
	})
	err = testutil.CollectAndCompare((*heldCollector)(m), strings.NewReader(`
# HELP wm_owner_gpus GPUs each owner holds: by their running containers, per Docker host, and by their pods that are not done, as host kubernetes; as the last pass of each repo found them.
# TYPE wm_owner_gpus gauge
wm_owner_gpus{host="h1",owner="alice"} 1
`), "wm_owner_gpus")
	if err != nil {
		t.Error(err)
	}
	if got := testutil.CollectAndCount((*heldCollector)(m), "wm_owner_resources"); got != 1 {
		t.Errorf("%d wm_owner_resources series, want 1 (alice on h1)", got)
	}
}

func TestScheduleRunsAreCountedByScheduleAndOutcome(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	var rec ScheduleRecorder = m
	rec.ScheduleRun("resync", ScheduleSucceeded)
	rec.ScheduleRun("resync", ScheduleSucceeded)
	rec.ScheduleRun("cleanup", ScheduleFailed)
	var none *Metrics
	none.ScheduleRun("resync", ScheduleFailed) // a server without metrics
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP wm_schedule_runs_total Runs of the admins' schedules (server config schedules), by schedule and outcome (succeeded, failed, skipped).
# TYPE wm_schedule_runs_total counter
wm_schedule_runs_total{outcome="failed",schedule="cleanup"} 1
wm_schedule_runs_total{outcome="succeeded",schedule="resync"} 2
`), "wm_schedule_runs_total")
	if err != nil {
		t.Error(err)
	}
}

func TestTheReconcilersMetricsFollowPrometheusConventions(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	w.rec.SetMetrics(m)
	if err := m.WatchLoop(NewLoop(w.rec, repos(), time.Minute, 0, 1, slog.New(slog.DiscardHandler))); err != nil {
		t.Fatal(err)
	}
	// Every metric has a series to lint.
	m.ScheduleRun("resync", ScheduleSucceeded)
	m.passes.WithLabelValues("Ready", "Applied")
	m.Seed([]core.RepoState{{Key: "a/b", Owner: "a", Containers: []core.ContainerStatus{{Host: "h1", State: "running", GPUs: []string{"0"}}}}})
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n < 8 {
		t.Errorf("%d series linted (%v)", n, err)
	}
}
