package docker_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/fault"
)

// engine is the method set every implementation has.
type engine = docker.EngineAPI

// image is the image every case runs; newEngine makes sure it is there.
const image = dockertest.DefaultBusybox

// unreachableRegistry is a closed port: nothing ever answers there.
const unreachableRegistry = "127.0.0.1:1"

func TestFakeEngine(t *testing.T) {
	t.Parallel()
	testEngine(t, func(t *testing.T) (engine, string) {
		f := docker.NewFake("fake")
		f.AddImage(image)
		return f, dockertest.Owner(t)
	})
}

func TestRealEngine(t *testing.T) {
	t.Parallel()
	testEngine(t, func(t *testing.T) (engine, string) {
		e := dockertest.Engine(t)
		dockertest.BusyboxImage(t, image)
		return e, dockertest.Owner(t)
	})
}

// TestSecondRealEngine runs the contract against the second real Docker
// Engine on this machine (ci/docker2-up), as a second host would be.
func TestSecondRealEngine(t *testing.T) {
	t.Parallel()
	d := dockertest.Second(t)
	testEngine(t, func(t *testing.T) (engine, string) {
		e := d.Engine(t)
		d.BusyboxImage(t, image)
		return e, d.Owner(t)
	})
}

// testEngine is the contract both implementations keep. Each case gets its
// own engine and owner, so cases run in parallel, on the real daemon too.
func testEngine(t *testing.T, newEngine func(t *testing.T) (e engine, owner string)) {
	cases := []struct {
		name string
		test func(t *testing.T, e engine, owner string)
	}{
		{"ListOwned lists the owner's containers and no one else's", func(t *testing.T, e engine, owner string) {
			create(t, e, spec(t, owner, "web"))
			other := dockertest.OwnerNamed(t, owner+"-x") // looks alike, is another account
			create(t, e, spec(t, other, "web"))
			list, err := e.ListOwned(ctx(t), owner)
			if err != nil || len(list) != 1 || list[0].Name != core.ObjectName(owner, "web") {
				t.Errorf("ListOwned(%s) = %+v, %v", owner, list, err)
			}
		}},
		{"create starts a running container with its env, command and host ports", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "web")
			s.Env = map[string]string{"GREETING": "hello world", "EMPTY": ""}
			s.Command = []string{"sh", "-c", "exec sleep 3600"}
			c := create(t, e, s)
			if !c.Running || c.State != "running" || c.ID == "" || c.Name != s.Name || c.Image != s.Image {
				t.Fatalf("created %+v, want a running %s from %s", c, s.Name, s.Image)
			}
			if want := s.Ports; !slices.Equal(c.Ports, want) {
				t.Errorf("ports = %v, want %v", c.Ports, want)
			}
			if c.Health != "" || c.StartedAt.IsZero() {
				t.Errorf("health %q, started %v: want no health and a start time", c.Health, c.StartedAt)
			}
			for k, v := range docker.Labels(s) {
				if c.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
				}
			}
			if c.SpecHash != s.Hash() || !c.Managed {
				t.Errorf("spec hash %q, managed %v: want %q, true", c.SpecHash, c.Managed, s.Hash())
			}
			env, entrypoint, cmd := createdConfig(t, e, s.Name)
			if env["GREETING"] != "hello world" || env["EMPTY"] != "" {
				t.Errorf("env = %v, want GREETING and EMPTY set", env)
			}
			if !slices.Equal(cmd, s.Command) || len(entrypoint) != 0 {
				t.Errorf("entrypoint %q, command %q: want none and %q", entrypoint, cmd, s.Command)
			}
			got := inspect(t, e, s.Name)
			if got.ID != c.ID || !got.Running {
				t.Errorf("inspect = %+v, want what create returned", got)
			}
		}},
		{"create with Running false leaves it created, not running", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "idle")
			s.Running = false
			c := create(t, e, s)
			if c.Running || c.State != "created" || !c.StartedAt.IsZero() {
				t.Fatalf("created %+v, want state created", c)
			}
			if c := inspect(t, e, s.Name); c.Running || c.State != "created" {
				t.Fatalf("inspect = %+v, want state created", c)
			}
		}},
		{"a second create with the same name is a conflict", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "twice")
			s.Running = false
			first := create(t, e, s)
			again := s
			again.Env = map[string]string{"CHANGED": "1"}
			_, err := e.Create(ctx(t), again)
			wantErr(t, err, docker.ErrConflict)
			if c := inspect(t, e, s.Name); c.ID != first.ID || c.SpecHash != s.Hash() {
				t.Errorf("the first container changed: %+v", c)
			}
		}},
		{"an unlabelled container with the same name is a conflict and is left alone", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "taken")
			addForeign(t, e, s.Name)
			_, err := e.Create(ctx(t), s)
			wantErr(t, err, docker.ErrConflict)
			_, err = e.Inspect(ctx(t), s.Name)
			wantErr(t, err, docker.ErrNotFound)
			wantErr(t, e.Stop(ctx(t), s.Name, time.Second), docker.ErrNotFound)
			wantErr(t, e.Start(ctx(t), s.Name), docker.ErrNotFound)
			wantErr(t, e.Remove(ctx(t), s.Name), docker.ErrNotFound)
			if names := managedNames(t, e, owner); len(names) != 0 {
				t.Errorf("managed = %v, want none", names)
			}
			if !foreignRunning(t, e, s.Name) {
				t.Errorf("the unlabelled container %s is no longer running", s.Name)
			}
		}},
		{"rename keeps the container, its labels and host ports, and refuses a taken name", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "web")
			c := create(t, e, s)
			if err := e.Rename(ctx(t), s.Name, s.Name+"-aside"); err != nil {
				t.Fatal(err)
			}
			got := inspect(t, e, s.Name+"-aside")
			if got.ID != c.ID || got.SpecHash != s.Hash() || !slices.Equal(got.Ports, c.Ports) {
				t.Errorf("renamed %+v, want the container %+v", got, c)
			}
			_, err := e.Inspect(ctx(t), s.Name)
			wantErr(t, err, docker.ErrNotFound)
			addForeign(t, e, owner+"-taken")
			wantErr(t, e.Rename(ctx(t), s.Name+"-aside", owner+"-taken"), docker.ErrConflict)
			wantErr(t, e.Rename(ctx(t), owner+"-taken", owner+"-mine"), docker.ErrNotFound)
			if !foreignRunning(t, e, owner+"-taken") {
				t.Errorf("the unlabelled container was disturbed")
			}
		}},
		{"stop then start keeps the same container and host port", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "cycle")
			c := create(t, e, s)
			if err := e.Stop(ctx(t), s.Name, time.Second); err != nil {
				t.Fatal(err)
			}
			stopped := inspect(t, e, s.Name)
			if stopped.Running || stopped.State != "exited" || stopped.FinishedAt.IsZero() {
				t.Fatalf("after stop %+v, want exited", stopped)
			}
			if !slices.Equal(stopped.Ports, s.Ports) {
				t.Errorf("stopped ports = %v, want %v", stopped.Ports, s.Ports)
			}
			if err := e.Start(ctx(t), s.Name); err != nil {
				t.Fatal(err)
			}
			started := inspect(t, e, s.Name)
			if !started.Running || started.ID != c.ID || !slices.Equal(started.Ports, s.Ports) {
				t.Errorf("after start %+v, want %s running on %v", started, c.ID, s.Ports)
			}
		}},
		{"start of a running and stop of a stopped container do nothing", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "again")
			create(t, e, s)
			if err := e.Start(ctx(t), s.Name); err != nil {
				t.Errorf("start of a running container: %v", err)
			}
			for range 2 {
				if err := e.Stop(ctx(t), s.Name, time.Second); err != nil {
					t.Errorf("stop: %v", err)
				}
			}
			if c := inspect(t, e, s.Name); c.Running {
				t.Errorf("still running: %+v", c)
			}
		}},
		{"remove keeps the named volume, and a recreate reuses it and the host port", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "db")
			s.Mounts = []core.Mount{{Volume: core.ObjectName(owner, "data"), Target: "/data"}}
			s.Running = false
			create(t, e, s)
			wantVolumes(t, e, owner, core.ObjectName(owner, "data"))
			if err := e.Remove(ctx(t), s.Name); err != nil {
				t.Fatal(err)
			}
			_, err := e.Inspect(ctx(t), s.Name)
			wantErr(t, err, docker.ErrNotFound)
			wantVolumes(t, e, owner, core.ObjectName(owner, "data"))
			s.Running = true
			c := create(t, e, s)
			if !c.Running || !slices.Equal(c.Ports, s.Ports) {
				t.Errorf("recreated %+v, want running on %v", c, s.Ports)
			}
		}},
		{"remove force-removes a running container", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "gone")
			create(t, e, s)
			if err := e.Remove(ctx(t), s.Name); err != nil {
				t.Fatal(err)
			}
			wantErr(t, e.Remove(ctx(t), s.Name), docker.ErrNotFound)
		}},
		{"list shows only managed containers, in every state", func(t *testing.T, e engine, owner string) {
			running, idle := spec(t, owner, "a"), spec(t, owner, "b")
			idle.Running = false
			create(t, e, running)
			create(t, e, idle)
			addForeign(t, e, owner+"-foreign")
			if got, want := managedNames(t, e, owner), []string{running.Name, idle.Name}; !slices.Equal(got, want) {
				t.Errorf("managed = %v, want %v", got, want)
			}
		}},
		{"inspect, start, stop and remove of a missing container are not found", func(t *testing.T, e engine, owner string) {
			name := owner + "-missing"
			_, err := e.Inspect(ctx(t), name)
			wantErr(t, err, docker.ErrNotFound)
			wantErr(t, e.Start(ctx(t), name), docker.ErrNotFound)
			wantErr(t, e.Stop(ctx(t), name, time.Second), docker.ErrNotFound)
			wantErr(t, e.Remove(ctx(t), name), docker.ErrNotFound)
		}},
		{"create of an image that is not on the host is image-not-found and makes nothing", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "noimage")
			s.Image = "wm-test/absent:" + owner
			s.Mounts = []core.Mount{{Volume: core.ObjectName(owner, "data"), Target: "/data"}}
			_, err := e.Create(ctx(t), s)
			wantErr(t, err, docker.ErrImageNotFound)
			if ok, err := e.ImageExists(ctx(t), s.Image); ok || err != nil {
				t.Errorf("image exists = %v, %v; want false, nil", ok, err)
			}
			wantVolumes(t, e, owner)
			if names := managedNames(t, e, owner); len(names) != 0 {
				t.Errorf("managed = %v, want none", names)
			}
		}},
		{"an invalid spec is refused before anything is made", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "bad")
			s.Mounts = []core.Mount{{Volume: "someone-data", Target: "/data"}}
			_, err := e.Create(ctx(t), s)
			wantErr(t, err, core.ErrInvalidSpec)
			wantVolumes(t, e, owner)
		}},
		{"a host port held by another running container is port-in-use and leaves the container created", func(t *testing.T, e engine, owner string) {
			first := spec(t, owner, "first")
			create(t, e, first)
			second := spec(t, owner, "second")
			second.Ports = []core.PortBinding{{Guest: 9090, Host: first.Ports[0].Host}}
			_, err := e.Create(ctx(t), second)
			wantErr(t, err, docker.ErrPortInUse)
			if c := inspect(t, e, second.Name); c.Running || c.State != "created" {
				t.Errorf("second = %+v, want created", c)
			}
			if err := e.Stop(ctx(t), first.Name, time.Second); err != nil {
				t.Fatal(err)
			}
			if err := e.Start(ctx(t), second.Name); err != nil {
				t.Errorf("start once the port is free: %v", err)
			}
		}},
		{"a volume still mounted is a conflict to remove, and removable once the container is gone", func(t *testing.T, e engine, owner string) {
			s := spec(t, owner, "vol")
			s.Running = false
			vol := core.ObjectName(owner, "cache")
			s.Mounts = []core.Mount{{Volume: vol, Target: "/cache"}}
			create(t, e, s)
			wantErr(t, e.RemoveVolume(ctx(t), vol), docker.ErrConflict)
			if err := e.Remove(ctx(t), s.Name); err != nil {
				t.Fatal(err)
			}
			if err := e.RemoveVolume(ctx(t), vol); err != nil {
				t.Fatal(err)
			}
			wantVolumes(t, e, owner)
			wantErr(t, e.RemoveVolume(ctx(t), vol), docker.ErrNotFound)
		}},
		{"a volume of that name that is not managed is a conflict to create and not found to remove", func(t *testing.T, e engine, owner string) {
			vol := core.ObjectName(owner, "data")
			addForeignVolume(t, e, vol)
			s := spec(t, owner, "steal")
			s.Mounts = []core.Mount{{Volume: vol, Target: "/data"}}
			_, err := e.Create(ctx(t), s)
			wantErr(t, err, docker.ErrConflict)
			wantErr(t, e.RemoveVolume(ctx(t), vol), docker.ErrNotFound)
			wantVolumes(t, e, owner)
		}},
		{"pull of an image the registry has puts it on the host, with credentials", func(t *testing.T, e engine, owner string) {
			auth := &core.RegistryAuth{Username: owner, Password: "secret"}
			ref := registryFor(t, e, auth, "team/tool") + "/team/tool:1"
			if ok, err := e.ImageExists(ctx(t), ref); ok || err != nil {
				t.Fatalf("before pull: exists = %v, %v", ok, err)
			}
			if err := e.Pull(ctx(t), ref, auth); err != nil {
				t.Fatal(err)
			}
			if ok, err := e.ImageExists(ctx(t), ref); !ok || err != nil {
				t.Errorf("after pull: exists = %v, %v; want true", ok, err)
			}
		}},
		{"pull of a missing image is image-not-found", func(t *testing.T, e engine, owner string) {
			ref := registryFor(t, e, nil, "team/tool") + "/team/absent:1"
			wantErr(t, e.Pull(ctx(t), ref, nil), docker.ErrImageNotFound)
		}},
		{"pull with wrong credentials is unauthorized", func(t *testing.T, e engine, owner string) {
			ref := registryFor(t, e, &core.RegistryAuth{Username: owner, Password: "secret"}, "team/tool") + "/team/tool:1"
			wantErr(t, e.Pull(ctx(t), ref, &core.RegistryAuth{Username: owner, Password: "wrong"}), docker.ErrUnauthorized)
			wantErr(t, e.Pull(ctx(t), ref, nil), docker.ErrUnauthorized)
		}},
		{"pull from a registry nobody answers for is unreachable", func(t *testing.T, e engine, owner string) {
			if f, ok := e.(*docker.Fake); ok {
				f.SetUnreachable(unreachableRegistry)
			}
			wantErr(t, e.Pull(ctx(t), unreachableRegistry+"/team/tool:1", nil), docker.ErrUnreachable)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e, owner := newEngine(t)
			c.test(t, e, owner)
		})
	}
}

