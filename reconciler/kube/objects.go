package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	netv1ac "k8s.io/client-go/applyconfigurations/networking/v1"
	rbacv1ac "k8s.io/client-go/applyconfigurations/rbac/v1"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/schema"
)

// Labels and annotations WhaleMountain puts on every object.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedByValue = "whalemountain"
	LabelOwner     = "whalemountain.dev/owner"
	LabelRepo      = "whalemountain.dev/repo" // the repo key with "/" as "."
	LabelName      = "whalemountain.dev/name"
	AnnotationHash = "whalemountain.dev/applied-hash"
	AnnotationRepo = "whalemountain.dev/repo"
	FieldManager   = "whalemountain"
	// LabelInstance is the WhaleMountain instance that made the object
	// (Settings.Instance): a backend reads, writes and deletes only its
	// own instance's objects. An object without it was made before
	// instances existed, and is DefaultInstance's. It is not part of the
	// applied hash, so that adding it recreates no pod.
	LabelInstance = "whalemountain.dev/instance"
)

// InstanceOf is the instance an object of WhaleMountain's with labels
// belongs to: its LabelInstance, or DefaultInstance when it has none; ""
// when it is not WhaleMountain's at all.
func InstanceOf(labels map[string]string) string {
	if labels[LabelManagedBy] != ManagedByValue {
		return ""
	}
	if i := labels[LabelInstance]; i != "" {
		return i
	}
	return core.DefaultInstance
}

// Names of the per-owner objects.
const (
	RoleName          = "wm-student"
	QuotaName         = "wm-quota"
	LimitRangeName    = "wm-defaults"
	NetworkPolicyName = "wm-default-deny"
	PullSecretName    = "wm-registry"
)

// Settings is what the backend needs of the server config.
type Settings struct {
	Kubernetes schema.Kubernetes
	Quota      schema.Quota
	Defaults   schema.Limits
	// PullSecret, when set, is a .dockerconfigjson put in every namespace
	// and used to pull images.
	PullSecret []byte
	// Instance is the WhaleMountain instance (the server config's
	// instance) whose namespaces and pods the backend manages; ""
	// is DefaultInstance. Another instance's namespace is refused like
	// one WhaleMountain did not make (ErrNamespaceNotOurs), and its pods
	// are never listed: two instances on one cluster need different
	// namespace prefixes.
	Instance string
}

// instance is s.Instance, DefaultInstance when unset.
func (s Settings) instance() string {
	if s.Instance == "" {
		return core.DefaultInstance
	}
	return s.Instance
}

// mine reports whether an object with labels is s's instance's.
func (s Settings) mine(labels map[string]string) bool { return InstanceOf(labels) == s.instance() }

// instanceLabel is the label that says which instance made an object.
func (s Settings) instanceLabel() map[string]string {
	return map[string]string{LabelInstance: s.instance()}
}

// ownedLabels are the labels of owner's namespace: labels(owner) and
// the instance.
func (s Settings) ownedLabels(owner string) map[string]string {
	l := labels(owner)
	l[LabelInstance] = s.instance()
	return l
}

// Namespace is the name of owner's namespace.
func (s Settings) Namespace(owner string) string { return s.Kubernetes.NamespacePrefix + owner }

// NamespaceProblem says why owner may not have a namespace at all, in
// words for the student and the admins, or "" when the name is fine. The
// namespace "<prefix><owner>" must be a DNS label, must not be Kubernetes'
// own (default, kube-*) and must not be one the admins reserved
// (kubernetes.reservedNamespaces): an account whose name completes one of
// those would otherwise be handed it. It does no I/O: the reconciler may
// ask it for every owner, and the backend asks it before every write.
func (s Settings) NamespaceProblem(owner string) string {
	ns := s.Namespace(owner)
	switch {
	case owner == "" || len(validation.IsDNS1123Label(ns)) > 0:
		return fmt.Sprintf("the namespace name %q is not a valid Kubernetes namespace name", ns)
	case ns == "default" || strings.HasPrefix(ns, "kube-"):
		return fmt.Sprintf("the namespace %s is Kubernetes' own (default and kube-* are)", ns)
	}
	for _, r := range s.Kubernetes.ReservedNamespaces {
		if start, ok := strings.CutSuffix(r, "*"); ns == r || ok && strings.HasPrefix(ns, start) {
			return fmt.Sprintf("the namespace %s is reserved by the admins (kubernetes.reservedNamespaces: %s)", ns, r)
		}
	}
	return ""
}

