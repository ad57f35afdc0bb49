package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// The hostile-tenant suite: each test is one way a student tried to get
// what is not theirs, on the real Docker Engine. Each asserts that the
// attempt is refused with a reason that says why, and that nothing of
// anyone else's is touched.

const hostileRegistry = "wm-hostile.test:5000"

// realWorld is a reconciler over file:// repos and the local Docker Engine.
type realWorld struct {
	t     *testing.T
	root  string
	eng   *docker.Engine
	store *store.Store
	rec   *Reconciler
	repos map[string]*gittest.Repo
}

// newRealWorld starts a reconciler on the real engine; policy is the
// policy section of the server config, indented by two spaces.
func newRealWorld(t *testing.T, policy string) *realWorld {
	t.Helper()
	root := t.TempDir()
	from := dockertest.FreePorts(t, 1)[0]
	cfg, err := schema.ParseServer("hostile.yaml", strings.NewReader(fmt.Sprintf(`
registry: {host: %q}
policy:
  hostPorts: {from: %d, to: %d}
  maxPrunePercent: 100
%s
docker:
  hosts: [{name: local, endpoint: %q}]
`, hostileRegistry, from, from+40, policy, dockertest.Endpoint())), root)
	if err != nil {
		t.Fatal(err)
	}
	w := &realWorld{t: t, root: root, eng: dockertest.Engine(t), repos: map[string]*gittest.Repo{}}
	if w.store, err = store.Open(filepath.Join(root, "state")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.store.Close() })
	if w.rec, err = New(cfg, gitsource.New(filepath.Join(root, "cache")), []core.Engine{w.eng}, w.store); err != nil {
		t.Fatal(err)
	}
	return w
}

// push commits wm.yaml to owner/name and tags the image CI would build.
func (w *realWorld) push(owner, name, wmYAML string) Repo {
	w.t.Helper()
	key := owner + "/" + name
	r, ok := w.repos[key]
	if !ok {
		r = gittest.NewRepo(w.t, filepath.Join(w.root, "git", key+".git"))
		w.repos[key] = r
	}
	sha := r.Commit(w.t, "main", map[string]string{"wm.yaml": wmYAML, "Dockerfile": "FROM busybox\n"}, "push")
	dockertest.BusyboxImage(w.t, hostileRegistry+"/"+key+":"+sha)
	return Repo{Key: key, Owner: owner, URL: r.FileURL(), Branch: "main"}
}

func (w *realWorld) pass(repo Repo) (Result, error) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return w.rec.Reconcile(ctx, repo)
}

func (w *realWorld) mustPass(repo Repo) Result {
	w.t.Helper()
	res, err := w.pass(repo)
	if err != nil || !res.Ready {
		w.t.Fatalf("pass of %s: %+v, %v", repo.Key, res.Message, err)
	}
	return res
}

// owned lists the names of the live containers labelled with owner.
func (w *realWorld) owned(owner string) []string {
	w.t.Helper()
	cs, err := w.eng.ListManaged(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		if c.Labels[docker.LabelOwner] == owner {
			names = append(names, c.Name)
		}
	}
	return names
}

// ports returns the host-port allocations of owner's containers (the store
// also adopts the ports of whatever else runs on this engine).
func (w *realWorld) ports(owner string) map[string]int {
	w.t.Helper()
	all, err := w.store.Ports()
	if err != nil {
		w.t.Fatal(err)
	}
	for k := range all {
		if !strings.HasPrefix(k, owner+core.NameSeparator) {
			delete(all, k)
		}
	}
	return all
}

func (w *realWorld) inspect(name string) core.Container {
	w.t.Helper()
	c, err := w.eng.Inspect(context.Background(), name)
	if err != nil {
		w.t.Fatalf("inspect %s: %v", name, err)
	}
	return c
}

const sleeper = "    command: [sleep, \"3600\"]\n    memory: 16Mi\n"

