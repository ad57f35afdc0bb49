package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
)

// observePods lists the owner's pods in the cluster, for the quota (all
// their repos) and the plan (this repo's).
func (r *Reconciler) observePods(ctx context.Context, p *pass) error {
	if r.cluster == nil {
		return nil
	}
	pods, err := r.cluster.OwnerPods(ctx, p.repo.Owner)
	if err != nil && len(p.file.Pods) == 0 && len(p.state.Pods) == 0 && ctx.Err() == nil {
		// Nothing of this repo's lives in the cluster: it does not wait
		// for it. (The owner's pods of other repos then go uncounted in
		// this pass's quota; the cluster's own quota still holds them.)
		r.log.Warn("cluster unreachable; a repo without pods goes on", "repo", p.repo.Key, "err", err)
		p.clusterDown = true
		return nil
	}
	if err != nil {
		return waiting(core.ClusterUnreachable, "cannot read your pods in the cluster; everything stays as it is: %v", err)
	}
	p.livePods = pods
	return nil
}

// repoPods returns the live pods of the pass's repo.
func (p *pass) repoPods() []core.Pod {
	var mine []core.Pod
	for _, l := range p.livePods {
		if l.Repo == p.repo.Key {
			mine = append(mine, l)
		}
	}
	return mine
}

// checkAdmission asks the cluster, before anything is changed, whether it
// would admit every pod the plan creates or recreates (Pod Security, the
// namespace's quota): a refusal stops the pass with the old pods still
// running and the reason in the repo's status.
func (r *Reconciler) checkAdmission(ctx context.Context, p *pass) error {
	pods := p.res.Plan.Of(Pod)
	var checks []Action
	for _, a := range pods {
		if a.Kind == ActionCreate || a.Kind == ActionRecreate {
			checks = append(checks, a)
		}
	}
	if len(checks) == 0 {
		return nil
	}
	if _, err := r.cluster.EnsureOwner(ctx, p.repo.Owner); err != nil {
		return podError(fmt.Errorf("prepare the namespace of %s: %w", p.repo.Owner, err))
	}
	for _, a := range checks {
		err := r.cluster.CheckPod(ctx, *a.Pod, a.Kind == ActionRecreate)
		if errors.Is(err, fault.Refused) {
			return stalled(core.PodRefused, "%v; nothing was changed: what runs stays as it is", err)
		}
		if err != nil {
			return podError(err)
		}
	}
	return nil
}

// applyPods carries out the plan's pod actions, then lets the owner's
// namespace go when the admins allow it and no pod of theirs is left.
func (r *Reconciler) applyPods(ctx context.Context, p *pass) error {
	actions := p.res.Plan.Of(Pod)
	for _, a := range actions {
		if r.progress != nil {
			r.progress(p.repo.Key, fmt.Sprintf("%s pod %s", a.Kind, a.Name))
		}
		var err error
		switch a.Kind {
		case ActionCreate, ActionRecreate:
			if a.Kind == ActionRecreate {
				r.log.Info("recreating pod: the old one is deleted", "repo", p.repo.Key, "pod", a.Name,
					"cause", "wm.yaml or the server's policy changed what it is made of, and a pod cannot be changed in place")
			}
			err = r.cluster.ApplyPod(ctx, *a.Pod, a.Kind == ActionRecreate)
		case ActionRemove:
			r.log.Info("deleting pod", "repo", p.repo.Key, "pod", a.Name, "cause", podRemovalCause(p, a.Name))
			err = r.cluster.DeletePod(ctx, p.repo.Owner, p.repo.Key, a.Name)
		}
		if err != nil {
			return podError(err)
		}
	}
	if len(p.pods) > 0 || p.clusterDown || r.cfg.Kubernetes == nil || !r.cfg.Kubernetes.PruneNamespaces {
		return nil
	}
	// The admins let namespaces go: this one goes once none of the
	// owner's repos has a pod in it (RemoveOwner of a namespace already
	// gone does nothing).
	for _, l := range p.livePods {
		if l.Repo != p.repo.Key {
			return nil
		}
	}
	// Every pass of a repo without pods gets here: the log says so only
	// when the namespace is likely to be there (pods were seen in it).
	level := slog.LevelDebug
	if len(p.livePods) > 0 || len(p.state.Pods) > 0 {
		level = slog.LevelInfo
	}
	r.log.Log(ctx, level, "deleting the owner's namespace, if it is there", "repo", p.repo.Key, "owner", p.repo.Owner,
		"cause", "none of the owner's repos has a pod left, and kubernetes.pruneNamespaces is on")
	return podError(r.cluster.RemoveOwner(ctx, p.repo.Owner))
}

// podStatuses reads back the repo's pods as students see them.
func (r *Reconciler) podStatuses(ctx context.Context, p *pass) ([]core.PodStatus, error) {
	if r.cluster == nil || p.clusterDown {
		return nil, nil
	}
	sts, err := r.cluster.PodStatuses(ctx, p.repo.Owner, p.repo.Key)
	var out []core.PodStatus
	for _, s := range sts {
		out = append(out, core.PodStatus{Name: s.Name, Phase: s.Phase, Message: s.Message})
	}
	return out, err
}

// podError classifies what the cluster said.
func podError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, core.ErrNamespaceNotOurs):
		return stalled(core.NamespaceNotOurs, "pods: %v", err)
	case errors.Is(err, fault.Refused):
		return stalled(core.PodRefused, "%v", err)
	case errors.Is(err, fault.NotReady):
		return waiting(core.QuotaNotReady, "%v", err)
	}
	return err
}
