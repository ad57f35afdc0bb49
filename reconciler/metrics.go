package reconciler

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/whalemountain/wm/reconciler/core"
)

// Metrics are what the reconciler tells Prometheus: how long each step of
// a pass takes, how passes end and why, how deep the work queue is, what
// each owner holds where, and how the admins' schedules run. Everything
// comes from what passes already know (their own timings and the state
// they record): a scrape never calls an engine. Label values are bounded:
// step names, outcomes and reasons are constants, hosts come from the
// server config, and owners are the students' account names; no label
// ever carries a repo key, a message or anything else a student writes.
//
// The metrics, by name (Prometheus conventions: base units, counters in
// _total):
//
//	wm_pass_step_duration_seconds{step}      histogram; step as in reconcile.go (fetch source, parse wm.yaml, ...)
//	wm_passes_total{outcome,reason}          counter; outcome Ready, NotReady, Waiting, Stalled or Transient,
//	                                         reason one of package core's (Applied, WaitingForImage, ...)
//	wm_queue_depth                           gauge; repos waiting for a worker (WatchLoop)
//	wm_passes_in_flight                      gauge; passes and retirements under way (WatchLoop)
//	wm_owner_resources{owner,host,kind}      gauge; kind container (host: its Docker host), pod (host:
//	                                         kubernetes) or sif (host: artifacts)
//	wm_owner_gpus{owner,host}                gauge; GPUs held by running containers (host: their Docker
//	                                         host) and by pods not done (host: kubernetes)
//	wm_schedule_runs_total{schedule,outcome} counter; ScheduleRun
//
// A nil *Metrics records nothing, so that wm reconcile, wm plan and tests
// run without one.
type Metrics struct {
	steps     *prometheus.HistogramVec
	passes    *prometheus.CounterVec
	schedules *prometheus.CounterVec
	reg       prometheus.Registerer

	// held is what each repo holds as its last pass recorded (or as the
	// store said at start-up, Seed), by repo key; wm_owner_resources and
	// wm_owner_gpus sum it by owner when scraped.
	mu   sync.Mutex
	held map[string]holding
}

// Descriptions of the gauges a scrape computes from Metrics.held.
var (
	ownerResourcesDesc = prometheus.NewDesc("wm_owner_resources",
		"Containers, pods and SIFs of each owner, by kind and where they are (a container's Docker host, kubernetes for a pod, artifacts for a SIF), as the last pass of each repo found them.",
		[]string{"owner", "host", "kind"}, nil)
	ownerGPUsDesc = prometheus.NewDesc("wm_owner_gpus",
		"GPUs each owner holds: by their running containers, per Docker host, and by their pods that are not done, as host kubernetes; as the last pass of each repo found them.",
		[]string{"owner", "host"}, nil)
)

// StepBuckets are the buckets of wm_pass_step_duration_seconds: a step
// takes from a millisecond (parse wm.yaml) to minutes (pull images, build
// SIFs), up to poll.passTimeout.
var StepBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// NewMetrics makes the reconciler's metrics and registers them with reg
// (nil: registered nowhere, for tests that read them directly).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wm_pass_step_duration_seconds",
			Help:    "Time each step of a reconcile pass took (wm plan's and merge-request plans' steps are not counted).",
			Buckets: StepBuckets,
		}, []string{"step"}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wm_passes_total",
			Help: "Reconcile passes by outcome (Ready, NotReady, Waiting, Stalled, Transient) and the reason the repo's Ready condition got.",
		}, []string{"outcome", "reason"}),
		schedules: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wm_schedule_runs_total",
			Help: "Runs of the admins' schedules (server config schedules), by schedule and outcome (succeeded, failed, skipped).",
		}, []string{"schedule", "outcome"}),
		reg:  reg,
		held: map[string]holding{},
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.steps, m.passes, m.schedules, (*heldCollector)(m)} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register the reconciler's metrics: %w", err)
		}
	}
	return m, nil
}

// SetMetrics has r's passes (not its plans) recorded in m. Call it before
// the first pass; nil records nothing.
func (r *Reconciler) SetMetrics(m *Metrics) {
	r.metrics = m
	if m == nil {
		return
	}
	// Every step's series exists from the start, so that a step that has
	// not run yet shows as 0 rather than nothing.
	for _, s := range r.steps(false) {
		m.steps.WithLabelValues(s.name)
	}
}

// Metrics returns what SetMetrics gave r (nil when nothing): the
// schedules count their runs in it (ScheduleRun; nil counts nothing).
func (r *Reconciler) Metrics() *Metrics { return r.metrics }

// WatchLoop registers wm_queue_depth and wm_passes_in_flight, read from l
// when scraped.
func (m *Metrics) WatchLoop(l *Loop) error {
	if m == nil || m.reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wm_queue_depth",
			Help: "Repos waiting on the work queue for a worker (those whose next pass is not due yet left out).",
		}, func() float64 { return float64(l.QueueDepth()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "wm_passes_in_flight",
			Help: "Passes and retirements of repos under way.",
		}, func() float64 { return float64(l.InFlight()) }),
	} {
		if err := m.reg.Register(c); err != nil {
			return fmt.Errorf("register the loop's metrics: %w", err)
		}
	}
	return nil
}

// ScheduleOutcome is how one run of a schedule ended: the outcome label
// of wm_schedule_runs_total.
type ScheduleOutcome string

// The outcomes of a schedule's run.
const (
	ScheduleSucceeded ScheduleOutcome = "succeeded"
	ScheduleFailed    ScheduleOutcome = "failed"
	// ScheduleSkipped: the run was not made, as when the one before it is
	// still under way.
	ScheduleSkipped ScheduleOutcome = "skipped"
)

