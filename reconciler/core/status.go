package core

import (
	"math"
	"time"
)

// ConditionType is one of the fixed vocabulary of a repo's status.
type ConditionType string

// The condition types every repo has.
const (
	// Ready: the applied revision runs as declared (Status true), or why
	// not (false, with the reason).
	Ready ConditionType = "Ready"
	// Reconciling: a pass is due again soon, because the last one failed
	// for a reason that passes by itself (Waiting or Transient).
	Reconciling ConditionType = "Reconciling"
	// Stalled: the revision will not be tried again until something
	// changes: a new commit or a new server config.
	Stalled ConditionType = "Stalled"
)

// Condition is one observation about a repo, as in Kubernetes: a type, a
// status, a CamelCase reason for machines and a message for people.
type Condition struct {
	Type               ConditionType `json:"type"`
	Status             bool          `json:"status"`
	Reason             Reason        `json:"reason"`
	Message            string        `json:"message"`
	LastTransitionTime time.Time     `json:"lastTransitionTime"`
}

// Object is one applied thing in a repo's inventory.
type Object struct {
	Kind     string `json:"kind"` // "container" or "volume"
	Host     string `json:"host"` // Docker host name
	Name     string `json:"name"` // full name on the host
	SpecHash string `json:"specHash,omitempty"`
}

// ContainerStatus is what a student sees of one container.
type ContainerStatus struct {
	Name  string         `json:"name"` // the name in wm.yaml
	Host  string         `json:"host"`
	Ports map[string]int `json:"ports,omitempty"` // guest port → host port, keys decimal
	State string         `json:"state"`
	// GPUs are the host's GPU devices the container holds.
	GPUs   []string          `json:"gpus,omitempty"`
	Health string            `json:"health"`
	Labels map[string]string `json:"-"`
}

// SIFStatus is one built Singularity image.
type SIFStatus struct {
	Name   string `json:"name"`
	Path   string `json:"path"` // on disk, in the artifacts folder
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Image  string `json:"image"` // the reference it was built from
}

// RetiredSIF is a SIF file waiting for its grace period to end.
type RetiredSIF struct {
	Path  string    `json:"path"`
	Since time.Time `json:"since"`
}

// RepoState is everything remembered about one repo.
type RepoState struct {
	Key              string            `json:"key"`
	Owner            string            `json:"owner"`
	URL              string            `json:"url"`
	Branch           string            `json:"branch"`
	ObservedRevision string            `json:"observedRevision,omitempty"`
	AppliedRevision  string            `json:"appliedRevision,omitempty"`
	Conditions       []Condition       `json:"conditions,omitempty"`
	Inventory        []Object          `json:"inventory,omitempty"`
	Containers       []ContainerStatus `json:"containers,omitempty"`
	Pods             []PodStatus       `json:"pods,omitempty"`
	SIFs             []SIFStatus       `json:"sifs,omitempty"`
	// RetiredSIFs are SIF files no longer declared, removed once their
	// grace period is over.
	RetiredSIFs []RetiredSIF `json:"retiredSIFs,omitempty"`
	// Image is what the repo's wm.yaml said of its image at the applied
	// revision, for sharing and the catalogue.
	ImageDescription string `json:"imageDescription,omitempty"`
	ImageShared      bool   `json:"imageShared,omitempty"`
	// Usage is what the applied revision counts against the owner's quota.
	Usage    Usage     `json:"usage"`
	LastPass time.Time `json:"lastPass,omitzero"`
	// ExtensionAsked is the expires: date of the applied wm.yaml when it
	// is past the repo's semester end: it holds only once an admin
	// approves an extension (see store.Extension).
	ExtensionAsked string `json:"extensionAsked,omitempty"`
}

// Usage is what counts against a student's quota. Stopped containers count
// as containers (and their host ports) but hold no GPU, CPU or memory.
type Usage struct {
	Containers  int     `json:"containers"`
	Pods        int     `json:"pods"`
	GPUs        int     `json:"gpus"`
	CPUs        float64 `json:"cpus"`
	MemoryBytes int64   `json:"memoryBytes"`
	Ports       int     `json:"ports,omitempty"`
}

// Add returns the sum of two usages. It saturates instead of overflowing,
// and a negative or non-finite part counts as the most there can be: no
// sum can wrap around into room under a quota.
func (u Usage) Add(v Usage) Usage {
	return Usage{
		Containers:  addInt(u.Containers, v.Containers),
		Pods:        addInt(u.Pods, v.Pods),
		GPUs:        addInt(u.GPUs, v.GPUs),
		CPUs:        addFloat(u.CPUs, v.CPUs),
		MemoryBytes: addInt(u.MemoryBytes, v.MemoryBytes),
		Ports:       addInt(u.Ports, v.Ports),
	}
}

// addInt adds two non-negative counts, saturating at the type's maximum;
// a negative operand (which no real usage has) saturates too.
func addInt[T int | int64](a, b T) T {
	sum := a + b
	if a < 0 || b < 0 || sum < a {
		return saturated(sum)
	}
	return sum
}

// saturated returns the largest value of x's type (x itself is unused).
func saturated[T int | int64](T) T {
	m := T(1)
	for m<<1 > 0 {
		m = m<<1 | 1
	}
	return m
}

// addFloat adds two CPU counts; NaN, negative or infinite saturate.
func addFloat(a, b float64) float64 {
	if !(a >= 0) || !(b >= 0) || math.IsInf(a+b, 0) {
		return math.Inf(1)
	}
	return a + b
}

// Condition returns the condition of type t, or nil.
func (r *RepoState) Condition(t ConditionType) *Condition {
	for i := range r.Conditions {
		if r.Conditions[i].Type == t {
			return &r.Conditions[i]
		}
	}
	return nil
}

// SetCondition records a condition, keeping its transition time when the
// status did not change.
func (r *RepoState) SetCondition(c Condition, now time.Time) {
	if old := r.Condition(c.Type); old != nil {
		c.LastTransitionTime = old.LastTransitionTime
		if old.Status != c.Status {
			c.LastTransitionTime = now
		}
		*old = c
		return
	}
	c.LastTransitionTime = now
	r.Conditions = append(r.Conditions, c)
}

// Pass is one reconcile pass of one repo, for the history.
type Pass struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Revision string        `json:"revision,omitempty"`
	Result   Reason        `json:"result"` // the Ready condition's reason, e.g. Applied, ValidationFailed
	Message  string        `json:"message,omitempty"`
	Changes  int           `json:"changes"`
}
