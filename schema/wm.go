package schema

import (
	_ "embed"
	"io"
	"time"
)

// Version is the only wm.yaml version this build understands.
const Version = 1

// Limits on one wm.yaml, so that one repo cannot ask for an unbounded
// amount of work.
const (
	MaxContainers = 20
	MaxPods       = 10
	MaxSIFs       = 10
	MaxNameLength = 40 // a name ends up as "<owner>-<name>", a DNS label
	MaxGPUs       = 8
)

// Bounds on every number and size of one container or pod. A validated
// File holds nothing outside them, so the reconciler can convert and sum
// them without checking again: cpus to whole milli-CPUs or nano-CPUs,
// memory to bytes, and the memory of every workload of an owner summed in
// an int64. wm.schema.json and README.md state the same bounds.
const (
	// MinCPUs and MaxCPUs bound cpus, in cores: less than MinCPUs would
	// round to "no limit" in some engines, more than MaxCPUs is no
	// student's workload.
	MinCPUs = 0.01
	MaxCPUs = 64
	// CPUDecimals is the most decimals cpus may have: cpus is a whole
	// number of milli-CPUs, the resolution of Kubernetes.
	CPUDecimals = 3
	// MinMemory is the least memory a workload may have: Docker refuses
	// less than 6 MiB, and a smaller value is almost always a unit mistake.
	MinMemory = 6 << 20
	// MaxMemoryBytes is the most memory one workload may ask for, 1Ti.
	MaxMemoryBytes = 1 << 40
	// MinShmBytes and MaxShmBytes bound a container's shmSize: /dev/shm
	// is memory, counted against the container's memory limit, which
	// it may not exceed either.
	MinShmBytes = 1 << 20
	MaxShmBytes = 64 << 30
	// MaxPortsPerContainer bounds ports: each one takes a host port.
	MaxPortsPerContainer = 16
	// MaxVolumesPerContainer bounds volumes: each one is a Docker volume.
	MaxVolumesPerContainer = 16
	// MaxEnv bounds the env entries of one container or pod, and
	// MaxEnvNameLength and MaxEnvValueLength (characters) each entry.
	MaxEnv            = 64
	MaxEnvNameLength  = 128
	MaxEnvValueLength = 4096
	// MaxArgs bounds the words of command and of entrypoint, and
	// MaxArgLength (characters) each word.
	MaxArgs      = 128
	MaxArgLength = 4096
	// MaxPathLength bounds workdir and volume mount paths, in characters.
	MaxPathLength = 1024
	// MaxUserLength bounds user, in characters.
	MaxUserLength = 64
	// MaxImageLength bounds an image reference, in characters.
	MaxImageLength = 512
	// MaxDescriptionLength bounds image.description, in characters.
	MaxDescriptionLength = 500
	// MinExpires and MaxExpires bound expires: a day of this century.
	MinExpires = "2000-01-01"
	MaxExpires = "2099-12-31"
)

// ImageSelf is the image reference meaning "the image CI built from this
// repo's Dockerfile for the commit being rolled out".
const ImageSelf = "self"

// SharedImagePrefix starts a reference to another student's shared image:
// "shared/<owner>/<repo>".
const SharedImagePrefix = "shared/"

// File is a wm.yaml, version 1: everything one repo asks WhaleMountain for.
// Who owns it is never in the file; it comes from where the repo lives.
type File struct {
	// Version must be 1.
	Version int `yaml:"version" json:"version"`
	// Image describes the image CI builds from ./Dockerfile, for the
	// catalogue and for sharing. Optional.
	Image *Image `yaml:"image,omitempty" json:"image,omitempty"`
	// Containers are Docker containers, keyed by name; the final name is
	// "<owner>-<name>".
	Containers map[string]Container `yaml:"containers,omitempty" json:"containers,omitempty"`
	// Pods are Kubernetes workloads in the owner's namespace, keyed by name.
	Pods map[string]Pod `yaml:"pods,omitempty" json:"pods,omitempty"`
	// Singularity are SIF images built from an image, keyed by name.
	Singularity map[string]SIF `yaml:"singularity,omitempty" json:"singularity,omitempty"`
	// Expires, a date (YYYY-MM-DD), stops everything after that day;
	// nothing is deleted. Empty means never.
	Expires string `yaml:"expires,omitempty" json:"expires,omitempty"`
}

// Image describes the repo's own image.
type Image struct {
	// Description is shown in the image catalogue.
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Share lets other students use the image as "shared/<owner>/<repo>".
	Share bool `yaml:"share,omitempty" json:"share,omitempty"`
}

// Container states a student can ask for.
const (
	StateRunning = "running"
	StateStopped = "stopped"
)

