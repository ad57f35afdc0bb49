package reconciler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/schedule"
	"github.com/whalemountain/wm/schema"
)

// TriggerAll queues a pass of every known repo, as a full resync, and
// returns how many it queued.
func (l *Loop) TriggerAll() int {
	l.mu.Lock()
	keys := make([]string, 0, len(l.repos))
	for k := range l.repos {
		keys = append(keys, k)
	}
	l.mu.Unlock()
	for _, k := range keys {
		l.queue.Add(k)
	}
	return len(keys)
}

// Jobs returns the scheduled jobs the server config turns on, run on r and
// l; n, when not nil, carries the semester's warnings to the students.
func Jobs(cfg *schema.ServerConfig, r *Reconciler, l *Loop, n Notifier) ([]schedule.Job, error) {
	runs := map[string]func(ctx context.Context, now time.Time) error{
		"resync": func(context.Context, time.Time) error {
			r.log.Info("full resync", "repos", l.TriggerAll())
			return nil
		},
		"semester": func(ctx context.Context, now time.Time) error {
			err := r.SemesterNotices(ctx, n, now)
			// The passes stop what expired, and clean up what stayed so.
			l.TriggerAll()
			return err
		},
		"idleCull": func(ctx context.Context, _ time.Time) error {
			repos, err := r.CullIdle(ctx)
			for _, key := range repos {
				l.Trigger(key)
			}
			return err
		},
		"cleanup": func(ctx context.Context, _ time.Time) error {
			return r.PruneImages(ctx)
		},
	}
	var jobs []schedule.Job
	for name, spec := range cfg.Schedules.Each() {
		s, err := schema.ParseSchedule(spec)
		if err != nil {
			return nil, fmt.Errorf("schedules.%s: %w", name, err)
		}
		jobs = append(jobs, schedule.Job{Name: name, Spec: s, Run: runs[name]})
	}
	return jobs, nil
}

// SemesterNotices warns, once per end date, the student of each known repo
// whose semester ends within semester.warnBefore of now. Without a
// semester or a notifier it does nothing; a repo whose notice fails is
// tried again at the next run.
func (r *Reconciler) SemesterNotices(ctx context.Context, n Notifier, now time.Time) error {
	s := r.cfg.Semester
	if s == nil || n == nil {
		return nil
	}
	states, err := r.store.Repos()
	if err != nil {
		return err
	}
	loc := r.cfg.Schedules.Location()
	var errs []error
	for _, st := range states {
		end, ok := s.EndFor(st.Key, loc)
		if !ok || !now.Before(end) || end.Sub(now) > s.WarnBefore.Std() {
			continue
		}
		day := end.In(loc).AddDate(0, 0, -1).Format(time.DateOnly)
		key := "semester-end-" + day
		if at, err := r.store.Noticed(st.Key, key); err != nil || !at.IsZero() {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		title := fmt.Sprintf("WhaleMountain: what %s runs stops after %s", st.Key, day)
		body := fmt.Sprintf("The semester ends on %s. After that day, WhaleMountain stops the containers and pods this repo declares (%s).\n\n"+
			"Nothing is deleted when they stop: volumes, SIF files and this repo stay as they are. Copy out what you need before then (`wm cp`).\n\n"+
			"To keep them running longer, ask the course's admins for an extension.", day, st.Key)
		if r.cfg.Semester.CleanupAfter > 0 {
			body += fmt.Sprintf("\n\nContainers and pods still stopped %v after that day are removed (their volumes are kept).", r.cfg.Semester.CleanupAfter.Std())
		}
		repo := Repo{Key: st.Key, Owner: st.Owner, URL: st.URL, Branch: st.Branch}
		if err := n.Notify(ctx, repo, key, title, body); err != nil {
			errs = append(errs, fmt.Errorf("warn %s of the semester's end: %w", st.Key, err))
			continue
		}
		if err := r.store.SetNoticed(st.Key, key, now); err != nil {
			errs = append(errs, err)
			continue
		}
		r.log.Info("warned of the semester's end", "repo", st.Key, "end", day)
	}
	return errors.Join(errs...)
}

// PruneImages removes the dangling images of every Docker host that can;
// a host that cannot be reached is skipped until the next run.
func (r *Reconciler) PruneImages(ctx context.Context) error {
	var errs []error
	for _, e := range r.engines {
		p, ok := e.(core.ImagePruner)
		if !ok {
			continue
		}
		n, freed, err := p.PruneDanglingImages(ctx)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.log.Info("removed dangling images", "host", e.Name(), "images", n, "freed", core.FormatBytes(int64(freed)), "cause", "the clean-up schedule")
	}
	return errors.Join(errs...)
}
