package dockertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/schema"
)

// SecondHostName is the name of the Engines of the second daemon (Second).
const SecondHostName = "second"

const (
	// secondDir is ci/docker2-up's state dir when WM_DOCKER2_DIR is unset.
	secondDir = "/tmp/wm-docker2"
	// secondUpTimeout bounds one ci/docker2-up run: it is ready in seconds,
	// or stops what it started and fails.
	secondUpTimeout = 3 * time.Minute
)

// Daemon is one real Docker Engine of this machine: the local one (Local),
// which the package's functions use, or the second one (Second), which
// ci/docker2-up runs beside it with its own containerd, socket, data-root
// and bridge, so that tests have two real Docker hosts. Images, containers,
// volumes and networks are not shared between the two; host ports are,
// since both publish on this machine's addresses.
type Daemon struct {
	name     string
	endpoint string
	// cli is the second daemon's client; nil for the local one, whose
	// client is the package's shared one.
	cli *client.Client
	// tlsEndpoint and tls are the second daemon's TLS listener
	// (tcp://127.0.0.1:PORT, client certificates required) and the
	// files to reach it with; "" and nil for the local one.
	tlsEndpoint string
	tls         *schema.DockerTLS
}

// Local returns the local daemon (Endpoint), failing t when it does not
// answer.
func Local(t testing.TB) *Daemon {
	t.Helper()
	Client(t)
	return &Daemon{name: HostName, endpoint: Endpoint()}
}

// second is the second daemon of this test process, looked up once: a
// failure is remembered, so that later tests fail at once instead of each
// running ci/docker2-up again.
var second struct {
	once   sync.Once
	daemon *Daemon
	err    error
}

// Second returns the second daemon, starting it with ci/docker2-up when it
// does not answer (never stopping it: ci/docker2-down does). Under -short
// it skips t; otherwise it fails t when there is no second daemon and none
// can be started, in CI (CI set) as anywhere: the second engine is part of
// the normal test run, as the first is. ci/docker2-up is $WM_DOCKER2_UP,
// else found in the nearest folder above the working directory that holds
// go.mod and ci/docker2-up; its state dir is $WM_DOCKER2_DIR, else
// /tmp/wm-docker2. It needs root, or sudo without a password.
func Second(t testing.TB) *Daemon {
	t.Helper()
	if testing.Short() {
		t.Skip("dockertest: -short: no second Docker Engine (ci/docker2-up)")
	}
	second.once.Do(func() { second.daemon, second.err = connectSecond(t) })
	if second.err != nil {
		ci := ""
		if os.Getenv("CI") != "" {
			ci = " (CI is set: the second engine is required)"
		}
		t.Fatalf("dockertest: no second Docker Engine%s: %v", ci, second.err)
	}
	return second.daemon
}

// connectSecond reuses a second daemon that answers, or runs ci/docker2-up.
func connectSecond(t testing.TB) (*Daemon, error) {
	dir := os.Getenv("WM_DOCKER2_DIR")
	if dir == "" {
		dir = secondDir
	}
	envFile := filepath.Join(dir, "env")
	if d, err := loadSecond(envFile); err == nil {
		// An engine of an older ci/docker2-up has no TLS listener: that
		// script runs again, and restarts it with one.
		if err := d.ping(); err == nil && d.tlsEndpoint != "" {
			return d, nil
		}
		d.cli.Close()
	}
	script, err := findScript("WM_DOCKER2_UP", "docker2-up")
	if err != nil {
		return nil, err
	}
	t.Logf("dockertest: starting the second Docker Engine with %s", script)
	start := time.Now()
	out, err := runScript(t, script, "WM_DOCKER2_DIR="+dir)
	if err != nil {
		return nil, err
	}
	if out != "" {
		envFile = out
	}
	d, err := loadSecond(envFile)
	if err != nil {
		return nil, fmt.Errorf("read what ci/docker2-up wrote: %w", err)
	}
	if err := d.ping(); err != nil {
		d.cli.Close()
		return nil, fmt.Errorf("the engine ci/docker2-up started does not answer: %w", err)
	}
	t.Logf("dockertest: second Docker Engine up at %s after %s", d.endpoint, time.Since(start).Round(time.Millisecond))
	return d, nil
}

