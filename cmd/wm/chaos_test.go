package main

// The fault suite: real `wm serve` processes against the real engines (the
// local Docker Engine, the test control plane of ci/kube-up, Debian's
// docker-registry), killed, cut off from what they use, or given a broken
// state store, and checked to lose nothing and converge. `make chaos` runs
// it in full (WM_CHAOS=full); `make test` runs the same tests with fewer
// kill points.

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
)

// chaosFull reports whether the suite runs in full (make chaos).
func chaosFull() bool { return os.Getenv("WM_CHAOS") == "full" }

// chaosSeed is the seed of the suite's random choices: WM_CHAOS_SEED
// when set (to replay a failure), else the time.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("WM_CHAOS_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("WM_CHAOS_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (WM_CHAOS_SEED=%d replays it)", seed, seed)
	return seed
}

// chaosRig is one student repo served by a `wm serve` process of the
// test's own (an haReplica without ha), on the local Docker Engine and the
// test control plane, reached through a proxy the test can cut, with the
// registry behind another.
type chaosRig struct {
	t        *testing.T
	cli      *client.Client
	cluster  *kubetest.Cluster
	admin    kubernetes.Interface
	bin      string
	owner    string
	instance string
	ns       string // the owner's namespace
	root     string
	state    string // the state directory
	reg      *registrytest.Registry
	regProxy *switchProxy // the registry as wm serve reaches it
	repo     *gittest.Repo
	project  string // the repo's key: its image's path in the registry
	serve    *haReplica
	round    int // the version the last commit declares
	sha      string
	// pulled: the engine pulls the images from the registry (the third
	// engine, which dockertest does not load images into).
	pulled bool
	img    v1.Image
	// Of a rig whose repo is a project of the GitLab double
	// (newGitLabChaosRig): GitLab as wm serve reaches it, API and git.
	gitlab  *gitlabtest.GitLab
	glProxy *switchProxy
}

// newChaosRig writes the config and the repo (not committed to yet);
// before is called with the state directory before anything is in it.
//
// third, when not nil, is the Docker host instead of the local engine.
func newChaosRig(t *testing.T, before func(state string), third *thirdEngine) *chaosRig {
	t.Helper()
	return newChaosRigOf(t, before, third, nil)
}

// newGitLabChaosRig is a rig whose repo is the project
// students/<owner>/web of a GitLab double, found by wm serve through
// sources.gitlab, its API reached through a proxy the test can bring down.
func newGitLabChaosRig(t *testing.T) *chaosRig {
	t.Helper()
	return newChaosRigOf(t, nil, nil, gitlabtest.New(t, "glpat-wm-chaos"))
}

