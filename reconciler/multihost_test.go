package reconciler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/network"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// The tests of this file run passes against two real Docker Engines on
// this machine: the local one and the second one ci/docker2-up starts
// (dockertest.Second). Each test is its own WhaleMountain instance, so that
// the load placement counts is only its own containers, whatever other
// tests run on the same engines at the same time. Assertions about which
// host holds what ask the daemons themselves.

// multiHostImage is the image every container runs, made on both engines:
// not "self", whose reference changes with every commit and would recreate
// every container on every push, so that a container a change does not
// concern is seen to stay as it is.
const multiHostImage = dockertest.DefaultBusybox

// fleet is a Reconciler over the local engine ("local") and the second one
// ("second"), which it reaches through a link the test can cut.
type fleet struct {
	local, second  *dockertest.Daemon
	link           *hostLink
	instance, root string
	rec            *Reconciler
	repos          map[string]*gittest.Repo
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	local, second := dockertest.Local(t), dockertest.Second(t)
	f := &fleet{local: local, second: second, root: t.TempDir(), repos: map[string]*gittest.Repo{}}
	suffix := make([]byte, 4)
	rand.Read(suffix)
	f.instance = "mh-" + hex.EncodeToString(suffix)
	f.link = newHostLink(t, second.Endpoint())
	from := dockertest.FreePorts(t, 1)[0]
	cfg, err := schema.ParseServer("multihost.yaml", strings.NewReader(fmt.Sprintf(`
instance: %s
policy:
  hostPorts: {from: %d, to: %d}
  maxPrunePercent: 100
  allowedRegistries: [docker.io/wm-test]
docker:
  hosts:
    - {name: %s, endpoint: %q}
    - {name: %s, endpoint: %q}
`, f.instance, from, from+50, local.Name(), local.Endpoint(), second.Name(), f.link.Endpoint())), f.root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(f.root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	engines := []core.Engine{local.Engine(t, docker.WithInstance(f.instance))}
	e2, err := docker.New(second.Name(), f.link.Endpoint(), docker.WithInstance(f.instance))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e2.Close() })
	for _, d := range f.daemons() {
		d.BusyboxImage(t, multiHostImage)
	}
	f.rec, err = New(cfg, gitsource.New(filepath.Join(f.root, "cache")), append(engines, e2), st)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// owner returns a new owner, whose containers, volumes and networks leave
// both engines when the test ends.
func (f *fleet) owner(t *testing.T) string {
	t.Helper()
	return f.second.Owner(t)
}

func (f *fleet) daemons() []*dockertest.Daemon { return []*dockertest.Daemon{f.local, f.second} }

// push commits wm.yaml to <owner>/web.
func (f *fleet) push(t *testing.T, owner, wmYAML string) Repo {
	t.Helper()
	key := owner + "/web"
	r, ok := f.repos[key]
	if !ok {
		r = gittest.NewRepo(t, filepath.Join(f.root, "git", key+".git"))
		f.repos[key] = r
	}
	r.Commit(t, "main", map[string]string{"wm.yaml": wmYAML}, "push")
	return Repo{Key: key, Owner: owner, URL: r.FileURL(), Branch: "main"}
}

// pass runs one pass of repo.
func (f *fleet) pass(t *testing.T, repo Repo) (Result, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return f.rec.Reconcile(ctx, repo)
}

// ready runs a pass that must succeed and leave the repo Ready.
func (f *fleet) ready(t *testing.T, repo Repo) Result {
	t.Helper()
	res, err := f.pass(t, repo)
	if err != nil || !res.Ready {
		t.Fatalf("pass of %s: ready %v, %v: %s", repo.Key, res.Ready, err, res.Message)
	}
	return res
}

// where returns the names of owner's containers on each engine, as the
// daemons list them: host name → sorted names.
func (f *fleet) where(t *testing.T, owner string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, d := range f.daemons() {
		out[d.Name()] = d.ContainerNames(t, owner)
	}
	return out
}

// wantWhere checks that the engines hold exactly owner's containers named
// (wm.yaml names) on each host, and no name on both.
func (f *fleet) wantWhere(t *testing.T, owner string, want map[string][]string) {
	t.Helper()
	got := f.where(t, owner)
	for _, d := range f.daemons() {
		var names []string
		for _, n := range want[d.Name()] {
			names = append(names, core.ObjectName(owner, n))
		}
		slices.Sort(names)
		if !slices.Equal(got[d.Name()], names) {
			t.Errorf("%s holds %v of %s's containers, want %v", d.Name(), got[d.Name()], owner, names)
		}
	}
	for _, n := range got[f.local.Name()] {
		if slices.Contains(got[f.second.Name()], n) {
			t.Errorf("%s is on both engines", n)
		}
	}
}

// inspect returns what d itself says of the container called name: its
// id, whether it runs, its environment, and its host port for guest 8000.
func (f *fleet) inspect(t *testing.T, d *dockertest.Daemon, name string) (id string, running bool, env []string, port string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := d.Client(t).ContainerInspect(ctx, name)
	if err != nil {
		t.Fatalf("inspect %s on %s: %v", name, d.Name(), err)
	}
	for _, b := range c.HostConfig.PortBindings["8000/tcp"] {
		port = b.HostPort
	}
	return c.ID, c.State.Running, c.Config.Env, port
}

// mhGet fetches /who from a container's host port until it answers.
func mhGet(t *testing.T, port string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://127.0.0.1:" + port + "/who")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return strings.TrimSpace(string(body))
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET :%s/who: %v", port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mhServer is a wm.yaml container that serves its WHO and MODE on port 8000.
func mhServer(name, mode string) string {
	return fmt.Sprintf(`  %s:
    image: %s
    command: ["sh", "-c", "echo $WHO $MODE > /tmp/who && exec httpd -f -p 8000 -h /tmp"]
    env: {WHO: %s, MODE: %s}
    ports: [8000]
    volumes: {data: /data}
    memory: 32Mi
`, name, multiHostImage, name, mode)
}

// mhSleeper is a wm.yaml container that only runs.
func mhSleeper(name, mode string) string {
	return fmt.Sprintf("  %s: {image: %s, env: {MODE: %s}, memory: 32Mi}\n", name, multiHostImage, mode)
}

// mhYAML is a wm.yaml of containers (mhServer, mhSleeper).
func mhYAML(containers ...string) string {
	return "version: 1\ncontainers:\n" + strings.Join(containers, "")
}

// TestMultiHostPlacementOnTwoRealEngines spreads one repo's containers over
// two real engines by the placement rules: a new container goes to the
// least loaded host (the first configured on a tie), and a container stays
// on the host it runs on. Each step builds on the one before.
func TestMultiHostPlacementOnTwoRealEngines(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	owner := f.owner(t)
	ids := map[string]string{}   // container → its id, on its host
	ports := map[string]string{} // container → its host port
	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"the first container goes to the first host when both are empty", func(t *testing.T) {
			res := f.ready(t, f.push(t, owner, mhYAML(mhServer("a", "one"))))
			f.wantWhere(t, owner, map[string][]string{"local": {"a"}})
			if len(res.Containers) != 1 || res.Containers[0].Host != "local" {
				t.Errorf("status: %+v", res.Containers)
			}
			ids["a"], _, _, ports["a"] = f.inspect(t, f.local, owner+"_a")
			if got := mhGet(t, ports["a"]); got != "a one" {
				t.Errorf("a serves %q", got)
			}
		}},
		{"a container added later goes to the less loaded host, the second, with its own volume and network there", func(t *testing.T) {
			res := f.ready(t, f.push(t, owner, mhYAML(mhServer("a", "one"), mhServer("b", "one"))))
			f.wantWhere(t, owner, map[string][]string{"local": {"a"}, "second": {"b"}})
			hosts := map[string]string{}
			for _, c := range res.Containers {
				hosts[c.Name] = c.Host
			}
			if hosts["a"] != "local" || hosts["b"] != "second" {
				t.Errorf("status hosts: %v", hosts)
			}
			if id, running, _, _ := f.inspect(t, f.local, owner+"_a"); id != ids["a"] || !running {
				t.Errorf("a was disturbed: %.12s running %v, was %.12s", id, running, ids["a"])
			}
			var running bool
			ids["b"], running, _, ports["b"] = f.inspect(t, f.second, owner+"_b")
			if !running || ports["b"] == "" || ports["b"] == ports["a"] {
				t.Errorf("b: running %v on host port %q (a has %q)", running, ports["b"], ports["a"])
			}
			if got := mhGet(t, ports["b"]); got != "b one" {
				t.Errorf("b serves %q", got)
			}
			ctx := context.Background()
			vol := core.ObjectName(owner, "data")
			if _, err := f.second.Client(t).VolumeInspect(ctx, vol); err != nil {
				t.Errorf("volume %s on the second host: %v", vol, err)
			}
			netName := core.NetworkName(f.instance, owner)
			if _, err := f.second.Client(t).NetworkInspect(ctx, netName, network.InspectOptions{}); err != nil {
				t.Errorf("network %s on the second host: %v", netName, err)
			}
		}},
		{"a change recreates each container on the host it is on, with the same host port", func(t *testing.T) {
			f.ready(t, f.push(t, owner, mhYAML(mhServer("a", "two"), mhServer("b", "two"))))
			f.wantWhere(t, owner, map[string][]string{"local": {"a"}, "second": {"b"}})
			for _, c := range []struct {
				name string
				d    *dockertest.Daemon
			}{{"a", f.local}, {"b", f.second}} {
				id, running, _, port := f.inspect(t, c.d, owner+"_"+c.name)
				if id == ids[c.name] || !running || port != ports[c.name] {
					t.Errorf("%s: id %.12s (was %.12s), running %v, port %s (was %s)", c.name, id, ids[c.name], running, port, ports[c.name])
				}
				ids[c.name] = id
				if got := mhGet(t, port); got != c.name+" two" {
					t.Errorf("%s serves %q", c.name, got)
				}
			}
		}},
		{"a third container goes to the first host on a tie", func(t *testing.T) {
			f.ready(t, f.push(t, owner, mhYAML(mhServer("a", "two"), mhServer("b", "two"), mhSleeper("c", "one"))))
			f.wantWhere(t, owner, map[string][]string{"local": {"a", "c"}, "second": {"b"}})
		}},
		{"a container removed from wm.yaml goes from its host only", func(t *testing.T) {
			f.ready(t, f.push(t, owner, mhYAML(mhServer("a", "two"), mhSleeper("c", "one"))))
			f.wantWhere(t, owner, map[string][]string{"local": {"a", "c"}})
			if id, running, _, _ := f.inspect(t, f.local, owner+"_a"); id != ids["a"] || !running {
				t.Errorf("a was disturbed: %.12s running %v, was %.12s", id, running, ids["a"])
			}
		}},
		{"a changed container stays on its host even when the other host is emptier", func(t *testing.T) {
			f.ready(t, f.push(t, owner, mhYAML(mhServer("a", "three"), mhSleeper("c", "two"))))
			f.wantWhere(t, owner, map[string][]string{"local": {"a", "c"}})
			if got := mhGet(t, ports["a"]); got != "a three" {
				t.Errorf("a serves %q", got)
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			break
		}
	}
}

// TestMultiHostAnUnreachableHostStallsOnlyWhatLivesThere cuts the second
// engine off (its endpoint becomes a socket nobody answers, as when the
// host or its daemon is gone) while the first carries on. Each step builds
// on the one before.
func TestMultiHostAnUnreachableHostStallsOnlyWhatLivesThere(t *testing.T) {
	t.Parallel()
	f := newFleet(t)
	onLocal, onSecond, newcomer := f.owner(t), f.owner(t), f.owner(t)
	// Both engines are empty: the first repo's container goes to the
	// first host, the second repo's to the less loaded second.
	repoL := f.push(t, onLocal, mhYAML(mhSleeper("web", "one")))
	f.ready(t, repoL)
	repoS := f.push(t, onSecond, mhYAML(mhSleeper("web", "one")))
	f.ready(t, repoS)
	f.wantWhere(t, onLocal, map[string][]string{"local": {"web"}})
	f.wantWhere(t, onSecond, map[string][]string{"second": {"web"}})
	secondID, _, _, _ := f.inspect(t, f.second, onSecond+"_web")
	var repoN Repo // the newcomer's

	steps := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"with the second host cut off, a repo on the first host carries on, rolls out its change and is Ready", func(t *testing.T) {
			f.link.Cut()
			before, _, _, _ := f.inspect(t, f.local, onLocal+"_web")
			res, err := f.pass(t, f.push(t, onLocal, mhYAML(mhSleeper("web", "two"))))
			if err != nil {
				t.Fatalf("pass: %v", err)
			}
			// Nothing of the repo is on the host that does not answer:
			// its status does not suffer for it.
			if !res.Ready {
				t.Errorf("not Ready while only the other host is down: %s", res.Message)
			}
			id, running, env, _ := f.inspect(t, f.local, onLocal+"_web")
			if id == before || !running || !slices.Contains(env, "MODE=two") {
				t.Errorf("not rolled out on the first host: id %.12s (was %.12s), running %v, env %v", id, before, running, env)
			}
			f.wantWhere(t, onLocal, map[string][]string{"local": {"web"}})
		}},
		{"a repo on the second host waits, and nothing of it is made on the first", func(t *testing.T) {
			_, err := f.pass(t, f.push(t, onSecond, mhYAML(mhSleeper("web", "two"))))
			wantReason(t, err, Waiting, "HostUnreachable")
			if !strings.Contains(err.Error(), "second cannot be reached") {
				t.Errorf("message: %v", err)
			}
			f.wantWhere(t, onSecond, map[string][]string{"second": {"web"}})
			id, running, env, _ := f.inspect(t, f.second, onSecond+"_web")
			if id != secondID || !running || !slices.Contains(env, "MODE=one") {
				t.Errorf("the container on the second host changed: id %.12s (was %.12s), running %v, env %v", id, secondID, running, env)
			}
		}},
		{"a new repo waits, since its container may be on the host that does not answer", func(t *testing.T) {
			repoN = f.push(t, newcomer, mhYAML(mhSleeper("web", "one")))
			_, err := f.pass(t, repoN)
			wantReason(t, err, Waiting, "HostUnreachable")
			f.wantWhere(t, newcomer, nil)
		}},
		{"a container added to a repo of the first host waits, and what runs stays", func(t *testing.T) {
			_, err := f.pass(t, f.push(t, onLocal, mhYAML(mhSleeper("web", "two"), mhSleeper("extra", "one"))))
			wantReason(t, err, Waiting, "HostUnreachable")
			f.wantWhere(t, onLocal, map[string][]string{"local": {"web"}})
			if _, running, _, _ := f.inspect(t, f.local, onLocal+"_web"); !running {
				t.Error("web stopped")
			}
		}},
		{"once the host answers again, what waited rolls out, each container once", func(t *testing.T) {
			f.link.Restore(t)
			f.ready(t, repoS)
			f.wantWhere(t, onSecond, map[string][]string{"second": {"web"}})
			id, running, env, _ := f.inspect(t, f.second, onSecond+"_web")
			if id == secondID || !running || !slices.Contains(env, "MODE=two") {
				t.Errorf("not rolled out on the second host: id %.12s (was %.12s), running %v, env %v", id, secondID, running, env)
			}
			f.ready(t, repoL)
			f.ready(t, repoN)
			for owner, want := range map[string][]string{onLocal: {"extra", "web"}, newcomer: {"web"}} {
				var all []string
				for _, names := range f.where(t, owner) {
					all = append(all, names...)
				}
				slices.Sort(all)
				var names []string
				for _, n := range want {
					names = append(names, core.ObjectName(owner, n))
				}
				if !slices.Equal(all, names) {
					t.Errorf("%s's containers on both hosts: %v, want each of %v once", owner, all, names)
				}
			}
			if got := f.where(t, onLocal)["local"]; !slices.Contains(got, onLocal+"_web") {
				t.Errorf("web left the first host: %v", f.where(t, onLocal))
			}
		}},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) {
			break
		}
	}
}

