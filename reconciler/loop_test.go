package reconciler

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/whalemountain/wm/reconciler/core"
	"time"
)

// countingPasser records passes; each takes hold, and a pass of a repo
// already under way is an error the test reports.
type countingPasser struct {
	hold    time.Duration
	mu      sync.Mutex
	passes  map[string]int
	running map[string]bool
	overlap atomic.Bool
	err     error
	retired []string
}

func (c *countingPasser) Reconcile(ctx context.Context, repo Repo) (Result, error) {
	c.mu.Lock()
	if c.running[repo.Key] {
		c.overlap.Store(true)
	}
	c.running[repo.Key] = true
	c.mu.Unlock()
	time.Sleep(c.hold)
	c.mu.Lock()
	c.running[repo.Key] = false
	c.passes[repo.Key]++
	c.mu.Unlock()
	return Result{Repo: repo, Ready: true}, c.err
}

func (c *countingPasser) Retire(ctx context.Context, repo Repo) (Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running[repo.Key] {
		c.overlap.Store(true)
	}
	c.retired = append(c.retired, repo.Key)
	return Result{Repo: repo}, nil
}

func (c *countingPasser) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passes[key]
}

func newCounting(hold time.Duration) *countingPasser {
	return &countingPasser{hold: hold, passes: map[string]int{}, running: map[string]bool{}}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func repos(keys ...string) func() ([]Repo, error) {
	return func() ([]Repo, error) {
		var out []Repo
		for _, k := range keys {
			out = append(out, Repo{Key: k, Owner: "o"})
		}
		return out, nil
	}
}

func TestTheLoopPollsEveryRepoOnItsInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newCounting(0)
		l := NewLoop(p, repos("a/x", "b/y"), 50*time.Millisecond, 10*time.Millisecond, 2, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		waitFor(t, "three passes of each repo", func() bool { return p.count("a/x") >= 3 && p.count("b/y") >= 3 })
		cancel()
		<-done
	})
}

func TestTriggersAndPollsOfOneRepoCollapseAndNeverOverlap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newCounting(50 * time.Millisecond)
		l := NewLoop(p, repos("a/x"), time.Hour, 0, 4, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		waitFor(t, "the first pass", func() bool { return p.count("a/x") == 1 })
		for range 20 {
			l.Trigger("a/x")
		}
		time.Sleep(300 * time.Millisecond)
		cancel()
		<-done
		if n := p.count("a/x"); n < 2 || n > 3 {
			t.Errorf("20 triggers gave %d passes; want them collapsed into one or two", n-1)
		}
		if p.overlap.Load() {
			t.Error("two workers handled one repo at once")
		}
		if l.Trigger("nobody/none") {
			t.Error("a trigger for an unknown repo was accepted")
		}
	})
}

func TestShutdownLetsThePassUnderWayFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newCounting(200 * time.Millisecond)
		l := NewLoop(p, repos("a/x"), time.Hour, 0, 1, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		waitFor(t, "a pass to start", func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.running["a/x"]
		})
		cancel()
		<-done
		if p.count("a/x") != 1 {
			t.Errorf("the pass under way did not finish before Run returned")
		}
	})
}

// headPasser reports a head that becomes the announced one after a few
// passes, as a git server that is slow to show a push.
type headPasser struct {
	*countingPasser
	visibleAfter int
}

func (h *headPasser) Reconcile(ctx context.Context, repo Repo) (Result, error) {
	res, err := h.countingPasser.Reconcile(ctx, repo)
	res.Revision = "old"
	if h.count(repo.Key) > h.visibleAfter {
		res.Revision = "new"
	}
	return res, err
}

