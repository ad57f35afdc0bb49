package reconciler

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// The fast tests of cordons and drains, on two fake hosts; drain_test.go
// runs them on two real engines.

// twoHosts is a world of two fake hosts of two GPUs each, h1 first.
func twoHosts(t *testing.T) *world {
	return newWorld(t, func(c *schema.ServerConfig) {
		c.Docker.Hosts = []schema.DockerHost{
			{Name: "h1", Endpoint: "unix:///h1.sock", GPUs: 2},
			{Name: "h2", Endpoint: "unix:///h2.sock", GPUs: 2},
		}
		c.Policy.Quota.GPUs = 4
	})
}

// hostOf returns the host w's engines hold the container called name on,
// "" when none does; it fails t when two do.
func (w *world) hostOf(name string) string {
	w.t.Helper()
	found := ""
	for _, h := range w.hosts {
		cs, err := h.ListManaged(context.Background())
		if err != nil {
			w.t.Fatal(err)
		}
		for _, c := range cs {
			if c.Name == name {
				if found != "" {
					w.t.Fatalf("%s is on %s and %s", name, found, h.Name())
				}
				found = h.Name()
			}
		}
	}
	return found
}

func (w *world) host(name string) *docker.Fake {
	for _, h := range w.hosts {
		if h.Name() == name {
			return h
		}
	}
	w.t.Fatalf("no host %s", name)
	return nil
}

func TestHostsCordonKeepsNewContainersOff(t *testing.T) {
	w := twoHosts(t)
	alice := w.push("alice/web", webV1)
	w.mustReconcile(alice)
	if h := w.hostOf("alice_web"); h != "h1" {
		t.Fatalf("alice_web on %q, want h1 (the first of two empty hosts)", h)
	}
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"a new container goes to the cordoned host's neighbour even when the cordoned one is emptier", func(t *testing.T) {
			if _, err := w.rec.Cordon("h2"); err != nil {
				t.Fatal(err)
			}
			w.mustReconcile(w.push("bob/web", webV1))
			if h := w.hostOf("bob_web"); h != "h1" {
				t.Errorf("bob_web on %q, want h1: h2 is cordoned", h)
			}
		}},
		{"a container on a cordoned host stays there, through a change too", func(t *testing.T) {
			if _, err := w.rec.Cordon("h1"); err != nil {
				t.Fatal(err)
			}
			w.mustReconcile(w.push("alice/web", strings.Replace(webV1, "MODE: dev", "MODE: prod", 1)))
			if h := w.hostOf("alice_web"); h != "h1" {
				t.Errorf("alice_web on %q after a change, want h1 still", h)
			}
		}},
		{"with every host cordoned a new container waits, and says why", func(t *testing.T) {
			_, err := w.reconcile(w.push("carol/web", webV1))
			wantReason(t, err, Waiting, core.NoCapacity)
			if !strings.Contains(err.Error(), "cordoned, taking no new containers: h1, h2") {
				t.Errorf("message: %v", err)
			}
		}},
		{"an uncordoned host takes new containers again", func(t *testing.T) {
			if was, err := w.rec.Uncordon("h2"); err != nil || !was {
				t.Fatalf("uncordon: %v, %v", was, err)
			}
			w.mustReconcile(w.push("carol/web", webV1))
			if h := w.hostOf("carol_web"); h != "h2" {
				t.Errorf("carol_web on %q, want h2", h)
			}
			if was, err := w.rec.Uncordon("h2"); err != nil || was {
				t.Errorf("a second uncordon: %v, %v", was, err)
			}
		}},
		{"an unknown host cannot be cordoned", func(t *testing.T) {
			if _, err := w.rec.Cordon("h9"); err == nil || !strings.Contains(err.Error(), "h1, h2") {
				t.Errorf("cordon h9: %v", err)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			break
		}
	}
}

