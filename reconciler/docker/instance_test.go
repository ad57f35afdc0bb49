package docker_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/fault"
)

// otherInstance is the instance the tests set beside the default one.
const otherInstance = "wm-staging"

// twoInstances returns two engines on the local daemon, the default
// instance's and otherInstance's, and an owner for the test.
func twoInstances(t *testing.T) (def, other *docker.Engine, owner string) {
	t.Helper()
	def = dockertest.Engine(t)
	other, err := docker.New(dockertest.HostName, dockertest.Endpoint(), docker.WithInstance(otherInstance))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	dockertest.BusyboxImage(t, image)
	return def, other, dockertest.Owner(t)
}

// instanceSpec is spec on e's network for owner.
func instanceSpec(t *testing.T, e *docker.Engine, owner, name string) core.ContainerSpec {
	s := spec(t, owner, name)
	s.Network = core.NetworkName(e.Instance(), owner)
	return s
}

func TestNetworkNameKeepsTheDefaultInstancesNamesAndSeparatesOthers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, instance, owner, want string
	}{
		{"the default instance keeps wm-<owner>", core.DefaultInstance, "alice", "wm-alice"},
		{"an empty instance is the default one", "", "alice", "wm-alice"},
		{"another instance gets <instance>_<owner>", "staging", "alice", "staging_alice"},
		{"an instance that looks like the default one plus a dash never meets its names", "wm-a", "b", "wm-a_b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := core.NetworkName(c.instance, c.owner); got != c.want {
				t.Errorf("NetworkName(%q, %q) = %q, want %q", c.instance, c.owner, got, c.want)
			}
		})
	}
	if core.NetworkName("wm-a", "b") == core.NetworkName("wm", "a-b") {
		t.Error("two instances share a network name")
	}
}

func TestNewRefusesAnInstanceThatIsNotADNSLabel(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"Prod", "a_b", "-x", "x.y", "waytoolong-waytoolong-waytoolong-waytoolong-waytoolong-waytoolong"} {
		if _, err := docker.New("h", "unix:///x.sock", docker.WithInstance(bad)); err == nil {
			t.Errorf("instance %q accepted", bad)
		}
	}
	e, err := docker.New("h", "unix:///x.sock")
	if err != nil || e.Instance() != core.DefaultInstance {
		t.Errorf("New without an instance: %v, instance %q; want %q", err, e.Instance(), core.DefaultInstance)
	}
}

