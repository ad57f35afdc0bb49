package docker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Labels every container, volume and network WhaleMountain makes carries.
// Only objects with LabelManagedBy set to ManagedByValue are ever listed,
// changed or removed.
const (
	// LabelManagedBy marks an object as WhaleMountain's; its value is
	// ManagedByValue.
	LabelManagedBy = "dev.whalemountain.managed-by"
	// LabelOwner is the owner (student) the object belongs to.
	LabelOwner = "dev.whalemountain.owner"
	// LabelRepo is the key of the repo whose wm.yaml asked for the
	// container, e.g. "alice/web".
	LabelRepo = "dev.whalemountain.repo"
	// LabelName is the container's name in wm.yaml, e.g. "web".
	LabelName = "dev.whalemountain.name"
	// LabelSpecHash is Spec.Hash of the spec the container was created
	// from; a caller recreates the container when it differs.
	LabelSpecHash = "dev.whalemountain.spec-hash"
	// LabelGPUs is how many GPUs the container holds, so that placement
	// can count a host's free GPUs from what ListManaged returns.
	LabelGPUs = "dev.whalemountain.gpus"
	// LabelNanoCPUs and LabelMemory are the container's CPU and memory
	// limits, so that a student's quota is counted from what exists on
	// the hosts, never from what a pass last wrote down.
	LabelNanoCPUs = "dev.whalemountain.nano-cpus"
	LabelMemory   = "dev.whalemountain.memory-bytes"
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "whalemountain"
	// LabelInstance is the WhaleMountain instance that made the object
	// (the server config's instance): an engine lists, changes and
	// removes only its own instance's objects. An object without it was
	// made before instances existed, and is DefaultInstance's.
	LabelInstance = "dev.whalemountain.instance"
)

// DefaultInstance is the instance of an Engine made without WithInstance,
// and of every object labelled before LabelInstance existed.
const DefaultInstance = "wm"

// InstanceOf is the instance a managed object with labels belongs to: its
// LabelInstance, or DefaultInstance when it has none; "" when it is not
// managed at all.
func InstanceOf(labels map[string]string) string {
	if labels[LabelManagedBy] != ManagedByValue {
		return ""
	}
	if i := labels[LabelInstance]; i != "" {
		return i
	}
	return DefaultInstance
}

// NetworkName is the name of owner's bridge network under instance:
// "wm-<owner>" for DefaultInstance (or ""), as before instances existed,
// and "<instance>_<owner>" for any other. Instances and owners are DNS
// labels, which never hold '_', so another instance's names never meet
// the default one's, nor each other's ("wm-a" and "b" against "wm" and
// "a-b").
func NetworkName(instance, owner string) string {
	if instance == "" || instance == DefaultInstance {
		return DefaultInstance + "-" + owner
	}
	return instance + NameSeparator + owner
}

// NameSeparator joins an owner and a name from wm.yaml into the name of a
// container or volume. Both are DNS labels ([a-z0-9-]), which never hold
// '_', so "<owner>_<name>" splits one way only: student "alice" declaring
// "x-web" gets "alice_x-web", student "alice-x" declaring "web" gets
// "alice-x_web", and no account can take another's names.
const NameSeparator = "_"

// ObjectName is the engine name of an owner's container or volume called
// local in wm.yaml.
func ObjectName(owner, local string) string { return owner + NameSeparator + local }

// LegacyObjectName is the name WhaleMountain gave before NameSeparator:
// "<owner>-<name>", which could collide across accounts. It is only ever
// used to find what an owner already has (labelled with their account), so
// that their data moves to the new names without loss.
func LegacyObjectName(owner, local string) string { return owner + "-" + local }

// DefaultPidsLimit is the process limit of a container whose Spec leaves
// PidsLimit at 0: enough for a web server or a training job, not enough for
// a fork bomb to hurt the host.
const DefaultPidsLimit = 1024

// hashVersion is part of every Spec.Hash. Bump it when Create starts
// applying a different hardening or configuration to the same Spec, so that
// every container is recreated with it on the next pass.
const hashVersion = 2

// PortBinding publishes a guest TCP port on a host port, on all host
// addresses.
type PortBinding struct {
	// Guest is the port inside the container.
	Guest int `json:"guest"`
	// Host is the port on the Docker host.
	Host int `json:"host"`
}

// Mount puts a named volume into a container.
type Mount struct {
	// Volume is the full volume name, ObjectName(owner, volume), or the
	// legacy name of a volume the owner already has.
	Volume string `json:"volume"`
	// Target is the absolute path inside the container.
	Target string `json:"target"`
}

