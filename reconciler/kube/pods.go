package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/whalemountain/wm/reconciler/core"
)

// The verbs a pass applies to one pod. Which pods to create, replace or
// delete is decided by the reconciler's plan, a pure function of the pods
// wm.yaml declares and those OwnerPods reports; the backend only carries
// out each step, and writes only into a namespace that is WhaleMountain's
// for the owner.

// PodHash is the hash of everything in p that only a new pod can change;
// OwnerPods reports the same hash of a live pod, so a plan pairs them.
func (s Settings) PodHash(p core.PodSpec) string { return s.podObject(p).hash }

// dryRunSuffix names the pod a dry run asks admission about, so that it
// never meets the pod it would replace (pods are immutable).
const dryRunSuffix = "-wm-dryrun"

// CheckPod asks the cluster's admission whether it would admit p (Pod
// Security, the namespace's quota), with a server-side dry run that
// changes nothing. A refusal wraps ErrRefused with the reason in plain
// words. When p replaces a live pod of the same name, a quota refusal only
// means the old pod is still counted and is not one: WhaleMountain's own
// quota has already counted the replacement instead.
func (b *Backend) CheckPod(ctx context.Context, p core.PodSpec, replacing bool) error {
	ns := b.set.Namespace(p.Owner)
	if err := b.mayWrite(ctx, p.Owner); err != nil {
		return err
	}
	pod, err := b.typedPod(p)
	if err != nil {
		return err
	}
	pod.Name = p.Name + dryRunSuffix
	_, err = b.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: FieldManager})
	switch {
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "status unknown for quota"):
		return fmt.Errorf("check pod %s/%s: %w", ns, p.Name, ErrQuotaNotReady)
	case replacing && strings.Contains(err.Error(), "exceeded quota"):
		// Admission still counts the pod this one replaces: judge the
		// quota as it will be once that one is gone.
		return b.fitsReplacing(ctx, ns, pod, p.Name)
	}
	if refused := admissionRefusal(err); refused != "" {
		return fmt.Errorf("%w: pods.%s: %s", ErrRefused, p.Name, refused)
	}
	return fmt.Errorf("check pod %s/%s: %w", ns, p.Name, classify(err))
}

// ApplyPod creates p, or replaces the live pod of its name (pods are
// immutable: it is deleted, then p created, waiting up to QuotaReleaseWait
// for the quota to release what the old one held).
func (b *Backend) ApplyPod(ctx context.Context, p core.PodSpec, replacing bool) error {
	ns := b.set.Namespace(p.Owner)
	if err := b.mayWrite(ctx, p.Owner); err != nil {
		return err
	}
	if replacing {
		zero := int64(0)
		if err := b.client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s/%s to recreate it: %w", ns, p.Name, classify(err))
		}
	}
	err := b.sendPod(ctx, ns, b.set.podObject(p), replacing)
	switch {
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "status unknown for quota"):
		return fmt.Errorf("apply pod %s/%s: %w", ns, p.Name, ErrQuotaNotReady)
	}
	if refused := admissionRefusal(err); refused != "" {
		return fmt.Errorf("%w: pods.%s: %s", ErrRefused, p.Name, refused)
	}
	return fmt.Errorf("apply pod %s/%s: %w", ns, p.Name, classify(err))
}

// DeletePod deletes owner's pod name when it is WhaleMountain's and repo's;
// a pod that is already gone is no error.
func (b *Backend) DeletePod(ctx context.Context, owner, repo, name string) error {
	ns := b.set.Namespace(owner)
	if err := b.mayWrite(ctx, owner); err != nil {
		return err
	}
	cur, err := b.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pod %s/%s: %w", ns, name, classify(err))
	}
	if !b.set.mine(cur.Labels) || cur.Annotations[AnnotationRepo] != repo {
		return fmt.Errorf("pod %s/%s is not %s's: it was left alone", ns, name, repo)
	}
	pre := metav1.Preconditions{UID: &cur.UID}
	if err := b.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &pre}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", ns, name, classify(err))
	}
	return nil
}

// fitsReplacing checks the namespace's quota for pod replacing the live pod
// called old: every hard limit must hold with the old pod's requests and
// limits given back and the new one's taken.
func (b *Backend) fitsReplacing(ctx context.Context, ns string, pod *corev1.Pod, old string) error {
	q, err := b.client.CoreV1().ResourceQuotas(ns).Get(ctx, QuotaName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read the quota of %s: %w", ns, classify(err))
	}
	cur, err := b.client.CoreV1().Pods(ns).Get(ctx, old, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read pod %s/%s: %w", ns, old, classify(err))
	}
	var over []string
	for name, hard := range q.Status.Hard {
		used := q.Status.Used[name].DeepCopy()
		if cur != nil && err == nil {
			used.Sub(podAmount(cur, name))
		}
		used.Add(podAmount(pod, name))
		if used.Cmp(hard) > 0 {
			over = append(over, fmt.Sprintf("%s %s of %s", name, used.String(), hard.String()))
		}
	}
	if len(over) > 0 {
		slices.Sort(over)
		return fmt.Errorf("%w: pods.%s: refused by your quota: it asks for more than is left (%s)", ErrRefused, old, strings.Join(over, ", "))
	}
	return nil
}