// newChaosRigOf is newChaosRig, the repo a project of gl when gl is not
// nil, a folder of sources.dirs otherwise.
func newChaosRigOf(t *testing.T, before func(state string), third *thirdEngine, gl *gitlabtest.GitLab) *chaosRig {
	t.Helper()
	r := &chaosRig{t: t, cli: dockertest.Client(t), cluster: kubetest.Env(t), bin: buildWM(t), owner: dockertest.Owner(t), gitlab: gl}
	endpoint := dockertest.Endpoint()
	if third != nil {
		cli, err := client.NewClientWithOpts(client.WithHost(third.endpoint), client.WithAPIVersionNegotiation())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		r.cli, endpoint, r.pulled = cli, third.endpoint, true
	}
	// What CI pushes: busybox with sleep, which runs idle by default.
	r.img = registrytest.WithConfig(t, registrytest.BusyboxImage(t, map[string]string{"bin/sleep": registrytest.SymlinkPrefix + "busybox"}),
		v1.Config{Cmd: []string{"sleep", "3600"}, Env: registrytest.DefaultConfig.Env})
	r.admin = r.cluster.AdminClient(t)
	r.instance = "wmchaos-" + r.owner
	r.ns = r.owner + "-" + r.owner
	sweepInstance(t, r.cli, r.instance)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = r.admin.CoreV1().Namespaces().Delete(ctx, r.ns, metav1.DeleteOptions{})
	})
	// Not t.TempDir: the admin socket's path must stay short.
	root, err := os.MkdirTemp("", "wmchaos")
	if err != nil {
		t.Fatal(err)
	}
	r.root = root
	r.state = filepath.Join(root, "state")
	if err := os.MkdirAll(r.state, 0o750); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if before != nil {
		before(r.state)
	}
	r.reg = registrytest.Start(t)
	r.regProxy = startSwitchProxy(t, r.reg.Host())
	r.project = r.owner + "/web"
	sources := fmt.Sprintf("{dirs: [{root: %s}]}", filepath.Join(root, "repos"))
	var project *gitlabtest.Project
	if gl != nil {
		project = gl.AddProject(t, "students/"+r.owner+"/web")
		gl.AddMember(t, project.Path(), r.owner, gitlabtest.Developer)
		r.project = strings.ToLower(project.Path())
		var front string
		r.glProxy = startSwitchProxy(t, gitlabFront(t, gl, func() string { return front }))
		front = r.glProxy.addr
		sources = fmt.Sprintf("{gitlab: {url: %q, tokenFile: gitlab-token, groups: [students], discoverInterval: 10s}}", "http://"+r.glProxy.addr)
	}
	from := dockertest.FreePorts(t, 1)[0]
	config := fmt.Sprintf(`instance: %s
stateDir: %s
adminListen: unix://admin.sock
sources: %s
poll: {interval: 1s, shutdownGrace: 5s, passTimeout: 20s}
registry: {host: %q, insecure: true}
policy: {hostPorts: {from: %d, to: %d}, quota: {containers: 20, cpus: 8, ports: 20, pods: 10}, maxPrunePercent: 100}
docker:
  hosts: [{name: local, endpoint: %q}]
kubernetes: {kubeconfig: kubeconfig, namespacePrefix: %s-}
`, r.instance, r.state, sources, r.regProxy.addr, from, from+40, endpoint, r.owner)
	r.serve = newHAReplica(t, "wm", root, config, r.cluster)
	if gl == nil {
		r.repo = gittest.NewRepo(t, filepath.Join(root, "repos", r.owner, "web"))
		return r
	}
	token := writeFile(t, filepath.Join(root, "wm"), "gitlab-token", gl.Token()+"\n")
	if err := os.Chmod(token, 0o600); err != nil {
		t.Fatal(err)
	}
	// The project's bare repository, committed to as to any other (git
	// init on it again changes nothing).
	r.repo = gittest.NewRepo(t, project.GitDir())
	return r
}

// chaosWmYAML is round's wm.yaml: a (a named volume) and b always, each
// publishing a port and recreated every round (V changes); c in even
// rounds and d in odd ones (each round creates one and removes the
// other); the pod p always (recreated), and q in even rounds.
func chaosWmYAML(round int) string {
	v := strconv.Itoa(round)
	var b strings.Builder
	b.WriteString("version: 1\ncontainers:\n")
	fmt.Fprintf(&b, "  a: {image: self, ports: [8000], volumes: {data: /data}, env: {V: %q}, cpus: 0.1, memory: 16Mi}\n", v)
	fmt.Fprintf(&b, "  b: {image: self, ports: [8000], env: {V: %q}, cpus: 0.1, memory: 16Mi}\n", v)
	other := "d"
	if round%2 == 0 {
		other = "c"
	}
	fmt.Fprintf(&b, "  %s: {image: self, ports: [8000], env: {V: %q}, cpus: 0.1, memory: 16Mi}\n", other, v)
	b.WriteString("pods:\n")
	fmt.Fprintf(&b, "  p: {image: self, env: {V: %q}, cpus: 0.1, memory: 16Mi}\n", v)
	if round%2 == 0 {
		fmt.Fprintf(&b, "  q: {image: self, env: {V: %q}, cpus: 0.1, memory: 16Mi}\n", v)
	}
	return b.String()
}

// declared are round's container names on the engine, and its pods.
func (r *chaosRig) declared(round int) (containers, pods []string) {
	local := []string{"a", "b", "d"}
	pods = []string{"p"}
	if round%2 == 0 {
		local[2] = "c"
		pods = append(pods, "q")
	}
	for _, n := range local {
		containers = append(containers, core.ObjectName(r.owner, n))
	}
	return containers, pods
}