func TestHostileAnotherStudentsImageIsRefusedForContainersPodsAndSIFs(t *testing.T) {
	w := newRealWorld(t, "")
	alice, bob := dockertest.Owner(t), dockertest.Owner(t)
	bobs := w.push(bob, "secret", "version: 1\ncontainers:\n  web:\n    image: self\n"+sleeper)
	res := w.mustPass(bobs)
	before := w.inspect(core.ObjectName(bob, "web"))
	stolen := hostileRegistry + "/" + bob + "/secret"
	for _, tc := range []struct{ name, wmYAML, field string }{
		{"a container naming the image by commit", "containers:\n  x:\n    image: " + stolen + ":" + res.Revision + "\n" + sleeper, "containers.x.image"},
		{"a container naming it as latest", "containers:\n  x:\n    image: " + stolen + "\n" + sleeper, "containers.x.image"},
		{"a pod", "pods:\n  x:\n    image: " + stolen + ":" + res.Revision + "\n", "pods.x.image"},
		{"a Singularity image", "singularity:\n  x:\n    image: " + stolen + ":" + res.Revision + "\n", "singularity.x.image"},
	} {
		t.Run(tc.name+" is refused and bob's container is left alone", func(t *testing.T) {
			_, err := w.pass(w.push(alice, "thief", "version: 1\n"+tc.wmYAML))
			wantReason(t, err, Stalled, core.ImageNotYours)
			if !strings.Contains(err.Error(), tc.field+": "+stolen) || !strings.Contains(err.Error(), "another project's image") {
				t.Errorf("message: %v", err)
			}
			if got := w.owned(alice); len(got) != 0 {
				t.Errorf("alice got containers: %v", got)
			}
			if after := w.inspect(core.ObjectName(bob, "web")); after.ID != before.ID || !after.Running {
				t.Errorf("bob's container changed: %+v", after)
			}
		})
	}
	t.Run("sharing it opens it only through shared/", func(t *testing.T) {
		w.push(bob, "secret", "version: 1\nimage: {share: true}\ncontainers:\n  web:\n    image: self\n"+sleeper)
		w.mustPass(bobs)
		_, err := w.pass(w.push(alice, "thief", "version: 1\ncontainers:\n  x:\n    image: "+stolen+"\n"+sleeper))
		wantReason(t, err, Stalled, core.ImageNotYours)
		w.mustPass(w.push(alice, "thief", "version: 1\ncontainers:\n  x:\n    image: shared/"+bob+"/secret\n"+sleeper))
	})
}

func TestHostileAPassThatFailsHalfWayStillCountsWhatItCreated(t *testing.T) {
	w := newRealWorld(t, "  quota: {memory: 48Mi}")
	owner := dockertest.Owner(t)
	// The container is created, then the pass stops at its SIF, whose
	// image cannot be found: nothing about its usage is recorded as
	// applied.
	w.rec.sif = sif.NewFake()
	_, err := w.pass(w.push(owner, "one", "version: 1\ncontainers:\n  a:\n    image: self\n    command: [sleep, \"3600\"]\n    memory: 32Mi\nsingularity:\n  s: {image: self}\n"))
	wantReason(t, err, Waiting, core.WaitingForImage)
	if got := w.owned(owner); len(got) != 1 {
		t.Fatalf("containers: %v", got)
	}
	_, err = w.pass(w.push(owner, "two", "version: 1\ncontainers:\n  b:\n    image: self\n    command: [sleep, \"3600\"]\n    memory: 32Mi\n"))
	wantReason(t, err, Stalled, core.QuotaExceeded)
	if !strings.Contains(err.Error(), "64Mi of memory (quota 48Mi)") {
		t.Errorf("message: %v", err)
	}
	if got := w.owned(owner); len(got) != 1 {
		t.Errorf("the second repo got a container past the quota: %v", got)
	}
}

