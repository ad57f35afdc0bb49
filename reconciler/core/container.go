package core

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/whalemountain/wm/reconciler/fault"
)

// ErrInvalidSpec (fault.Invalid): a ContainerSpec breaks an invariant (see
// ContainerSpec.Validate); a bug in the caller, not something a retry
// fixes. Every Engine refuses such a spec with it.
var ErrInvalidSpec = fault.New(fault.Invalid, "invalid spec")

// DefaultPidsLimit is the process limit of a container whose ContainerSpec leaves
// PidsLimit at 0: enough for a web server or a training job, not enough for
// a fork bomb to hurt the host.
const DefaultPidsLimit = 1024

// hashVersion is part of every ContainerSpec.Hash. Bump it when an engine starts
// applying a different hardening or configuration to the same ContainerSpec, so that
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

// ContainerSpec is everything an Engine needs to make one container: the wm.yaml
// container with every choice (image digest, host ports, limits) already
// made by the caller.
type ContainerSpec struct {
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
	// GPUDevices are the GPUs given to the container, as the host's
	// NVIDIA runtime names them (indexes or UUIDs), GPUs of them; empty
	// leaves the choice to the engine (the first GPUs devices).
	GPUDevices []string
	// ShmBytes is the size of /dev/shm; 0 keeps the engine's default.
	ShmBytes int64
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
	// Fields added later are left out when unset, so that adding one
	// recreates nothing that does not use it.
	GPUDevices []string `json:"gpuDevices,omitempty"`
	ShmBytes   int64    `json:"shmBytes,omitempty"`
}

// Hash returns the hex SHA-256 of a canonical encoding of everything in s
// that can only change by recreating the container: all fields but
// Running. It does not depend on map iteration order, on the order of Ports
// and Mounts, on nil versus empty slices and maps, or on PidsLimit 0 versus
// DefaultPidsLimit. It also changes when a new version of this package
// hardens containers differently, so that they are recreated.
func (s ContainerSpec) Hash() string {
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
		Ports:      SortedPorts(s.Ports),
		Mounts:     sortedMounts(s.Mounts),
		Network:    s.Network,
		GPUs:       s.GPUs,
		NanoCPUs:   s.NanoCPUs,
		Memory:     s.MemoryBytes,
		PidsLimit:  s.EffectivePidsLimit(),
		GPUDevices: nilIfEmpty(s.GPUDevices),
		ShmBytes:   s.ShmBytes,
	}
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		c.Env = append(c.Env, [2]string{k, s.Env[k]})
	}
	// json.Marshal of this struct cannot fail: no maps, channels or funcs.
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// EffectivePidsLimit is the process limit a container made from s gets.
func (s ContainerSpec) EffectivePidsLimit() int64 {
	if s.PidsLimit == 0 {
		return DefaultPidsLimit
	}
	return s.PidsLimit
}

// Validate reports the first reason an Engine must refuse s. It guards the
// invariants the hardening relies on: names stay inside the owner's
// namespace, so that no spec can mount another owner's volume.
func (s ContainerSpec) Validate() error {
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
	case s.GPUs < 0 || s.NanoCPUs < 0 || s.MemoryBytes < 0 || s.PidsLimit < 0 || s.ShmBytes < 0:
		return bad("limits cannot be negative")
	case len(s.GPUDevices) != 0 && len(s.GPUDevices) != s.GPUs:
		return bad("%d GPU device(s) for %d GPU(s)", len(s.GPUDevices), s.GPUs)
	case s.MemoryBytes > 0 && s.ShmBytes > s.MemoryBytes:
		return bad("/dev/shm of %d bytes is more than the memory limit", s.ShmBytes)
	}
	for i, id := range s.GPUDevices {
		if id == "" || strings.ContainsAny(id, ", \t\n") || slices.Contains(s.GPUDevices[:i], id) {
			return bad("GPU device %q is empty, holds a separator or is given twice", id)
		}
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

// Container is a container as it is live on a host, with what its labels
// say decoded by the engine that listed it: a pass never reads a backend's
// labels itself.
type Container struct {
	// ID is the engine's identifier.
	ID string
	// Name is the full name, "<owner>_<name>" (ObjectName).
	Name string
	// Labels are the container's labels, the image's included.
	Labels map[string]string
	// Image is the reference the container was created from.
	Image string

	// Ownership, from the labels: who asked for the container, and which
	// WhaleMountain instance made it.

	// Managed is true when the container carries WhaleMountain's label,
	// whatever its instance.
	Managed bool
	// Instance is the instance that made it; "" when it is not managed.
	Instance string
	// Owner, Repo and LocalName are the student, the repo key and the
	// container's name in wm.yaml.
	Owner, Repo, LocalName string
	// SpecHash is ContainerSpec.Hash of the spec it was made from.
	SpecHash string
	// GPUDevices are the GPUs it was given (as in its spec); empty for a
	// GPU container made before devices were allocated, which the engine
	// gave its first GPUs.
	GPUDevices []string
	// GPUs, NanoCPUs and MemoryBytes are its limits as made, so that a
	// quota counts what exists. LimitsKnown is false for a container made
	// before they were recorded (NanoCPUs and MemoryBytes then read 0):
	// the caller counts the defaults.
	GPUs                  int
	NanoCPUs, MemoryBytes int64
	LimitsKnown           bool

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

// Volume is a named volume on a host.
type Volume struct {
	// Name is the full name, "<owner>_<volume>" (ObjectName).
	Name string
	// Labels are the volume's labels.
	Labels map[string]string
}

// RegistryAuth is a registry credential for pulling images.
type RegistryAuth struct {
	Username, Password string
}

// SortedPorts returns a sorted copy of p (by guest, then host port);
// nil when p is empty.
func SortedPorts(p []PortBinding) []PortBinding {
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
