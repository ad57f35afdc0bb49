package webhook

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// The outcome label of wm_webhook_requests_total: what the handler answered.
const (
	outcomeAccepted         = "accepted"           // 202, dispatched
	outcomeIgnored          = "ignored"            // 200, an event WhaleMountain does not act on
	outcomeDuplicate        = "duplicate"          // 200, a retry of a delivery already dispatched
	outcomeUnauthorized     = "unauthorized"       // 401, wrong or missing token or signature
	outcomeTooLarge         = "too_large"          // 413
	outcomeBadRequest       = "bad_request"        // 400, a known event that is not GitLab's JSON
	outcomeMethodNotAllowed = "method_not_allowed" // 405
)

var (
	allEvents   = []string{labelPush, labelMergeRequest, labelProject, labelOther}
	allOutcomes = []string{
		outcomeAccepted, outcomeIgnored, outcomeDuplicate, outcomeUnauthorized,
		outcomeTooLarge, outcomeBadRequest, outcomeMethodNotAllowed,
	}
)

type metrics struct {
	requests *prometheus.CounterVec
	duration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wm_webhook_requests_total",
			Help: "GitLab webhook deliveries received, by event and by what the handler answered.",
		}, []string{"event", "outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "wm_webhook_duration_seconds",
			Help: "Time to answer one GitLab webhook delivery; GitLab gives up after 10 s.",
			// Answers take microseconds; the upper buckets show a stall
			// long before GitLab's 10 s timeout counts a failure.
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	// Every series exists from the start, so that rate() and alerts see a
	// zero rather than nothing before the first refusal.
	for _, e := range allEvents {
		for _, o := range allOutcomes {
			m.requests.WithLabelValues(e, o)
		}
	}
	if reg == nil {
		return m, nil
	}
	if err := reg.Register(m.requests); err != nil {
		return nil, fmt.Errorf("register webhook metrics: %w", err)
	}
	if err := reg.Register(m.duration); err != nil {
		reg.Unregister(m.requests)
		return nil, fmt.Errorf("register webhook metrics: %w", err)
	}
	return m, nil
}
