package docker_test

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
)

// The tests in this file need a real daemon: they look at what the Fake
// cannot show, the configuration Docker applies and what runs inside.

// realEngine returns an Engine on the local daemon, the test image and a
// fresh owner.
func realEngine(t *testing.T) (*docker.Engine, string) {
	t.Helper()
	e := dockertest.Engine(t)
	dockertest.BusyboxImage(t, image)
	return e, dockertest.Owner(t)
}

func TestNewAcceptsOnlyUnixAndTCPEndpoints(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		endpoint string
		ok       bool
	}{
		{"unix:///var/run/docker.sock", true},
		{"tcp://127.0.0.1:2375", true},     // loopback: TLS optional
		{"tcp://gpu1.example:2376", false}, // elsewhere: TLS required (WithTLS)
		{"ssh://gpu1.example", false},
		{"http://gpu1.example", false},
		{"/var/run/docker.sock", false},
	} {
		e, err := docker.New("h", c.endpoint)
		if (err == nil) != c.ok {
			t.Errorf("New(%q) error = %v, want ok %v", c.endpoint, err, c.ok)
		}
		if e != nil {
			if e.Name() != "h" {
				t.Errorf("Name() = %q", e.Name())
			}
			e.Close()
		}
	}
}

func TestRealEngineHardensEveryContainer(t *testing.T) {
	t.Parallel()
	e, owner := realEngine(t)
	s := spec(t, owner, "gpu")
	s.Running = false // there is no NVIDIA runtime here: it could not start
	s.GPUs, s.GPUDevices = 1, []string{"3"}
	s.ShmBytes = 32 << 20
	s.NanoCPUs = 500_000_000
	s.MemoryBytes = 64 << 20
	s.Mounts = []core.Mount{{Volume: core.ObjectName(owner, "data"), Target: "/data"}}
	create(t, e, s)

	cli := dockertest.Client(t)
	raw, err := cli.ContainerInspect(ctx(t), s.Name)
	if err != nil {
		t.Fatal(err)
	}
	hc := raw.HostConfig
	allowlist := capNames(docker.CapAllowlist())
	net, err := cli.NetworkInspect(ctx(t), s.Network, network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	labelsOK := true
	for k, v := range docker.Labels(s) {
		labelsOK = labelsOK && raw.Config.Labels[k] == v
	}
	checks := []struct {
		name string
		ok   bool
		got  any
	}{
		{"it is not privileged", !hc.Privileged, hc.Privileged},
		{"every capability is dropped", slices.Contains(hc.CapDrop, "ALL"), hc.CapDrop},
		{"only the allowlist is added back", slices.Equal(capNames(hc.CapAdd), allowlist), hc.CapAdd},
		{"new privileges are refused", slices.Contains(hc.SecurityOpt, "no-new-privileges:true"), hc.SecurityOpt},
		{"the process limit is the default", hc.PidsLimit != nil && *hc.PidsLimit == core.DefaultPidsLimit, hc.PidsLimit},
		{"the memory limit is set, with no swap beyond it", hc.Memory == s.MemoryBytes && hc.MemorySwap == s.MemoryBytes, [2]int64{hc.Memory, hc.MemorySwap}},
		{"the CPU limit is set", hc.NanoCPUs == s.NanoCPUs, hc.NanoCPUs},
		{"the GPU is a device request for nvidia naming the device allocated", slices.EqualFunc(hc.DeviceRequests, []container.DeviceRequest{{Driver: "nvidia", DeviceIDs: []string{"3"}, Capabilities: [][]string{{"gpu"}}}}, deviceRequestEqual), hc.DeviceRequests},
		{"/dev/shm has the size asked", hc.ShmSize == s.ShmBytes, hc.ShmSize},
		{"there are no bind mounts", len(hc.Binds) == 0 && !slices.ContainsFunc(hc.Mounts, func(m mount.Mount) bool { return m.Type != mount.TypeVolume }), [2]any{hc.Binds, hc.Mounts}},
		{"the volume is mounted as a named volume", len(raw.Mounts) == 1 && raw.Mounts[0].Type == mount.TypeVolume && raw.Mounts[0].Name == core.ObjectName(owner, "data") && raw.Mounts[0].Destination == "/data", raw.Mounts},
		{"it restarts unless stopped", hc.RestartPolicy.Name == container.RestartPolicyUnlessStopped, hc.RestartPolicy},
		{"an init process runs as PID 1", hc.Init != nil && *hc.Init, hc.Init},
		{"the IPC namespace is private", hc.IpcMode == container.IPCModePrivate, hc.IpcMode},
		{"no host namespace is shared", !hc.PidMode.IsHost() && !hc.UTSMode.IsHost() && !hc.UsernsMode.IsHost() && !hc.NetworkMode.IsHost(), [4]any{hc.PidMode, hc.UTSMode, hc.UsernsMode, hc.NetworkMode}},
		{"it is on the owner's network only", string(hc.NetworkMode) == s.Network && len(raw.NetworkSettings.Networks) == 1 && raw.NetworkSettings.Networks[s.Network] != nil, raw.NetworkSettings.Networks},
		{"the owner's network is a labelled bridge", net.Driver == "bridge" && net.Labels[docker.LabelManagedBy] == docker.ManagedByValue && net.Labels[docker.LabelOwner] == owner, [2]any{net.Driver, net.Labels}},
		{"the host port is bound on all addresses", len(hc.PortBindings) == 1 && slices.Equal(hc.PortBindings["8080/tcp"], []nat.PortBinding{{HostIP: "0.0.0.0", HostPort: strconv.Itoa(s.Ports[0].Host)}}), hc.PortBindings},
		{"logs are rotated json files", hc.LogConfig.Type == "json-file" && hc.LogConfig.Config["max-size"] == "10m" && hc.LogConfig.Config["max-file"] == "3", hc.LogConfig},
		{"every label is there", labelsOK, raw.Config.Labels},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s: got %v", c.name, c.got)
		}
	}
}

