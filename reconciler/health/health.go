package health

import (
	"fmt"

	"github.com/whalemountain/wm/reconciler/core"
)

// Status is the health of one workload.
type Status string

// The vocabulary, from gitops-engine: a workload is Healthy when it does
// what was asked, Progressing on its way there, Degraded when it failed,
// Suspended when it was asked to be stopped and is, Missing when it does
// not exist, and Unknown when nothing can be said.
const (
	Healthy     Status = "Healthy"
	Progressing Status = "Progressing"
	Degraded    Status = "Degraded"
	Suspended   Status = "Suspended"
	Missing     Status = "Missing"
	Unknown     Status = "Unknown"
)

// CrashLoopRestarts is the restart count from which a running container
// whose process keeps dying is called Degraded rather than Healthy.
const CrashLoopRestarts = 3

// Container returns the health of a container that should be running
// (wantRunning) or stopped, with a short message for the student. A nil
// container is Missing.
func Container(c *core.Container, wantRunning bool) (Status, string) {
	if c == nil {
		return Missing, "the container does not exist"
	}
	if !wantRunning {
		if c.Running {
			return Progressing, "stopping"
		}
		return Suspended, "stopped, as wm.yaml asks"
	}
	switch c.State {
	case "running":
		switch c.Health {
		case "unhealthy":
			return Degraded, "running, but its health check fails"
		case "starting":
			return Progressing, "running, health check starting"
		}
		if c.RestartCount >= CrashLoopRestarts {
			return Degraded, fmt.Sprintf("running, but restarted %d times", c.RestartCount)
		}
		return Healthy, "running"
	case "created":
		return Progressing, "created, not started yet"
	case "restarting":
		return Degraded, fmt.Sprintf("restarting after exit code %d", c.ExitCode)
	case "exited", "dead":
		return Degraded, fmt.Sprintf("exited with code %d", c.ExitCode)
	case "paused":
		return Degraded, "paused by someone outside WhaleMountain"
	}
	return Unknown, "state " + c.State
}
