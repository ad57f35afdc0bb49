package docker

import (
	"strconv"
	"strings"

	"github.com/whalemountain/wm/reconciler/core"
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
	// LabelSpecHash is core.ContainerSpec.Hash of the spec the container was created
	// from; a caller recreates the container when it differs.
	LabelSpecHash = "dev.whalemountain.spec-hash"
	// LabelGPUs is how many GPUs the container holds, so that placement
	// can count a host's free GPUs from what ListManaged returns.
	LabelGPUs = "dev.whalemountain.gpus"
	// LabelGPUDevices are the GPU devices the container was given,
	// comma-separated, so that an allocation is rebuilt from what runs
	// after a restart; absent on a container without devices.
	LabelGPUDevices = "dev.whalemountain.gpu-devices"
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
	// made before instances existed, and is core.DefaultInstance's.
	LabelInstance = "dev.whalemountain.instance"
)

// InstanceOf is the instance a managed object with labels belongs to: its
// LabelInstance, or core.DefaultInstance when it has none; "" when it is not
// managed at all.
func InstanceOf(labels map[string]string) string {
	if labels[LabelManagedBy] != ManagedByValue {
		return ""
	}
	if i := labels[LabelInstance]; i != "" {
		return i
	}
	return core.DefaultInstance
}

// Labels returns the labels a container made from s carries, besides
// LabelInstance, which the engine adds (it is not part of the spec, nor of
// its Hash, so that the containers made before it are kept as they are).
func Labels(s core.ContainerSpec) map[string]string {
	l := map[string]string{
		LabelManagedBy: ManagedByValue,
		LabelOwner:     s.Owner,
		LabelRepo:      s.Repo,
		LabelName:      s.LocalName,
		LabelSpecHash:  s.Hash(),
		LabelGPUs:      strconv.Itoa(s.GPUs),
		LabelNanoCPUs:  strconv.FormatInt(s.NanoCPUs, 10),
		LabelMemory:    strconv.FormatInt(s.MemoryBytes, 10),
	}
	if len(s.GPUDevices) > 0 {
		l[LabelGPUDevices] = strings.Join(s.GPUDevices, ",")
	}
	return l
}

// ownedLabels are the labels of a volume or network made for owner by
// instance.
func ownedLabels(instance, owner string) map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, LabelOwner: owner, LabelInstance: instance}
}

// nilIfEmpty makes nil and empty alike for the engine API.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

// managed reports whether labels carry WhaleMountain's label, whatever
// the instance.
func managed(labels map[string]string) bool { return labels[LabelManagedBy] == ManagedByValue }

// decode fills c's ownership and resource fields from its labels, so that
// no caller reads this package's labels itself. A label that does not
// parse reads as 0.
func decode(c *core.Container) {
	l := c.Labels
	c.Managed = managed(l)
	c.Instance = InstanceOf(l)
	c.Owner, c.Repo, c.LocalName, c.SpecHash = l[LabelOwner], l[LabelRepo], l[LabelName], l[LabelSpecHash]
	c.GPUs, _ = strconv.Atoi(l[LabelGPUs])
	if d := l[LabelGPUDevices]; d != "" {
		c.GPUDevices = strings.Split(d, ",")
	}
	nano, err1 := strconv.ParseInt(l[LabelNanoCPUs], 10, 64)
	mem, err2 := strconv.ParseInt(l[LabelMemory], 10, 64)
	if c.LimitsKnown = err1 == nil && err2 == nil; c.LimitsKnown {
		c.NanoCPUs, c.MemoryBytes = nano, mem
	}
}