func TestRealEngineContainerHasOnlyTheAllowedCapabilities(t *testing.T) {
	t.Parallel()
	e, owner := realEngine(t)
	s := spec(t, owner, "caps")
	create(t, e, s)

	status, code := dockertest.Exec(t, s.Name, "cat", "/proc/self/status")
	if code != 0 {
		t.Fatalf("cat /proc/self/status: exit %d: %s", code, status)
	}
	var want uint64
	for _, name := range docker.CapAllowlist() {
		n, ok := capNumbers[name]
		if !ok {
			t.Fatalf("capNumbers lacks %s", name)
		}
		want |= 1 << n
	}
	for _, field := range []string{"CapEff", "CapPrm", "CapBnd"} {
		got, err := strconv.ParseUint(statusField(status, field), 16, 64)
		if err != nil || got != want {
			t.Errorf("%s = %q, want %016x", field, statusField(status, field), want)
		}
	}
	if got := statusField(status, "NoNewPrivs"); got != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", got)
	}
	for _, c := range []struct {
		name string
		cmd  []string
		ok   bool
	}{
		{"chown works (CHOWN is allowed)", []string{"busybox", "chown", "nobody", "/tmp"}, true},
		{"chroot fails (SYS_CHROOT is dropped)", []string{"busybox", "chroot", "/", "true"}, false},
		{"mknod fails (MKNOD is dropped)", []string{"busybox", "mknod", "/tmp/null", "c", "1", "3"}, false},
		{"ip link add fails (NET_ADMIN is dropped)", []string{"busybox", "ip", "link", "add", "wm0", "type", "dummy"}, false},
	} {
		out, code := dockertest.Exec(t, s.Name, c.cmd...)
		// A refused capability says so; any other failure proves nothing.
		refused := code != 0 && strings.Contains(out, "Operation not permitted")
		if (c.ok && code != 0) || (!c.ok && !refused) {
			t.Errorf("%s: exit %d: %s", c.name, code, out)
		}
	}
}

func TestRealEngineServesOnTheHostPortWhatCommandAndEnvSay(t *testing.T) {
	t.Parallel()
	e, owner := realEngine(t)
	s := spec(t, owner, "httpd")
	s.Env = map[string]string{"GREETING": "hello from " + owner}
	s.Command = []string{"sh", "-c", `mkdir -p /tmp/www && echo "$GREETING" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www`}
	create(t, e, s)

	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", s.Ports[0].Host)
	body, err := eventually(10*time.Second, func() (string, error) {
		resp, err := http.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("status %s", resp.Status)
		}
		return string(b), err
	})
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if want := s.Env["GREETING"] + "\n"; body != want {
		t.Errorf("GET %s = %q, want %q", url, body, want)
	}
}