// commit makes round's commit with the image CI would push for it (on the
// local engine and in the registry), then moves main to it: the image is
// there before the commit is seen.
func (r *chaosRig) commit(round int) {
	r.t.Helper()
	if r.sha != "" {
		gittest.Git(r.t, r.repo.Path(), "update-ref", "refs/heads/next", "refs/heads/main")
	}
	sha := r.repo.Commit(r.t, "next", map[string]string{"wm.yaml": chaosWmYAML(round)}, "round "+strconv.Itoa(round))
	path := r.project + ":" + sha
	if !r.pulled {
		dockertest.BusyboxImage(r.t, r.regProxy.addr+"/"+path)
	}
	r.reg.Push(r.t, r.reg.Host()+"/"+path, r.img)
	gittest.Git(r.t, r.repo.Path(), "update-ref", "refs/heads/main", sha)
	r.round, r.sha = round, sha
}

// up starts wm serve on the rig's first commit and waits until it has
// converged and recorded the commit as applied, then writes the file the
// cases check is kept: where most cases start. It returns the containers.
func (r *chaosRig) up() map[string]container.Summary {
	r.t.Helper()
	r.commit(0)
	r.serve.start(r.t, r.bin)
	before := r.converged(90 * time.Second)
	r.applied(time.Time{}, 30*time.Second)
	r.writeKept()
	return before
}

// converged waits until the engine and the cluster hold exactly what the
// last commit declares, each once (waitConverged: no container set aside,
// none undeclared), and returns the containers by name.
func (r *chaosRig) converged(timeout time.Duration) map[string]container.Summary {
	r.t.Helper()
	names, pods := r.declared(r.round)
	v := strconv.Itoa(r.round)
	cs := waitConverged(r.t, r.cli, r.instance, r.owner, names, v, timeout, r.serve)
	waitFor(r.t, timeout, "the pods "+strings.Join(pods, ", ")+" with V="+v, func() (bool, string) {
		got := r.pods()
		var seen []string
		for _, p := range got {
			seen = append(seen, p.Name)
			if p.DeletionTimestamp != nil || !slices.ContainsFunc(p.Spec.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == "V" && e.Value == v }) {
				return false, "pod " + p.Name + " is not round " + v + "'s"
			}
		}
		slices.Sort(seen)
		return slices.Equal(seen, pods), fmt.Sprintf("pods %v\nlog:\n%s", seen, r.serve.out.String())
	})
	return cs
}

// pods are the owner's pods of this instance, by name.
func (r *chaosRig) pods() map[string]corev1.Pod {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := r.admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{LabelSelector: kube.LabelInstance + "=" + r.instance})
	if err != nil && !strings.Contains(err.Error(), "not found") {
		r.t.Fatal(err)
	}
	out := map[string]corev1.Pod{}
	if list != nil {
		for _, p := range list.Items {
			out[p.Name] = p
		}
	}
	return out
}

// status is the repo's state as the running wm serve reports it on its
// admin socket; ok is false when it does not answer.
func (r *chaosRig) status() (st core.RepoState, ok bool) {
	c := unixClient(filepath.Join(r.root, "wm", "admin.sock"))
	resp, err := c.Get("http://wm" + statusPath)
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	var repos []core.RepoState
	if json.NewDecoder(resp.Body).Decode(&repos) != nil {
		return st, false
	}
	for _, s := range repos {
		if s.Owner == r.owner {
			return s, true
		}
	}
	return st, false
}

// applied waits until wm serve reports the last commit applied, at a pass
// later than since.
func (r *chaosRig) applied(since time.Time, timeout time.Duration) core.RepoState {
	r.t.Helper()
	var st core.RepoState
	waitFor(r.t, timeout, "the status of a pass that applied "+shortRev(r.sha), func() (bool, string) {
		var ok bool
		st, ok = r.status()
		return ok && st.AppliedRevision == r.sha && st.LastPass.After(since), fmt.Sprintf("%+v\nlog:\n%s", st, r.serve.out.String())
	})
	return st
}

// writeKept writes a file into a's named volume; kept checks it is there.
func (r *chaosRig) writeKept() {
	r.t.Helper()
	if out, code := dockertest.Exec(r.t, core.ObjectName(r.owner, "a"), "sh", "-c", "echo kept > /data/kept"); code != 0 {
		r.t.Fatalf("write into a's volume: %d %s", code, out)
	}
}