// refusedName is the error for an owner whose namespace name is a
// system or reserved one (problem is NamespaceProblem's answer).
func refusedName(owner, problem string) error {
	return fmt.Errorf("%w: %s, so the account %s cannot have a namespace; nothing is written there "+
		"(admins: choose a kubernetes.namespacePrefix with which no account name makes a system or reserved namespace)",
		ErrNamespaceNotOurs, problem, owner)
}

// ours says whether n is the namespace this WhaleMountain instance made
// for owner: it carries both ownership labels and the instance's (none is
// the default instance's), which WhaleMountain sets when it creates it
// and students cannot change.
func (s Settings) ours(n *corev1.Namespace, owner string) bool {
	return s.mine(n.Labels) && n.Labels[LabelOwner] == owner
}

// notOurs is the error for an existing namespace that is not owner's
// WhaleMountain namespace, saying what the admins can do about it.
func (s Settings) notOurs(n *corev1.Namespace, owner string) error {
	if other := InstanceOf(n.Labels); other != "" && other != s.instance() {
		return fmt.Errorf("%w: namespace %s is WhaleMountain instance %s's, not this instance's (%s); nothing is written to it "+
			"(admins: give each instance on one cluster its own kubernetes.namespacePrefix)",
			ErrNamespaceNotOurs, n.Name, other, s.instance())
	}
	if other := n.Labels[LabelOwner]; n.Labels[LabelManagedBy] == ManagedByValue && other != "" {
		return fmt.Errorf("%w: namespace %s is WhaleMountain's namespace of %s, not of %s; nothing is written to it "+
			"(admins: if the account was renamed, delete the namespace or set its label %s to %s)",
			ErrNamespaceNotOurs, n.Name, other, owner, LabelOwner, owner)
	}
	return fmt.Errorf("%w: namespace %s exists without WhaleMountain's labels for %s (%s=%s and %s=%s); "+
		"nothing is written to it (admins: if it belongs to something else, add it to kubernetes.reservedNamespaces and "+
		"change kubernetes.namespacePrefix or the account's name; if it is meant to be this student's, add those two labels)",
		ErrNamespaceNotOurs, n.Name, owner, LabelManagedBy, ManagedByValue, LabelOwner, owner)
}

// dnsPeer is the only peer pods may send DNS queries to.
func (s Settings) dnsPeer() *netv1ac.NetworkPolicyPeerApplyConfiguration {
	d := s.Kubernetes.DNS.WithDefaults()
	return netv1ac.NetworkPolicyPeer().
		WithNamespaceSelector(metav1ac.LabelSelector().WithMatchLabels(d.NamespaceSelector)).
		WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(d.PodSelector))
}

func labels(owner string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, LabelOwner: owner}
}

// repoLabel turns a repo key ("alice/web") into a label value.
func repoLabel(key string) string { return strings.ReplaceAll(key, "/", ".") }

// hashOf is the applied-hash of an apply configuration.
func hashOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // apply configurations always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// object is one desired object: its kind and name, the apply
// configuration, and the hash that tells whether it must be sent.
type object struct {
	kind, name string
	hash       string
	apply      any
}