func TestTwoInstancesOnOneEngineLeaveEachOtherAlone(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		test func(t *testing.T, def, other *docker.Engine, owner string)
	}{
		{"each lists only its own containers, labelled with its instance", func(t *testing.T, def, other *docker.Engine, owner string) {
			a := create(t, def, instanceSpec(t, def, owner, "a"))
			b := create(t, other, instanceSpec(t, other, owner, "b"))
			if got := managedNames(t, def, owner); !slices.Equal(got, []string{a.Name}) {
				t.Errorf("default instance lists %v, want [%s]", got, a.Name)
			}
			if got := managedNames(t, other, owner); !slices.Equal(got, []string{b.Name}) {
				t.Errorf("other instance lists %v, want [%s]", got, b.Name)
			}
			if a.Labels[docker.LabelInstance] != core.DefaultInstance || b.Labels[docker.LabelInstance] != otherInstance {
				t.Errorf("instance labels %q and %q, want %q and %q", a.Labels[docker.LabelInstance], b.Labels[docker.LabelInstance], core.DefaultInstance, otherInstance)
			}
		}},
		{"a name the other instance holds is a conflict to create, and is not there for anything else", func(t *testing.T, def, other *docker.Engine, owner string) {
			s := instanceSpec(t, def, owner, "web")
			held := create(t, def, s)
			mine := instanceSpec(t, other, owner, "web")
			_, err := other.Create(ctx(t), mine)
			wantErr(t, err, docker.ErrConflict)
			wantErr(t, err, fault.Conflict)
			_, err = other.Inspect(ctx(t), s.Name)
			wantErr(t, err, docker.ErrNotFound)
			wantErr(t, err, fault.NotFound)
			wantErr(t, other.Stop(ctx(t), s.Name, time.Second), docker.ErrNotFound)
			wantErr(t, other.Start(ctx(t), s.Name), docker.ErrNotFound)
			wantErr(t, other.Rename(ctx(t), s.Name, s.Name+"-aside"), docker.ErrNotFound)
			wantErr(t, other.Remove(ctx(t), s.Name), docker.ErrNotFound)
			if c := inspect(t, def, s.Name); c.ID != held.ID || !c.Running {
				t.Errorf("the default instance's container was touched: %+v", c)
			}
		}},
		{"each lists only its own volumes; the other's is a conflict to mount and not there to remove", func(t *testing.T, def, other *docker.Engine, owner string) {
			vol := core.ObjectName(owner, "data")
			s := instanceSpec(t, def, owner, "db")
			s.Running = false
			s.Mounts = []core.Mount{{Volume: vol, Target: "/data"}}
			create(t, def, s)
			if err := def.Remove(ctx(t), s.Name); err != nil {
				t.Fatal(err)
			}
			if got := volumeNames(t, other, owner); len(got) != 0 {
				t.Errorf("other instance lists volumes %v, want none", got)
			}
			if got := volumeNames(t, def, owner); !slices.Equal(got, []string{vol}) {
				t.Errorf("default instance lists volumes %v, want [%s]", got, vol)
			}
			steal := instanceSpec(t, other, owner, "steal")
			steal.Mounts = []core.Mount{{Volume: vol, Target: "/data"}}
			_, err := other.Create(ctx(t), steal)
			wantErr(t, err, docker.ErrConflict)
			wantErr(t, other.RemoveVolume(ctx(t), vol), docker.ErrNotFound)
			if got := volumeNames(t, def, owner); !slices.Equal(got, []string{vol}) {
				t.Errorf("after the other instance tried: volumes %v, want [%s]", got, vol)
			}
		}},
		{"each instance puts an owner's containers on a network of its own", func(t *testing.T, def, other *docker.Engine, owner string) {
			a := instanceSpec(t, def, owner, "a")
			b := instanceSpec(t, other, owner, "b")
			create(t, def, a)
			create(t, other, b)
			if a.Network != "wm-"+owner || b.Network == a.Network {
				t.Errorf("networks %q and %q: want wm-%s and another", a.Network, b.Network, owner)
			}
			for _, n := range []struct {
				name, instance string
			}{{a.Network, core.DefaultInstance}, {b.Network, otherInstance}} {
				raw, err := dockertest.Client(t).NetworkInspect(ctx(t), n.name, networkInspect)
				if err != nil {
					t.Fatal(err)
				}
				if raw.Labels[docker.LabelInstance] != n.instance || raw.Labels[docker.LabelOwner] != owner {
					t.Errorf("network %s labels %v, want instance %s and owner %s", n.name, raw.Labels, n.instance, owner)
				}
			}
		}},
		{"a network of the default instance's name is a conflict for another instance's spec", func(t *testing.T, def, other *docker.Engine, owner string) {
			create(t, def, instanceSpec(t, def, owner, "a"))
			s := instanceSpec(t, other, owner, "b")
			s.Network = core.NetworkName(core.DefaultInstance, owner)
			_, err := other.Create(ctx(t), s)
			wantErr(t, err, core.ErrInvalidSpec)
			wantErr(t, err, fault.Invalid)
		}},
		{"what was made before instances existed is the default instance's", func(t *testing.T, def, other *docker.Engine, owner string) {
			name := core.ObjectName(owner, "old")
			vol := core.ObjectName(owner, "olddata")
			legacy := map[string]string{docker.LabelManagedBy: docker.ManagedByValue, docker.LabelOwner: owner,
				docker.LabelRepo: owner + "/repo", docker.LabelName: "old"}
			cli := dockertest.Client(t)
			if _, err := cli.VolumeCreate(ctx(t), volume.CreateOptions{Name: vol, Labels: map[string]string{
				docker.LabelManagedBy: docker.ManagedByValue, docker.LabelOwner: owner}}); err != nil {
				t.Fatal(err)
			}
			if _, err := cli.ContainerCreate(ctx(t), &container.Config{Image: image, Labels: legacy}, nil, nil, nil, name); err != nil {
				t.Fatal(err)
			}
			if got := managedNames(t, def, owner); !slices.Equal(got, []string{name}) {
				t.Errorf("default instance lists %v, want the old container %s", got, name)
			}
			if got := volumeNames(t, def, owner); !slices.Equal(got, []string{vol}) {
				t.Errorf("default instance lists volumes %v, want the old volume %s", got, vol)
			}
			if got := managedNames(t, other, owner); len(got) != 0 {
				t.Errorf("other instance lists %v, want none", got)
			}
			if got := volumeNames(t, other, owner); len(got) != 0 {
				t.Errorf("other instance lists volumes %v, want none", got)
			}
			wantErr(t, other.Remove(ctx(t), name), docker.ErrNotFound)
			wantErr(t, other.RemoveVolume(ctx(t), vol), docker.ErrNotFound)
			if err := def.Remove(ctx(t), name); err != nil {
				t.Errorf("the default instance cannot remove its old container: %v", err)
			}
			if err := def.RemoveVolume(ctx(t), vol); err != nil {
				t.Errorf("the default instance cannot remove its old volume: %v", err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			def, other, owner := twoInstances(t)
			c.test(t, def, other, owner)
		})
	}
}

func TestADownEngineIsUnreachable(t *testing.T) {
	t.Parallel()
	for _, endpoint := range []string{"tcp://127.0.0.1:1", "unix:///nonexistent/docker.sock"} {
		t.Run(endpoint, func(t *testing.T) {
			e, err := docker.New("down", endpoint)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			calls := []struct {
				name string
				call func() error
			}{
				{"list containers", func() error { _, err := e.ListManaged(ctx(t)); return err }},
				{"list volumes", func() error { _, err := e.ListVolumes(ctx(t)); return err }},
				{"inspect", func() error { _, err := e.Inspect(ctx(t), "x_y"); return err }},
				{"create", func() error { _, err := e.Create(ctx(t), spec(t, "x", "y")); return err }},
				{"remove", func() error { return e.Remove(ctx(t), "x_y") }},
				{"image exists", func() error { _, err := e.ImageExists(ctx(t), image); return err }},
				{"image ID", func() error { _, err := e.ImageID(ctx(t), image); return err }},
				{"image save", func() error { _, err := e.ImageSave(ctx(t), image); return err }},
			}
			for _, c := range calls {
				err := c.call()
				if !errors.Is(err, fault.Unreachable) || !errors.Is(err, docker.ErrUnreachable) {
					t.Errorf("%s: error %v, want fault.Unreachable", c.name, err)
				}
			}
		})
	}
}

func TestEverySentinelIsOfItsKind(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		err, kind  error
		notAlsoErr error
	}{
		{"not found is NotFound", docker.ErrNotFound, fault.NotFound, docker.ErrImageNotFound},
		{"image not found is NotFound", docker.ErrImageNotFound, fault.NotFound, docker.ErrNotFound},
		{"conflict is Conflict", docker.ErrConflict, fault.Conflict, docker.ErrPortInUse},
		{"a port in use is Conflict", docker.ErrPortInUse, fault.Conflict, docker.ErrConflict},
		{"unauthorized is Refused", docker.ErrUnauthorized, fault.Refused, nil},
		{"unreachable is Unreachable", docker.ErrUnreachable, fault.Unreachable, nil},
		{"an invalid spec is Invalid", core.ErrInvalidSpec, fault.Invalid, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if fault.Of(c.err) != c.kind {
				t.Errorf("kind %v, want %v", fault.Of(c.err), c.kind)
			}
			if c.notAlsoErr != nil && errors.Is(c.err, c.notAlsoErr) {
				t.Errorf("%v matches %v too", c.err, c.notAlsoErr)
			}
		})
	}
}

var networkInspect = network.InspectOptions{}

// volumeNames lists owner's volumes that e manages.
func volumeNames(t *testing.T, e *docker.Engine, owner string) []string {
	t.Helper()
	list, err := e.ListVolumes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, v := range list {
		if v.Labels[docker.LabelOwner] == owner {
			names = append(names, v.Name)
		}
	}
	return names
}
