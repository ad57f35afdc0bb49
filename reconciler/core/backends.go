package core

import (
	"context"
	"time"
)

// The backends a pass drives, one small interface each. Every kind of
// resource is handled with the same verbs: observe what an owner has,
// check a change before anything is removed (where the backend can say
// no), apply it, delete what nothing declares, and read back its health.
//
//	         observe        check        apply                 delete        health
//	Engine   ListOwned      (quota)      Create/Start/Stop     Remove        ListOwned
//	Cluster  OwnerPods      CheckPod     ApplyPod              DeletePod     PodStatuses
//	SIFs     RepoState.SIFs (limits)     Build, Move           Remove        (checksum)
//
// Errors are classified behind each interface with the kinds of package
// fault (NotFound, Conflict, Unreachable, Refused, ...), so that the pass
// maps kinds to outcomes in one place.

// Engine is one Docker host; *docker.Engine and *docker.Fake are two.
// It lists, changes and removes only containers of its own instance that
// carry WhaleMountain's labels.
type Engine interface {
	// Name is the host's name in the server config.
	Name() string
	// ListManaged lists every managed container of the instance, all
	// owners together (placement and host ports need them all).
	ListManaged(ctx context.Context) ([]Container, error)
	// ListOwned lists owner's managed containers.
	ListOwned(ctx context.Context, owner string) ([]Container, error)
	// Create makes a container from spec (and its owner's network and
	// volumes when missing); it starts it when spec.Running.
	Create(ctx context.Context, spec ContainerSpec) (Container, error)
	// Start starts a managed container.
	Start(ctx context.Context, name string) error
	// Stop stops a managed container, killing it after timeout.
	Stop(ctx context.Context, name string, timeout time.Duration) error
	// Remove removes a managed container, running or not.
	Remove(ctx context.Context, name string) error
	// Rename renames a managed container.
	Rename(ctx context.Context, name, to string) error
	// ListVolumes lists the managed volumes of the instance.
	ListVolumes(ctx context.Context) ([]Volume, error)
	// RemoveVolume removes a managed volume no container uses.
	RemoveVolume(ctx context.Context, name string) error
	// ImageExists reports whether the host has the image.
	ImageExists(ctx context.Context, ref string) (bool, error)
	// Pull pulls an image, with auth when not nil.
	Pull(ctx context.Context, ref string, auth *RegistryAuth) error
}

// Cluster is the Kubernetes backend; *kube.Backend is one. Which pods to
// create, recreate or remove is the plan's decision; the cluster observes
// and carries out one step at a time.
type Cluster interface {
	// EnsureOwner makes the owner's namespace and what comes with it
	// (role, binding, quota, network policy), returning how many objects
	// it changed.
	EnsureOwner(ctx context.Context, owner string) (int, error)
	// OwnerPods lists the pods WhaleMountain runs for owner, with their
	// repo, hash and resources.
	OwnerPods(ctx context.Context, owner string) ([]Pod, error)
	// PodHash is the hash OwnerPods reports for a pod made from p.
	PodHash(p PodSpec) string
	// CheckPod asks admission, changing nothing, whether p would be
	// admitted (in place of the live pod of its name when replacing); a
	// refusal is of kind fault.Refused.
	CheckPod(ctx context.Context, p PodSpec, replacing bool) error
	// ApplyPod creates p or replaces the live pod of its name.
	ApplyPod(ctx context.Context, p PodSpec, replacing bool) error
	// DeletePod deletes a pod of owner's repo.
	DeletePod(ctx context.Context, owner, repo, name string) error
	// PodStatuses reads back a repo's pods.
	PodStatuses(ctx context.Context, owner, repo string) ([]PodStatus, error)
	// RemoveOwner deletes the owner's namespace.
	RemoveOwner(ctx context.Context, owner string) error
}

// SIFBuilder builds Singularity images into the artifacts folder and keeps
// that folder; *sif.Builder and *sif.Fake are two. A SIF is a file with
// sidecars (its checksum and the build's metadata), which these methods
// move together, so that no half-written SIF is ever served or taken for
// a cached build.
type SIFBuilder interface {
	// Build makes the SIF at dst from the image ref, or keeps the one
	// there when it is already of that image; progress, when not nil,
	// hears of each stage.
	Build(ctx context.Context, ref, dst string, progress func(stage string, done, total int64)) (SIFBuild, error)
	// Link hard-links the SIF at src to dst (same file name, another
	// folder), so that a build at dst finds it cached.
	Link(src, dst string) error
	// Move renames the SIF at src over dst.
	Move(src, dst string) error
	// Remove removes the SIF at path; what is gone already is no error.
	Remove(path string) error
}