// ownerObjects are the namespace-level objects of one owner, in the order
// they are applied (the namespace first).
func (s Settings) ownerObjects(owner string) []object {
	ns := s.Namespace(owner)
	k := s.Kubernetes
	// Added after the hash: see LabelInstance.
	inst := s.instanceLabel()
	var out []object
	add := func(kind, name string, ac any, setHash func(string)) {
		h := hashOf(ac)
		setHash(h)
		out = append(out, object{kind: kind, name: name, hash: h, apply: ac})
	}

	nsAC := corev1ac.Namespace(ns).WithLabels(labels(owner)).WithLabels(map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
		"pod-security.kubernetes.io/warn":            "restricted",
		"pod-security.kubernetes.io/audit":           "restricted",
	})
	add("Namespace", ns, nsAC, func(h string) { nsAC.WithAnnotations(map[string]string{AnnotationHash: h}).WithLabels(inst) })

	role := rbacv1ac.Role(RoleName, ns).WithLabels(labels(owner)).WithRules(
		rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("pods").WithVerbs("get", "list", "watch"),
		rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("pods/log").WithVerbs("get"),
		rbacv1ac.PolicyRule().WithAPIGroups("").WithResources("pods/exec").WithVerbs("get", "create"),
	)
	add("Role", RoleName, role, func(h string) { role.WithAnnotations(map[string]string{AnnotationHash: h}).WithLabels(inst) })

	binding := rbacv1ac.RoleBinding(RoleName, ns).WithLabels(labels(owner)).
		WithRoleRef(rbacv1ac.RoleRef().WithAPIGroup("rbac.authorization.k8s.io").WithKind("Role").WithName(RoleName)).
		WithSubjects(rbacv1ac.Subject().WithAPIGroup("rbac.authorization.k8s.io").WithKind("User").WithName(k.UserPrefix + owner))
	add("RoleBinding", RoleName, binding, func(h string) { binding.WithAnnotations(map[string]string{AnnotationHash: h}).WithLabels(inst) })

	q := s.Quota
	hard := corev1.ResourceList{
		corev1.ResourceName("requests." + k.GPUResource): *resource.NewQuantity(int64(q.GPUs), resource.DecimalSI),
		corev1.ResourceRequestsCPU:                       cpuQuantity(q.CPUs),
		corev1.ResourceLimitsCPU:                         cpuQuantity(q.CPUs),
		corev1.ResourceRequestsMemory:                    resource.MustParse(q.Memory),
		corev1.ResourceLimitsMemory:                      resource.MustParse(q.Memory),
		corev1.ResourcePods:                              *resource.NewQuantity(int64(q.Pods), resource.DecimalSI),
	}
	quota := corev1ac.ResourceQuota(QuotaName, ns).WithLabels(labels(owner)).WithSpec(corev1ac.ResourceQuotaSpec().WithHard(hard))
	add("ResourceQuota", QuotaName, quota, func(h string) { quota.WithAnnotations(map[string]string{AnnotationHash: h}).WithLabels(inst) })

	def := corev1.ResourceList{corev1.ResourceCPU: cpuQuantity(s.Defaults.CPUs), corev1.ResourceMemory: resource.MustParse(s.Defaults.Memory)}
	lr := corev1ac.LimitRange(LimitRangeName, ns).WithLabels(labels(owner)).WithSpec(corev1ac.LimitRangeSpec().WithLimits(
		corev1ac.LimitRangeItem().WithType(corev1.LimitTypeContainer).WithDefault(def).WithDefaultRequest(def)))
	add("LimitRange", LimitRangeName, lr, func(h string) { lr.WithAnnotations(map[string]string{AnnotationHash: h}).WithLabels(inst) })

	np := netv1ac.NetworkPolicy(NetworkPolicyName, ns).WithLabels(labels(owner))
	spec := netv1ac.NetworkPolicySpec().WithPodSelector(metav1ac.LabelSelector()).WithPolicyTypes("Ingress", "Egress")
	if !k.DenyDNS {
		udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
		dns := intstr.FromInt32(53)
		spec.WithEgress(netv1ac.NetworkPolicyEgressRule().WithTo(s.dnsPeer()).WithPorts(
			netv1ac.NetworkPolicyPort().WithProtocol(udp).WithPort(dns),
			netv1ac.NetworkPolicyPort().WithProtocol(tcp).WithPort(dns)))
	}
	np.WithSpec(spec)
	add("NetworkPolicy", NetworkPolicyName, np, func(h string) { np.WithAnnotations(map[string]string{AnnotationHash: h}).WithLabels(inst) })

	if len(s.PullSecret) > 0 {
		sec := corev1ac.Secret(PullSecretName, ns).WithLabels(labels(owner)).WithType(corev1.SecretTypeDockerConfigJson).
			WithData(map[string][]byte{corev1.DockerConfigJsonKey: s.PullSecret})
		add("Secret", PullSecretName, sec, func(h string) { sec.WithAnnotations(map[string]string{AnnotationHash: h}).WithLabels(inst) })
	}
	return out
}

