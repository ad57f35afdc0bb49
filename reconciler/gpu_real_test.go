package reconciler

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// The test of this file runs passes against a real Docker Engine that
// starts GPU containers: the second one ci/docker2-up starts, whose
// dockerd finds a fake nvidia-container-runtime-hook in its PATH and so
// registers its nvidia device driver. For a device request of driver
// nvidia, that driver puts NVIDIA_VISIBLE_DEVICES=<the device IDs> in the
// container's environment, as on a GPU blade, and mounts no GPU (the
// machine has none): the devices a container was given are seen both in
// what the daemon was asked (HostConfig.DeviceRequests) and in what the
// container's processes see.

// gpuBlade is a Reconciler over the second engine alone, configured as one
// host with four GPUs, as its own WhaleMountain instance.
type gpuBlade struct {
	d     *dockertest.Daemon
	cfg   *schema.ServerConfig
	st    *store.Store
	eng   core.Engine
	root  string
	rec   *Reconciler
	repos map[string]*gittest.Repo
}

func newGPUBlade(t *testing.T) *gpuBlade {
	t.Helper()
	d := dockertest.Second(t)
	b := &gpuBlade{d: d, root: t.TempDir(), repos: map[string]*gittest.Repo{}}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	instance := "gpu-" + hex.EncodeToString(suffix)
	from := dockertest.FreePorts(t, 1)[0]
	var err error
	b.cfg, err = schema.ParseServer("gpu.yaml", strings.NewReader(fmt.Sprintf(`
instance: %s
policy:
  hostPorts: {from: %d, to: %d}
  maxPrunePercent: 100
  allowedRegistries: [docker.io/wm-test]
  quota: {gpus: 1}
docker:
  hosts:
    - {name: %s, endpoint: %q, gpus: 4}
`, instance, from, from+20, d.Name(), d.Endpoint())), b.root)
	if err != nil {
		t.Fatal(err)
	}
	b.st, err = store.Open(filepath.Join(b.root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.st.Close() })
	b.eng = d.Engine(t, docker.WithInstance(instance))
	d.BusyboxImage(t, multiHostImage)
	b.rec = b.newReconciler(t)
	return b
}

// newReconciler is a Reconciler on b's engine and store, as a restarted
// WhaleMountain makes.
func (b *gpuBlade) newReconciler(t *testing.T) *Reconciler {
	t.Helper()
	rec, err := New(b.cfg, gitsource.New(filepath.Join(b.root, "cache")), []core.Engine{b.eng}, b.st)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// push commits wm.yaml to <owner>/ml.
func (b *gpuBlade) push(t *testing.T, owner, wmYAML string) Repo {
	t.Helper()
	key := owner + "/ml"
	r, ok := b.repos[key]
	if !ok {
		r = gittest.NewRepo(t, filepath.Join(b.root, "git", key+".git"))
		b.repos[key] = r
	}
	r.Commit(t, "main", map[string]string{"wm.yaml": wmYAML}, "push")
	return Repo{Key: key, Owner: owner, URL: r.FileURL(), Branch: "main"}
}

// pass runs one pass of repo with rec.
func (b *gpuBlade) pass(t *testing.T, rec *Reconciler, repo Repo) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return rec.Reconcile(ctx, repo)
}

// gpuContainer is what the daemon says of one GPU container.
type gpuContainer struct {
	id      string
	running bool
	// requested is the device IDs of its device requests of driver nvidia.
	requested []string
	// visible is NVIDIA_VISIBLE_DEVICES as its processes see it.
	visible string
}

// gpuOf asks the daemon about the container called name: its device
// requests, and the environment of its PID 1 (the driver sets
// NVIDIA_VISIBLE_DEVICES in the OCI spec, not in the container's config,
// so neither inspect nor `docker exec env` shows it: /proc/1/environ does).
func (b *gpuBlade) gpuOf(t *testing.T, name string) gpuContainer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := b.d.Client(t)
	c, err := cli.ContainerInspect(ctx, name)
	if err != nil {
		t.Fatalf("inspect %s: %v", name, err)
	}
	out := gpuContainer{id: c.ID, running: c.State.Running}
	for _, r := range c.HostConfig.DeviceRequests {
		if r.Driver == "nvidia" {
			out.requested = append(out.requested, r.DeviceIDs...)
		}
	}
	if !out.running {
		return out
	}
	exec, err := cli.ContainerExecCreate(ctx, c.ID, container.ExecOptions{
		Cmd: []string{"sh", "-c", `tr '\0' '\n' </proc/1/environ`}, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		t.Fatalf("exec in %s: %v", name, err)
	}
	att, err := cli.ContainerExecAttach(ctx, exec.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("exec in %s: %v", name, err)
	}
	defer att.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); err != nil {
		t.Fatalf("exec in %s: %v", name, err)
	}
	if ins, err := cli.ContainerExecInspect(ctx, exec.ID); err != nil || ins.ExitCode != 0 {
		t.Fatalf("exec in %s: exit %d, %v: %s", name, ins.ExitCode, err, stderr.String())
	}
	for _, kv := range strings.Split(stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(kv, "NVIDIA_VISIBLE_DEVICES="); ok {
			out.visible = v
		}
	}
	return out
}

