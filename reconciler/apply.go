package reconciler

import (
	"context"
	"errors"
	"fmt"

	"github.com/whalemountain/wm/reconciler/docker"
)

// apply carries out the plan in order.
func (r *Reconciler) apply(ctx context.Context, p *pass) error {
	for _, a := range p.res.Plan.Actions {
		if r.progress != nil {
			r.progress(p.repo.Key, fmt.Sprintf("%s %s", a.Kind, a.Name))
		}
		if err := r.applyOne(ctx, p, a); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reconciler) applyOne(ctx context.Context, p *pass, a Action) error {
	switch a.Kind {
	case ActionCreate:
		return r.create(ctx, a.Host, *a.Spec)
	case ActionRecreate:
		return r.recreate(ctx, a)
	case ActionStart:
		if err := r.engine(a.Host).Start(ctx, a.Name); err != nil {
			return fmt.Errorf("start %s: %w", a.Name, err)
		}
	case ActionStop:
		if err := r.engine(a.Host).Stop(ctx, a.Name, StopTimeout); err != nil {
			return fmt.Errorf("stop %s: %w", a.Name, err)
		}
	case ActionRemove:
		return r.remove(ctx, p, a)
	}
	return nil
}

// asideSuffix names a container set aside while its replacement starts.
const asideSuffix = "-wm-old"

// recreate replaces a container without ever losing it: the old one is
// stopped and renamed aside, the new one created under the name; if that
// fails, the new one goes and the old one is put back as it was. A pass
// interrupted half-way leaves the aside container labelled as the repo's,
// so the next pass removes it.
func (r *Reconciler) recreate(ctx context.Context, a Action) error {
	old := r.engine(a.Live.Host)
	aside := a.Name + asideSuffix
	if err := old.Remove(ctx, aside); err != nil && !errors.Is(err, docker.ErrNotFound) {
		return fmt.Errorf("clear %s: %w", aside, err)
	}
	if err := old.Stop(ctx, a.Name, StopTimeout); err != nil {
		return fmt.Errorf("stop %s to recreate it: %w", a.Name, err)
	}
	if err := old.Rename(ctx, a.Name, aside); err != nil {
		return fmt.Errorf("set %s aside to recreate it: %w", a.Name, err)
	}
	if err := r.create(ctx, a.Host, *a.Spec); err != nil {
		if rerr := r.putBack(ctx, a, aside); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	if err := old.Remove(ctx, aside); err != nil && !errors.Is(err, docker.ErrNotFound) {
		return fmt.Errorf("remove the old %s: %w", a.Name, err)
	}
	return nil
}

// putBack undoes a failed recreation.
func (r *Reconciler) putBack(ctx context.Context, a Action, aside string) error {
	if err := r.engine(a.Host).Remove(ctx, a.Name); err != nil && !errors.Is(err, docker.ErrNotFound) {
		return fmt.Errorf("remove the failed new %s: %w", a.Name, err)
	}
	old := r.engine(a.Live.Host)
	if err := old.Rename(ctx, aside, a.Name); err != nil {
		return fmt.Errorf("put the old %s back: %w", a.Name, err)
	}
	if a.Live.Running {
		if err := old.Start(ctx, a.Name); err != nil {
			return fmt.Errorf("restart the old %s: %w", a.Name, err)
		}
	}
	return nil
}

func (r *Reconciler) create(ctx context.Context, host string, spec docker.Spec) error {
	_, err := r.engine(host).Create(ctx, spec)
	if errors.Is(err, docker.ErrConflict) {
		return stalled("NameConflict", "a container named %s exists on %s that WhaleMountain does not manage; it was left alone: ask the admins to remove or rename it", spec.Name, host)
	}
	if err != nil {
		return fmt.Errorf("create %s on %s: %w", spec.Name, host, err)
	}
	return nil
}

// remove deletes a container nothing declares any more, frees its ports
// and, only when the policy says so, its volumes no other container of
// the owner mounts.
func (r *Reconciler) remove(ctx context.Context, p *pass, a Action) error {
	e := r.engine(a.Host)
	if err := e.Remove(ctx, a.Name); err != nil && !errors.Is(err, docker.ErrNotFound) {
		return fmt.Errorf("remove %s: %w", a.Name, err)
	}
	if err := r.store.ReleasePorts(a.Name); err != nil {
		return err
	}
	if !r.cfg.Policy.PruneVolumes {
		return nil
	}
	inUse := map[string]bool{}
	for _, d := range p.desired {
		for _, m := range d.Spec.Mounts {
			inUse[m.Volume] = true
		}
	}
	for _, l := range p.allLive {
		if l.Name != a.Name && l.Labels[docker.LabelOwner] == p.repo.Owner {
			for _, v := range l.Volumes {
				inUse[v] = true
			}
		}
	}
	for _, v := range a.Live.Volumes {
		if inUse[v] {
			continue
		}
		if err := e.RemoveVolume(ctx, v); err != nil && !errors.Is(err, docker.ErrNotFound) {
			return fmt.Errorf("remove volume %s: %w", v, err)
		}
	}
	return nil
}
