package health

import (
	"testing"

	"github.com/whalemountain/wm/reconciler/core"
)

func TestContainerHealth(t *testing.T) {
	for _, tc := range []struct {
		name        string
		c           *core.Container
		wantRunning bool
		want        Status
		msg         string
	}{
		{"a missing container is Missing", nil, true, Missing, "the container does not exist"},
		{"a running container without a health check is Healthy", &core.Container{State: "running", Running: true}, true, Healthy, "running"},
		{"a running container with a passing health check is Healthy", &core.Container{State: "running", Running: true, Health: "healthy"}, true, Healthy, "running"},
		{"a failing health check is Degraded", &core.Container{State: "running", Running: true, Health: "unhealthy"}, true, Degraded, "running, but its health check fails"},
		{"a starting health check is Progressing", &core.Container{State: "running", Running: true, Health: "starting"}, true, Progressing, "running, health check starting"},
		{"a container that keeps restarting is Degraded", &core.Container{State: "running", Running: true, RestartCount: 5}, true, Degraded, "running, but restarted 5 times"},
		{"a created container is Progressing", &core.Container{State: "created"}, true, Progressing, "created, not started yet"},
		{"an exited container that should run is Degraded", &core.Container{State: "exited", ExitCode: 2}, true, Degraded, "exited with code 2"},
		{"a restarting container is Degraded", &core.Container{State: "restarting", ExitCode: 1}, true, Degraded, "restarting after exit code 1"},
		{"a paused container is Degraded", &core.Container{State: "paused"}, true, Degraded, "paused by someone outside WhaleMountain"},
		{"a stopped container that should be stopped is Suspended", &core.Container{State: "exited"}, false, Suspended, "stopped, as wm.yaml asks"},
		{"a running container that should be stopped is Progressing", &core.Container{State: "running", Running: true}, false, Progressing, "stopping"},
		{"an unknown state is Unknown", &core.Container{State: "removing"}, true, Unknown, "state removing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, msg := Container(tc.c, tc.wantRunning)
			if got != tc.want || msg != tc.msg {
				t.Errorf("got %s %q, want %s %q", got, msg, tc.want, tc.msg)
			}
		})
	}
}
