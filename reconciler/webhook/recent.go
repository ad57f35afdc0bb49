package webhook

import (
	"net/http"
	"sync"
	"time"
)

// RecentLimit is how many deliveries a Handler remembers for Recent.
const RecentLimit = 100

// Delivery is one request to the hook as Recent remembers it: what it
// was and what became of it, never its body or token.
type Delivery struct {
	Time time.Time
	// Event is the event's label (push, merge_request, system, other...)
	// and Outcome the answer's (accepted, ignored, duplicate,
	// unauthorized, too_large, bad_request, method_not_allowed), as the
	// metrics count them.
	Event, Outcome string
	// Status is the HTTP status answered.
	Status int
	// Project is the project the event names, once authenticated and
	// decoded; "" before.
	Project string
}

// recent is a ring of the last RecentLimit deliveries, in memory only: a
// restart forgets them, and a flood costs one slot each, overwritten.
type recent struct {
	mu   sync.Mutex
	ring [RecentLimit]Delivery
	next int // where the next one goes
	n    int // how many are held, at most RecentLimit
}

func (r *recent) add(d Delivery) {
	r.mu.Lock()
	r.ring[r.next] = d
	r.next = (r.next + 1) % RecentLimit
	r.n = min(r.n+1, RecentLimit)
	r.mu.Unlock()
}

// list is what r holds, newest first.
func (r *recent) list() []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Delivery, 0, r.n)
	for i := 1; i <= r.n; i++ {
		out = append(out, r.ring[(r.next-i+RecentLimit)%RecentLimit])
	}
	return out
}

// Recent returns the last RecentLimit deliveries the handler answered,
// newest first, for the admins' dashboard.
func (h *Handler) Recent() []Delivery { return h.recent.list() }

// outcomeStatus is the HTTP status of each outcome.
var outcomeStatus = map[string]int{
	outcomeAccepted: http.StatusAccepted, outcomeIgnored: http.StatusOK, outcomeDuplicate: http.StatusOK,
	outcomeUnauthorized: http.StatusUnauthorized, outcomeTooLarge: http.StatusRequestEntityTooLarge,
	outcomeBadRequest: http.StatusBadRequest, outcomeMethodNotAllowed: http.StatusMethodNotAllowed,
}

// projectOf is the project an accepted event names.
func projectOf(e any) string {
	switch e := e.(type) {
	case Push:
		return e.Project
	case MergeRequest:
		return e.Project
	case ProjectChange:
		return e.Project
	}
	return ""
}