// podObject is the apply configuration of one pod, hardened to pass Pod
// Security "restricted": non-root (uid 1000 unless the image says
// otherwise is not known here, so 1000), no privilege escalation, every
// capability dropped, the runtime's default seccomp profile.
func (s Settings) podObject(p core.PodSpec) object {
	k := s.Kubernetes
	ns := s.Namespace(p.Owner)
	lim := corev1.ResourceList{
		corev1.ResourceCPU:    cpuQuantity(p.CPUs),
		corev1.ResourceMemory: *resource.NewQuantity(p.MemoryBytes, resource.BinarySI),
	}
	if p.GPUs > 0 {
		lim[corev1.ResourceName(k.GPUResource)] = *resource.NewQuantity(int64(p.GPUs), resource.DecimalSI)
	}
	ctr := corev1ac.Container().WithName(p.Name).WithImage(p.Image).
		WithResources(corev1ac.ResourceRequirements().WithLimits(lim).WithRequests(lim)).
		WithSecurityContext(corev1ac.SecurityContext().
			WithAllowPrivilegeEscalation(false).
			WithRunAsNonRoot(true).
			WithCapabilities(corev1ac.Capabilities().WithDrop("ALL")).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)))
	// wm.yaml's entrypoint is Kubernetes' command, wm.yaml's command its args.
	if len(p.Entrypoint) > 0 {
		ctr.WithCommand(p.Entrypoint...)
	}
	if len(p.Command) > 0 {
		ctr.WithArgs(p.Command...)
	}
	if p.Workdir != "" {
		ctr.WithWorkingDir(p.Workdir)
	}
	for _, name := range slices.Sorted(maps.Keys(p.Env)) {
		ctr.WithEnv(corev1ac.EnvVar().WithName(name).WithValue(p.Env[name]))
	}
	spec := corev1ac.PodSpec().WithContainers(ctr).
		WithRestartPolicy(corev1.RestartPolicy(p.Restart)).
		WithAutomountServiceAccountToken(false).
		WithEnableServiceLinks(false).
		WithSecurityContext(corev1ac.PodSecurityContext().
			WithRunAsNonRoot(true).WithRunAsUser(1000).WithRunAsGroup(1000).
			WithSeccompProfile(corev1ac.SeccompProfile().WithType(corev1.SeccompProfileTypeRuntimeDefault)))
	if p.GPUs > 0 {
		if len(k.GPUNodeSelector) > 0 {
			spec.WithNodeSelector(k.GPUNodeSelector)
		}
		for _, t := range k.GPUTolerations {
			tol := corev1ac.Toleration().WithKey(t.Key).WithValue(t.Value)
			if t.Operator != "" {
				tol.WithOperator(corev1.TolerationOperator(t.Operator))
			}
			if t.Effect != "" {
				tol.WithEffect(corev1.TaintEffect(t.Effect))
			}
			spec.WithTolerations(tol)
		}
	}
	if len(s.PullSecret) > 0 {
		spec.WithImagePullSecrets(corev1ac.LocalObjectReference().WithName(PullSecretName))
	}
	l := labels(p.Owner)
	l[LabelRepo] = repoLabel(p.Repo)
	l[LabelName] = p.Name
	pod := corev1ac.Pod(p.Name, ns).WithLabels(l).WithSpec(spec)
	h := hashOf(pod)
	// The instance is added after the hash: see LabelInstance.
	pod.WithAnnotations(map[string]string{AnnotationHash: h, AnnotationRepo: p.Repo}).WithLabels(s.instanceLabel())
	return object{kind: "Pod", name: p.Name, hash: h, apply: pod}
}

func cpuQuantity(cores float64) resource.Quantity {
	return *resource.NewMilliQuantity(int64(math.Round(cores*1000)), resource.DecimalSI)
}

// describe names an object for messages.
func (o object) describe(ns string) string { return fmt.Sprintf("%s %s/%s", o.kind, ns, o.name) }