func TestAnAnnouncedCommitNotYetVisibleIsLookedForAgainShortly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := &headPasser{countingPasser: newCounting(0), visibleAfter: 2}
		l := NewLoop(h, repos("a/x"), time.Hour, 0, 1, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		waitFor(t, "the first pass", func() bool { return h.count("a/x") == 1 })
		l.TriggerRevision("a/x", "new")
		waitFor(t, "the announced commit", func() bool { return h.count("a/x") == 3 })
		time.Sleep(2 * ExpectDelay)
		cancel()
		<-done
		if n := h.count("a/x"); n != 3 {
			t.Errorf("%d passes: want 3 (poll, trigger, one retry that saw the commit)", n)
		}
	})
}

func TestAFailedPassIsRetriedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newCounting(0)
		p.err = context.DeadlineExceeded // transient
		l := NewLoop(p, repos("a/x"), time.Hour, 0, 1, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		// Backoff starts at 2s: within 3s there is the first pass and one retry.
		time.Sleep(3 * time.Second)
		cancel()
		<-done
		if n := p.count("a/x"); n != 2 {
			t.Errorf("%d passes in 3s, want 2 (first, retry after 2s)", n)
		}
	})
}

// blockingPasser holds each pass until its context is done or release is
// closed, and records how each pass ended: its context's error, or nil
// when it was released.
type blockingPasser struct {
	started chan string
	release chan struct{}
	ended   chan error
}

func newBlocking() *blockingPasser {
	return &blockingPasser{started: make(chan string, 16), release: make(chan struct{}), ended: make(chan error, 16)}
}

func (b *blockingPasser) Reconcile(ctx context.Context, repo Repo) (Result, error) {
	b.started <- repo.Key
	select {
	case <-ctx.Done():
		b.ended <- ctx.Err()
		return Result{Repo: repo}, ctx.Err()
	case <-b.release:
		b.ended <- nil
		return Result{Repo: repo, Ready: true}, nil
	}
}

// runLoop runs l until the returned stop is called; stop returns once Run
// has, and fails the test if Run has not returned within a day (of the
// bubble's fake time).
func runLoop(t *testing.T, l *Loop) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	return func() {
		cancel()
		if !within(done, 24*time.Hour) {
			t.Fatal("Run did not return")
		}
	}
}

// within waits for ch to be closed or to deliver, for at most d.
func within[T any](ch <-chan T, d time.Duration) bool {
	select {
	case <-ch:
		return true
	case <-time.After(d):
		return false
	}
}

// ended is how the next pass of p ended, waiting a day at most.
func (b *blockingPasser) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-b.ended:
		return err
	case <-time.After(24 * time.Hour):
		t.Fatal("the pass never ended")
		return nil
	}
}

func TestAPassThatOutlivesItsDeadlineIsCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newBlocking()
		l := NewLoop(p, repos("a/x"), time.Hour, 0, 1, slog.New(slog.DiscardHandler))
		l.PassTimeout = 10 * time.Minute
		stop := runLoop(t, l)
		<-p.started
		start := time.Now()
		if err := p.next(t); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("the hung pass ended with %v; want its deadline exceeded", err)
		}
		if d := time.Since(start); d != l.PassTimeout {
			t.Errorf("the hung pass was cancelled after %v; want the pass timeout, %v", d, l.PassTimeout)
		}
		stop()
	})
}

func TestShutdownGivesThePassesUnderWayAGracePeriod(t *testing.T) {
	for _, tc := range []struct {
		name     string
		endsIn   time.Duration // when the pass would end by itself after shutdown began; 0: never
		wantErr  error
		wantTook time.Duration // from shutdown to Run's return
	}{
		{name: "a pass still under way after the grace is cancelled", wantErr: context.Canceled, wantTook: 30 * time.Second},
		{name: "a pass that ends within the grace is not cancelled", endsIn: 10 * time.Second, wantTook: 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newBlocking()
				l := NewLoop(p, repos("a/x"), time.Hour, 0, 1, slog.New(slog.DiscardHandler))
				l.ShutdownGrace = 30 * time.Second
				stop := runLoop(t, l)
				<-p.started
				start := time.Now()
				if tc.endsIn > 0 {
					time.AfterFunc(tc.endsIn, func() { close(p.release) })
				}
				stop()
				if d := time.Since(start); d != tc.wantTook {
					t.Errorf("Run returned %v after shutdown began; want %v", d, tc.wantTook)
				}
				if err := p.next(t); !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
					t.Errorf("the pass ended with %v; want %v", err, tc.wantErr)
				}
			})
		})
	}
}