func TestHostileRefusedFilesReserveNoHostPorts(t *testing.T) {
	w := newRealWorld(t, "  quota: {containers: 2, ports: 3}")
	owner := dockertest.Owner(t)
	ports := func() map[string]int { return w.ports(owner) }
	t.Run("a file over the container quota reserves nothing", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("version: 1\ncontainers:\n")
		for i := range 3 {
			fmt.Fprintf(&b, "  c%d:\n    image: self\n    ports: [8000, 8001]\n%s", i, sleeper)
		}
		_, err := w.pass(w.push(owner, "many", b.String()))
		wantReason(t, err, Stalled, core.QuotaExceeded)
		if got := ports(); len(got) != 0 || len(w.owned(owner)) != 0 {
			t.Errorf("reserved %v, containers %v", got, w.owned(owner))
		}
	})
	t.Run("a file over the host-port quota is refused with the count", func(t *testing.T) {
		_, err := w.pass(w.push(owner, "many", "version: 1\ncontainers:\n  a:\n    image: self\n    ports: [1, 2, 3, 4]\n"+sleeper))
		wantReason(t, err, Stalled, core.QuotaExceeded)
		if !strings.Contains(err.Error(), "4 host ports (quota 3)") || len(ports()) != 0 {
			t.Errorf("message %v, reserved %v", err, ports())
		}
	})
	t.Run("a port dropped from wm.yaml goes back to everyone", func(t *testing.T) {
		repo := w.push(owner, "many", "version: 1\ncontainers:\n  a:\n    image: self\n    ports: [8000, 9000]\n"+sleeper)
		w.mustPass(repo)
		kept := w.inspect(core.ObjectName(owner, "a")).Ports
		w.push(owner, "many", "version: 1\ncontainers:\n  a:\n    image: self\n    ports: [8000]\n"+sleeper)
		w.mustPass(repo)
		got := ports()
		want := map[string]int{store.PortKey(core.ObjectName(owner, "a"), 8000): kept[0].Host}
		if len(got) != 1 || got[store.PortKey(core.ObjectName(owner, "a"), 8000)] != kept[0].Host {
			t.Errorf("allocations %v, want %v", got, want)
		}
	})
}

func TestHostileNamesOfTwoAccountsNeverCollide(t *testing.T) {
	w := newRealWorld(t, "")
	alice := dockertest.Owner(t)
	aliceX := dockertest.OwnerNamed(t, alice+"-x")
	// Under the old "<owner>-<name>" both would be "<alice>-x-web".
	w.mustPass(w.push(aliceX, "web", "version: 1\ncontainers:\n  web:\n    image: self\n    volumes: {data: /data}\n"+sleeper))
	w.mustPass(w.push(alice, "web", "version: 1\ncontainers:\n  x-web:\n    image: self\n    volumes: {x-data: /data}\n"+sleeper))
	for owner, want := range map[string][2]string{
		aliceX: {aliceX + "_web", aliceX + "_data"},
		alice:  {alice + "_x-web", alice + "_x-data"},
	} {
		c := w.inspect(want[0])
		if c.Labels[docker.LabelOwner] != owner || len(c.Volumes) != 1 || c.Volumes[0] != want[1] || !c.Running {
			t.Errorf("%s's container: %+v", owner, c)
		}
	}
}

func TestHostileALegacyNamedContainerMovesToTheNewNameWithItsVolumeData(t *testing.T) {
	w := newRealWorld(t, "")
	owner := dockertest.Owner(t)
	cli := dockertest.Client(t)
	ctx := context.Background()
	legacyVolume := core.LegacyObjectName(owner, "data")
	labels := map[string]string{docker.LabelManagedBy: docker.ManagedByValue, docker.LabelOwner: owner}
	if _, err := cli.VolumeCreate(ctx, volume.CreateOptions{Name: legacyVolume, Labels: labels}); err != nil {
		t.Fatal(err)
	}
	// The container as an earlier WhaleMountain made it, with data written
	// into its volume.
	cLabels := map[string]string{docker.LabelRepo: owner + "/web", docker.LabelName: "web", docker.LabelSpecHash: "legacy", docker.LabelGPUs: "0"}
	for k, v := range labels {
		cLabels[k] = v
	}
	created, err := cli.ContainerCreate(ctx, &container.Config{Image: dockertest.BusyboxImage(t, ""), Labels: cLabels,
		Cmd: []string{"sh", "-c", "echo kept > /data/f && exec sleep 3600"}},
		&container.HostConfig{Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: legacyVolume, Target: "/data"}}}, nil, nil, core.LegacyObjectName(owner, "web"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if out, code := dockertest.Exec(t, core.LegacyObjectName(owner, "web"), "cat", "/data/f"); code == 0 && strings.TrimSpace(out) == "kept" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the legacy container wrote nothing: %q %d", out, code)
		}
	}

	res := w.mustPass(w.push(owner, "web", "version: 1\ncontainers:\n  web:\n    image: self\n    volumes: {data: /data}\n"+sleeper))
	if res.Plan.Count(ActionRecreate) != 1 || len(res.Plan.Actions) != 1 {
		t.Errorf("plan: %+v", res.Plan.Actions)
	}
	if got := w.owned(owner); len(got) != 1 || got[0] != core.ObjectName(owner, "web") {
		t.Fatalf("containers: %v", got)
	}
	if c := w.inspect(core.ObjectName(owner, "web")); len(c.Volumes) != 1 || c.Volumes[0] != legacyVolume {
		t.Errorf("volumes: %v", c.Volumes)
	}
	if out, code := dockertest.Exec(t, core.ObjectName(owner, "web"), "cat", "/data/f"); code != 0 || strings.TrimSpace(out) != "kept" {
		t.Errorf("the data did not move: %q %d", out, code)
	}
	// And the next pass is a no-op.
	if res := w.mustPass(Repo{Key: owner + "/web", Owner: owner, URL: w.repos[owner+"/web"].FileURL(), Branch: "main"}); len(res.Plan.Actions) != 0 {
		t.Errorf("second pass: %+v", res.Plan.Actions)
	}
}

