package reconciler

import (
	"context"
	"errors"
	"fmt"

	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/store"
)

// syncPods makes the repo's Kubernetes pods match wm.yaml. A student who
// declares no pods keeps their namespace; one whose pods the cluster
// refuses (quota, Pod Security) hears why, pod by pod.
func (r *Reconciler) syncPods(ctx context.Context, p *pass) error {
	if r.cluster == nil {
		if len(p.file.Pods) > 0 {
			return stalled("NoKubernetes", "pods: this WhaleMountain has no Kubernetes cluster configured, so pods cannot run (ask the admins)")
		}
		return nil
	}
	if len(p.pods) > 0 {
		if _, err := r.cluster.EnsureOwner(ctx, p.repo.Owner); err != nil {
			if errors.Is(err, kube.ErrNamespaceNotOurs) {
				return stalled("NamespaceNotOurs", "pods: %v", err)
			}
			return fmt.Errorf("prepare the namespace of %s: %w", p.repo.Owner, err)
		}
	}
	res, err := r.cluster.SyncPods(ctx, p.repo.Owner, p.repo.Key, p.pods)
	p.res.Pods = nil
	for _, s := range append(res.Pods, res.Refused...) {
		p.res.Pods = append(p.res.Pods, store.PodStatus{Name: s.Name, Phase: s.Phase, Message: s.Message})
	}
	if errors.Is(err, kube.ErrNamespaceNotOurs) {
		return stalled("NamespaceNotOurs", "pods: %v", err)
	}
	if errors.Is(err, kube.ErrRefused) {
		return stalled("PodRefused", "%v", err)
	}
	if errors.Is(err, kube.ErrQuotaNotReady) {
		return waiting("QuotaNotReady", "%v", err)
	}
	if err != nil || len(p.pods) > 0 || r.cfg.Kubernetes == nil || !r.cfg.Kubernetes.PruneNamespaces {
		return err
	}
	// The admins let namespaces go: this one goes once none of the
	// owner's repos has a pod in it.
	pods, err := r.cluster.OwnerPods(ctx, p.repo.Owner)
	if err != nil {
		return fmt.Errorf("list the pods of %s: %w", p.repo.Owner, err)
	}
	if len(pods) > 0 {
		return nil
	}
	return r.cluster.RemoveOwner(ctx, p.repo.Owner)
}