// loadSecond reads DOCKER_HOST and the TLS listener (WM_DOCKER2_TLS_HOST,
// _CA, _CERT and _KEY) from ci/docker2-up's env file (`export
// KEY='value'` lines) and makes a client for DOCKER_HOST.
func loadSecond(envFile string) (*Daemon, error) {
	f, err := os.Open(envFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export "), "=")
		if ok {
			env[k] = strings.Trim(v, `'"`)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	host := env["DOCKER_HOST"]
	if host == "" {
		return nil, fmt.Errorf("%s: no DOCKER_HOST", envFile)
	}
	if host == Endpoint() {
		return nil, fmt.Errorf("%s: DOCKER_HOST %s is the local daemon, not a second one", envFile, host)
	}
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", host, err)
	}
	d := &Daemon{name: SecondHostName, endpoint: host, cli: cli}
	if tlsHost := env["WM_DOCKER2_TLS_HOST"]; tlsHost != "" {
		d.tlsEndpoint = tlsHost
		d.tls = &schema.DockerTLS{CAFile: env["WM_DOCKER2_TLS_CA"], CertFile: env["WM_DOCKER2_TLS_CERT"], KeyFile: env["WM_DOCKER2_TLS_KEY"]}
	}
	return d, nil
}

// ping asks the daemon for its version.
func (d *Daemon) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := d.cli.Ping(ctx)
	return err
}

// findScript finds ci/<name>: $env, else in the nearest folder above the
// working directory that holds go.mod and ci/<name>.
func findScript(env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find ci/%s: %w", name, err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		script := filepath.Join(dir, "ci", name)
		if isFile(filepath.Join(dir, "go.mod")) && isFile(script) {
			return script, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("find ci/%s: no folder above %s has go.mod and ci/%s (set %s)", name, wd, name, env)
		}
	}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// runScript runs a ci script in its own process group, so that a timeout
// ends all of it (the daemons it starts have their own sessions and live
// on), and returns the last word it printed on stdout.
func runScript(t testing.TB, script string, env ...string) (string, error) {
	timeout := secondUpTimeout
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok && time.Until(dl)-30*time.Second < timeout {
			timeout = max(time.Until(dl)-30*time.Second, 10*time.Second)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return "", fmt.Errorf("%s did not finish within %s:%s", script, timeout.Round(time.Second), lastLines(stderr.String()))
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w:%s", script, err, lastLines(stderr.String()))
	}
	words := strings.Fields(stdout.String())
	if len(words) == 0 {
		return "", nil
	}
	return words[len(words)-1], nil
}

// lastLines keeps the last lines of a script's stderr for an error message.
func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "\n" + strings.Join(lines, "\n")
}

// local reports whether d is the local daemon.
func (d *Daemon) local() bool { return d.cli == nil }

// Name returns the host name of d's Engines: HostName or SecondHostName.
func (d *Daemon) Name() string { return d.name }

// Endpoint returns d's endpoint, such as unix:///tmp/wm-docker2/docker.sock.
func (d *Daemon) Endpoint() string { return d.endpoint }

// Client returns a raw Docker client of d for assertions the Engine does
// not offer.
func (d *Daemon) Client(t testing.TB) *client.Client {
	t.Helper()
	if d.local() {
		return Client(t)
	}
	return d.cli
}