func TestHostileNumbersAreRefusedBeforeAnythingIsMade(t *testing.T) {
	w := newRealWorld(t, "")
	owner := dockertest.Owner(t)
	many := make([]string, 1000)
	for i := range many {
		many[i] = fmt.Sprint(1 + i)
	}
	for _, tc := range []struct{ name, container, field string }{
		{"cpus that round to no limit", "cpus: 0.0000000001", "containers.x.cpus"},
		{"memory sizes whose sum overflows", "memory: 8Ei", "containers.x.memory"},
		{"thousands of ports", "ports: [" + strings.Join(many, ", ") + "]", "containers.x.ports"},
		{"an env that steers the GPU runtime", "env: {NVIDIA_VISIBLE_DEVICES: all}", "containers.x.env.NVIDIA_VISIBLE_DEVICES"},
	} {
		t.Run(tc.name+" are refused", func(t *testing.T) {
			_, err := w.pass(w.push(owner, "nums", "version: 1\ncontainers:\n  x:\n    image: self\n    "+tc.container+"\n  y:\n    image: self\n    "+tc.container+"\n"))
			wantReason(t, err, Stalled, core.ValidationFailed)
			if !strings.Contains(err.Error(), "wm.yaml:5:") || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("message does not name the line and field %s: %v", tc.field, err)
			}
			ports := w.ports(owner)
			if got := w.owned(owner); len(got) != 0 || len(ports) != 0 {
				t.Errorf("containers %v, ports %v", got, ports)
			}
		})
	}
}

func TestHostileCredentialsInARepoURLAreNeverStored(t *testing.T) {
	w := newRealWorld(t, "")
	owner := dockertest.Owner(t)
	const secret = "glpat-s3cr3t-token"
	base := gittest.ServeWithAuth(t, filepath.Join(w.root, "git"), "wm", secret)
	repo := w.push(owner, "web", "version: 1\n")
	repo.URL = strings.Replace(base, "http://", "http://wm:"+secret+"@", 1) + "/" + owner + "/web.git"
	w.mustPass(repo)
	st, ok, err := w.store.Repo(repo.Key)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	raw, _ := json.Marshal(st)
	if strings.Contains(string(raw), secret) || st.URL != strings.Replace(repo.URL, "wm:"+secret+"@", "", 1) {
		t.Errorf("state keeps the credential: %s", raw)
	}
	// A failing fetch reports the URL too: scrubbed as well.
	gone := repo
	gone.Key, gone.URL = owner+"/gone", strings.Replace(repo.URL, "/web.git", "/gone.git", 1)
	if _, err := w.pass(gone); err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("the failed pass: %v", err)
	}
	st, _, _ = w.store.Repo(gone.Key)
	hist, _ := w.store.History(gone.Key)
	raw, _ = json.Marshal([]any{st, hist})
	if strings.Contains(string(raw), secret) {
		t.Errorf("state of a failed pass keeps the credential: %s", raw)
	}
}

