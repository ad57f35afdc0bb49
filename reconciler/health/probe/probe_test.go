package probe

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// pass and fail are checks that answer at once.
func pass(name string) Check {
	return Check{Name: name, Run: func(context.Context) error { return nil }}
}

func fail(name, why string) Check {
	return Check{Name: name, Run: func(context.Context) error { return errors.New(why) }}
}

// get asks the probe's routes for target.
func get(p *Probe, reveal bool, target string) (int, string) {
	mux := http.NewServeMux()
	p.Register(mux, reveal)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	return w.Code, w.Body.String()
}

func TestAProbeAnswersAsTheApiserverDoes(t *testing.T) {
	discard := slog.New(slog.DiscardHandler)
	healthy := New("readyz", discard, pass("store"), pass("docker/local"))
	sick := New("readyz", discard, pass("store"), fail("docker/blade2", "ping docker host blade2: connection refused"))
	for _, tc := range []struct {
		name   string
		probe  *Probe
		reveal bool
		target string
		code   int
		body   string
	}{
		{"every check passing answers ok", healthy, false, "/readyz", 200, "ok\n"},
		{"verbose lists every check when all pass", healthy, false, "/readyz?verbose",
			200, "[+]store ok\n[+]docker/local ok\nreadyz check passed\n"},
		{"a failing check answers 503 and lists every check, the reason withheld", sick, false, "/readyz",
			503, "[+]store ok\n[-]docker/blade2 failed: reason withheld\nreadyz check failed\n"},
		{"a handler that may reveal reasons gives them", sick, true, "/readyz?verbose",
			503, "[+]store ok\n[-]docker/blade2 failed: ping docker host blade2: connection refused\nreadyz check failed\n"},
		{"an excluded failing check does not fail the probe", sick, false, "/readyz?exclude=docker/blade2&verbose",
			200, "[+]store ok\n[+]docker/blade2 excluded: ok\nreadyz check passed\n"},
		{"excluding a check that does not exist fails the probe, as the apiserver does", healthy, false, "/readyz?exclude=etcd",
			503, "[+]store ok\n[+]docker/local ok\nreadyz check failed: no check to exclude called etcd\n"},
		{"one check is asked alone at its own path", sick, false, "/readyz/store", 200, "ok\n"},
		{"one failing check alone answers 503 with its line", sick, false, "/readyz/docker/blade2",
			503, "[-]docker/blade2 failed: reason withheld\nreadyz check failed\n"},
		{"a check that does not exist is not found", healthy, false, "/readyz/etcd", 404, "no check \"etcd\" in readyz\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(tc.probe, tc.reveal, tc.target)
			if code != tc.code || body != tc.body {
				t.Errorf("GET %s: %d\n%s\nwant %d\n%s", tc.target, code, body, tc.code, tc.body)
			}
		})
	}
}

func TestAReasonOnSeveralLinesIsAnsweredOnOne(t *testing.T) {
	p := New("readyz", slog.New(slog.DiscardHandler), fail("gitlab", "GitLab answered 502:\n  bad gateway"))
	if _, body := get(p, true, "/readyz"); !strings.Contains(body, "[-]gitlab failed: GitLab answered 502: bad gateway\n") {
		t.Errorf("got\n%s", body)
	}
}

// counting is a check that counts its runs and answers with err.
type counting struct {
	runs atomic.Int32
	err  atomic.Pointer[error]
}

func (c *counting) check(name string, every time.Duration) Check {
	return Check{Name: name, Every: every, Run: func(context.Context) error {
		c.runs.Add(1)
		if e := c.err.Load(); e != nil {
			return *e
		}
		return nil
	}}
}

func TestAResultIsReusedForItsIntervalFailuresToo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c counting
		down := errors.New("connection refused")
		c.err.Store(&down)
		p := New("readyz", slog.New(slog.DiscardHandler), c.check("docker/local", 5*time.Second))
		for range 10 {
			if res := p.Run(t.Context()); !errors.Is(res[0].Err, down) {
				t.Fatalf("got %v, want the failure", res[0].Err)
			}
			time.Sleep(400 * time.Millisecond)
		}
		if n := c.runs.Load(); n != 1 {
			t.Errorf("10 probes in 4s ran the check %d times, want once", n)
		}
		c.err.Store(nil)
		time.Sleep(time.Second) // 5s since the run
		if res := p.Run(t.Context()); res[0].Err != nil {
			t.Errorf("after its interval the check still fails: %v", res[0].Err)
		}
		if n := c.runs.Load(); n != 2 {
			t.Errorf("the check ran %d times, want 2", n)
		}
	})
}

func TestACheckWithoutIntervalRunsForEveryProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c counting
		p := New("livez", slog.New(slog.DiscardHandler), c.check("loop", 0))
		for range 3 {
			p.Run(t.Context())
		}
		if n := c.runs.Load(); n != 3 {
			t.Errorf("ran %d times, want 3", n)
		}
	})
}

func TestAHungCheckNeverHangsTheProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var runs atomic.Int32
		hung := Check{Name: "docker/blade2", Timeout: 2 * time.Second, Run: func(context.Context) error {
			runs.Add(1)
			<-release // ignores its context, as a wedged call would
			return nil
		}}
		p := New("readyz", slog.New(slog.DiscardHandler), pass("store"), hung)

		start := time.Now()
		res := p.Run(t.Context())
		if took := time.Since(start); took != 2*time.Second {
			t.Errorf("the first probe took %v, want the timeout, 2s", took)
		}
		if res[0].Err != nil || res[1].Err == nil || res[1].Err.Error() != "docker/blade2 did not answer within 2s" {
			t.Errorf("got %v, %v", res[0].Err, res[1].Err)
		}
		start = time.Now()
		if res := p.Run(t.Context()); res[1].Err == nil || time.Since(start) != 0 {
			t.Errorf("a probe while the run is still hung waited %v for %v; want an immediate failure", time.Since(start), res[1].Err)
		}
		if n := runs.Load(); n != 1 {
			t.Errorf("%d runs under way at once, want 1", n)
		}
		close(release)
		synctest.Wait()
		if res := p.Run(t.Context()); res[1].Err != nil {
			t.Errorf("once the run returned, the check passes again: %v", res[1].Err)
		}
	})
}

func TestACheckThatHonoursItsDeadlineFailsAtIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := Check{Name: "gitlab", Timeout: time.Second, Every: 10 * time.Second, Run: func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}}
		p := New("readyz", slog.New(slog.DiscardHandler), slow)
		res := p.Run(t.Context())
		if res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "did not answer within 1s") {
			t.Errorf("got %v", res[0].Err)
		}
	})
}

func TestChecksRunAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(name string) Check {
			return Check{Name: name, Run: func(context.Context) error { time.Sleep(1500 * time.Millisecond); return nil }}
		}
		p := New("readyz", slog.New(slog.DiscardHandler), slow("a"), slow("b"), slow("c"))
		start := time.Now()
		p.Run(t.Context())
		if took := time.Since(start); took != 1500*time.Millisecond {
			t.Errorf("three checks of 1.5s took %v, want 1.5s", took)
		}
	})
}

func TestAPanickingCheckFailsRatherThanTheServer(t *testing.T) {
	p := New("readyz", slog.New(slog.DiscardHandler), Check{Name: "store", Run: func(context.Context) error { panic("closed") }})
	if res := p.Run(t.Context()); res[0].Err == nil || res[0].Err.Error() != "store panicked: closed" {
		t.Errorf("got %v", res[0].Err)
	}
}

func TestTheLogHearsOfAFailureOnceAndOfTheRecovery(t *testing.T) {
	var logged bytes.Buffer
	var c counting
	p := New("readyz", slog.New(slog.NewTextHandler(&logged, nil)), c.check("docker/blade2", 0))
	down := errors.New("connection refused")
	c.err.Store(&down)
	p.Run(t.Context())
	p.Run(t.Context())
	c.err.Store(nil)
	p.Run(t.Context())
	p.Run(t.Context())
	lines := strings.Split(strings.TrimSpace(logged.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `level=WARN msg="check fails" probe=readyz check=docker/blade2 err="connection refused"`) ||
		!strings.Contains(lines[1], `level=INFO msg="check passes again" probe=readyz check=docker/blade2`) {
		t.Errorf("log:\n%s", logged.String())
	}
}
