package reconciler

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
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
	p := newCounting(0)
	l := NewLoop(p, repos("a/x", "b/y"), 50*time.Millisecond, 10*time.Millisecond, 2, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	waitFor(t, "three passes of each repo", func() bool { return p.count("a/x") >= 3 && p.count("b/y") >= 3 })
	cancel()
	<-done
}

func TestTriggersAndPollsOfOneRepoCollapseAndNeverOverlap(t *testing.T) {
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
}

func TestShutdownLetsThePassUnderWayFinish(t *testing.T) {
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
}

func TestAFailedPassIsRetriedWithBackoff(t *testing.T) {
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
}