func (r *chaosRig) kept() {
	r.t.Helper()
	if out, code := dockertest.Exec(r.t, core.ObjectName(r.owner, "a"), "cat", "/data/kept"); code != 0 || out != "kept\n" {
		r.t.Errorf("the file written into a's volume is lost: %d %q", code, out)
	}
}

// samePorts checks that every container of before still publishes the
// host ports it had.
func samePorts(t *testing.T, before, after map[string]container.Summary, names ...string) {
	t.Helper()
	for _, n := range names {
		if got, want := hostPorts(after[n]), hostPorts(before[n]); got != want || want == "" {
			t.Errorf("%s: host port %s, was %s", n, got, want)
		}
	}
}

func TestWmServeKilledAtRandomPointsOfItsPassesConvergesWithNothingLost(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local Docker Engine, the test control plane and docker-registry")
	}
	kills := 4
	if chaosFull() {
		kills = 20
	}
	rng := rand.New(rand.NewPCG(chaosSeed(t), 0))
	r := newChaosRig(t, nil, nil)
	r.commit(0)
	r.serve.start(t, r.bin)
	began := time.Now()
	r.converged(90 * time.Second)
	// How long a pass of a round takes, unkilled: the window kill points
	// are drawn from.
	r.commit(1)
	changed := time.Now()
	before := r.converged(90 * time.Second)
	window := time.Since(changed)
	t.Logf("first converge %v; a round's pass about %v", changed.Sub(began).Round(100*time.Millisecond), window.Round(100*time.Millisecond))
	r.writeKept()
	a, b := core.ObjectName(r.owner, "a"), core.ObjectName(r.owner, "b")
	var points []string
	for i := range kills {
		round := i + 2
		delay := time.Duration(rng.Int64N(int64(window)))
		r.commit(round)
		// The pass is under way once the engine shows a change; the kill
		// comes delay later.
		r.firstChange(before)
		time.Sleep(delay)
		r.serve.kill(t)
		names, _ := r.declared(round)
		mid := !convergedOn(t, r.cli, listInstance(t, r.cli, r.instance), names, strconv.Itoa(round))
		points = append(points, fmt.Sprintf("%v%s", delay.Round(10*time.Millisecond), map[bool]string{true: "", false: " (pass over)"}[mid]))
		r.serve.start(t, r.bin)
		after := r.converged(90 * time.Second)
		samePorts(t, before, after, a, b)
		r.kept()
		if t.Failed() {
			t.Fatalf("round %d, killed %v after the first change", round, delay)
		}
		before = after
	}
	t.Logf("killed at %s after each pass's first change", strings.Join(points, ", "))
	if !slices.ContainsFunc(points, func(p string) bool { return !strings.Contains(p, "pass over") }) {
		t.Error("no kill fell in the middle of a pass")
	}
}