func TestNoPassStartsOnceShutdownBegan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newBlocking()
		l := NewLoop(p, repos("a/x", "b/y", "c/z"), time.Hour, 0, 1, slog.New(slog.DiscardHandler))
		stop := runLoop(t, l)
		first := <-p.started
		time.AfterFunc(time.Second, func() { close(p.release) })
		stop()
		close(p.started)
		if more := slices.Collect(func(yield func(string) bool) {
			for k := range p.started {
				yield(k)
			}
		}); len(more) > 0 {
			t.Errorf("after %s, passes of %v started during shutdown", first, more)
		}
	})
}

func TestARepoItsSourceSaysIsGoneIsRetiredOnAWorkerAndNoLongerPolled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newCounting(time.Second)
		var listed atomic.Pointer[[]string]
		listed.Store(&[]string{"a/x", "b/y"})
		discover := func() ([]Repo, error) { return repos(*listed.Load()...)() }
		l := NewLoop(p, discover, time.Minute, 0, 2, slog.New(slog.DiscardHandler))
		stop := runLoop(t, l)
		synctest.Wait()
		listed.Store(&[]string{"b/y"})
		l.Retire(Repo{Key: "a/x", Owner: "o"})
		time.Sleep(5 * time.Minute)
		stop()
		p.mu.Lock()
		defer p.mu.Unlock()
		if !slices.Equal(p.retired, []string{"a/x"}) {
			t.Errorf("retired %v; want [a/x]", p.retired)
		}
		if p.overlap.Load() {
			t.Error("the repo was retired during a pass of it")
		}
		if n := p.passes["a/x"]; n != 1 {
			t.Errorf("a/x had %d passes; want only the one before it was retired", n)
		}
		if l.Known("a/x") || !l.Known("b/y") {
			t.Error("the retired repo is still known, or the other one was forgotten")
		}
	})
}

// seqPasser fails its passes with errs, in order, then succeeds.
type seqPasser struct {
	mu   sync.Mutex
	errs []error
	at   []time.Time
}

func (s *seqPasser) Reconcile(_ context.Context, repo Repo) (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at = append(s.at, time.Now())
	if len(s.errs) == 0 {
		return Result{Repo: repo, Ready: true}, nil
	}
	err := s.errs[0]
	s.errs = s.errs[1:]
	return Result{Repo: repo}, err
}

// A repo that waited a long time for an engine (its passes spaced ever
// wider) and then fails once as the engine comes back is retried as soon
// as any failed pass, not after the wait's long backoff.
func TestAFailureAfterALongWaitIsRetriedWithoutTheWaitsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &seqPasser{}
		for range 8 {
			p.errs = append(p.errs, waiting(core.HostUnreachable, "the host cannot be reached"))
		}
		p.errs = append(p.errs, context.DeadlineExceeded) // transient
		l := NewLoop(p, repos("a/x"), time.Hour, 0, 1, slog.New(slog.DiscardHandler))
		stop := runLoop(t, l)
		time.Sleep(20 * time.Minute)
		stop()
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.at) != 10 {
			t.Fatalf("%d passes in 20 minutes, want the 8 waits, the failure and its retry", len(p.at))
		}
		if gap := p.at[9].Sub(p.at[8]); gap > 5*time.Second {
			t.Errorf("the failure after the waits was retried after %v, want the first backoff (2s)", gap)
		}
		if gap := p.at[8].Sub(p.at[7]); gap < time.Minute {
			t.Errorf("the waits were not spaced out: the last gap is %v", gap)
		}
	})
}
