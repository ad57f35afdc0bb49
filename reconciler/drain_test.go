package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
)

// The drains of this file run on two real Docker Engines (the fleet of
// multihost_test.go): a container's volume data goes from one to the
// other through their APIs, and what cannot be copied stays where it is.

// noteKeeper is a wm.yaml container that writes a random note into its
// volume the first time it starts and serves the volume on port 8000.
func noteKeeper(name string) string {
	return fmt.Sprintf(`  %s:
    image: %s
    command: ["sh", "-c", "[ -f /data/note ] || (head -c 32 /dev/urandom | md5sum > /data/note); exec httpd -f -p 8000 -h /data"]
    ports: [8000]
    volumes: {data: /data}
    memory: 32Mi
`, name, multiHostImage)
}

// fetch gets path from a container's host port until it answers.
func fetch(t *testing.T, port, path string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + port + path)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && len(body) > 0 {
				return strings.TrimSpace(string(body))
			}
			err = fmt.Errorf("status %s, %d bytes", resp.Status, len(body))
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET :%s%s: %v", port, path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// drain drains host, collecting what it says.
func (f *fleet) drain(t *testing.T, host string, hear func(string)) (DrainReport, []string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var mu sync.Mutex
	var said []string
	rep, err := f.rec.Drain(ctx, host, func(s string) {
		mu.Lock()
		said = append(said, s)
		mu.Unlock()
		if hear != nil {
			hear(s)
		}
	})
	return rep, said, err
}

// hasVolume reports whether the fleet's daemon called host has the volume.
func (f *fleet) hasVolume(t *testing.T, host, name string) bool {
	t.Helper()
	d := f.local
	if host == f.second.Name() {
		d = f.second
	}
	_, err := d.Client(t).VolumeInspect(context.Background(), name)
	if err != nil && !cerrdefs.IsNotFound(err) {
		t.Fatalf("inspect volume %s on %s: %v", name, host, err)
	}
	return err == nil
}

// TestDrainMovesAContainerWithItsVolumeDataToTheOtherRealEngine drains
// the local engine into the second one. Each step builds on the one
// before.
func TestDrainMovesAContainerWithItsVolumeDataToTheOtherRealEngine(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	alice, bob, carol := f.owner(t), f.owner(t), f.owner(t)
	repoA := f.push(t, alice, mhYAML(noteKeeper("web")))
	f.ready(t, repoA)
	f.wantWhere(t, alice, map[string][]string{"local": {"web"}})
	idA, _, _, portA := f.inspect(t, f.local, alice+"_web")
	note := fetch(t, portA, "/note")
	vol := core.ObjectName(alice, "data")

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"a cordoned host receives no new container, even when it is the least loaded", func(t *testing.T) {
			if _, err := f.rec.Cordon("second"); err != nil {
				t.Fatal(err)
			}
			f.ready(t, f.push(t, bob, mhYAML(mhSleeper("web", "one"))))
			f.wantWhere(t, bob, map[string][]string{"local": {"web"}})
			if _, err := f.rec.Uncordon("second"); err != nil {
				t.Fatal(err)
			}
		}},
		{"a drain moves each container to the other host, the volume with its data, under the same name and host port", func(t *testing.T) {
			rep, said, err := f.drain(t, "local", nil)
			if err != nil {
				t.Fatalf("drain: %v\n%s", err, strings.Join(said, "\n"))
			}
			f.wantWhere(t, alice, map[string][]string{"second": {"web"}})
			f.wantWhere(t, bob, map[string][]string{"second": {"web"}})
			id, running, _, port := f.inspect(t, f.second, alice+"_web")
			if !running || id == idA {
				t.Errorf("alice_web on the second host: running %v, id %.12s", running, id)
			}
			if port != portA {
				t.Errorf("host port %s, was %s (report: %+v)", port, portA, rep.Moved)
			}
			if got := fetch(t, port, "/note"); got != note {
				t.Errorf("the note on the second host is %q, was %q", got, note)
			}
			if f.hasVolume(t, "local", vol) || !f.hasVolume(t, "second", vol) {
				t.Errorf("volume %s: on local %v, on second %v; want on second only", vol, f.hasVolume(t, "local", vol), f.hasVolume(t, "second", vol))
			}
			created := slices.IndexFunc(said, func(s string) bool { return strings.HasPrefix(s, "creating "+alice+"_web on second") })
			removed := slices.IndexFunc(said, func(s string) bool { return strings.HasPrefix(s, "removing volume "+vol+" from local") })
			if created < 0 || removed < created {
				t.Errorf("the source volume is to go only after the new container is made: %q", said)
			}
			if len(rep.Moved) != 2 || len(rep.Volumes) != 1 || rep.Volumes[0].Name != vol || rep.Moved[0].Recreate || rep.Moved[1].Recreate {
				t.Errorf("report: %+v", rep)
			}
			// Nothing of theirs is left on the drained host, helpers
			// included (they carry the owner's label).
			for _, o := range []string{alice, bob} {
				if got := f.local.ContainerNames(t, o); len(got) != 0 {
					t.Errorf("left on local: %v", got)
				}
			}
		}},
		{"the next pass finds the container on the other host and changes nothing", func(t *testing.T) {
			before, _, _, _ := f.inspect(t, f.second, alice+"_web")
			res := f.ready(t, repoA)
			if len(res.Plan.Actions) != 0 || len(res.Containers) != 1 || res.Containers[0].Host != "second" {
				t.Errorf("pass: %+v, containers %+v", res.Plan.Actions, res.Containers)
			}
			if after, _, _, _ := f.inspect(t, f.second, alice+"_web"); after != before {
				t.Errorf("recreated: %.12s, was %.12s", after, before)
			}
		}},
		{"the drained host stays cordoned: a new container goes to the other one, however loaded", func(t *testing.T) {
			f.ready(t, f.push(t, carol, mhYAML(mhSleeper("web", "one"))))
			f.wantWhere(t, carol, map[string][]string{"second": {"web"}})
			hosts, err := f.rec.Hosts(context.Background())
			if err != nil || len(hosts) != 2 || hosts[0].Cordon == nil || hosts[1].Cordon != nil || !hosts[0].Reachable {
				t.Errorf("hosts: %+v, %v", hosts, err)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			break
		}
	}
}