func TestHostsShowsGPUsContainersCordonsAndReachability(t *testing.T) {
	w := twoHosts(t)
	w.mustReconcile(w.push("alice/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n"))
	if _, err := w.rec.Cordon("h1"); err != nil {
		t.Fatal(err)
	}
	w.host("h2").FailOn("ListManaged", docker.ErrUnreachable)
	hosts, err := w.rec.Hosts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 {
		t.Fatalf("hosts: %+v", hosts)
	}
	h1, h2 := hosts[0], hosts[1]
	if !h1.Reachable || h1.Cordon == nil || h1.FreeGPUs() != 1 || len(h1.Containers) != 1 {
		t.Errorf("h1: %+v", h1)
	}
	if g := h1.GPUs[0]; g.Device != "0" || len(g.Holders) != 1 || g.Holders[0] != (GPUHolder{Container: "alice_train", Owner: "alice"}) {
		t.Errorf("GPU 0 of h1: %+v", g)
	}
	if c := h1.Containers[0]; c.Name != "alice_train" || !slices.Equal(c.GPUs, []string{"0"}) || c.State != "running" {
		t.Errorf("h1's container: %+v", c)
	}
	if h2.Reachable || !strings.Contains(h2.Error, "unreachable") || h2.Cordon != nil || h2.FreeGPUs() != 2 {
		t.Errorf("h2: %+v", h2)
	}
}

