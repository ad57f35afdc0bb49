package schedule_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/schedule"
	"github.com/whalemountain/wm/schema"
)

// memStore is the state store's last runs, in memory.
type memStore struct {
	mu   sync.Mutex
	runs map[string]time.Time
}

func (m *memStore) LastRun(job string) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runs[job], nil
}

func (m *memStore) SetLastRun(job string, t time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.runs[job] = t
	return nil
}

// at parses an RFC 3339 time.
func at(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// recorder is a job that records when it ran, and fails when told to.
type recorder struct {
	runs []time.Time
	fail error
}

func (r *recorder) job(t *testing.T, name, spec string) schedule.Job {
	t.Helper()
	s, err := schema.ParseSchedule(spec)
	if err != nil {
		t.Fatal(err)
	}
	return schedule.Job{Name: name, Spec: s, Run: func(_ context.Context, now time.Time) error {
		r.runs = append(r.runs, now)
		return r.fail
	}}
}

func TestSchedules(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	type tick struct {
		now     string
		wantRun bool
	}
	tests := []struct {
		name    string
		spec    string
		loc     *time.Location
		lastRun string // "" for a job never run
		ticks   []tick
		// wantCaughtUp is how many runs were catch-ups.
		wantCaughtUp int
	}{
		{
			name: "a job first seen waits for its next time rather than running at once",
			spec: "0 3 * * *", loc: time.UTC,
			ticks: []tick{{"2026-12-01T12:00:00Z", false}, {"2026-12-02T02:59:00Z", false}, {"2026-12-02T03:00:00Z", true}},
		},
		{
			name: "a job runs once at its time, not again within the same minute",
			spec: "0 3 * * *", loc: time.UTC, lastRun: "2026-12-01T03:00:00Z",
			ticks: []tick{{"2026-12-02T03:00:00Z", true}, {"2026-12-02T03:00:30Z", false}, {"2026-12-02T12:00:00Z", false}},
		},
		{
			name: "times missed while wm was down are made up once, not once each",
			spec: "0 * * * *", loc: time.UTC, lastRun: "2026-12-01T03:00:00Z",
			ticks:        []tick{{"2026-12-01T11:30:00Z", true}, {"2026-12-01T11:45:00Z", false}, {"2026-12-01T12:00:00Z", true}},
			wantCaughtUp: 1,
		},
		{
			name: "a time missed between the first start and the first run is made up after a restart",
			spec: "0 3 * * *", loc: time.UTC, lastRun: "2026-12-01T12:00:00Z", // the first start's baseline
			ticks:        []tick{{"2026-12-03T09:00:00Z", true}},
			wantCaughtUp: 1,
		},
		{
			name: "times are read in the configured time zone",
			spec: "0 3 * * *", loc: berlin, lastRun: "2026-12-01T02:00:00Z",
			// 03:00 in Berlin is 02:00 UTC in winter.
			ticks: []tick{{"2026-12-02T01:59:00Z", false}, {"2026-12-02T02:00:00Z", true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &memStore{runs: map[string]time.Time{}}
			if tt.lastRun != "" {
				st.runs["job"] = at(t, tt.lastRun)
			}
			var rec recorder
			s := schedule.New([]schedule.Job{rec.job(t, "job", tt.spec)}, tt.loc, st, nil)
			caughtUp := 0
			s.OnRun = func(job, outcome string, c bool) {
				if c {
					caughtUp++
				}
			}
			for _, tk := range tt.ticks {
				before := len(rec.runs)
				if _, err := s.Tick(context.Background(), at(t, tk.now)); err != nil {
					t.Fatal(err)
				}
				if ran := len(rec.runs) > before; ran != tk.wantRun {
					t.Errorf("at %s: ran %v, want %v", tk.now, ran, tk.wantRun)
				}
			}
			if caughtUp != tt.wantCaughtUp {
				t.Errorf("%d runs were catch-ups, want %d", caughtUp, tt.wantCaughtUp)
			}
		})
	}
}

func TestAFailedRunWaitsForItsNextTimeAndIsRecordedAndCounted(t *testing.T) {
	st := &memStore{runs: map[string]time.Time{"job": at(t, "2026-12-01T03:00:00Z")}}
	rec := recorder{fail: errors.New("registry down")}
	s := schedule.New([]schedule.Job{rec.job(t, "job", "@daily")}, time.UTC, st, nil)
	var outcomes []string
	s.OnRun = func(job, outcome string, _ bool) { outcomes = append(outcomes, job+":"+outcome) }
	for _, now := range []string{"2026-12-02T00:00:00Z", "2026-12-02T00:01:00Z", "2026-12-02T12:00:00Z"} {
		next, err := s.Tick(context.Background(), at(t, now))
		if err != nil {
			t.Fatal(err)
		}
		if want := at(t, "2026-12-03T00:00:00Z"); !next.Equal(want) {
			t.Errorf("after %s the next run is at %v, want %v", now, next, want)
		}
	}
	if len(rec.runs) != 1 || len(outcomes) != 1 || outcomes[0] != "job:failed" {
		t.Errorf("runs %v, outcomes %v; want one failed run", rec.runs, outcomes)
	}
	if got := st.runs["job"]; !got.Equal(at(t, "2026-12-02T00:00:00Z")) {
		t.Errorf("last run recorded %v", got)
	}
}

func TestRunStopsWithItsContext(t *testing.T) {
	st := &memStore{runs: map[string]time.Time{}}
	var rec recorder
	s := schedule.New([]schedule.Job{rec.job(t, "job", "@yearly")}, time.UTC, st, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if len(rec.runs) != 0 {
		t.Errorf("a yearly job first seen ran: %v", rec.runs)
	}
}