// hostLink is a unix socket that relays to a Docker daemon's socket: the
// endpoint a host is configured with, until Cut makes it a socket nobody
// answers (gone from the file system, as when a daemon stops or a host is
// down) and Restore brings it back. The daemon itself is never stopped,
// so that other tests using it go on.
type hostLink struct {
	path   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

// newHostLink relays to endpoint (unix://PATH) until t ends.
func newHostLink(t *testing.T, endpoint string) *hostLink {
	t.Helper()
	target, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok {
		t.Fatalf("link: %s is not a unix socket", endpoint)
	}
	// Short: a socket's path is at most 107 bytes, and t.TempDir's name
	// holds the test's.
	dir, err := os.MkdirTemp("", "wm-link")
	if err != nil {
		t.Fatal(err)
	}
	l := &hostLink{path: filepath.Join(dir, "docker.sock"), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		l.Cut()
		os.RemoveAll(dir)
	})
	l.Restore(t)
	return l
}

// Endpoint is the link's docker endpoint.
func (l *hostLink) Endpoint() string { return "unix://" + l.path }

// Restore listens again and relays what comes in.
func (l *hostLink) Restore(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		return
	}
	ln, err := net.Listen("unix", l.path)
	if err != nil {
		t.Fatalf("link: %v", err)
	}
	l.ln = ln
	go l.serve(ln)
}

// Cut closes the listener, which removes the socket, and every connection
// open through it.
func (l *hostLink) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for c := range l.conns {
		c.Close()
	}
	clear(l.conns)
}

func (l *hostLink) serve(ln net.Listener) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("unix", l.target)
		if err != nil {
			in.Close()
			continue
		}
		l.mu.Lock()
		if l.ln != ln { // cut meanwhile
			l.mu.Unlock()
			in.Close()
			out.Close()
			return
		}
		l.conns[in], l.conns[out] = true, true
		l.mu.Unlock()
		relay := func(dst, src net.Conn) {
			io.Copy(dst, src)
			// One direction ended: the exchange is over.
			dst.Close()
			src.Close()
			l.mu.Lock()
			delete(l.conns, dst)
			delete(l.conns, src)
			l.mu.Unlock()
		}
		go relay(out, in)
		go relay(in, out)
	}
}
