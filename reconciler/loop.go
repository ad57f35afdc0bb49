package reconciler

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/util/workqueue"
)

// Passer runs one pass of one repo; *Reconciler is one.
type Passer interface {
	Reconcile(ctx context.Context, repo Repo) (Result, error)
}

// Retirer removes what a repo that is gone had applied; *Reconciler is
// one. A Passer that is also a Retirer has the repos Loop.Retire is given
// retired on the loop's workers.
type Retirer interface {
	Retire(ctx context.Context, repo Repo) (Result, error)
}

// DefaultPassTimeout and DefaultShutdownGrace are a new Loop's PassTimeout
// and ShutdownGrace (the server config's poll.passTimeout and
// poll.shutdownGrace defaults).
const (
	DefaultPassTimeout   = 10 * time.Minute
	DefaultShutdownGrace = 30 * time.Second
)

// Loop keeps repos reconciled: it polls each repo every interval (plus
// jitter), lets webhooks trigger a repo at once, and runs passes on a fixed
// number of workers. It queues repo keys, not work: a poll and a trigger of
// the same repo collapse into one pass, and two workers never handle one
// repo at once (client-go's workqueue guarantees both). Failed passes are
// retried with capped exponential backoff. Every pass has a deadline, and
// shutdown cancels the passes still under way after a grace period.
type Loop struct {
	passer   Passer
	discover func() ([]Repo, error)
	interval time.Duration
	jitter   time.Duration
	workers  int
	log      *slog.Logger

	queue   workqueue.TypedRateLimitingInterface[string]
	backoff workqueue.TypedRateLimiter[string]
	// waitBackoff spaces the passes that wait for something outside the
	// repo, with a count of its own: a failure after a long wait (an
	// engine back after a restart) is retried as soon as any other.
	waitBackoff workqueue.TypedRateLimiter[string]

	mu    sync.Mutex
	repos map[string]Repo
	// expect holds, per repo, a commit a webhook announced and how many
	// passes have not seen it yet: a webhook can arrive before the pushed
	// commit is visible to a fetch.
	expect map[string]expectation
	// passing holds the repos whose pass is under way, and seen the
	// revision the last successful pass of each repo found: a webhook
	// announcing a commit that a pass under way will look for, or that the
	// last pass already applied, queues nothing (GitLab may deliver one
	// push several times: retries, a project hook and a system hook).
	passing map[string]bool
	seen    map[string]string
	// retiring holds the repos Retire was given, until a worker retires
	// them.
	retiring map[string]Repo

	// beat and running are what Alive (liveness.go) reads: when Run last
	// went round (UnixNano; 0 before Run), and when each pass or
	// retirement under way started, by repo key.
	beat    atomic.Int64
	running sync.Map

	// OnResult, when set, is told every pass's outcome (for metrics and
	// status reporting).
	OnResult func(Result, error)
	// PassTimeout is the deadline of each pass; 0 for none.
	PassTimeout time.Duration
	// ShutdownGrace is how long Run lets the passes under way go on once
	// its context is done, before it cancels them.
	ShutdownGrace time.Duration
}