func TestRealEngineKeepsVolumeDataAcrossARecreate(t *testing.T) {
	t.Parallel()
	e, owner := realEngine(t)
	s := spec(t, owner, "data")
	s.Mounts = []core.Mount{{Volume: core.ObjectName(owner, "data"), Target: "/data"}}
	create(t, e, s)
	if out, code := dockertest.Exec(t, s.Name, "sh", "-c", "echo kept > /data/file"); code != 0 {
		t.Fatalf("write: exit %d: %s", code, out)
	}
	if err := e.Remove(ctx(t), s.Name); err != nil {
		t.Fatal(err)
	}
	s.Env = map[string]string{"CHANGED": "yes"}
	create(t, e, s)
	if out, code := dockertest.Exec(t, s.Name, "cat", "/data/file"); code != 0 || out != "kept\n" {
		t.Errorf("read after recreate: exit %d: %q, want %q", code, out, "kept\n")
	}
}

func TestRealEngineReportsHealthFromTheImagesHealthcheck(t *testing.T) {
	t.Parallel()
	e, owner := realEngine(t)
	ref := dockertest.BusyboxImageWith(t, "wm-test/busybox-health:1",
		`CMD ["sleep","3600"]`,
		`HEALTHCHECK --interval=200ms --timeout=2s --retries=1 CMD test -e /tmp/healthy`)
	for _, c := range []struct {
		name    string
		command []string
		want    string
	}{
		{"healthy", []string{"sh", "-c", "touch /tmp/healthy && exec sleep 3600"}, "healthy"},
		{"unhealthy", nil, "unhealthy"},
	} {
		s := spec(t, owner, c.name)
		s.Image, s.Command = ref, c.command
		create(t, e, s)
		if _, err := eventually(15*time.Second, func() (string, error) {
			got := inspect(t, e, s.Name).Health
			if got != c.want {
				return "", fmt.Errorf("health %q", got)
			}
			return got, nil
		}); err != nil {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

func TestRealEngineRestartsACrashedContainerAndReportsItsExitCode(t *testing.T) {
	t.Parallel()
	e, owner := realEngine(t)
	s := spec(t, owner, "crash")
	s.Command = []string{"sh", "-c", "sleep 0.2; exit 3"}
	create(t, e, s)
	if _, err := eventually(15*time.Second, func() (string, error) {
		c := inspect(t, e, s.Name)
		if c.RestartCount < 1 || c.ExitCode != 3 || c.FinishedAt.IsZero() {
			return "", fmt.Errorf("restarts %d, exit code %d, finished %v", c.RestartCount, c.ExitCode, c.FinishedAt)
		}
		return "", nil
	}); err != nil {
		t.Errorf("want a restart after exit code 3: %v", err)
	}
}

// eventually calls f until it succeeds or timeout passes, and returns its
// last result.
func eventually(timeout time.Duration, f func() (string, error)) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		out, err := f()
		if err == nil || time.Now().After(deadline) {
			return out, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// capNumbers are the Linux numbers of the allowlisted capabilities.
var capNumbers = map[string]uint{
	"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5,
	"SETGID": 6, "SETUID": 7, "NET_BIND_SERVICE": 10,
}

// capNames spells capabilities without "CAP_", sorted, as Docker may
// report them either way.
func capNames(caps []string) []string {
	var out []string
	for _, c := range caps {
		out = append(out, strings.TrimPrefix(strings.ToUpper(c), "CAP_"))
	}
	slices.Sort(out)
	return out
}

// statusField returns a field of /proc/<pid>/status.
func statusField(status, field string) string {
	for line := range strings.Lines(status) {
		if k, v, ok := strings.Cut(line, ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func deviceRequestEqual(a, b container.DeviceRequest) bool {
	return a.Driver == b.Driver && a.Count == b.Count && slices.Equal(a.DeviceIDs, b.DeviceIDs) && fmt.Sprint(a.Capabilities) == fmt.Sprint(b.Capabilities)
}