// Engine returns an Engine for d, named d.Name(), made with opts (such as
// docker.WithInstance) and closed when t ends.
func (d *Daemon) Engine(t testing.TB, opts ...docker.Option) *docker.Engine {
	t.Helper()
	d.Client(t)
	e, err := docker.New(d.name, d.endpoint, opts...)
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// TLS returns d's TLS listener, such as tcp://127.0.0.1:23760, and the CA,
// client certificate and key that reach it (ci/docker2-up's). It fails t
// for a daemon without one (the local daemon).
func (d *Daemon) TLS(t testing.TB) (endpoint string, files schema.DockerTLS) {
	t.Helper()
	if d.tls == nil {
		t.Fatalf("dockertest: the %s Docker Engine has no TLS listener", d.name)
	}
	return d.tlsEndpoint, *d.tls
}

// TLSEngine is Engine through d's TLS listener (TLS): an Engine named
// d.Name(), reaching d over tcp:// with its client certificate, closed
// when t ends.
func (d *Daemon) TLSEngine(t testing.TB, opts ...docker.Option) *docker.Engine {
	t.Helper()
	endpoint, files := d.TLS(t)
	e, err := docker.New(d.name, endpoint, append([]docker.Option{docker.WithTLS(&files)}, opts...)...)
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// Owner is Owner, whose sweep covers d as well when t ends: every
// container, volume and network on d labelled with the owner, or with an
// owner name made from it as OwnerNamed expects (the owner, "-" and more),
// is removed. Owners of the local daemon's Owner are swept there only.
func (d *Daemon) Owner(t testing.TB) string {
	t.Helper()
	owner := Owner(t)
	if !d.local() {
		t.Cleanup(func() { sweepPrefix(t, d.cli, owner) })
	}
	return owner
}

// sweepPrefix removes every container, volume and network labelled with
// owner, or with owner + "-" and anything.
func sweepPrefix(t testing.TB, cli *client.Client, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	mine := func(labels map[string]string) bool {
		o, ok := labels[docker.LabelOwner]
		return ok && (o == owner || strings.HasPrefix(o, owner+"-"))
	}
	anyOwner := filters.NewArgs(filters.Arg("label", docker.LabelOwner))
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: anyOwner})
	if err != nil {
		t.Errorf("dockertest: sweep %s: %v", owner, err)
		return
	}
	for _, c := range cs {
		if !mine(c.Labels) {
			continue
		}
		err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: sweep %s: remove container %s: %v", owner, c.ID, err)
		}
	}
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: anyOwner})
	if err != nil {
		t.Errorf("dockertest: sweep %s: %v", owner, err)
	}
	for _, v := range vs.Volumes {
		if !mine(v.Labels) {
			continue
		}
		if err := cli.VolumeRemove(ctx, v.Name, true); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: sweep %s: remove volume %s: %v", owner, v.Name, err)
		}
	}
	ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: anyOwner})
	if err != nil {
		t.Errorf("dockertest: sweep %s: %v", owner, err)
	}
	for _, n := range ns {
		if !mine(n.Labels) {
			continue
		}
		if err := cli.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: sweep %s: remove network %s: %v", owner, n.Name, err)
		}
	}
}

// ContainerNames returns the names of every container on d labelled with
// owner, of any instance and in any state, sorted: what the daemon itself
// holds, for assertions about which host has what.
func (d *Daemon) ContainerNames(t testing.TB, owner string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	byOwner := filters.NewArgs(filters.Arg("label", docker.LabelOwner+"="+owner))
	cs, err := d.Client(t).ContainerList(ctx, container.ListOptions{All: true, Filters: byOwner})
	if err != nil {
		t.Fatalf("dockertest: list %s's containers on %s: %v", owner, d.name, err)
	}
	var names []string
	for _, c := range cs {
		for _, n := range c.Names {
			names = append(names, strings.TrimPrefix(n, "/"))
		}
	}
	slices.Sort(names)
	return names
}

// BusyboxImage is BusyboxImage on d.
func (d *Daemon) BusyboxImage(t testing.TB, ref string) string {
	t.Helper()
	if d.local() {
		return BusyboxImage(t, ref)
	}
	if ref == "" {
		ref = DefaultBusybox
	}
	cmd, _ := json.Marshal(busyboxCmd)
	return d.BusyboxImageWith(t, ref, "CMD "+string(cmd))
}

