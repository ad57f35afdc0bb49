package kube

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	netv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
)

// ErrRefused is wrapped by errors for pods the cluster refused at
// admission (quota, Pod Security): the student must change wm.yaml. It is
// of the kind fault.Refused.
var ErrRefused = fault.New(fault.Refused, "refused by the cluster")

// ErrQuotaNotReady is wrapped when a new ResourceQuota has no status yet:
// until the quota controller writes it, admission refuses every pod. It
// is a matter of seconds: try again (fault.NotReady).
var ErrQuotaNotReady = fault.New(fault.NotReady, "the namespace's quota is not ready yet")

// ErrNamespaceNotOurs is wrapped when owner's namespace exists without
// WhaleMountain's labels for that owner (or with another instance's), or
// its name is a system or reserved one: nothing is written into it, and
// the admins must act (core.ErrNamespaceNotOurs, fault.Conflict: the name is
// taken).
var ErrNamespaceNotOurs = fault.New(core.ErrNamespaceNotOurs, "the namespace is not WhaleMountain's")

// Every other error of the backend that comes from the cluster is marked
// with its kind in package fault (classify): fault.Unreachable when the
// API server cannot be reached or fails on its side.

// Backend applies owners' namespaces and pods to one cluster.
type Backend struct {
	client kubernetes.Interface
	set    Settings
}

// New returns a backend talking to the cluster through client.
func New(client kubernetes.Interface, set Settings) *Backend {
	return &Backend{client: client, set: set}
}

// Settings returns what the backend was configured with.
func (b *Backend) Settings() Settings { return b.set }

var apply = metav1.ApplyOptions{FieldManager: FieldManager, Force: true}

// liveHash reads the applied-hash of an object, "" when it does not exist.
func (b *Backend) liveHash(ctx context.Context, ns string, o object) (string, error) {
	var (
		meta metav1.Object
		err  error
	)
	c := b.client
	switch o.kind {
	case "Namespace":
		meta, err = c.CoreV1().Namespaces().Get(ctx, o.name, metav1.GetOptions{})
	case "Role":
		meta, err = c.RbacV1().Roles(ns).Get(ctx, o.name, metav1.GetOptions{})
	case "RoleBinding":
		meta, err = c.RbacV1().RoleBindings(ns).Get(ctx, o.name, metav1.GetOptions{})
	case "ResourceQuota":
		meta, err = c.CoreV1().ResourceQuotas(ns).Get(ctx, o.name, metav1.GetOptions{})
	case "LimitRange":
		meta, err = c.CoreV1().LimitRanges(ns).Get(ctx, o.name, metav1.GetOptions{})
	case "NetworkPolicy":
		meta, err = c.NetworkingV1().NetworkPolicies(ns).Get(ctx, o.name, metav1.GetOptions{})
	case "Secret":
		meta, err = c.CoreV1().Secrets(ns).Get(ctx, o.name, metav1.GetOptions{})
	default:
		return "", fmt.Errorf("unknown kind %s", o.kind)
	}
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", classify(err)
	}
	return meta.GetAnnotations()[AnnotationHash], nil
}

// send applies one object with server-side apply.
func (b *Backend) send(ctx context.Context, ns string, o object) error {
	c := b.client
	var err error
	switch ac := o.apply.(type) {
	case *corev1ac.NamespaceApplyConfiguration:
		_, err = c.CoreV1().Namespaces().Apply(ctx, ac, apply)
	case *rbacv1ac.RoleApplyConfiguration:
		_, err = c.RbacV1().Roles(ns).Apply(ctx, ac, apply)
	case *rbacv1ac.RoleBindingApplyConfiguration:
		_, err = c.RbacV1().RoleBindings(ns).Apply(ctx, ac, apply)
	case *corev1ac.ResourceQuotaApplyConfiguration:
		_, err = c.CoreV1().ResourceQuotas(ns).Apply(ctx, ac, apply)
	case *corev1ac.LimitRangeApplyConfiguration:
		_, err = c.CoreV1().LimitRanges(ns).Apply(ctx, ac, apply)
	case *netv1ac.NetworkPolicyApplyConfiguration:
		_, err = c.NetworkingV1().NetworkPolicies(ns).Apply(ctx, ac, apply)
	case *corev1ac.SecretApplyConfiguration:
		_, err = c.CoreV1().Secrets(ns).Apply(ctx, ac, apply)
	case *corev1ac.PodApplyConfiguration:
		_, err = c.CoreV1().Pods(ns).Apply(ctx, ac, apply)
	default:
		return fmt.Errorf("cannot apply %T", o.apply)
	}
	return classify(err)
}

// ownNamespace reads owner's namespace and says whether WhaleMountain may
// write into it: nil and no error when it does not exist, an error
// wrapping ErrNamespaceNotOurs when its name is a system or reserved one
// or when it exists without WhaleMountain's labels for owner.
func (b *Backend) ownNamespace(ctx context.Context, owner string) (*corev1.Namespace, error) {
	if problem := b.set.NamespaceProblem(owner); problem != "" {
		return nil, refusedName(owner, problem)
	}
	ns := b.set.Namespace(owner)
	cur, err := b.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read namespace %s: %w", ns, classify(err))
	}
	if !b.set.ours(cur, owner) {
		return nil, b.set.notOurs(cur, owner)
	}
	return cur, nil
}