// Spec is everything Create needs to make one container: the wm.yaml
// container with every choice (image digest, host ports, limits) already
// made by the caller.
type Spec struct {
	// Identity.

	// Name is the container's full name, ObjectName(Owner, LocalName).
	Name string
	// Owner is the student the container belongs to.
	Owner string
	// Repo is the key of the repo, e.g. "alice/web".
	Repo string
	// LocalName is the container's name in wm.yaml.
	LocalName string

	// What runs.

	// Image is a fully resolved reference that is present on the host.
	Image string
	// Entrypoint replaces the image's ENTRYPOINT; nil or empty keeps it.
	Entrypoint []string
	// Command replaces the image's CMD; nil or empty keeps it.
	Command []string
	// Env is set on top of the image's environment.
	Env map[string]string
	// Workdir replaces the image's WORKDIR when set.
	Workdir string
	// User replaces the image's USER when set.
	User string

	// Wiring.

	// Ports are published on the host, TCP, on 0.0.0.0.
	Ports []PortBinding
	// Mounts are named volumes; they are created when missing and outlive
	// the container.
	Mounts []Mount
	// Network is the owner's bridge network under the engine's instance,
	// NetworkName(instance, Owner) ("wm-<owner>" for the default
	// instance); it is created when missing.
	Network string

	// Limits.

	// GPUs is the number of NVIDIA GPUs; 0 asks for none.
	GPUs int
	// NanoCPUs caps CPU time in billionths of a core; 0 is unlimited.
	NanoCPUs int64
	// MemoryBytes caps memory (and swap: none beyond it); 0 is unlimited.
	MemoryBytes int64
	// PidsLimit caps the number of processes; 0 means DefaultPidsLimit.
	PidsLimit int64

	// State.

	// Running is the desired state. It is not part of Hash: starting or
	// stopping never recreates.
	Running bool
}

// canonicalSpec is what Hash encodes: every field that needs a recreate
// to change, with maps and unordered lists sorted and defaults filled in, so
// that equal meanings give equal hashes.
type canonicalSpec struct {
	V          int           `json:"v"`
	Name       string        `json:"name"`
	Owner      string        `json:"owner"`
	Repo       string        `json:"repo"`
	LocalName  string        `json:"localName"`
	Image      string        `json:"image"`
	Entrypoint []string      `json:"entrypoint"`
	Command    []string      `json:"command"`
	Env        [][2]string   `json:"env"`
	Workdir    string        `json:"workdir"`
	User       string        `json:"user"`
	Ports      []PortBinding `json:"ports"`
	Mounts     []Mount       `json:"mounts"`
	Network    string        `json:"network"`
	GPUs       int           `json:"gpus"`
	NanoCPUs   int64         `json:"nanoCPUs"`
	Memory     int64         `json:"memory"`
	PidsLimit  int64         `json:"pidsLimit"`
}

// Hash returns the hex SHA-256 of a canonical encoding of everything in s
// that can only change by recreating the container: all fields but
// Running. It does not depend on map iteration order, on the order of Ports
// and Mounts, on nil versus empty slices and maps, or on PidsLimit 0 versus
// DefaultPidsLimit. It also changes when a new version of this package
// hardens containers differently, so that they are recreated.
func (s Spec) Hash() string {
	c := canonicalSpec{
		V:          hashVersion,
		Name:       s.Name,
		Owner:      s.Owner,
		Repo:       s.Repo,
		LocalName:  s.LocalName,
		Image:      s.Image,
		Entrypoint: nilIfEmpty(s.Entrypoint),
		Command:    nilIfEmpty(s.Command),
		Workdir:    s.Workdir,
		User:       s.User,
		Ports:      sortedPorts(s.Ports),
		Mounts:     sortedMounts(s.Mounts),
		Network:    s.Network,
		GPUs:       s.GPUs,
		NanoCPUs:   s.NanoCPUs,
		Memory:     s.MemoryBytes,
		PidsLimit:  s.pidsLimit(),
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		c.Env = append(c.Env, [2]string{k, s.Env[k]})
	}
	// json.Marshal of this struct cannot fail: no maps, channels or funcs.
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Labels returns the labels a container made from s carries, besides
// LabelInstance, which the engine adds (it is not part of the spec, nor of
// its Hash, so that the containers made before it are kept as they are).
func (s Spec) Labels() map[string]string {
	return map[string]string{
		LabelManagedBy: ManagedByValue,
		LabelOwner:     s.Owner,
		LabelRepo:      s.Repo,
		LabelName:      s.LocalName,
		LabelSpecHash:  s.Hash(),
		LabelGPUs:      strconv.Itoa(s.GPUs),
		LabelNanoCPUs:  strconv.FormatInt(s.NanoCPUs, 10),
		LabelMemory:    strconv.FormatInt(s.MemoryBytes, 10),
	}
}

// ownedLabels are the labels of a volume or network made for owner by
// instance.
func ownedLabels(instance, owner string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, LabelOwner: owner, LabelInstance: instance}
}