// BusyboxImageWith is BusyboxImageWith on d.
func (d *Daemon) BusyboxImageWith(t testing.TB, ref string, changes ...string) string {
	t.Helper()
	if d.local() {
		return BusyboxImageWith(t, ref, changes...)
	}
	// One lock per daemon and reference, in the same table as the local
	// daemon's (whose keys are bare references).
	mu := imageLock(d.endpoint + " " + ref)
	mu.Lock()
	defer mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*callTimeout)
	defer cancel()
	if _, err := d.cli.ImageInspect(ctx, ref); err == nil {
		return ref
	} else if !cerrdefs.IsNotFound(err) {
		t.Fatalf("dockertest: inspect image %s on %s: %v", ref, d.name, err)
	}
	rootfs, err := BusyboxRootfs()
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	body, err := d.cli.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(rootfs), SourceName: "-"}, ref,
		image.ImportOptions{Changes: changes, Message: "dockertest"})
	if err != nil {
		t.Fatalf("dockertest: import image %s on %s: %v", ref, d.name, err)
	}
	defer body.Close()
	if err := streamError(body); err != nil {
		t.Fatalf("dockertest: import image %s on %s: %v", ref, d.name, err)
	}
	return ref
}

// imageLock returns the lock of one image key.
func imageLock(key string) *sync.Mutex {
	images.Lock()
	defer images.Unlock()
	if images.locks == nil {
		images.locks = map[string]*sync.Mutex{}
	}
	mu := images.locks[key]
	if mu == nil {
		mu = &sync.Mutex{}
		images.locks[key] = mu
	}
	return mu
}

// removeTagged removes the image tags of cli's daemon that start with
// prefix.
func removeTagged(t testing.TB, cli *client.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	list, err := cli.ImageList(ctx, image.ListOptions{})
	if err != nil {
		t.Errorf("dockertest: list images: %v", err)
		return
	}
	for _, img := range list {
		for _, tag := range img.RepoTags {
			if strings.HasPrefix(tag, prefix) {
				if _, err := cli.ImageRemove(ctx, tag, image.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
					t.Errorf("dockertest: remove image %s: %v", tag, err)
				}
			}
		}
	}
}

// AddForeign is AddForeign on d.
func (d *Daemon) AddForeign(t testing.TB, name string) string {
	t.Helper()
	if d.local() {
		return AddForeign(t, name)
	}
	ref := d.BusyboxImage(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	created, err := d.cli.ContainerCreate(ctx, &container.Config{Image: ref}, &container.HostConfig{}, nil, nil, name)
	if err != nil {
		t.Fatalf("dockertest: create foreign container %s on %s: %v", name, d.name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		err := d.cli.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: remove foreign container %s on %s: %v", name, d.name, err)
		}
	})
	if err := d.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("dockertest: start foreign container %s on %s: %v", name, d.name, err)
	}
	return created.ID
}

// AddForeignVolume is AddForeignVolume on d.
func (d *Daemon) AddForeignVolume(t testing.TB, name string) {
	t.Helper()
	if d.local() {
		AddForeignVolume(t, name)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if _, err := d.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name}); err != nil {
		t.Fatalf("dockertest: create foreign volume %s on %s: %v", name, d.name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		if err := d.cli.VolumeRemove(ctx, name, true); err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("dockertest: remove foreign volume %s on %s: %v", name, d.name, err)
		}
	})
}

// NewRegistry is NewRegistry, and the images pulled from it are removed
// from d as well when t ends.
func (d *Daemon) NewRegistry(t testing.TB, auth *core.RegistryAuth, repos ...string) *Registry {
	t.Helper()
	r := NewRegistry(t, auth, repos...)
	if !d.local() {
		t.Cleanup(func() { removeTagged(t, d.cli, r.Host+"/") })
	}
	return r
}
