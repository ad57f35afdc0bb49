package reconciler

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/schema"
)

func TestChooseGPUs(t *testing.T) {
	devices := []string{"0", "1", "2", "3"}
	cases := []struct {
		name    string
		holders map[string]int
		n       int
		shared  bool
		want    []string
	}{
		{"a free host gives its first GPUs", nil, 2, false, []string{"0", "1"}},
		{"held GPUs are skipped", map[string]int{"0": 1, "2": 1}, 2, false, []string{"1", "3"}},
		{"too few free GPUs give none", map[string]int{"0": 1, "1": 1, "2": 1}, 2, false, nil},
		{"a shared host gives the least held GPUs", map[string]int{"0": 2, "1": 1, "2": 1, "3": 1}, 2, true, []string{"1", "2"}},
		{"a shared host never gives one GPU twice to one container", map[string]int{"0": 5}, 4, true, []string{"1", "2", "3", "0"}},
		{"a shared host cannot give more GPUs than it has", nil, 5, true, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := chooseGPUs(devices, c.holders, c.n, c.shared); !slices.Equal(got, c.want) {
				t.Errorf("chooseGPUs = %v, want %v", got, c.want)
			}
		})
	}
}

func TestGPUHoldersCountRunningContainersOnly(t *testing.T) {
	devices := []string{"GPU-a", "GPU-b", "GPU-c"}
	live := []core.Container{
		{Name: "alice_a", Running: true, GPUs: 1, GPUDevices: []string{"GPU-c"}},
		{Name: "bob_b", Running: false, GPUs: 1, GPUDevices: []string{"GPU-b"}},
		{Name: "carol_old", Running: true, GPUs: 1},                             // made before devices: Docker gave it the first
		{Name: "dave_web", Running: true},                                       // no GPU
		{Name: "erin_x", Running: true, GPUs: 1, GPUDevices: []string{"GPU-b"}}, // being recreated
	}
	got := gpuHolders(devices, live, "erin_x")
	want := map[string]int{"GPU-c": 1, "GPU-a": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("gpuHolders = %v, want %v", got, want)
	}
}

// gpuWorld is a world with one host of four GPUs, named by UUID, and a
// quota that lets each student hold them all.
func gpuWorld(t *testing.T, sharing bool) *world {
	return newWorld(t, func(c *schema.ServerConfig) {
		c.Docker.Hosts = []schema.DockerHost{{Name: "blade", Endpoint: "unix:///blade.sock",
			GPUDevices: []string{"GPU-0a", "GPU-1b", "GPU-2c", "GPU-3d"}, GPUSharing: sharing}}
		c.Policy.Quota.GPUs = 4
	})
}

// devicesOf returns the GPU devices of the containers on w's first host,
// by name, as the engine was asked to create them.
func devicesOf(t *testing.T, w *world) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	live, err := w.hosts[0].ListManaged(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range live {
		s, _ := w.hosts[0].Spec(c.Name)
		if !slices.Equal(s.GPUDevices, c.GPUDevices) {
			t.Errorf("%s: labels say %v, spec %v", c.Name, c.GPUDevices, s.GPUDevices)
		}
		out[c.Name] = c.GPUDevices
	}
	return out
}

func TestFourOneGPUContainersOnAFourGPUHostGetFourDifferentGPUs(t *testing.T) {
	w := gpuWorld(t, false)
	var repos []Repo
	for _, owner := range []string{"alice", "bob", "carol", "dave"} {
		repos = append(repos, w.push(owner+"/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n"))
		w.mustReconcile(repos[len(repos)-1])
	}
	got := devicesOf(t, w)
	seen := map[string]string{}
	for name, d := range got {
		if len(d) != 1 {
			t.Fatalf("%s holds %v, want one GPU", name, d)
		}
		if other, dup := seen[d[0]]; dup {
			t.Errorf("%s and %s share %s", name, other, d[0])
		}
		seen[d[0]] = name
	}
	if len(seen) != 4 {
		t.Errorf("GPUs given: %v", got)
	}

	t.Run("a fifth waits for a free GPU, and gets the one a stopped container gives back", func(t *testing.T) {
		erin := w.push("erin/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n")
		_, err := w.reconcile(erin)
		wantReason(t, err, Waiting, core.NoCapacity)
		freed := got["bob_train"][0]
		w.mustReconcile(w.push("bob/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1, state: stopped}\n"))
		w.mustReconcile(erin)
		if d := devicesOf(t, w)["erin_train"]; !slices.Equal(d, []string{freed}) {
			t.Errorf("erin got %v, want bob's %s", d, freed)
		}
		// Bob starting again finds his GPU taken: he waits, erin keeps it.
		_, err = w.reconcile(w.push("bob/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n"))
		wantReason(t, err, Waiting, core.NoCapacity)
	})

	t.Run("a restarted WhaleMountain rebuilds the allocation from what runs and moves nothing", func(t *testing.T) {
		before := devicesOf(t, w)
		rec, err := New(w.cfg, w.rec.git, w.rec.engines, w.store, WithClock(func() time.Time { return w.now }))
		if err != nil {
			t.Fatal(err)
		}
		w.rec = rec
		for _, repo := range repos {
			if repo.Owner == "bob" {
				continue
			}
			if res := w.mustReconcile(repo); len(res.Plan.Actions) != 0 {
				t.Errorf("%s: %+v after a restart", repo.Key, res.Plan.Actions)
			}
		}
		if after := devicesOf(t, w); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("devices moved: %v, were %v", after, before)
		}
	})

	t.Run("the status shows each container's GPUs", func(t *testing.T) {
		st, ok, err := w.store.Repo("alice/ml")
		if err != nil || !ok || len(st.Containers) != 1 || !slices.Equal(st.Containers[0].GPUs, got["alice_train"]) {
			t.Errorf("alice's status: %+v, %v; want GPUs %v", st.Containers, err, got["alice_train"])
		}
	})
}

func TestAHostThatSharesItsGPUsGivesTheLeastSharedFirst(t *testing.T) {
	w := gpuWorld(t, true)
	for _, owner := range []string{"alice", "bob", "carol", "dave", "erin", "frank"} {
		w.mustReconcile(w.push(owner+"/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n"))
	}
	holders := map[string]int{}
	for _, d := range devicesOf(t, w) {
		holders[d[0]]++
	}
	if want := map[string]int{"GPU-0a": 2, "GPU-1b": 2, "GPU-2c": 1, "GPU-3d": 1}; fmt.Sprint(holders) != fmt.Sprint(want) {
		t.Errorf("holders %v, want %v", holders, want)
	}
}

func TestAGPUContainerMadeBeforeDevicesIsRecreatedWithItsOwn(t *testing.T) {
	w := gpuWorld(t, false)
	repo := w.push("alice/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n")
	w.mustReconcile(repo)
	// What an older WhaleMountain made: the same container, GPUs by count.
	_, spec, _ := w.container("alice_train")
	if err := w.hosts[0].Remove(context.Background(), spec.Name); err != nil {
		t.Fatal(err)
	}
	spec.GPUDevices = nil
	if _, err := w.hosts[0].Create(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	res := w.mustReconcile(repo)
	if len(res.Plan.Actions) != 1 || res.Plan.Actions[0].Kind != ActionRecreate {
		t.Fatalf("plan: %+v, want one recreate", res.Plan.Actions)
	}
	if d := devicesOf(t, w)["alice_train"]; len(d) != 1 {
		t.Errorf("alice holds %v, want one device", d)
	}
}
