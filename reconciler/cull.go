package reconciler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/store"
)

// ErrNotCulled is Wake's answer for a container that idle culling did
// not stop.
var ErrNotCulled = errors.New("the container was not stopped for being idle")

// CullIdle measures every running container of this instance that holds a
// GPU and culls those that stayed idle for culling.after: each gets a
// Cull record at its repo's applied revision, and its repo is returned, so
// that the caller passes it and the pass stops the container (as it
// stops an expired one). Idle means using less than culling.belowCPUShare
// of its CPU limit between every two measurements; a container measured
// for the first time, restarted, or busy starts afresh. Hosts that cannot
// be reached or measured are skipped, their containers' measurements
// kept. Without culling in the server config it does nothing.
func (r *Reconciler) CullIdle(ctx context.Context) (repos []string, err error) {
	cfg := r.cfg.Culling
	if cfg == nil {
		return nil, nil
	}
	now := r.now()
	measured := map[string]bool{}
	complete := true
	var errs []error
	for _, e := range r.engines {
		meter, ok := e.(core.Meter)
		if !ok {
			continue
		}
		list, err := e.ListManaged(ctx)
		if err != nil {
			complete = false
			errs = append(errs, err)
			continue
		}
		for _, c := range list {
			if !c.Running || c.GPUs == 0 && len(c.GPUDevices) == 0 || c.Owner == "" || c.Repo == "" || c.LocalName == "" {
				continue
			}
			cpu, err := meter.CPUTime(ctx, c.Name)
			if err != nil {
				complete = false
				errs = append(errs, err)
				continue
			}
			measured[c.Name] = true
			idleFor, err := r.recordSample(c, cpu, now)
			if err != nil {
				return repos, err
			}
			if idleFor < cfg.After.Std() {
				continue
			}
			if err := r.cull(c, idleFor, now); err != nil {
				return repos, err
			}
			if !slices.Contains(repos, c.Repo) {
				repos = append(repos, c.Repo)
			}
		}
	}
	if complete {
		if err := r.store.RetainIdleSamples(measured); err != nil {
			return repos, err
		}
	}
	return repos, errors.Join(errs...)
}

// recordSample stores the measurement cpu of c at now and returns how
// long c has been idle.
func (r *Reconciler) recordSample(c core.Container, cpu time.Duration, now time.Time) (time.Duration, error) {
	prev, ok, err := r.store.IdleSample(c.Name)
	if err != nil {
		return 0, err
	}
	next := store.IdleSample{CPU: cpu, At: now}
	if ok && cpu >= prev.CPU && now.After(prev.At) {
		limit := float64(c.NanoCPUs) / 1e9
		if limit <= 0 {
			limit = 1
		}
		share := (cpu - prev.CPU).Seconds() / (now.Sub(prev.At).Seconds() * limit)
		if share < r.cfg.Culling.BelowCPUShare {
			next.IdleSince = prev.IdleSince
			if next.IdleSince.IsZero() {
				next.IdleSince = prev.At
			}
		}
	}
	if err := r.store.PutIdleSample(c.Name, next); err != nil {
		return 0, err
	}
	if next.IdleSince.IsZero() {
		return 0, nil
	}
	return now.Sub(next.IdleSince), nil
}

// cull records c as culled at its repo's applied revision.
func (r *Reconciler) cull(c core.Container, idleFor time.Duration, now time.Time) error {
	st, ok, err := r.store.Repo(c.Repo)
	if err != nil {
		return err
	}
	if !ok || st.AppliedRevision == "" {
		return nil // not known here: nothing to keep it stopped at
	}
	reason := fmt.Sprintf("it holds a GPU and used less than %g%% of its CPU for %v", r.cfg.Culling.BelowCPUShare*100, idleFor.Round(time.Minute))
	cull := store.Cull{Container: c.Name, Owner: c.Owner, Repo: c.Repo, Name: c.LocalName, Revision: st.AppliedRevision, At: now, Reason: reason}
	if err := r.store.PutCull(cull); err != nil {
		return err
	}
	r.log.Info("culling an idle container: its next pass stops it", "container", c.Name, "repo", c.Repo, "cause", reason)
	return nil
}

// Wake lets owner's container name (its wm.yaml name) that idle culling
// stopped run again, and returns its repo for the caller to pass:
// ErrNotCulled when culling did not stop it.
func (r *Reconciler) Wake(owner, name string) (repo string, err error) {
	full := core.ObjectName(owner, name)
	culls, err := r.store.Culls("")
	if err != nil {
		return "", err
	}
	c, ok := culls[full]
	if !ok || c.Owner != owner {
		return "", fmt.Errorf("wake %s: %w", full, ErrNotCulled)
	}
	if _, err := r.store.DeleteCull(full); err != nil {
		return "", err
	}
	r.log.Info("woken on request", "container", full, "repo", c.Repo)
	return c.Repo, nil
}