// FuzzQuotaArithmetic: whatever two usages are added, no part of the sum
// is smaller than either part (it saturates, never wraps), so a sum over
// the quota is always reported.
func FuzzQuotaArithmetic(f *testing.F) {
	f.Add(1, 2, int64(3), 0.5, math.MaxInt, -1, int64(math.MaxInt64), 1e308)
	f.Add(0, 0, int64(0), 0.0, 0, 0, int64(-5), math.Copysign(0, -1))
	f.Fuzz(func(t *testing.T, c1, g1 int, m1 int64, cpu1 float64, c2, g2 int, m2 int64, cpu2 float64) {
		a := core.Usage{Containers: c1, GPUs: g1, MemoryBytes: m1, CPUs: cpu1, Ports: c1}
		b := core.Usage{Containers: c2, GPUs: g2, MemoryBytes: m2, CPUs: cpu2, Pods: g2}
		sum := a.Add(b)
		for _, part := range []core.Usage{a, b} {
			if sum.Containers < part.Containers || sum.GPUs < part.GPUs || sum.MemoryBytes < part.MemoryBytes ||
				!(sum.CPUs >= part.CPUs || math.IsNaN(part.CPUs)) || sum.Pods < part.Pods || sum.Ports < part.Ports {
				t.Fatalf("%+v + %+v = %+v shrinks", a, b, sum)
			}
		}
		if sum.Containers < 0 || sum.GPUs < 0 || sum.MemoryBytes < 0 || !(sum.CPUs >= 0) {
			t.Fatalf("%+v + %+v = %+v is negative", a, b, sum)
		}
		q := schema.Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi", Ports: 20}
		if (a.MemoryBytes > 32<<30 || b.MemoryBytes > 32<<30 || a.GPUs > 1 || b.GPUs > 1) && len(overQuota(sum, q)) == 0 {
			t.Fatalf("%+v is not over %+v", sum, q)
		}
	})
}

// TestHostileOneGPUQuotaCoversContainersAndPodsTogether: a student whose
// quota is one GPU cannot take one in Docker and another in Kubernetes,
// in either order (Docker GPUs on a fake host: this machine has none; the
// pods on the real control plane).
func TestHostileOneGPUQuotaCoversContainersAndPodsTogether(t *testing.T) {
	cluster := kubetest.Env(t)
	prefix := cluster.Namespace(t, "wmq") + "-"
	student := cluster.Students()[1]
	w := newWorld(t, func(c *schema.ServerConfig) { c.Policy.MaxPrunePercent = 100 })
	w.rec.cluster = kube.New(cluster.AdminClient(t), kube.Settings{
		Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
		Quota:      w.cfg.Policy.Quota, Defaults: w.cfg.Policy.Defaults,
	})
	ns := prefix + student
	t.Cleanup(func() {
		_ = cluster.AdminClient(t).CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	gpuPod := "version: 1\npods:\n  train: {image: self, gpus: 1, memory: 64Mi, cpus: 0.5}\n"
	gpuContainer := "version: 1\ncontainers:\n  train: {image: self, gpus: 1, memory: 64Mi}\n"

	// A pod first: its namespace's quota needs a moment before it admits.
	pods := w.push(student+"/pods", gpuPod)
	_, err := w.reconcileWhenQuotaReady(pods)
	if err != nil {
		t.Fatalf("the first GPU, a pod: %v", err)
	}
	_, err = w.reconcile(w.push(student+"/box", gpuContainer))
	wantReason(t, err, Stalled, core.QuotaExceeded)
	if !strings.Contains(err.Error(), "2 GPUs (quota 1)") || len(w.hosts[0].Mutations()) != 0 {
		t.Errorf("message %v, docker mutations %v", err, w.hosts[0].Mutations())
	}

	// The pod goes: the container may have the GPU, and then a pod may not.
	w.push(student+"/pods", "version: 1\n")
	if _, err := w.reconcile(pods); err != nil {
		t.Fatal(err)
	}
	w.mustReconcile(w.push(student+"/box", gpuContainer))
	_, err = w.reconcile(w.push(student+"/pods", gpuPod))
	wantReason(t, err, Stalled, core.QuotaExceeded)
	list, lerr := cluster.AdminClient(t).CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if lerr != nil || len(list.Items) != 0 {
		t.Errorf("a pod was made past the quota: %v %v", list, lerr)
	}
}