// ScheduleRecorder is told every run of a schedule; *Metrics is one. The
// schedule is the job's name in the server config (resync, semester,
// idleCull, cleanup: a fixed set, never anything a student writes).
type ScheduleRecorder interface {
	ScheduleRun(schedule string, outcome ScheduleOutcome)
}

var _ ScheduleRecorder = (*Metrics)(nil)

// ScheduleRun counts one run of schedule in wm_schedule_runs_total.
func (m *Metrics) ScheduleRun(schedule string, outcome ScheduleOutcome) {
	if m == nil {
		return
	}
	m.schedules.WithLabelValues(schedule, string(outcome)).Inc()
}

// Seed takes what the store recorded of each repo for what it holds,
// until its first pass: the gauges are right from the start, including
// for a repo whose passes change nothing (a revision that stays stalled).
func (m *Metrics) Seed(states []core.RepoState) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range states {
		m.held[s.Key] = holdingOf(s, nil)
	}
}

// step records how long one step of a pass took.
func (m *Metrics) step(dryRun bool, name string, began time.Time) {
	if m == nil || dryRun {
		return
	}
	m.steps.WithLabelValues(name).Observe(time.Since(began).Seconds())
}

// pass records how a pass ended and what the repo holds after it, as its
// state says once recorded (or as it was, when the pass changed nothing).
func (m *Metrics) pass(p *pass, err error) {
	if m == nil || p.dryRun {
		return
	}
	outcome, reason := passOutcome(p, err)
	m.passes.WithLabelValues(outcome, string(reason)).Inc()
	var pods []core.PodSpec
	if p.resolved {
		pods = p.pods
	}
	h := holdingOf(p.state, pods)
	m.mu.Lock()
	m.held[p.repo.Key] = h
	m.mu.Unlock()
}

// forget drops a retired repo from what owners hold.
func (m *Metrics) forget(key string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.held, key)
	m.mu.Unlock()
}

// passOutcome is the outcome and reason labels of a pass: a failure's
// from Classify; a success's outcome from the pass's readiness, its
// reason the one the repo's Ready condition was given.
func passOutcome(p *pass, err error) (string, core.Reason) {
	if err != nil {
		o, r := Classify(err)
		return o.String(), r
	}
	reason := core.Applied
	if c := p.state.Condition(core.Ready); c != nil && c.Reason != "" {
		reason = c.Reason
	}
	if p.res.Ready {
		return "Ready", reason
	}
	return "NotReady", reason
}

// Where pods and SIFs are, as the host label says it (Action.Where).
const (
	podsHost = "kubernetes"
	sifsHost = "artifacts"
)

// holding is what one repo holds: its resources by kind and host, and
// its GPUs by host.
type holding struct {
	owner string
	count map[[2]string]int // {kind, host} → how many
	gpus  map[string]int    // host → GPUs
}

// holdingOf reads what a repo holds from its recorded state: its
// containers that exist (the state of one whose host did not answer is
// "unknown": it is counted where it was), its pods the cluster admitted,
// its SIFs. The GPUs of its pods are those of pods, the specs its pass
// resolved when given; without them (start-up, a pass that stopped
// early) they are what the applied revision's usage counts beyond its
// containers', when a pod is not done.
func holdingOf(s core.RepoState, pods []core.PodSpec) holding {
	h := holding{owner: s.Owner, count: map[[2]string]int{}, gpus: map[string]int{}}
	containerGPUs := 0
	for _, c := range s.Containers {
		if c.State == "" {
			continue // declared, not made (yet)
		}
		h.count[[2]string{string(Container), c.Host}]++
		if len(c.GPUs) > 0 {
			h.gpus[c.Host] += len(c.GPUs)
			containerGPUs += len(c.GPUs)
		}
	}
	podGPUs, busy := 0, false
	for _, pod := range s.Pods {
		if pod.Phase == "Refused" {
			continue // never made
		}
		h.count[[2]string{string(Pod), podsHost}]++
		if pod.Phase == "Succeeded" || pod.Phase == "Failed" {
			continue
		}
		busy = true
		if i := slices.IndexFunc(pods, func(p core.PodSpec) bool { return p.Name == pod.Name }); i >= 0 {
			podGPUs += pods[i].GPUs
		}
	}
	if busy && pods == nil {
		podGPUs = max(0, s.Usage.GPUs-containerGPUs)
	}
	if podGPUs > 0 {
		h.gpus[podsHost] = podGPUs
	}
	if n := len(s.SIFs); n > 0 {
		h.count[[2]string{string(SIF), sifsHost}] = n
	}
	return h
}

// heldCollector is Metrics as the collector of wm_owner_resources and
// wm_owner_gpus.
type heldCollector Metrics

// Describe sends the two gauges' descriptions.
func (c *heldCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- ownerResourcesDesc
	ch <- ownerGPUsDesc
}

// Collect sums what each repo holds by owner, in memory.
func (c *heldCollector) Collect(ch chan<- prometheus.Metric) {
	count := map[[3]string]int{} // {owner, host, kind}
	gpus := map[[2]string]int{}  // {owner, host}
	c.mu.Lock()
	for _, h := range c.held {
		for k, n := range h.count {
			count[[3]string{h.owner, k[1], k[0]}] += n
		}
		for host, n := range h.gpus {
			gpus[[2]string{h.owner, host}] += n
		}
	}
	c.mu.Unlock()
	for k, n := range count {
		ch <- prometheus.MustNewConstMetric(ownerResourcesDesc, prometheus.GaugeValue, float64(n), k[0], k[1], k[2])
	}
	for k, n := range gpus {
		ch <- prometheus.MustNewConstMetric(ownerGPUsDesc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}
