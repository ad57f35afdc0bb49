// Package docker is WhaleMountain's Docker backend: it makes, lists, starts,
// stops and removes the hardened containers that wm.yaml files ask for, on
// one Docker host, and nothing else.
//
// # Model
//
// Every container, volume and network WhaleMountain makes carries labels:
// LabelManagedBy ("whalemountain") and LabelOwner; containers also carry
// LabelRepo, LabelName and LabelSpecHash. Only labelled objects are ever
// listed, changed or removed. A container of the right name without the
// labels is, to every method but Create, not there (ErrNotFound); to Create
// it is a conflict (ErrConflict) and it is left alone.
//
// Every object also carries LabelInstance, the WhaleMountain instance
// whose engine made it (WithInstance; core.DefaultInstance, "wm", unless the
// server config names another). An engine lists, changes and removes only
// its own instance's objects: another instance's are, like unlabelled
// ones, not there to every method but Create, and a conflict to Create, so
// two WhaleMountains on one Docker Engine leave each other alone. Objects
// labelled before instances existed (no LabelInstance) are
// core.DefaultInstance's, so an upgrade adopts them. The instance label is not
// part of core.ContainerSpec.Hash: adding it recreates nothing.
//
// Errors are of the classes in errors.go, each of a kind in package fault
// (ErrUnreachable is fault.Unreachable, ErrConflict fault.Conflict, ...).
//
// A container is identified by its full name, "<owner>_<name>"
// (ObjectName: '_' is in neither an account nor a name, so names never
// collide across accounts); its volumes are named "<owner>_<volume>" (or
// the legacy "<owner>-<volume>" of a volume the owner already has) and its
// network core.NetworkName(instance, owner) ("wm-<owner>" for the default
// instance, "<instance>_<owner>" for another; Create refuses any other),
// so no spec can reach another owner's objects (core.ContainerSpec.Validate refuses a volume
// outside the owner's prefix, and Create refuses a network or volume of
// the right name that another owner or nobody labelled).
//
// A container is never updated in place. A spec change means recreate:
// Remove, then Create with the same name, the same host ports and the same
// volumes. The caller decides by comparing core.ContainerSpec.Hash with the container's
// LabelSpecHash. Running is not in the hash: starting and stopping a
// container keeps it. Host ports are chosen by the caller and kept across
// recreates; volumes are never removed by Remove, only by RemoveVolume.
//
// # Hardening
//
// Create always applies, whatever the core.ContainerSpec says:
//
//   - Privileged false, and every capability dropped (CapDrop ALL) but a
//     short allowlist, CapAdd: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
//     SETGID, SETUID, NET_BIND_SERVICE. These are what an image that starts
//     as root needs to prepare files and drop to its own user (entrypoints
//     that chown a data directory, then setuid/setgid, as the official
//     postgres, nginx and redis images do) and to bind a port below 1024.
//     Without them such images fail at start; with them root in the
//     container still cannot mount, load modules, trace processes, change
//     the network, chroot or make device nodes.
//   - SecurityOpt no-new-privileges:true: setuid binaries and file
//     capabilities give nothing, so a process that dropped to a user stays
//     there.
//   - A process limit (core.ContainerSpec.PidsLimit, core.DefaultPidsLimit when 0), NanoCPUs,
//     and Memory with no swap beyond it.
//   - No host namespaces: the network is the owner's bridge network
//     (core.ContainerSpec.Network, made with the owner's labels when missing); IpcMode
//     private; PID, UTS and user namespaces the daemon's default (private).
//   - No bind mounts at all: only named volumes, mounted as type volume.
//   - Init true, so that PID 1 reaps zombies and forwards signals.
//   - RestartPolicy unless-stopped: a crashed container comes back, a
//     stopped one stays stopped across daemon restarts.
//   - Ports published on 0.0.0.0, TCP, one host port per guest port.
//   - GPUs as a device request {Driver: nvidia, Count: n, Capabilities:
//     [[gpu]]} when core.ContainerSpec.GPUs > 0.
//   - Logs in json-file, rotated at 10 MB, 3 files kept.
//
// A change to this list changes core's hashVersion, and with it every core.ContainerSpec.Hash,
// so that containers made by an older version are recreated.
//
// # Errors
//
// Errors are wrapped with %w and classified: ErrNotFound, ErrConflict,
// ErrImageNotFound, ErrUnauthorized, ErrUnreachable, ErrPortInUse and
// core.ErrInvalidSpec, matched with errors.Is, the same for Engine and
// Fake; ErrImageNotFound and ErrPortInUse are the domain core's errors.
// The daemon's own error stays in the chain too.
//
// # Implementations
//
// Engine talks to a Docker daemon (API 1.41 or later, negotiated). Fake
// keeps a host in memory for the tests of callers. Both pass the same
// contract tests (contract_test.go), the Engine against the local daemon
// and against a second real engine (ci/docker2-up, dockertest.Second),
// over its unix socket and over TCP with TLS.
// Package dockertest has the helpers those tests, and callers' tests, use.
package docker

import (
	"context"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
)

// engine is the method set both implementations share: core.Engine and
// what this package's tests need besides.
type engine interface {
	Name() string
	Close() error
	ListManaged(ctx context.Context) ([]core.Container, error)
	ListOwned(ctx context.Context, owner string) ([]core.Container, error)
	Inspect(ctx context.Context, name string) (core.Container, error)
	Create(ctx context.Context, s core.ContainerSpec) (core.Container, error)
	Start(ctx context.Context, name string) error
	Stop(ctx context.Context, name string, timeout time.Duration) error
	Remove(ctx context.Context, name string) error
	Rename(ctx context.Context, name, to string) error
	ListVolumes(ctx context.Context) ([]core.Volume, error)
	RemoveVolume(ctx context.Context, name string) error
	ImageExists(ctx context.Context, ref string) (bool, error)
	Pull(ctx context.Context, ref string, auth *core.RegistryAuth) error
}

var (
	_ engine = (*Engine)(nil)
	_ engine = (*Fake)(nil)
)