// EnsureOwner makes owner's namespace, RBAC, quota, limit range, network
// policy (and pull secret) match the settings. Objects whose applied hash
// already matches are not sent: nothing changed, no mutating request.
//
// Nothing is written unless the namespace is WhaleMountain's for owner:
// it is created (never applied over something that exists) with the
// ownership labels, and an existing one without them, another owner's, or
// one whose name is a system or reserved one is refused with an error
// wrapping ErrNamespaceNotOurs.
func (b *Backend) EnsureOwner(ctx context.Context, owner string) (changed int, err error) {
	ns := b.set.Namespace(owner)
	cur, err := b.ownNamespace(ctx, owner)
	if err != nil {
		return 0, err
	}
	if cur == nil {
		// Create, not apply: a namespace somebody else made in the
		// meantime is then a conflict, not a takeover.
		cur, err = b.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: b.set.ownedLabels(owner)},
		}, metav1.CreateOptions{FieldManager: FieldManager})
		if err != nil {
			return 0, fmt.Errorf("create namespace %s: %w", ns, classify(err))
		}
	}
	for _, o := range b.set.ownerObjects(owner) {
		var live string
		if ac, isNS := o.apply.(*corev1ac.NamespaceApplyConfiguration); isNS {
			live = cur.Annotations[AnnotationHash]
			// Applied over the version checked above only: labels the
			// admins changed in between make it fail instead of undoing them.
			ac.WithResourceVersion(cur.ResourceVersion)
		} else if live, err = b.liveHash(ctx, ns, o); err != nil {
			return changed, fmt.Errorf("read %s: %w", o.describe(ns), err)
		}
		if live == o.hash {
			continue
		}
		if err := b.send(ctx, ns, o); err != nil {
			return changed, fmt.Errorf("apply %s: %w", o.describe(ns), err)
		}
		changed++
	}
	return changed, nil
}

// RemoveOwner deletes owner's namespace and everything in it. Only the
// admins' pruneNamespaces allows it; the reconciler never calls it
// otherwise. A namespace that is not WhaleMountain's for owner is left
// alone with an error wrapping ErrNamespaceNotOurs.
func (b *Backend) RemoveOwner(ctx context.Context, owner string) error {
	cur, err := b.ownNamespace(ctx, owner)
	if err != nil || cur == nil {
		return err
	}
	// Deleted only as it was checked: relabelled in between, it stays.
	pre := metav1.Preconditions{UID: &cur.UID, ResourceVersion: &cur.ResourceVersion}
	err = b.client.CoreV1().Namespaces().Delete(ctx, cur.Name, metav1.DeleteOptions{Preconditions: &pre})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete namespace %s: %w", cur.Name, classify(err))
	}
	return nil
}

// OwnerPods lists the pods WhaleMountain manages in owner's namespace
// (none when the namespace does not exist), with their repo and resources,
// sorted by repo and name, so that one quota can count an owner's pods
// together with their containers. Finished pods (phase Succeeded or
// Failed) are listed too, with their phase: the caller decides whether
// they count. Resources are the pod's limits (WhaleMountain sets requests
// equal to them).
func (b *Backend) OwnerPods(ctx context.Context, owner string) ([]core.Pod, error) {
	if b.set.NamespaceProblem(owner) != "" {
		return nil, nil
	}
	ns := b.set.Namespace(owner)
	list, err := b.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{
		LabelSelector: LabelManagedBy + "=" + ManagedByValue + "," + LabelOwner + "=" + owner,
	})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", ns, classify(err))
	}
	var out []core.Pod
	for _, p := range list.Items {
		if !b.set.mine(p.Labels) {
			continue // another instance's
		}
		u := core.Pod{Repo: p.Annotations[AnnotationRepo], Name: p.Labels[LabelName], Phase: string(p.Status.Phase), Hash: p.Annotations[AnnotationHash]}
		if u.Repo == "" {
			u.Repo = p.Labels[LabelRepo]
		}
		if u.Name == "" {
			u.Name = p.Name
		}
		var cpu int64
		for _, c := range p.Spec.Containers {
			lim := c.Resources.Limits
			u.GPUs += int(lim.Name(corev1.ResourceName(b.set.Kubernetes.GPUResource), resource.DecimalSI).Value())
			cpu += lim.Cpu().MilliValue()
			u.MemoryBytes += lim.Memory().Value()
		}
		u.CPUs = float64(cpu) / 1000
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b core.Pod) int {
		return cmp.Or(strings.Compare(a.Repo, b.Repo), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Backend is the Kubernetes cluster as the domain core defines one.
var _ core.Cluster = (*Backend)(nil)