// NewLoop returns a loop over the repos discover lists; discover is called
// again every interval, so new repos join and removed ones stop being
// polled (their containers stay: a repo that cannot be listed is not a
// repo that declares nothing; only Retire retires one).
func NewLoop(p Passer, discover func() ([]Repo, error), interval, jitter time.Duration, workers int, log *slog.Logger) *Loop {
	backoff := workqueue.NewTypedItemExponentialFailureRateLimiter[string](2*time.Second, 5*time.Minute)
	return &Loop{
		passer: p, discover: discover, interval: interval, jitter: jitter, workers: max(1, workers), log: log,
		queue:       workqueue.NewTypedRateLimitingQueueWithConfig(backoff, workqueue.TypedRateLimitingQueueConfig[string]{Name: "repos"}),
		backoff:     backoff,
		waitBackoff: workqueue.NewTypedItemExponentialFailureRateLimiter[string](2*time.Second, 5*time.Minute),
		repos:       map[string]Repo{},
		expect:      map[string]expectation{},
		passing:     map[string]bool{},
		seen:        map[string]string{},
		retiring:    map[string]Repo{},

		PassTimeout:   DefaultPassTimeout,
		ShutdownGrace: DefaultShutdownGrace,
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
// shortly, up to ExpectRetries times. It reports whether rev is news: the
// repo is known, its last successful pass did not find rev already, and
// rev was not announced since. A pass under way is not followed by
// another: it, or the pass it requeues when rev was not visible to it
// yet, covers rev. So deliveries of one push, however many, make one pass.
func (l *Loop) TriggerRevision(key, rev string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.repos[key]; !ok || l.seen[key] == rev {
		return false
	}
	if e, ok := l.expect[key]; ok && e.rev == rev {
		return false // announced already; its pass is queued or under way
	}
	l.expect[key] = expectation{rev: rev}
	if !l.passing[key] {
		l.queue.Add(key)
	}
	return true
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

// passed records the end of a pass of key that found revision seen (and
// succeeded when ok), and says whether the repo must be passed again soon
// because an announced commit was not visible yet.
func (l *Loop) passed(key, seen string, ok bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.passing, key)
	if ok {
		l.seen[key] = seen
	} else {
		delete(l.seen, key)
	}
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

// Retire has a repo its source says is gone (an authoritative word, never
// a failure to read it) retired on a worker, so never beside a pass of
// it, and stops polling it. A Passer that is not a Retirer retires
// nothing.
func (l *Loop) Retire(repo Repo) {
	l.mu.Lock()
	delete(l.repos, repo.Key)
	delete(l.expect, repo.Key)
	delete(l.seen, repo.Key)
	l.retiring[repo.Key] = repo
	l.mu.Unlock()
	l.queue.Add(repo.Key)
}

// Run polls and reconciles until ctx is done. Then no new pass starts;
// the passes under way may go on for ShutdownGrace, after which their
// context is cancelled; Run returns once they have all returned.
func (l *Loop) Run(ctx context.Context) {
	// Passes run under their own context, so that shutdown does not
	// cancel them at once: cancelling a pass half-way only leaves more to
	// redo.
	passCtx, cancelPasses := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPasses()
	var wg sync.WaitGroup
	for range l.workers {
		wg.Go(func() {
			for l.processNext(ctx, passCtx) {
			}
		})
	}
	l.beat.Store(time.Now().UnixNano())
	l.rediscover()
	ticker := time.NewTicker(l.interval)
	defer ticker.Stop()
	for {
		l.beat.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			l.shutdown(&wg, cancelPasses)
			return
		case <-ticker.C:
			l.rediscover()
		}
	}
}

// shutdown stops the queue, waits for the workers for the grace period,
// then cancels the passes under way and waits for them to return.
func (l *Loop) shutdown(workers *sync.WaitGroup, cancelPasses context.CancelFunc) {
	l.queue.ShutDown()
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	grace := time.NewTimer(l.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		l.log.Warn("passes still under way after the shutdown grace; cancelling them", "grace", l.ShutdownGrace)
		cancelPasses()
		<-done
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
	for key := range l.seen {
		if _, listed := next[key]; !listed {
			delete(l.seen, key)
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

// processNext runs one pass under passCtx and the pass deadline; it
// returns false once the queue shuts down. Once ctx is done, what is still
// queued is dropped.
func (l *Loop) processNext(ctx, passCtx context.Context) bool {
	key, shutdown := l.queue.Get()
	if shutdown {
		return false
	}
	defer l.queue.Done(key)
	if ctx.Err() != nil {
		return true
	}
	l.running.Store(key, time.Now())
	defer l.running.Delete(key)
	l.mu.Lock()
	repo, ok := l.repos[key]
	gone, retiring := l.retiring[key]
	delete(l.retiring, key)
	if ok {
		l.passing[key] = true
	}
	l.mu.Unlock()
	if !ok {
		if retiring {
			l.retire(passCtx, gone)
		} else {
			l.queue.Forget(key)
		}
		return true
	}
	if l.PassTimeout > 0 {
		var cancel context.CancelFunc
		passCtx, cancel = context.WithTimeout(passCtx, l.PassTimeout)
		defer cancel()
	}
	res, err := l.passer.Reconcile(passCtx, repo)
	if errors.Is(context.Cause(passCtx), context.DeadlineExceeded) {
		l.log.Warn("pass cancelled at its deadline", "repo", key, "timeout", l.PassTimeout)
	}
	if l.OnResult != nil {
		l.OnResult(res, err)
	}
	next := l.interval + l.randJitter()
	if l.passed(key, res.Revision, err == nil) {
		next = ExpectDelay
	}
	outcome, reason := Classify(err)
	if err == nil || outcome != Waiting {
		l.waitBackoff.Forget(key)
	}
	switch {
	case err == nil:
		l.queue.Forget(key)
	case outcome == Transient:
		l.log.Warn("pass failed, retrying", "repo", key, "err", err)
		l.queue.AddRateLimited(key)
		return true
	case outcome == Waiting:
		l.log.Info("pass waiting", "repo", key, "reason", reason)
		next = min(next, l.waitBackoff.When(key))
	default:
		l.log.Info("pass stalled", "repo", key, "reason", reason)
		l.queue.Forget(key)
	}
	l.queue.AddAfter(key, next)
	return true
}

// retire retires a repo Retire was given, within the pass deadline; a
// transient failure is retried with backoff (unless the repo is listed
// again meanwhile).
func (l *Loop) retire(ctx context.Context, repo Repo) {
	r, ok := l.passer.(Retirer)
	if !ok {
		return
	}
	if l.PassTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.PassTimeout)
		defer cancel()
	}
	res, err := r.Retire(ctx, repo)
	if err == nil {
		l.queue.Forget(repo.Key)
		l.log.Info("retired", "repo", repo.Key, "result", res.Message)
		return
	}
	if outcome, reason := Classify(err); outcome != Transient {
		l.queue.Forget(repo.Key)
		l.log.Warn("retiring a repo that is gone stopped", "repo", repo.Key, "reason", reason, "err", err)
		return
	}
	l.log.Warn("retiring a repo that is gone failed, retrying", "repo", repo.Key, "err", err)
	l.mu.Lock()
	if _, listed := l.repos[repo.Key]; !listed {
		l.retiring[repo.Key] = repo
	}
	l.mu.Unlock()
	l.queue.AddRateLimited(repo.Key)
}