// pidsLimit is the effective process limit.
func (s Spec) pidsLimit() int64 {
	if s.PidsLimit == 0 {
		return DefaultPidsLimit
	}
	return s.PidsLimit
}

// Validate reports the first reason Create must refuse s. It guards the
// invariants the hardening relies on: names stay inside the owner's
// namespace, so that no spec can mount another owner's volume.
func (s Spec) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidSpec, s.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case s.Owner == "" || s.LocalName == "":
		return bad("owner and local name are required")
	case s.Name != ObjectName(s.Owner, s.LocalName):
		return bad("name must be %q", ObjectName(s.Owner, s.LocalName))
	case s.Image == "":
		return bad("image is required")
	case s.Network == "":
		return bad("network is required")
	case s.GPUs < 0 || s.NanoCPUs < 0 || s.MemoryBytes < 0 || s.PidsLimit < 0:
		return bad("limits cannot be negative")
	}
	guests, hosts := map[int]bool{}, map[int]bool{}
	for _, p := range s.Ports {
		if p.Guest < 1 || p.Guest > 65535 || p.Host < 1 || p.Host > 65535 {
			return bad("port %d:%d out of range", p.Host, p.Guest)
		}
		if guests[p.Guest] || hosts[p.Host] {
			return bad("port %d:%d bound twice", p.Host, p.Guest)
		}
		guests[p.Guest], hosts[p.Host] = true, true
	}
	targets := map[string]bool{}
	for _, m := range s.Mounts {
		// A legacy name is accepted for a volume the owner already has:
		// creating or mounting one checks its owner label (ErrConflict).
		if !ownerPrefixed(m.Volume, s.Owner+NameSeparator) && !ownerPrefixed(m.Volume, s.Owner+"-") {
			return bad("volume %q is not the owner's: it must start with %q", m.Volume, s.Owner+NameSeparator)
		}
		if !path.IsAbs(m.Target) || targets[path.Clean(m.Target)] {
			return bad("mount target %q must be absolute and used once", m.Target)
		}
		targets[path.Clean(m.Target)] = true
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return bad("env name %q is invalid", k)
		}
	}
	return nil
}

// ownerPrefixed reports whether name is prefix followed by something.
func ownerPrefixed(name, prefix string) bool {
	return strings.HasPrefix(name, prefix) && len(name) > len(prefix)
}

// Container is a container as it is live on a host.
type Container struct {
	// ID is the engine's identifier.
	ID string
	// Name is the full name, "<owner>_<name>" (ObjectName).
	Name string
	// Labels are the container's labels, the image's included.
	Labels map[string]string
	// Image is the reference the container was created from.
	Image string

	// Running is true while the main process runs (also when paused or
	// restarting).
	Running bool
	// State is one of created, running, exited, restarting, paused, dead.
	State string
	// ExitCode is the exit code of the last run.
	ExitCode int
	// RestartCount is how often the engine restarted the container.
	RestartCount int
	// Ports are the host ports the container binds, sorted by guest port.
	// They are reported when the container is stopped too.
	Ports []PortBinding
	// Volumes are the named volumes mounted, sorted.
	Volumes []string
	// Health is "" when the image has no healthcheck, else healthy,
	// unhealthy or starting.
	Health string
	// StartedAt and FinishedAt are the last start and stop; zero when
	// they never happened.
	StartedAt, FinishedAt time.Time
}

// Managed reports whether the container carries WhaleMountain's label,
// whatever its instance.
func (c Container) Managed() bool { return c.Labels[LabelManagedBy] == ManagedByValue }

// Instance is the instance the container belongs to (InstanceOf its
// labels).
func (c Container) Instance() string { return InstanceOf(c.Labels) }

// SpecHash returns the spec hash the container was created with.
func (c Container) SpecHash() string { return c.Labels[LabelSpecHash] }

// Volume is a named volume on a host.
type Volume struct {
	// Name is the full name, "<owner>_<volume>" (ObjectName).
	Name string
	// Labels are the volume's labels.
	Labels map[string]string
}

// Auth is a registry credential for Pull.
type Auth struct {
	Username, Password string
}

func sortedPorts(p []PortBinding) []PortBinding {
	out := slices.Clone(p)
	slices.SortFunc(out, func(a, b PortBinding) int {
		if a.Guest != b.Guest {
			return a.Guest - b.Guest
		}
		return a.Host - b.Host
	})
	return nilIfEmpty(out)
}

func sortedMounts(m []Mount) []Mount {
	out := slices.Clone(m)
	slices.SortFunc(out, func(a, b Mount) int {
		if c := strings.Compare(a.Target, b.Target); c != 0 {
			return c
		}
		return strings.Compare(a.Volume, b.Volume)
	})
	return nilIfEmpty(out)
}

// nilIfEmpty makes nil and empty encode alike.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