func TestALostOrCorruptedStateStoreIsRebuiltFromTheEnginesWithoutRecreatingAnything(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local Docker Engine, the test control plane and docker-registry")
	}
	r := newChaosRig(t, nil, nil)
	before := r.up()
	podsBefore := r.pods()
	db := filepath.Join(r.state, "wm.db")
	for _, tc := range []struct {
		name   string
		breaks func()
	}{
		{"garbage bytes", func() {
			fi, err := os.Stat(db)
			if err != nil {
				t.Fatal(err)
			}
			garbage := make([]byte, fi.Size())
			if _, err := crand.Read(garbage); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(db, garbage, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"missing", func() {
			if err := os.Remove(db); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		// Killed between passes, the store broken, started again.
		r.serve.kill(t)
		tc.breaks()
		restarted := time.Now()
		r.serve.start(t, r.bin)
		r.applied(restarted, 60*time.Second)
		after := r.converged(30 * time.Second)
		for name, c := range before {
			if after[name].ID != c.ID {
				t.Errorf("a store of %s: %s was recreated", tc.name, name)
			}
		}
		samePorts(t, before, after, slices.Collect(maps.Keys(before))...)
		for name, p := range r.pods() {
			if podsBefore[name].UID != p.UID {
				t.Errorf("a store of %s: pod %s was recreated", tc.name, name)
			}
		}
		r.kept()
		if tc.name == "garbage bytes" && !strings.Contains(r.serve.out.String(), "the state file could not be read: it was set aside") {
			t.Errorf("wm serve does not say it set the state file aside:\n%s", r.serve.out.String())
		}
		if t.Failed() {
			t.Fatalf("a store of %s", tc.name)
		}
	}
}

// switchProxy forwards TCP connections to target through an apiProxy on a
// fixed address, and can be brought down (the address refuses
// connections, those open are closed: the service is down) and up again.
type switchProxy struct {
	t      *testing.T
	addr   string
	target string
	cur    *apiProxy
}

func startSwitchProxy(t *testing.T, target string) *switchProxy {
	t.Helper()
	s := &switchProxy{t: t, addr: freeAddr(t), target: target}
	s.up()
	t.Cleanup(func() {
		if s.cur != nil {
			s.cur.stop()
		}
	})
	return s
}

func (s *switchProxy) up() {
	s.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the address may linger a moment after down
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.cur = &apiProxy{ln: ln, target: s.target}
	go s.cur.serve()
}

func (s *switchProxy) down() {
	s.cur.stop()
	s.cur = nil
}

// mend lets traffic through an apiProxy that was cut, closing the
// connections the cut left hanging so that clients dial again.
func (p *apiProxy) mend() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut.Store(false)
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// firstChange waits until the engine shows a change from before (a
// container made, stopped, set aside or replaced): the pass of the last
// commit is under way.
func (r *chaosRig) firstChange(before map[string]container.Summary) {
	r.t.Helper()
	waitFor(r.t, 60*time.Second, "the first change of round "+strconv.Itoa(r.round), func() (bool, string) {
		now := listInstance(r.t, r.cli, r.instance)
		for name, c := range now {
			if was, ok := before[name]; !ok || was.ID != c.ID || was.State != c.State {
				return true, ""
			}
		}
		return len(now) != len(before), r.serve.out.String()
	})
}

// waitReason waits until wm serve reports that a pass of the last commit
// stopped for one of reasons, and returns its message.
func (r *chaosRig) waitReason(timeout time.Duration, reasons ...core.Reason) string {
	r.t.Helper()
	var msg string
	waitFor(r.t, timeout, fmt.Sprintf("a pass of %s stopped for %v", shortRev(r.sha), reasons), func() (bool, string) {
		st, ok := r.status()
		c := st.Condition(core.Ready)
		if !ok || c == nil || st.ObservedRevision != r.sha || c.Status || !slices.Contains(reasons, c.Reason) {
			return false, fmt.Sprintf("%+v\nlog:\n%s", st, r.serve.out.String())
		}
		msg = c.Message
		return true, ""
	})
	return msg
}

// untouched checks that the containers and pods are those of before:
// nothing removed, stopped or made.
func (r *chaosRig) untouched(what string, before map[string]container.Summary, podsBefore map[string]corev1.Pod) {
	r.t.Helper()
	now := listInstance(r.t, r.cli, r.instance)
	for name, c := range before {
		if now[name].ID != c.ID || now[name].State != c.State {
			r.t.Errorf("%s: %s changed: %s %s, was %s %s", what, name, now[name].ID, now[name].State, c.ID, c.State)
		}
	}
	if len(now) != len(before) {
		r.t.Errorf("%s: the engine has %v, had %v", what, slices.Sorted(maps.Keys(now)), slices.Sorted(maps.Keys(before)))
	}
	pods := r.pods()
	for name, p := range podsBefore {
		if pods[name].UID != p.UID {
			r.t.Errorf("%s: pod %s changed", what, name)
		}
	}
	if len(pods) != len(podsBefore) {
		r.t.Errorf("%s: the cluster has pods %v, had %v", what, slices.Sorted(maps.Keys(pods)), slices.Sorted(maps.Keys(podsBefore)))
	}
}

func TestPassesWaitWhileWhatTheyNeedIsDownAndConvergeOnceItIsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local Docker Engine, the test control plane and docker-registry")
	}
	r := newChaosRig(t, nil, nil)
	before := r.up()
	a, b := core.ObjectName(r.owner, "a"), core.ObjectName(r.owner, "b")
	for _, f := range []struct {
		name     string
		down, up func()
		reasons  []core.Reason
		says     string // in the status's message
	}{
		{"the registry down", r.regProxy.down, r.regProxy.up, []core.Reason{core.RegistryUnreachable}, "cannot ask the registry"},
		// The shared control plane is never stopped (other suites use
		// it): the apiserver is cut off by the proxy wm serve reaches it
		// through, which drops every packet, as a broken network does.
		{"the apiserver unreachable", r.serve.proxy.cut, r.serve.proxy.mend, []core.Reason{core.ClusterUnreachable}, "cannot read your pods in the cluster"},
	} {
		t.Logf("%s", f.name)
		podsBefore := r.pods()
		f.down()
		r.commit(r.round + 1)
		faulted := time.Now()
		msg := r.waitReason(60*time.Second, f.reasons...)
		t.Logf("%s: %q after %v", f.name, msg, time.Since(faulted).Round(100*time.Millisecond))
		if !strings.Contains(msg, f.says) {
			t.Errorf("%s: the status says %q", f.name, msg)
		}
		r.untouched(f.name, before, podsBefore)
		f.up()
		mended := time.Now()
		after := r.converged(90 * time.Second)
		r.applied(mended, 30*time.Second)
		t.Logf("%s: converged %v after it was mended", f.name, time.Since(mended).Round(100*time.Millisecond))
		samePorts(t, before, after, a, b)
		r.kept()
		if t.Failed() {
			t.FailNow()
		}
		before = after
	}
}

func TestPassesWaitWhileTheirDockerDaemonRestartsMidPassAndConvergeAfter(t *testing.T) {
	if testing.Short() {
		t.Skip("starts, stops and starts a Docker Engine of its own")
	}
	restarts := 1
	if chaosFull() {
		restarts = 3
	}
	third := startThird(t)
	r := newChaosRig(t, nil, third)
	r.commit(0)
	r.serve.start(t, r.bin)
	before := r.converged(120 * time.Second)
	a, b := core.ObjectName(r.owner, "a"), core.ObjectName(r.owner, "b")
	for range restarts {
		r.commit(r.round + 1)
		r.firstChange(before)
		third.down()
		msg := r.waitReason(60*time.Second, core.HostUnreachable, core.BackendUnreachable)
		t.Logf("the daemon stopped mid-pass: %q", msg)
		if !strings.Contains(msg, "cannot be reached") && !strings.Contains(msg, "Cannot connect to the Docker daemon") {
			t.Errorf("the status says %q", msg)
		}
		third.up()
		mended := time.Now()
		after := r.converged(120 * time.Second)
		t.Logf("converged %v after the daemon was back", time.Since(mended).Round(100*time.Millisecond))
		samePorts(t, before, after, a, b)
		if t.Failed() {
			t.FailNow()
		}
		before = after
	}
}

// gitlabFront serves gl on a server of its own, whose API answers name
// the address front returns instead of gl's own (as a GitLab whose
// external_url is the proxy in front of it): the clone URLs GitLab lists
// then lead through that proxy too, with the token wm sends only to
// sources.gitlab.url. It returns the server's address.
func gitlabFront(t *testing.T, gl *gitlabtest.GitLab, front func() string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasPrefix(req.URL.Path, "/api/") {
			gl.ServeHTTP(w, req) // git, whose answers name no URL
			return
		}
		rec := httptest.NewRecorder()
		gl.ServeHTTP(rec, req)
		from, to := gl.URL(), "http://"+front()
		for k, vs := range rec.Header() {
			if k != "Content-Length" {
				for _, v := range vs {
					w.Header().Add(k, strings.ReplaceAll(v, from, to))
				}
			}
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(bytes.ReplaceAll(rec.Body.Bytes(), []byte(from), []byte(to)))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// GitLab down is its proxy down: the API and git, both reached through
// it, refuse connections. It runs in the short suite too: about 30 s.
func TestWhileGitLabIsDownPassesWaitAndRemoveNothingAndAPushConvergesOnceItIsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local Docker Engine, the test control plane and docker-registry")
	}
	r := newGitLabChaosRig(t)
	before := r.up()
	podsBefore := r.pods()
	logged := len(r.serve.out.String())

	r.glProxy.down()
	cut := time.Now()
	msg := r.waitReason(60*time.Second, core.SourceUnreachable)
	t.Logf("GitLab down: %q after %v", msg, time.Since(cut).Round(100*time.Millisecond))
	if !strings.Contains(msg, "cannot reach the repo; everything stays as it is") || !strings.Contains(msg, "connection refused") {
		t.Errorf("the status says %q", msg)
	}
	// A listing of the groups fails too (every discoverInterval, 10 s):
	// the project is kept, not retired.
	waitFor(t, 30*time.Second, "a discovery that failed", func() (bool, string) {
		out := r.serve.out.String()
		return strings.Contains(out[logged:], "discovering repos failed; keeping the known ones"), out
	})
	r.untouched("GitLab down", before, podsBefore)
	if st, ok := r.status(); !ok || st.AppliedRevision != r.sha {
		t.Errorf("the repo's status after a failed discovery: %+v (answered %v)", st, ok)
	}
	if out := r.serve.out.String(); strings.Contains(out[logged:], "retir") {
		t.Errorf("wm serve retires the project:\n%s", out)
	}

	r.glProxy.up()
	mended := time.Now()
	r.commit(r.round + 1)
	after := r.converged(90 * time.Second)
	r.applied(mended, 30*time.Second)
	t.Logf("a push after GitLab was back converged in %v", time.Since(mended).Round(100*time.Millisecond))
	samePorts(t, before, after, core.ObjectName(r.owner, "a"), core.ObjectName(r.owner, "b"))
	r.kept()
}

// tinyTmpfs mounts a tmpfs of size bytes on dir until the test ends.
func tinyTmpfs(t *testing.T, dir string, size int) {
	t.Helper()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0750", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs on %s (the suite runs as root): %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
}

// fill writes a file into dir until its file system is full, and returns
// its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for n := len(chunk); n > 0; {
		if _, err := f.Write(chunk[:n]); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			n /= 2
		}
	}
	return p
}

