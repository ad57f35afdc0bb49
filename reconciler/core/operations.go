package core

import (
	"context"
	"time"
)

// Meter is an Engine that can say how much CPU time a container has
// used: idle culling measures with it. *docker.Engine and *docker.Fake
// are Meters.
type Meter interface {
	// CPUTime returns the CPU time the managed container called name has
	// used since it last started.
	CPUTime(ctx context.Context, name string) (time.Duration, error)
}

// ImagePruner is an Engine that can remove the dangling images of its
// host (untagged, used by no container): the clean-up schedule runs it.
type ImagePruner interface {
	// PruneDanglingImages removes them and says how many and how many
	// bytes that freed.
	PruneDanglingImages(ctx context.Context) (removed int, reclaimed uint64, err error)
}

// Culled is the reason of a repo with a container stopped for sitting
// idle: a new commit or a wake brings it back.
const Culled Reason = "Culled"
