package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/whalemountain/wm/reconciler/docker"
)

// DefaultSocket is the daemon's endpoint when DOCKER_HOST is not set.
const DefaultSocket = "unix:///var/run/docker.sock"

// HostName is the name of the Engine that Engine returns.
const HostName = "local"

// callTimeout bounds each call the helpers make to the daemon.
const callTimeout = 30 * time.Second

// shared is the raw client of the helpers, made on first use and kept for
// the process: cleanups run after the tests' own engines are closed.
var shared struct {
	sync.Mutex
	cli *client.Client
}

// Endpoint returns the daemon's endpoint: DOCKER_HOST, else DefaultSocket.
func Endpoint() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return DefaultSocket
}

// Client returns a raw Docker client for assertions the Engine does not
// offer, after checking the daemon answers; it fails the test when not.
func Client(t testing.TB) *client.Client {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.cli == nil {
		cli, err := client.NewClientWithOpts(client.WithHost(Endpoint()), client.WithAPIVersionNegotiation())
		if err != nil {
			t.Fatalf("dockertest: client for %s: %v", Endpoint(), err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Ping(ctx); err != nil {
			cli.Close()
			t.Fatalf("dockertest: no Docker daemon at %s (the real-engine tests need one): %v", Endpoint(), err)
		}
		shared.cli = cli
	}
	return shared.cli
}

// usedClient returns the shared client if a test of this process made it.
func usedClient() *client.Client {
	shared.Lock()
	defer shared.Unlock()
	return shared.cli
}

// Engine returns an Engine for the local daemon, closed when t ends, and
// fails t when there is no daemon. Everything labelled with an owner that
// Owner handed out is removed when the test that asked for the owner ends.
func Engine(t testing.TB) *docker.Engine {
	t.Helper()
	Client(t)
	e, err := docker.New(HostName, Endpoint())
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// owners are the owner names handed out in this process.
var owners struct {
	sync.Mutex
	seen map[string]bool
}

// Owner returns an owner name no other test, in this process or another,
// uses: "t" and 6 random hex digits, a DNS label. When t ends, every
// container, volume and network labelled with it on the local daemon is
// removed, if this process has used the daemon.
func Owner(t testing.TB) string {
	t.Helper()
	owners.Lock()
	if owners.seen == nil {
		owners.seen = map[string]bool{}
	}
	var owner string
	for owner == "" || owners.seen[owner] {
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		owner = "t" + hex.EncodeToString(b)
	}
	owners.seen[owner] = true
	owners.Unlock()
	t.Cleanup(func() {
		if cli := usedClient(); cli != nil {
			sweep(t, cli, owner)
		}
	})
	return owner
}

// OwnerNamed registers name, an owner name a test derives from an Owner of
// its own (such as Owner(t)+"-x", to try names that look alike), for the
// same sweep when t ends.
func OwnerNamed(t testing.TB, name string) string {
	t.Helper()
	t.Cleanup(func() {
		if cli := usedClient(); cli != nil {
			sweep(t, cli, name)
		}
	})
	return name
}

// sweep removes every container, volume and network labelled with owner.
func sweep(t testing.TB, cli *client.Client, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	byOwner := filters.NewArgs(filters.Arg("label", docker.LabelOwner+"="+owner))
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: byOwner})
	if err != nil {
		t.Errorf("dockertest: sweep %s: %v", owner, err)
		return
	}
	for _, c := range cs {
		err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: sweep %s: remove container %s: %v", owner, c.ID, err)
		}
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: byOwner})
	if err != nil {
		t.Errorf("dockertest: sweep %s: %v", owner, err)
	}
	for _, v := range vs.Volumes {
		if err := cli.VolumeRemove(ctx, v.Name, true); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: sweep %s: remove volume %s: %v", owner, v.Name, err)
		}
	}
	ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: byOwner})
	if err != nil {
		t.Errorf("dockertest: sweep %s: %v", owner, err)
	}
	for _, n := range ns {
		if err := cli.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: sweep %s: remove network %s: %v", owner, n.Name, err)
		}
	}
}

// AddForeign starts a container called name from the busybox image, with
// none of WhaleMountain's labels, as a person with docker access would, and
// removes it when t ends.
func AddForeign(t testing.TB, name string) string {
	t.Helper()
	cli := Client(t)
	ref := BusyboxImage(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: ref}, &container.HostConfig{}, nil, nil, name)
	if err != nil {
		t.Fatalf("dockertest: create foreign container %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		err := cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: remove foreign container %s: %v", name, err)
		}
	})
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("dockertest: start foreign container %s: %v", name, err)
	}
	return created.ID
}

// AddForeignVolume makes a volume called name with none of WhaleMountain's
// labels, and removes it when t ends.
func AddForeignVolume(t testing.TB, name string) {
	t.Helper()
	cli := Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: name}); err != nil {
		t.Fatalf("dockertest: create foreign volume %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if err := cli.VolumeRemove(ctx, name, true); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: remove foreign volume %s: %v", name, err)
		}
	})
}

// Exec runs cmd in the running container called name, as the container's
// user, and returns its output (stdout then stderr) and exit code.
func Exec(t testing.TB, name string, cmd ...string) (string, int) {
	t.Helper()
	cli := Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	ex, err := cli.ContainerExecCreate(ctx, name, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatalf("dockertest: exec %q in %s: %v", cmd, name, err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("dockertest: exec %q in %s: attach: %v", cmd, name, err)
	}
	defer att.Close()
	var stdout, stderr strings.Builder
	if _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); err != nil {
		t.Fatalf("dockertest: exec %q in %s: read: %v", cmd, name, err)
	}
	for {
		in, err := cli.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			t.Fatalf("dockertest: exec %q in %s: inspect: %v", cmd, name, err)
		}
		if !in.Running {
			return stdout.String() + stderr.String(), in.ExitCode
		}
		time.Sleep(20 * time.Millisecond)
	}
}
