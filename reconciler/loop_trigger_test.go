package reconciler

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// revPasser passes in hold and finds the revision head holds at the start
// of the pass, as a fetch would.
type revPasser struct {
	*countingPasser
	mu   sync.Mutex
	head string
}

func (r *revPasser) setHead(rev string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.head = rev
}

func (r *revPasser) Reconcile(ctx context.Context, repo Repo) (Result, error) {
	r.mu.Lock()
	head := r.head
	r.mu.Unlock()
	res, err := r.countingPasser.Reconcile(ctx, repo)
	res.Revision = head
	return res, err
}

func TestDeliveriesOfOnePushMakeOnePass(t *testing.T) {
	const hold = 500 * time.Millisecond
	tests := []struct {
		name string
		// deliver announces revisions while the loop runs, its first pass
		// (of r1) done; the passer's head is r2 from the start.
		deliver func(l *Loop, p *revPasser)
		passes  int // after the first
	}{
		{"an announced commit the last pass already found queues nothing", func(l *Loop, p *revPasser) {
			p.setHead("r1")
			if l.TriggerRevision("a/x", "r1") {
				t.Error("TriggerRevision of the revision the last pass found said it is news")
			}
		}, 0},
		{"a push delivered again before its pass starts makes one pass", func(l *Loop, p *revPasser) {
			for i := range 5 {
				if news := l.TriggerRevision("a/x", "r2"); news != (i == 0) {
					t.Errorf("delivery %d: TriggerRevision said news %v", i, news)
				}
			}
		}, 1},
		{"a push delivered again while its pass is under way makes one pass", func(l *Loop, p *revPasser) {
			l.TriggerRevision("a/x", "r2")
			time.Sleep(hold / 2)
			for range 5 {
				l.TriggerRevision("a/x", "r2")
			}
		}, 1},
		{"a push delivered again after its pass makes no other", func(l *Loop, p *revPasser) {
			l.TriggerRevision("a/x", "r2")
			time.Sleep(2 * hold)
			for range 5 {
				l.TriggerRevision("a/x", "r2")
			}
		}, 1},
		{"a newer push announced while a pass is under way is passed after it", func(l *Loop, p *revPasser) {
			l.TriggerRevision("a/x", "r2")
			time.Sleep(hold / 2)
			p.setHead("r3") // pushed after the pass fetched
			l.TriggerRevision("a/x", "r3")
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &revPasser{countingPasser: newCounting(hold), head: "r1"}
				l := NewLoop(p, repos("a/x"), time.Hour, 0, 2, slog.New(slog.DiscardHandler))
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { l.Run(ctx); close(done) }()
				waitFor(t, "the first pass", func() bool { return p.count("a/x") == 1 })
				p.setHead("r2")
				tt.deliver(l, p)
				time.Sleep(10 * (hold + ExpectDelay))
				cancel()
				<-done
				if n := p.count("a/x") - 1; n != tt.passes {
					t.Errorf("%d passes after the first, want %d", n, tt.passes)
				}
			})
		})
	}
}