// Container is one Docker container.
type Container struct {
	// Image is "self", "shared/<owner>/<repo>" or an image reference.
	Image string `yaml:"image" json:"image"`
	// Entrypoint replaces the image's ENTRYPOINT when set.
	Entrypoint []string `yaml:"entrypoint,omitempty" json:"entrypoint,omitempty"`
	// Command replaces the image's CMD when set, as `docker run IMAGE CMD...`.
	Command []string `yaml:"command,omitempty" json:"command,omitempty"`
	// Env is set in the container, on top of the image's.
	Env map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	// Ports are guest ports; each is published on a host port that
	// WhaleMountain chooses once and keeps.
	Ports []int `yaml:"ports,omitempty" json:"ports,omitempty"`
	// Volumes maps a volume name to an absolute path in the container;
	// volumes outlive the container.
	Volumes map[string]string `yaml:"volumes,omitempty" json:"volumes,omitempty"`
	// Workdir replaces the image's WORKDIR when set (an absolute path).
	Workdir string `yaml:"workdir,omitempty" json:"workdir,omitempty"`
	// User replaces the image's USER when set: "uid", "uid:gid" or a name.
	User string `yaml:"user,omitempty" json:"user,omitempty"`
	// GPUs is the number of GPUs, 0 to 8.
	GPUs int `yaml:"gpus,omitempty" json:"gpus,omitempty"`
	// CPUs caps CPU time, in cores (1.5 = one and a half); unset means the
	// policy's default.
	CPUs *float64 `yaml:"cpus,omitempty" json:"cpus,omitempty"`
	// Memory caps memory, in Kubernetes quantity syntax ("512Mi", "2G");
	// unset means the policy's default.
	Memory string `yaml:"memory,omitempty" json:"memory,omitempty"`
	// ShmSize is the size of /dev/shm ("1Gi"), which GPU jobs' data
	// loaders need more of than Docker's 64Mi; unset keeps Docker's. It
	// counts against the container's memory and may not exceed it.
	ShmSize string `yaml:"shmSize,omitempty" json:"shmSize,omitempty"`
	// State is "running" (the default) or "stopped"; stopped keeps the
	// container and its volumes.
	State string `yaml:"state,omitempty" json:"state,omitempty"`
}

// Pod restart policies.
const (
	RestartNever     = "Never"
	RestartOnFailure = "OnFailure"
)

// Pod is one Kubernetes workload in the owner's namespace.
type Pod struct {
	// Image is "self", "shared/<owner>/<repo>" or an image reference.
	Image string `yaml:"image" json:"image"`
	// Entrypoint replaces the image's ENTRYPOINT when set.
	Entrypoint []string `yaml:"entrypoint,omitempty" json:"entrypoint,omitempty"`
	// Command replaces the image's CMD when set, as for containers.
	Command []string `yaml:"command,omitempty" json:"command,omitempty"`
	// Env is set in the pod's container.
	Env map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	// Workdir replaces the image's WORKDIR when set (an absolute path).
	Workdir string `yaml:"workdir,omitempty" json:"workdir,omitempty"`
	// GPUs is the number of GPUs, 0 to 8.
	GPUs int `yaml:"gpus,omitempty" json:"gpus,omitempty"`
	// CPUs is the CPU request and limit, in cores.
	CPUs *float64 `yaml:"cpus,omitempty" json:"cpus,omitempty"`
	// Memory is the memory request and limit, in Kubernetes quantity syntax.
	Memory string `yaml:"memory,omitempty" json:"memory,omitempty"`
	// Restart is "Never" (the default) or "OnFailure".
	Restart string `yaml:"restart,omitempty" json:"restart,omitempty"`
}

// SIF is one Singularity image built from a container image.
type SIF struct {
	// Image is "self", "shared/<owner>/<repo>" or an image reference.
	Image string `yaml:"image" json:"image"`
}

// Parse reads a wm.yaml from r, applies defaults and validates it. name is
// the file name used in errors. A non-nil error is always Errors, listing
// every problem with its line, column and field path.
func Parse(name string, r io.Reader) (*File, error) {
	var f File
	if err := parseInto(name, r, &f, f.applyDefaults, f.validate); err != nil {
		return nil, err
	}
	return &f, nil
}

// applyDefaults fills in what an omitted field means.
func (f *File) applyDefaults() {
	for name, c := range f.Containers {
		if c.State == "" {
			c.State = StateRunning
		}
		f.Containers[name] = c
	}
	for name, p := range f.Pods {
		if p.Restart == "" {
			p.Restart = RestartNever
		}
		f.Pods[name] = p
	}
}

// ExpiresAt returns the first instant after the expiry day (UTC), and false
// when the file does not expire. Only meaningful on a validated File.
func (f *File) ExpiresAt() (time.Time, bool) {
	if f.Expires == "" {
		return time.Time{}, false
	}
	day, err := time.Parse(time.DateOnly, f.Expires)
	if err != nil {
		return time.Time{}, false
	}
	return day.AddDate(0, 0, 1), true
}

// JSONSchema is wm.schema.json, the JSON Schema (draft 2020-12) of wm.yaml
// for editors; `wm schema` prints it.
//
//go:embed wm.schema.json
var JSONSchema []byte