// TestDrainThatCannotCopyLeavesEverythingOnTheSourceRealEngine cuts the
// second engine off during a drain, then drains it while it is cut off.
// Each step builds on the one before.
func TestDrainThatCannotCopyLeavesEverythingOnTheSourceRealEngine(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	alice, bob := f.owner(t), f.owner(t)
	repoA := f.push(t, alice, mhYAML(noteKeeper("web")))
	f.ready(t, repoA)
	f.wantWhere(t, alice, map[string][]string{"local": {"web"}})
	idA, _, _, portA := f.inspect(t, f.local, alice+"_web")
	note := fetch(t, portA, "/note")
	vol := core.ObjectName(alice, "data")

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"a drain whose target stops answering during the copy leaves the container running on its host with its data, and says why", func(t *testing.T) {
			_, said, err := f.drain(t, "local", func(s string) {
				if strings.HasPrefix(s, "copying volume") {
					f.link.Cut()
				}
			})
			f.link.Restore(t)
			if err == nil || !errors.Is(err, fault.Unreachable) || !strings.Contains(err.Error(), alice+"_web stays on local, it runs there again") {
				t.Fatalf("drain: %v\n%s", err, strings.Join(said, "\n"))
			}
			id, running, _, port := f.inspect(t, f.local, alice+"_web")
			if id != idA || !running || port != portA {
				t.Errorf("alice_web: id %.12s (was %.12s), running %v, port %s (was %s)", id, idA, running, port, portA)
			}
			if got := fetch(t, port, "/note"); got != note {
				t.Errorf("the note is %q, was %q", got, note)
			}
			f.wantWhere(t, alice, map[string][]string{"local": {"web"}})
			if f.hasVolume(t, "second", vol) {
				t.Errorf("volume %s was left on the second host", vol)
			}
		}},
		{"a drain of a host that cannot be reached refuses, and nothing of it is made elsewhere", func(t *testing.T) {
			// The first host is cordoned by the drain that stopped: the
			// new container goes to the second.
			f.ready(t, f.push(t, bob, mhYAML(mhSleeper("web", "one"))))
			f.wantWhere(t, bob, map[string][]string{"second": {"web"}})
			idB, _, _, _ := f.inspect(t, f.second, bob+"_web")
			f.link.Cut()
			_, _, err := f.drain(t, "second", nil)
			f.link.Restore(t)
			if err == nil || !strings.Contains(err.Error(), "cannot be reached, so it is not drained") {
				t.Fatalf("drain: %v", err)
			}
			f.wantWhere(t, bob, map[string][]string{"second": {"web"}})
			if id, running, _, _ := f.inspect(t, f.second, bob+"_web"); id != idB || !running {
				t.Errorf("bob_web: id %.12s (was %.12s), running %v", id, idB, running)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			break
		}
	}
}