func TestDrainOnFakeHosts(t *testing.T) {
	cases := []struct {
		name string
		test func(t *testing.T, w *world, repo Repo)
	}{
		{"a drain moves a container with its volume's files, name and host port, and leaves nothing behind", func(t *testing.T, w *world, repo Repo) {
			before, _, _ := w.container("alice_web")
			var said []string
			rep, err := w.rec.Drain(context.Background(), "h1", func(s string) { said = append(said, s) })
			if err != nil {
				t.Fatal(err)
			}
			if h := w.hostOf("alice_web"); h != "h2" {
				t.Fatalf("alice_web on %q, want h2", h)
			}
			after, _, _ := w.container("alice_web")
			if !after.Running || !slices.Equal(after.Ports, before.Ports) {
				t.Errorf("moved: running %v, ports %v (were %v)", after.Running, after.Ports, before.Ports)
			}
			if got := w.host("h2").VolumeFiles("alice_data"); string(got["notes/todo"]) != "write the report" {
				t.Errorf("files on h2: %q", got)
			}
			if w.host("h1").VolumeFiles("alice_data") != nil {
				t.Error("the volume is still on h1")
			}
			if len(rep.Moved) != 1 || rep.Moved[0].To != "h2" || rep.Moved[0].Recreate || len(rep.Moved[0].Ports) != 0 || len(rep.Volumes) != 1 {
				t.Errorf("report: %+v", rep)
			}
			created := slices.IndexFunc(said, func(s string) bool { return strings.HasPrefix(s, "creating alice_web on h2") })
			removed := slices.IndexFunc(said, func(s string) bool { return strings.HasPrefix(s, "removing volume alice_data from h1") })
			if created < 0 || removed < created {
				t.Errorf("steps in this order: %q", said)
			}
			// The pass finds it where it is and changes nothing.
			res := w.mustReconcile(repo)
			if len(res.Plan.Actions) != 0 || res.Containers[0].Host != "h2" {
				t.Errorf("the pass after the drain: %+v, containers %+v", res.Plan.Actions, res.Containers)
			}
			if st, _, _ := w.store.Repo(repo.Key); st.Inventory[0].Host != "h2" {
				t.Errorf("inventory: %+v", st.Inventory)
			}
			cordons, _ := w.store.Cordons()
			if cordons["h1"].Reason != "drained" {
				t.Errorf("cordons: %+v", cordons)
			}
		}},
		{"containers that share a volume move together, stopped together, with one copy of it", func(t *testing.T, w *world, repo Repo) {
			if _, err := w.rec.Cordon("h2"); err != nil {
				t.Fatal(err)
			}
			w.mustReconcile(w.push("alice/web", webV1+"  worker: {image: self, volumes: {data: /data}}\n"))
			if _, err := w.rec.Uncordon("h2"); err != nil {
				t.Fatal(err)
			}
			rep, err := w.rec.Drain(context.Background(), "h1", nil)
			if err != nil {
				t.Fatal(err)
			}
			if w.hostOf("alice_web") != "h2" || w.hostOf("alice_worker") != "h2" || len(rep.Moved) != 2 || len(rep.Volumes) != 1 {
				t.Errorf("web on %s, worker on %s; report %+v", w.hostOf("alice_web"), w.hostOf("alice_worker"), rep)
			}
			if string(w.host("h2").VolumeFiles("alice_data")["notes/todo"]) != "write the report" {
				t.Error("the shared volume's files did not move")
			}
		}},
		{"a volume no container mounts stays on the drained host, and the report says so", func(t *testing.T, w *world, repo Repo) {
			w.host("h1").WriteVolumeFile("alice", "alice_old", "kept", []byte("old data"))
			rep, err := w.rec.Drain(context.Background(), "h1", nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(rep.Left, "volume alice_old: no container mounts it, so it was not moved") || len(rep.Left) != 1 {
				t.Errorf("left: %q", rep.Left)
			}
			if string(w.host("h1").VolumeFiles("alice_old")["kept"]) != "old data" {
				t.Error("the unmounted volume changed")
			}
		}},
		{"a drain that cannot copy a volume leaves the container running on its host with its files, and says why", func(t *testing.T, w *world, repo Repo) {
			w.host("h2").FailOn("ImportVolume", errors.New("no space left on device"))
			before, _, _ := w.container("alice_web")
			_, err := w.rec.Drain(context.Background(), "h1", nil)
			if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "stays on h1, it runs there again") {
				t.Fatalf("drain: %v", err)
			}
			after, _, _ := w.container("alice_web")
			if w.hostOf("alice_web") != "h1" || !after.Running || after.ID != before.ID {
				t.Errorf("alice_web: %+v, was %+v", after, before)
			}
			if string(w.host("h1").VolumeFiles("alice_data")["notes/todo"]) != "write the report" {
				t.Error("the files on h1 changed")
			}
			if w.host("h2").VolumeFiles("alice_data") != nil {
				t.Error("a volume was left on h2")
			}
		}},
		{"a drain whose new container cannot be made removes the copied volume and restarts the old one", func(t *testing.T, w *world, repo Repo) {
			w.host("h2").FailOn("Create", errors.New("out of memory"))
			_, err := w.rec.Drain(context.Background(), "h1", nil)
			if err == nil || !strings.Contains(err.Error(), "out of memory") {
				t.Fatalf("drain: %v", err)
			}
			c, _, _ := w.container("alice_web")
			if w.hostOf("alice_web") != "h1" || !c.Running || w.host("h2").VolumeFiles("alice_data") != nil {
				t.Errorf("after: on %s, running %v, volume on h2 %v", w.hostOf("alice_web"), c.Running, w.host("h2").VolumeFiles("alice_data"))
			}
		}},
		{"a drain of a host that cannot be reached refuses, cordons nothing and makes nothing elsewhere", func(t *testing.T, w *world, repo Repo) {
			w.host("h1").FailOn("ListManaged", docker.ErrUnreachable)
			_, err := w.rec.Drain(context.Background(), "h1", nil)
			if err == nil || !strings.Contains(err.Error(), "cannot be reached, so it is not drained") || !strings.Contains(err.Error(), "volumes can only be copied from a host that answers") {
				t.Fatalf("drain: %v", err)
			}
			if got := w.host("h2").Mutations(); len(got) != 0 {
				t.Errorf("h2 was changed: %v", got)
			}
			if cordons, _ := w.store.Cordons(); len(cordons) != 0 {
				t.Errorf("cordons: %+v", cordons)
			}
		}},
		{"a drain with no other host to take a container stops and says why, host by host", func(t *testing.T, w *world, repo Repo) {
			if _, err := w.rec.Cordon("h2"); err != nil {
				t.Fatal(err)
			}
			_, err := w.rec.Drain(context.Background(), "h1", nil)
			if err == nil || !strings.Contains(err.Error(), "no other Docker host can take alice_web, which stays on h1 as it is (h2: cordoned)") {
				t.Fatalf("drain: %v", err)
			}
			if w.hostOf("alice_web") != "h1" {
				t.Error("alice_web moved")
			}
		}},
		{"a drain does not copy into a volume of the same name on the other host", func(t *testing.T, w *world, repo Repo) {
			w.host("h2").WriteVolumeFile("alice", "alice_data", "other", []byte("other data"))
			_, err := w.rec.Drain(context.Background(), "h1", nil)
			if err == nil || !strings.Contains(err.Error(), "h2: it has a volume named alice_data already") {
				t.Fatalf("drain: %v", err)
			}
			if got := w.host("h2").VolumeFiles("alice_data"); len(got) != 1 || string(got["other"]) != "other data" {
				t.Errorf("h2's volume: %q", got)
			}
		}},
		{"a host port bound on the other host gives the moved container a new one, reported", func(t *testing.T, w *world, repo Repo) {
			c, _, _ := w.container("alice_web")
			w.host("h2").AddForeign("squatter")
			if err := w.host("h2").Alter("squatter", func(s *core.Container) { s.Ports = slices.Clone(c.Ports) }); err != nil {
				t.Fatal(err)
			}
			rep, err := w.rec.Drain(context.Background(), "h1", nil)
			if err != nil {
				t.Fatal(err)
			}
			moved, _, _ := w.container("alice_web")
			if len(rep.Moved) != 1 || len(rep.Moved[0].Ports) != 1 || rep.Moved[0].Ports[0].From != c.Ports[0].Host || rep.Moved[0].Ports[0].To != moved.Ports[0].Host || moved.Ports[0].Host == c.Ports[0].Host {
				t.Errorf("report %+v, ports now %v, were %v", rep.Moved, moved.Ports, c.Ports)
			}
			if res := w.mustReconcile(repo); len(res.Plan.Actions) != 0 {
				t.Errorf("the pass after the drain: %+v", res.Plan.Actions)
			}
			if port, _ := w.store.Port(store.PortKey("alice_web", 8000)); port != moved.Ports[0].Host {
				t.Errorf("the store holds port %d, the container binds %v", port, moved.Ports)
			}
		}},
		{"a GPU container gets its own GPU on the new host", func(t *testing.T, w *world, repo Repo) {
			w.mustReconcile(w.push("bob/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n"))
			w.mustReconcile(w.push("carol/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n"))
			if w.hostOf("bob_train") != "h2" || w.hostOf("carol_train") != "h1" {
				t.Fatalf("bob on %s, carol on %s", w.hostOf("bob_train"), w.hostOf("carol_train"))
			}
			if _, err := w.rec.Drain(context.Background(), "h1", nil); err != nil {
				t.Fatal(err)
			}
			bob, _, _ := w.container("bob_train")
			carol, _, _ := w.container("carol_train")
			if w.hostOf("carol_train") != "h2" || len(carol.GPUDevices) != 1 || carol.GPUDevices[0] == bob.GPUDevices[0] {
				t.Errorf("carol on %s with %v, bob has %v", w.hostOf("carol_train"), carol.GPUDevices, bob.GPUDevices)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := twoHosts(t)
			repo := w.push("alice/web", webV1)
			w.mustReconcile(repo)
			if h := w.hostOf("alice_web"); h != "h1" {
				t.Fatalf("alice_web on %q, want h1", h)
			}
			w.host("h1").WriteVolumeFile("alice", "alice_data", "notes/todo", []byte("write the report"))
			c.test(t, w, repo)
		})
	}
}

func TestVolumeGroups(t *testing.T) {
	c := func(name string, volumes ...string) core.Container {
		return core.Container{Name: name, Volumes: volumes}
	}
	cases := []struct {
		name string
		in   []core.Container
		want string
	}{
		{"containers without volumes move one by one", []core.Container{c("a"), c("b")}, "[a] [b]"},
		{"containers sharing a volume move together", []core.Container{c("a", "v"), c("b"), c("c", "v")}, "[a c] [b]"},
		{"sharing is followed through chains of volumes", []core.Container{c("a", "v"), c("b", "w"), c("c", "v", "w"), c("d", "x")}, "[a b c] [d]"},
		{"no container gives no group", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var groups []string
			for _, g := range volumeGroups(tc.in) {
				var names []string
				for _, c := range g {
					names = append(names, c.Name)
				}
				groups = append(groups, "["+strings.Join(names, " ")+"]")
			}
			if got := strings.Join(groups, " "); got != tc.want {
				t.Errorf("volumeGroups = %s, want %s", got, tc.want)
			}
		})
	}
}