// oneGPU is a wm.yaml of one running container that asks for one GPU.
const oneGPU = "version: 1\ncontainers:\n  train: {image: " + multiHostImage + ", gpus: 1, memory: 32Mi}\n"

// TestFourOneGPUContainersOnARealFourGPUHostGetFourDifferentGPUs runs the
// reconciler on a real engine configured with four GPUs: four students'
// one-GPU containers each get a GPU of their own, as the daemon was asked
// and as the containers see; a fifth waits for one; a restarted
// WhaleMountain finds the allocation in the containers' labels and
// changes nothing. Each step builds on the one before.
func TestFourOneGPUContainersOnARealFourGPUHostGetFourDifferentGPUs(t *testing.T) {
	t.Parallel()
	b := newGPUBlade(t)
	var owners []string
	for range 5 {
		owners = append(owners, b.d.Owner(t))
	}
	var repos []Repo
	seen := map[string]gpuContainer{} // owner → its container, once made

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"four students' one-GPU containers run, each on a GPU of its own, asked of the daemon and seen inside", func(t *testing.T) {
			held := map[string]string{} // device → owner
			for _, owner := range owners[:4] {
				repo := b.push(t, owner, oneGPU)
				repos = append(repos, repo)
				if res, err := b.pass(t, b.rec, repo); err != nil || !res.Ready {
					t.Fatalf("pass of %s: ready %v, %v: %s", repo.Key, res.Ready, err, res.Message)
				}
				g := b.gpuOf(t, core.ObjectName(owner, "train"))
				if !g.running || len(g.requested) != 1 {
					t.Fatalf("%s: running %v, device requests %v: want one device, running", owner, g.running, g.requested)
				}
				dev := g.requested[0]
				if !slices.Contains([]string{"0", "1", "2", "3"}, dev) {
					t.Errorf("%s was given device %q, not one of the host's 0-3", owner, dev)
				}
				if g.visible != dev {
					t.Errorf("%s: asked the daemon for device %s, sees NVIDIA_VISIBLE_DEVICES=%q", owner, dev, g.visible)
				}
				if other, taken := held[dev]; taken {
					t.Errorf("%s and %s were both given GPU %s", owner, other, dev)
				}
				held[dev] = owner
				seen[owner] = g
			}
			if len(held) != 4 {
				t.Errorf("GPUs given: %v, want all four", held)
			}
			t.Logf("GPU → owner: %v", held)
		}},
		{"a fifth student's one-GPU container waits for a free GPU, and nothing of it is made", func(t *testing.T) {
			_, err := b.pass(t, b.rec, b.push(t, owners[4], oneGPU))
			wantReason(t, err, Waiting, core.NoCapacity)
			if names := b.d.ContainerNames(t, owners[4]); len(names) != 0 {
				t.Errorf("the fifth has containers: %v", names)
			}
		}},
		{"a restarted WhaleMountain rebuilds the allocation from the labels and changes nothing", func(t *testing.T) {
			rec := b.newReconciler(t)
			for i, repo := range repos {
				res, err := b.pass(t, rec, repo)
				if err != nil || !res.Ready {
					t.Fatalf("pass of %s: ready %v, %v: %s", repo.Key, res.Ready, err, res.Message)
				}
				if len(res.Plan.Actions) != 0 {
					t.Errorf("%s: %+v after a restart", repo.Key, res.Plan.Actions)
				}
				owner := owners[i]
				g := b.gpuOf(t, core.ObjectName(owner, "train"))
				if was := seen[owner]; g.id != was.id || !g.running || !slices.Equal(g.requested, was.requested) || g.visible != was.visible {
					t.Errorf("%s's container changed: %+v, was %+v", owner, g, was)
				}
			}
			_, err := b.pass(t, rec, b.push(t, owners[4], oneGPU))
			wantReason(t, err, Waiting, core.NoCapacity)
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			break
		}
	}
}
