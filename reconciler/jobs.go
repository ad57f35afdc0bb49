package reconciler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/schedule"
	"github.com/whalemountain/wm/reconciler/store"
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
// l; n, when not nil, carries the semester's warnings to the students, and
// x, when not nil, says which extensions past it admins approved.
func Jobs(cfg *schema.ServerConfig, r *Reconciler, l *Loop, n Notifier, x Extender) ([]schedule.Job, error) {
	runs := map[string]func(ctx context.Context, now time.Time) error{
		"resync": func(context.Context, time.Time) error {
			r.log.Info("full resync", "repos", l.TriggerAll())
			return nil
		},
		"semester": func(ctx context.Context, now time.Time) error {
			err := errors.Join(r.SemesterExtensions(ctx, x, now), r.SemesterNotices(ctx, n, now))
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
			return errors.Join(r.PruneImages(ctx), r.PruneRegistry(ctx))
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
		if label := r.cfg.Semester.ExtensionLabel; label != "" {
			body += fmt.Sprintf(" Open a merge request that sets a later `expires:` in wm.yaml and ask an admin to label it %q; once it is merged, that date holds.", label)
		}
		if r.cfg.Semester.CleanupAfter > 0 {
			body += fmt.Sprintf("\n\nContainers and pods still stopped %v after that day are removed (their volumes are kept).", r.cfg.Semester.CleanupAfter.Std())
		}
		repo := Repo{Key: st.Key, Owner: st.Owner, URL: st.URL, Branch: st.Branch}
		if err := n.Notify(ctx, repo, key, title, body); errors.Is(err, fault.NotFound) {
			continue // not a project of the notifier's (a folder source's repo)
		} else if err != nil {
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

// SemesterExtensions asks x, for each repo whose wm.yaml asks to run past
// its semester's end (RepoState.ExtensionAsked) and has no approved
// extension reaching that far, whether an admin approved one since, and
// records it: the repo's next pass honours it. Without a semester or an
// Extender it does nothing.
func (r *Reconciler) SemesterExtensions(ctx context.Context, x Extender, now time.Time) error {
	if r.cfg.Semester == nil || x == nil {
		return nil
	}
	states, err := r.store.Repos()
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		if st.ExtensionAsked == "" {
			continue
		}
		if ext, ok, err := r.store.Extension(st.Key); err != nil || (ok && ext.Until >= st.ExtensionAsked) {
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		until, by, mr, err := x.Extension(ctx, Repo{Key: st.Key, Owner: st.Owner, URL: st.URL, Branch: st.Branch})
		if errors.Is(err, fault.NotFound) {
			continue // not a project of the extender's (a folder source's repo)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("extension of %s: %w", st.Key, err))
			continue
		}
		if until == "" {
			continue
		}
		if err := r.store.PutExtension(store.Extension{Repo: st.Key, Until: until, MR: mr, ApprovedBy: by, At: now}); err != nil {
			errs = append(errs, err)
			continue
		}
		r.log.Info("extension past the semester's end approved", "repo", st.Key, "until", until, "approvedBy", by, "mergeRequest", mr)
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

// TagPruner is a registry whose old commit tags can be deleted;
// *registry.Client is one.
type TagPruner interface {
	Tags(ctx context.Context, repository string) ([]string, error)
	Created(ctx context.Context, ref string) (time.Time, error)
	DeleteTags(ctx context.Context, repository string, drop, keep []string) ([]string, error)
}

// isCommitTag reports whether tag is a full commit SHA, the tag CI pushes
// students' images under: no other tag is ever deleted.
func isCommitTag(tag string) bool {
	if len(tag) != 40 {
		return false
	}
	for _, c := range tag {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// PruneRegistry deletes, from the configured registry, the commit tags of
// each known repo's image older than registry.keepTagsFor that are
// neither the repo's applied or observed revision nor run by any
// container or built into any SIF. Nothing is deleted while a Docker host
// cannot be listed (what it runs is not known), nor without keepTagsFor.
func (r *Reconciler) PruneRegistry(ctx context.Context) error {
	keepFor := r.cfg.Registry.KeepTagsFor.Std()
	pruner, ok := r.registry.(TagPruner)
	if keepFor <= 0 || !ok || r.cfg.Registry.Host == "" {
		return nil
	}
	inUse := map[string]bool{}
	for _, e := range r.engines {
		list, err := e.ListManaged(ctx)
		if err != nil {
			return fmt.Errorf("registry clean-up skipped: what %s runs is not known: %w", e.Name(), err)
		}
		for _, c := range list {
			inUse[c.Image] = true
		}
	}
	states, err := r.store.Repos()
	if err != nil {
		return err
	}
	for _, st := range states {
		for _, s := range st.SIFs {
			inUse[s.Image] = true
		}
	}
	now := r.now()
	var errs []error
	for _, st := range states {
		repository := r.cfg.Registry.Host + "/" + st.Key
		tags, err := pruner.Tags(ctx, repository)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var drop, keep []string
		for _, tag := range tags {
			ref := repository + ":" + tag
			if !isCommitTag(tag) || tag == st.AppliedRevision || tag == st.ObservedRevision || inUse[ref] {
				keep = append(keep, tag)
				continue
			}
			created, err := pruner.Created(ctx, ref)
			if err != nil || now.Sub(created) < keepFor {
				keep = append(keep, tag)
				continue
			}
			drop = append(drop, tag)
		}
		if len(drop) == 0 {
			continue
		}
		deleted, err := pruner.DeleteTags(ctx, repository, drop, keep)
		if err != nil {
			errs = append(errs, err)
		}
		for _, tag := range deleted {
			r.log.Info("deleted an image from the registry", "image", repository+":"+tag, "repo", st.Key,
				"cause", fmt.Sprintf("the clean-up schedule: a commit neither applied nor run, older than registry.keepTagsFor (%v)", keepFor))
		}
	}
	return errors.Join(errs...)
}