// podAmount is what pod counts against the quota resource name:
// "requests.X" and "X" count requests, "limits.X" limits, "pods" one.
func podAmount(pod *corev1.Pod, name corev1.ResourceName) resource.Quantity {
	if name == corev1.ResourcePods {
		return *resource.NewQuantity(1, resource.DecimalSI)
	}
	var sum resource.Quantity
	for _, c := range pod.Spec.Containers {
		list, key := c.Resources.Requests, string(name)
		if rest, ok := strings.CutPrefix(key, "limits."); ok {
			list, key = c.Resources.Limits, rest
		} else {
			key = strings.TrimPrefix(key, "requests.")
		}
		if v, ok := list[corev1.ResourceName(key)]; ok {
			sum.Add(v)
		}
	}
	return sum
}

// PodStatuses reads back repo's pods in owner's namespace, for the status
// a student sees.
func (b *Backend) PodStatuses(ctx context.Context, owner, repo string) ([]core.PodStatus, error) {
	if b.set.NamespaceProblem(owner) != "" {
		return nil, nil
	}
	out, err := b.statuses(ctx, b.set.Namespace(owner), repo)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return out, err
}

// mayWrite says whether WhaleMountain may write into owner's namespace:
// it must exist and be WhaleMountain's for owner (ErrNamespaceNotOurs
// otherwise).
func (b *Backend) mayWrite(ctx context.Context, owner string) error {
	cur, err := b.ownNamespace(ctx, owner)
	if err == nil && cur == nil {
		err = fmt.Errorf("namespace %s does not exist: it is made before its pods", b.set.Namespace(owner))
	}
	return err
}

// typedPod is the pod object of p as a typed Pod, for a dry-run Create.
func (b *Backend) typedPod(p core.PodSpec) (*corev1.Pod, error) {
	raw, err := json.Marshal(b.set.podObject(p).apply)
	if err != nil {
		return nil, fmt.Errorf("encode pod %s: %w", p.Name, err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		return nil, fmt.Errorf("decode pod %s: %w", p.Name, err)
	}
	return &pod, nil
}

// QuotaReleaseWait bounds how long the recreation of a pod waits for the
// quota to release what the deleted pod held: the quota controller
// recounts a namespace's usage a moment after a pod goes.
const QuotaReleaseWait = 15 * time.Second

// sendPod applies a pod. When it replaces a pod just deleted, a refusal
// by the quota may only mean that the old pod is still counted: it is
// tried again until the quota catches up or QuotaReleaseWait passes.
func (b *Backend) sendPod(ctx context.Context, ns string, o object, replacing bool) error {
	deadline := time.Now().Add(QuotaReleaseWait)
	for {
		err := b.send(ctx, ns, o)
		if err == nil || !replacing || !strings.Contains(err.Error(), "exceeded quota") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// statuses reads back the repo's pods.
func (b *Backend) statuses(ctx context.Context, ns, repo string) ([]core.PodStatus, error) {
	list, err := b.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: LabelRepo + "=" + repoLabel(repo)})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", ns, classify(err))
	}
	var out []core.PodStatus
	for _, p := range list.Items {
		if !b.set.mine(p.Labels) {
			continue
		}
		msg := p.Status.Message
		if msg == "" && p.Status.Phase == corev1.PodPending {
			msg = "waiting to be scheduled"
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
					msg = c.Message
				}
			}
		}
		out = append(out, core.PodStatus{Name: p.Name, Phase: string(p.Status.Phase), Message: msg})
	}
	slices.SortFunc(out, func(a, b core.PodStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// admissionRefusal turns a refusal by admission into words a student
// understands, or "" when err is not one.
func admissionRefusal(err error) string {
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		return ""
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "exceeded quota"):
		_, detail, _ := strings.Cut(msg, "exceeded quota: ")
		return "refused by your quota: it asks for more than is left (" + detail + ")"
	case strings.Contains(msg, "violates PodSecurity"):
		_, detail, _ := strings.Cut(msg, "violates PodSecurity ")
		return "refused by Pod Security: " + detail
	}
	return "refused by the cluster: " + msg
}

// PodHash is Settings.PodHash of the backend's settings.
func (b *Backend) PodHash(p core.PodSpec) string { return b.set.PodHash(p) }
