package reconciler

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// Passer runs one pass of one repo; *Reconciler is one.
type Passer interface {
	Reconcile(ctx context.Context, repo Repo) (Result, error)
}

// Loop keeps repos reconciled: it polls each repo every interval (plus
// jitter), lets webhooks trigger a repo at once, and runs passes on a fixed
// number of workers. It queues repo keys, not work: a poll and a trigger of
// the same repo collapse into one pass, and two workers never handle one
// repo at once (client-go's workqueue guarantees both). Failed passes are
// retried with capped exponential backoff.
type Loop struct {
	passer   Passer
	discover func() ([]Repo, error)
	interval time.Duration
	jitter   time.Duration
	workers  int
	log      *slog.Logger

	queue   workqueue.TypedRateLimitingInterface[string]
	backoff workqueue.TypedRateLimiter[string]

	mu    sync.Mutex
	repos map[string]Repo
	// expect holds, per repo, a commit a webhook announced and how many
	// passes have not seen it yet: a webhook can arrive before the pushed
	// commit is visible to a fetch.
	expect map[string]expectation
	// OnResult, when set, is told every pass's outcome (for metrics and
	// status reporting).
	OnResult func(Result, error)
}

// NewLoop returns a loop over the repos discover lists; discover is called
// again every interval, so new repos join and removed ones stop being
// polled (their containers stay: a repo that cannot be listed is not a
// repo that declares nothing).
func NewLoop(p Passer, discover func() ([]Repo, error), interval, jitter time.Duration, workers int, log *slog.Logger) *Loop {
	backoff := workqueue.NewTypedItemExponentialFailureRateLimiter[string](2*time.Second, 5*time.Minute)
	return &Loop{
		passer: p, discover: discover, interval: interval, jitter: jitter, workers: max(1, workers), log: log,
		queue:   workqueue.NewTypedRateLimitingQueueWithConfig(backoff, workqueue.TypedRateLimitingQueueConfig[string]{Name: "repos"}),
		backoff: backoff,
		repos:   map[string]Repo{},
		expect:  map[string]expectation{},
	}
}

type expectation struct {
	rev    string
	misses int
}

// ExpectRetries bounds how often a pass is repeated, ExpectDelay apart,
// waiting for an announced commit to become visible.
const (
	ExpectRetries = 10
	ExpectDelay   = time.Second
)

// TriggerRevision is Trigger for a webhook that announced rev: when the
// pass does not see rev at the branch head yet, the repo is queued again
// shortly, up to ExpectRetries times.
func (l *Loop) TriggerRevision(key, rev string) bool {
	l.mu.Lock()
	_, ok := l.repos[key]
	if ok {
		l.expect[key] = expectation{rev: rev}
	}
	l.mu.Unlock()
	if ok {
		l.queue.Add(key)
	}
	return ok
}

// Rediscover lists the repos again now, as after a system hook.
func (l *Loop) Rediscover() { l.rediscover() }

// Known reports whether key is among the discovered repos.
func (l *Loop) Known(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.repos[key]
	return ok
}

// recheck says whether the repo must be passed again soon because an
// announced commit was not visible yet.
func (l *Loop) recheck(key, seen string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.expect[key]
	if !ok {
		return false
	}
	if e.rev == seen || e.misses+1 >= ExpectRetries {
		delete(l.expect, key)
		if e.rev != seen {
			l.log.Warn("announced commit never became visible", "repo", key, "revision", e.rev)
		}
		return false
	}
	e.misses++
	l.expect[key] = e
	return true
}

// Trigger asks for a pass of the repo with key now; it is a no-op for an
// unknown repo and collapses with a pass already queued.
func (l *Loop) Trigger(key string) bool {
	l.mu.Lock()
	_, ok := l.repos[key]
	l.mu.Unlock()
	if ok {
		l.queue.Add(key)
	}
	return ok
}

// Run polls and reconciles until ctx is done, then lets the passes under
// way finish and returns.
func (l *Loop) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range l.workers {
		wg.Go(func() {
			for l.processNext(ctx) {
			}
		})
	}
	l.rediscover()
	ticker := time.NewTicker(l.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			l.queue.ShutDownWithDrain()
			wg.Wait()
			return
		case <-ticker.C:
			l.rediscover()
		}
	}
}

// rediscover refreshes the repo list and queues every new repo.
func (l *Loop) rediscover() {
	repos, err := l.discover()
	if err != nil {
		l.log.Warn("discovering repos failed; keeping the known ones", "err", err)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	next := make(map[string]Repo, len(repos))
	for _, r := range repos {
		next[r.Key] = r
		if _, known := l.repos[r.Key]; !known {
			l.queue.AddAfter(r.Key, l.randJitter())
		}
	}
	l.repos = next
}

func (l *Loop) randJitter() time.Duration {
	if l.jitter <= 0 {
		return 0
	}
	return rand.N(l.jitter)
}

// processNext runs one pass; it returns false once the queue shuts down.
func (l *Loop) processNext(ctx context.Context) bool {
	key, shutdown := l.queue.Get()
	if shutdown {
		return false
	}
	defer l.queue.Done(key)
	l.mu.Lock()
	repo, ok := l.repos[key]
	l.mu.Unlock()
	if !ok {
		l.queue.Forget(key)
		return true
	}
	// A pass under way finishes even when shutdown starts: cancelling it
	// half-way would only leave more to redo.
	res, err := l.passer.Reconcile(context.WithoutCancel(ctx), repo)
	if l.OnResult != nil {
		l.OnResult(res, err)
	}
	next := l.interval + l.randJitter()
	if l.recheck(key, res.Revision) {
		next = ExpectDelay
	}
	switch outcome, reason := Classify(err); {
	case err == nil:
		l.queue.Forget(key)
	case outcome == Transient:
		l.log.Warn("pass failed, retrying", "repo", key, "err", err)
		l.queue.AddRateLimited(key)
		return true
	case outcome == Waiting:
		l.log.Info("pass waiting", "repo", key, "reason", reason)
		next = min(next, l.backoff.When(key))
	default:
		l.log.Info("pass stalled", "repo", key, "reason", reason)
		l.queue.Forget(key)
	}
	l.queue.AddAfter(key, next)
	return true
}
