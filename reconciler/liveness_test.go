package reconciler

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestTheLoopIsAliveUnlessItIsWedged(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		beat        time.Time // zero: Run has not started
		running     map[string]time.Time
		passTimeout time.Duration
		want        string // "" for alive, else a part of the error
	}{
		{"a loop Run has not started is alive", time.Time{}, nil, 10 * time.Minute, ""},
		{"a loop that came round within its interval is alive", now.Add(-30 * time.Second), nil, 10 * time.Minute, ""},
		{"a loop late by less than the slack is alive", now.Add(-time.Minute - LivenessSlack + time.Second), nil, 10 * time.Minute, ""},
		{"a loop that has not come round for its interval and the slack is wedged", now.Add(-time.Minute - LivenessSlack - time.Second), nil, 10 * time.Minute,
			"the poll loop has not come round for 6m1s (its interval is 1m0s)"},
		{"a pass within its deadline and the slack is alive", now, map[string]time.Time{"alice/web": now.Add(-14 * time.Minute)}, 10 * time.Minute, ""},
		{"a pass past its deadline and the slack is wedged", now, map[string]time.Time{"alice/web": now.Add(-16 * time.Minute)}, 10 * time.Minute,
			"the pass of alice/web has run for 16m0s, past its deadline of 10m0s"},
		{"without a deadline a long pass is not judged", now, map[string]time.Time{"alice/web": now.Add(-48 * time.Hour)}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLoop(nil, nil, time.Minute, 0, 1, slog.New(slog.DiscardHandler))
			l.PassTimeout = tc.passTimeout
			if !tc.beat.IsZero() {
				l.beat.Store(tc.beat.UnixNano())
			}
			for k, v := range tc.running {
				l.running.Store(k, v)
			}
			err := l.Alive(now)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("wedged: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want %q", err, tc.want)
			}
			if n := l.InFlight(); n != len(tc.running) {
				t.Errorf("in flight %d, want %d", n, len(tc.running))
			}
		})
	}
}

// hangingPasser's passes ignore their context until release is closed,
// as a call into a wedged engine would.
type hangingPasser struct{ release chan struct{} }

func (h hangingPasser) Reconcile(context.Context, Repo) (Result, error) {
	<-h.release
	return Result{}, nil
}

func TestARunningLoopIsWedgedByAPassThatOutlivesItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := hangingPasser{release: make(chan struct{})}
		l := NewLoop(h, repos("alice/web"), time.Minute, 0, 1, slog.New(slog.DiscardHandler))
		l.PassTimeout = 10 * time.Minute
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		time.Sleep(time.Second)
		if err := l.Alive(time.Now()); err != nil || l.InFlight() != 1 {
			t.Fatalf("a pass under way: alive %v, in flight %d", err, l.InFlight())
		}
		time.Sleep(10*time.Minute + LivenessSlack)
		if err := l.Alive(time.Now()); err == nil || !strings.Contains(err.Error(), "the pass of alice/web has run for 15m1s") {
			t.Errorf("a pass hung past its deadline: %v", err)
		}
		close(h.release)
		synctest.Wait()
		if err := l.Alive(time.Now()); err != nil {
			t.Errorf("once the pass returned: %v", err)
		}
		cancel()
		<-done
	})
}

func TestARunningLoopIsWedgedByARediscoveryThatHangs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		calls := 0
		discover := func() ([]Repo, error) {
			calls++
			if calls == 2 {
				<-release // the second listing hangs
			}
			return nil, nil
		}
		l := NewLoop(newCounting(0), discover, time.Minute, 0, 1, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		time.Sleep(time.Minute + LivenessSlack)
		if err := l.Alive(time.Now()); err != nil {
			t.Fatalf("hung for the slack only: %v", err)
		}
		time.Sleep(time.Minute)
		if err := l.Alive(time.Now()); err == nil || !strings.Contains(err.Error(), "the poll loop has not come round") {
			t.Errorf("a rediscovery hung past the slack: %v", err)
		}
		close(release)
		synctest.Wait()
		if err := l.Alive(time.Now()); err != nil {
			t.Errorf("once the rediscovery returned: %v", err)
		}
		cancel()
		<-done
	})
}