// spec returns a small running container of owner's, with one free host
// port for guest port 8080.
func spec(t *testing.T, owner, name string) core.ContainerSpec {
	return core.ContainerSpec{
		Name:      core.ObjectName(owner, name),
		Owner:     owner,
		Repo:      owner + "/repo",
		LocalName: name,
		Image:     image,
		Ports:     []core.PortBinding{{Guest: 8080, Host: dockertest.FreePorts(t, 1)[0]}},
		Network:   "wm-" + owner,
		Running:   true,
	}
}

// ctx is a context for one call; no call of the suite should take long.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func create(t *testing.T, e engine, s core.ContainerSpec) core.Container {
	t.Helper()
	c, err := e.Create(ctx(t), s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func inspect(t *testing.T, e engine, name string) core.Container {
	t.Helper()
	c, err := e.Inspect(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantErr checks that err is of class, and so of class's kind in package
// fault too.
func wantErr(t *testing.T, err, class error) {
	t.Helper()
	if !errors.Is(err, class) {
		t.Errorf("error = %v, want %v", err, class)
	}
	if kind := fault.Of(class); kind == nil || !errors.Is(err, kind) {
		t.Errorf("error = %v, want it of the kind fault.%v", err, kind)
	}
}

// managedNames lists owner's managed containers: on a real host, other
// tests' containers are there too.
func managedNames(t *testing.T, e engine, owner string) []string {
	t.Helper()
	list, err := e.ListManaged(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range list {
		if c.Labels[docker.LabelOwner] == owner {
			names = append(names, c.Name)
		}
	}
	slices.Sort(names)
	return names
}

// wantVolumes checks that owner's managed volumes are exactly names, each
// labelled as owner's.
func wantVolumes(t *testing.T, e engine, owner string, names ...string) {
	t.Helper()
	list, err := e.ListVolumes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range list {
		if strings.HasPrefix(v.Name, owner+"-") || v.Labels[docker.LabelOwner] == owner {
			got = append(got, v.Name)
			want := map[string]string{docker.LabelManagedBy: docker.ManagedByValue, docker.LabelOwner: owner, docker.LabelInstance: core.DefaultInstance}
			if !maps.Equal(v.Labels, want) {
				t.Errorf("volume %s labels = %v, want %v", v.Name, v.Labels, want)
			}
		}
	}
	if !slices.Equal(got, names) {
		t.Errorf("volumes = %v, want %v", got, names)
	}
}

// The helpers below set up a host or look at it beyond the interface, one
// way per implementation.

// daemonOf is the real daemon behind e: the second one for the second's
// engines, else the local one.
func daemonOf(t *testing.T, e *docker.Engine) *dockertest.Daemon {
	if e.Name() == dockertest.SecondHostName {
		return dockertest.Second(t)
	}
	return dockertest.Local(t)
}

func addForeign(t *testing.T, e engine, name string) {
	switch e := e.(type) {
	case *docker.Fake:
		e.AddForeign(name)
	case *docker.Engine:
		daemonOf(t, e).AddForeign(t, name)
	default:
		t.Fatalf("no foreign containers for %T", e)
	}
}

func addForeignVolume(t *testing.T, e engine, name string) {
	switch e := e.(type) {
	case *docker.Fake:
		e.AddForeignVolume(name)
	case *docker.Engine:
		daemonOf(t, e).AddForeignVolume(t, name)
	default:
		t.Fatalf("no foreign volumes for %T", e)
	}
}

func foreignRunning(t *testing.T, e engine, name string) bool {
	switch e := e.(type) {
	case *docker.Fake:
		running := false
		if err := e.Alter(name, func(c *core.Container) { running = c.Running }); err != nil {
			t.Fatal(err)
		}
		return running
	case *docker.Engine:
		raw, err := daemonOf(t, e).Client(t).ContainerInspect(ctx(t), name)
		if err != nil {
			t.Fatal(err)
		}
		return raw.State.Running
	}
	t.Fatalf("no foreign containers for %T", e)
	return false
}

// createdConfig returns the environment, entrypoint and command the
// container called name was created with; the environment includes the
// image's on a real host.
func createdConfig(t *testing.T, e engine, name string) (env map[string]string, entrypoint, cmd []string) {
	switch e := e.(type) {
	case *docker.Fake:
		s, ok := e.Spec(name)
		if !ok {
			t.Fatalf("no spec for %s", name)
		}
		return s.Env, s.Entrypoint, s.Command
	case *docker.Engine:
		raw, err := daemonOf(t, e).Client(t).ContainerInspect(ctx(t), name)
		if err != nil {
			t.Fatal(err)
		}
		env = map[string]string{}
		for _, kv := range raw.Config.Env {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		return env, raw.Config.Entrypoint, raw.Config.Cmd
	}
	t.Fatalf("no config for %T", e)
	return nil, nil, nil
}

// registryFor gives e a registry holding the test image under repos (tag
// "1"), wanting auth when not nil, and returns the registry's host.
func registryFor(t *testing.T, e engine, auth *core.RegistryAuth, repos ...string) string {
	switch e := e.(type) {
	case *docker.Fake:
		host := "registry.test:5000"
		for _, r := range repos {
			e.AddRemoteImage(host + "/" + r + ":1")
		}
		if auth != nil {
			e.RequireAuth(host, *auth)
		}
		return host
	case *docker.Engine:
		return daemonOf(t, e).NewRegistry(t, auth, repos...).Host
	}
	t.Fatalf("no registry for %T", e)
	return ""
}
