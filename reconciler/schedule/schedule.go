// Package schedule runs the admins' periodic jobs (a full resync, the
// semester's warnings and end, idle culling, clean-up) at the times cron
// expressions give, in an explicit time zone.
//
// A Scheduler keeps when each job last ran in the state store, so that a
// run missed while wm was down is made once when it comes back (never
// once per missed time: a night of missed hourly culls is one cull), and
// a job first seen is not run at once but at its next time (from then
// on, missed times count). Runs of one
// job never overlap; each is logged with its outcome and counted.
//
// Tick runs what is due at a given instant: tests drive it with a fake
// clock, and Run drives it with the real one.
package schedule

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Job is one scheduled job.
type Job struct {
	// Name names it in logs, metrics and the state store.
	Name string
	// Spec is its cron expression, as schema.ParseSchedule reads it.
	Spec cron.Schedule
	// Run does the job once; now is the time it was due at. Its error is
	// logged and counted; the job runs again at its next time.
	Run func(ctx context.Context, now time.Time) error
}

// Store keeps when each job last ran; *store.Store is one.
type Store interface {
	LastRun(job string) (time.Time, error)
	SetLastRun(job string, t time.Time) error
}

// Scheduler runs Jobs at their times.
type Scheduler struct {
	jobs  []Job
	loc   *time.Location
	store Store
	log   *slog.Logger
	// OnRun, when set, is told of each run's outcome ("succeeded", "failed")
	// and whether it was a catch-up of a missed time.
	OnRun func(job, outcome string, caughtUp bool)
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	next map[string]time.Time // the next time each job is due
}

// New returns a Scheduler of jobs whose times are read in loc.
func New(jobs []Job, loc *time.Location, st Store, log *slog.Logger) *Scheduler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	slices.SortFunc(jobs, func(a, b Job) int { return strings.Compare(a.Name, b.Name) })
	return &Scheduler{jobs: jobs, loc: loc, store: st, log: log}
}

func (s *Scheduler) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// plan works out each job's next time from its last run: a job never run
// is first due at its next time after now; a job whose next time after
// its last run has passed is due now (once).
func (s *Scheduler) plan(now time.Time) error {
	s.next = map[string]time.Time{}
	for _, j := range s.jobs {
		last, err := s.store.LastRun(j.Name)
		if err != nil {
			return fmt.Errorf("schedule %s: %w", j.Name, err)
		}
		if last.IsZero() {
			// Scheduled from now on: recorded, so that a time missed
			// before its first run is still made up.
			if err := s.store.SetLastRun(j.Name, now); err != nil {
				return fmt.Errorf("schedule %s: %w", j.Name, err)
			}
			s.next[j.Name] = j.Spec.Next(now.In(s.loc))
			continue
		}
		s.next[j.Name] = j.Spec.Next(last.In(s.loc))
	}
	return nil
}

// Tick runs, one after the other, every job due at now, and returns when
// the next job is due. A job due since before the last Tick (wm was down,
// or a run took long) runs once and is logged as caught up.
func (s *Scheduler) Tick(ctx context.Context, now time.Time) (time.Time, error) {
	if s.next == nil {
		if err := s.plan(now); err != nil {
			return time.Time{}, err
		}
	}
	for _, j := range s.jobs {
		due := s.next[j.Name]
		if now.Before(due) {
			continue
		}
		caughtUp := j.Spec.Next(due).Before(now) || now.Sub(due) > time.Minute
		s.runOne(ctx, j, due, now, caughtUp)
		s.next[j.Name] = j.Spec.Next(now.In(s.loc))
	}
	var soonest time.Time
	for _, t := range s.next {
		if soonest.IsZero() || t.Before(soonest) {
			soonest = t
		}
	}
	return soonest, ctx.Err()
}

// runOne runs j, records the run and reports it.
func (s *Scheduler) runOne(ctx context.Context, j Job, due, now time.Time, caughtUp bool) {
	log := s.log.With("schedule", j.Name, "due", due.In(s.loc).Format(time.RFC3339))
	if caughtUp {
		log.Info("running a scheduled job missed while wm was down or busy, once")
	}
	start := s.now()
	err := j.Run(ctx, now)
	outcome := "succeeded"
	if err != nil {
		outcome = "failed"
		log.Error("scheduled job failed; it runs again at its next time", "err", err, "took", s.now().Sub(start).Round(time.Millisecond))
	} else {
		log.Info("scheduled job done", "took", s.now().Sub(start).Round(time.Millisecond))
	}
	// The run counts as made even when it failed: a failing job is not
	// retried in a loop, it waits for its next time.
	if serr := s.store.SetLastRun(j.Name, now); serr != nil {
		log.Error("the run was not recorded: it may be made again after a restart", "err", serr)
	}
	if s.OnRun != nil {
		s.OnRun(j.Name, outcome, caughtUp)
	}
}

// Run ticks at each job's time until ctx is done.
func (s *Scheduler) Run(ctx context.Context) {
	if len(s.jobs) == 0 {
		return
	}
	for {
		next, err := s.Tick(ctx, s.now())
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("schedules cannot be read; trying again in a minute", "err", err)
			s.next = nil
			next = s.now().Add(time.Minute)
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