// A full state disk bites wherever a write needs a page the file system no
// longer has, which varies from pass to pass: the git cache's fetch of the
// commit (nothing applied), a port handed out (stopped before the engine
// is touched for it), or the outcome, once the pass applied the commit
// (bbolt rewrites pages its file already has, so the pass's earlier writes
// may go through). Whichever it is, the log says why; what was applied
// stands (SECURITY.md's known limits), nothing else is removed, and once
// there is room the status catches up with what runs. A read-only state is
// not made here: a remount is refused while wm holds the store, and
// chattr +i stops no write through the file wm has open
// (reconciler's TestAPassOnAStateThatCannotBeWrittenChangesNothingAndSaysSo
// covers it). It runs in the short suite too: about 25 s.
func TestWhileTheStateDiskIsFullPassesSayWhyAndKeepWhatRunsAndTheStatusCatchesUpOnceThereIsRoom(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local Docker Engine, the test control plane and docker-registry")
	}
	r := newChaosRig(t, func(state string) { tinyTmpfs(t, state, 32<<20) }, nil)
	before := r.up()
	podsBefore := r.pods()
	filler := fill(t, r.state)
	logged := len(r.serve.out.String())
	r.commit(r.round + 1)
	const unrecorded = "record the pass: the state cannot be written, the status shown is older than what runs until it can be"
	var why string
	waitFor(t, 60*time.Second, "a pass that says why it fails", func() (bool, string) {
		out := r.serve.out.String()[logged:]
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "pass failed") && strings.Contains(line, "no space left on device") {
				why = line
				if strings.Contains(line, unrecorded) {
					return true, ""
				}
			}
		}
		// A commit never fetched fails the same way every time.
		return strings.Count(out, "no space left on device") >= 3, out
	})
	t.Logf("the disk full: %s", why)
	names, _ := r.declared(r.round)
	appliedUnrecorded := convergedOn(t, r.cli, listInstance(t, r.cli, r.instance), names, strconv.Itoa(r.round))
	if st, _ := r.status(); appliedUnrecorded && st.AppliedRevision != r.sha && !strings.Contains(r.serve.out.String()[logged:], unrecorded) {
		t.Errorf("the commit runs, the status says %s applied, and the log does not say the state cannot be written:\n%s", shortRev(st.AppliedRevision), r.serve.out.String())
	}
	if !appliedUnrecorded {
		r.untouched("the disk full", before, podsBefore)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	after := r.converged(90 * time.Second)
	r.applied(freed, 30*time.Second)
	t.Logf("the status caught up %v after there was room", time.Since(freed).Round(100*time.Millisecond))
	samePorts(t, before, after, core.ObjectName(r.owner, "a"), core.ObjectName(r.owner, "b"))
	r.kept()
}
