package reconciler

import (
	"fmt"
	"time"

	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// expiry is when a repo's containers stop, and why.
type expiry struct {
	// At is the first instant past the last day; zero: never.
	At time.Time
	// Day is the last day, as wm.yaml or the server config wrote it.
	Day string
	// Semester marks an end that is the semester's, not wm.yaml's.
	Semester bool
	// Extended is the approved extension that lets wm.yaml's date pass
	// the semester's end; zero when none does.
	Extended store.Extension
}

// expiryOf returns when repo key's containers stop: at the earlier of
// f's `expires:` and the end of the key's semester. A student's date
// brings the end forward; it puts it off only as far as an extension an
// admin approved (ext, when ok) reaches. asked is f's date when it lies
// past the semester's end.
func (r *Reconciler) expiryOf(key string, f *schema.File, ext store.Extension, extended bool) (e expiry, asked string) {
	own, hasOwn := f.ExpiresAt()
	if hasOwn {
		e = expiry{At: own, Day: f.Expires}
	}
	loc := r.cfg.Schedules.Location()
	end, ok := r.cfg.Semester.EndFor(key, loc)
	if !ok || (hasOwn && !end.Before(own)) {
		return e, ""
	}
	if hasOwn {
		asked = f.Expires
		if extended && f.Expires <= ext.Until {
			e.Extended = ext
			return e, asked
		}
	}
	return expiry{At: end, Day: end.In(loc).AddDate(0, 0, -1).Format(time.DateOnly), Semester: true}, asked
}

// String says it for students: "2027-02-15 (the semester's end)".
func (e expiry) String() string {
	switch {
	case e.Semester:
		return e.Day + " (the semester's end)"
	case e.Extended.ApprovedBy != "":
		return e.Day + " (expires: in wm.yaml, past the semester as " + e.Extended.ApprovedBy + " approved)"
	}
	return e.Day + " (expires: in wm.yaml)"
}

// decideExpiry marks the pass expired once its end is past, and marks
// what stayed expired past semester.cleanupAfter for removal: its
// containers and pods are left out of what the repo declares.
func (r *Reconciler) decideExpiry(p *pass) error {
	var ext store.Extension
	extended := false
	if r.cfg.Semester != nil {
		var err error
		if ext, extended, err = r.store.Extension(p.repo.Key); err != nil {
			return err
		}
	}
	p.expiry, p.state.ExtensionAsked = r.expiryOf(p.repo.Key, p.file, ext, extended)
	if p.expiry.At.IsZero() || r.now().Before(p.expiry.At) {
		return nil
	}
	p.expired = true
	if s := r.cfg.Semester; s != nil && s.CleanupAfter > 0 && !r.now().Before(p.expiry.At.Add(s.CleanupAfter.Std())) {
		p.cleanedUp = true
		kept := *p.file
		kept.Containers, kept.Pods = nil, nil
		p.file = &kept
	}
	return nil
}

// expiryMessage is what the status says of an expired repo, or of one
// whose end is near; "" otherwise.
func (r *Reconciler) expiryMessage(p *pass) string {
	switch {
	case p.cleanedUp:
		return fmt.Sprintf("expired on %s and not renewed for %v: its containers and pods were removed (volumes are kept unless the admins prune them)", p.expiry, r.cfg.Semester.CleanupAfter.Std())
	case p.expired:
		return fmt.Sprintf("expired on %s: everything is stopped, nothing was deleted", p.expiry)
	case r.cfg.Semester != nil && !p.expiry.At.IsZero() && p.expiry.At.Sub(r.now()) <= r.cfg.Semester.WarnBefore.Std():
		return fmt.Sprintf("everything stops after %s", p.expiry)
	}
	return ""
}

// cullsOf reads the repo's culled containers that stay culled at the
// pass's revision, by name in wm.yaml; a new revision wakes the others
// (their records are dropped, unless the pass only plans).
func (r *Reconciler) cullsOf(p *pass) (map[string]store.Cull, error) {
	all, err := r.store.Culls(p.repo.Key)
	if err != nil {
		return nil, err
	}
	out := map[string]store.Cull{}
	for full, c := range all {
		if c.Revision == p.rev {
			out[c.Name] = c
			continue
		}
		if !p.dryRun {
			if _, err := r.store.DeleteCull(full); err != nil {
				return nil, err
			}
			r.log.Info("woken by a new commit", "container", full, "repo", p.repo.Key, "revision", short(p.rev))
		}
	}
	return out, nil
}
