package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/schema"
)

// The timing of the test's Lease: short, in the order the schema asks
// (leaseDuration > renewDeadline + retryPeriod).
const (
	haLease = 5 * time.Second
	haRenew = 3 * time.Second
	haRetry = time.Second
)

// TestTwoReplicasFailOverWithoutDuplicates runs two `wm serve` processes
// of one ha config (each with its own listen address and admin socket)
// against the test control plane and the local Docker Engine:
//
//   - the first leads (it holds the Lease, its /readyz is 200, the
//     other's 503) and makes a repo's three containers;
//   - a commit changes those three and adds three, and the leader is
//     killed (SIGKILL) as soon as the first change shows on the engine,
//     in the middle of its pass: the other takes over within the lease
//     and converges, each declared container there once, no container
//     set aside or undeclared left, the three keeping their host ports;
//   - the killed one comes back on standby; a commit changes all six and
//     the leader is killed as it starts recreating one: the same again;
//   - a SIGTERM makes the leader release the Lease: the standby takes
//     over at once, well before the lease would run out;
//   - a leader cut off from the apiserver exits non-zero before the
//     standby may take over.
func TestTwoReplicasFailOverWithoutDuplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local Docker Engine and the test control plane")
	}
	cli := dockertest.Client(t)
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	bin := buildWM(t)
	owner := dockertest.Owner(t)
	instance := "wmha-" + owner
	sweepInstance(t, cli, instance)

	// The Lease's namespace.
	ns := cluster.Namespace(t, "wm-ha")
	if _, err := admin.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lease := instance + "-leader"

	// Not t.TempDir: the admin sockets' paths must stay short.
	root, err := os.MkdirTemp("", "wmha")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	const registry = "wm-ha.test:5000"
	from := dockertest.FreePorts(t, 1)[0]
	config := fmt.Sprintf(`instance: %s
stateDir: %s
adminListen: unix://admin.sock
sources: {dirs: [{root: %s}]}
poll: {interval: 1s, shutdownGrace: 5s}
registry: {host: %q}
policy: {hostPorts: {from: %d, to: %d}, quota: {containers: 20, cpus: 8, ports: 20}}
docker:
  hosts: [{name: local, endpoint: %q}]
kubernetes: {kubeconfig: kubeconfig, namespacePrefix: %s-}
ha: {leaseNamespace: %s, leaseDuration: %v, renewDeadline: %v, retryPeriod: %v}
`, instance, filepath.Join(root, "state"), filepath.Join(root, "repos"), registry, from, from+30, dockertest.Endpoint(),
		owner, ns, haLease, haRenew, haRetry)
	a := newHAReplica(t, "A", root, config, cluster)
	b := newHAReplica(t, "B", root, config, cluster)

	// A repo of three containers, its image there before the repo shows.
	made := filepath.Join(t.TempDir(), "web")
	repo := gittest.NewRepo(t, made)
	sha1 := repo.Commit(t, "main", map[string]string{"wm.yaml": haWmYAML("1", "a", "b", "c")}, "three")
	dockertest.BusyboxImage(t, fmt.Sprintf("%s/%s/web:%s", registry, owner, sha1))
	if err := os.MkdirAll(filepath.Join(root, "repos", owner), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(made, filepath.Join(root, "repos", owner, "web")); err != nil {
		t.Fatal(err)
	}
	// The same repository where it is now (git init keeps what it holds).
	repo = gittest.NewRepo(t, filepath.Join(root, "repos", owner, "web"))
	names := func(local ...string) []string {
		var out []string
		for _, n := range local {
			out = append(out, core.ObjectName(owner, n))
		}
		return out
	}

	// A leads; B, started once A holds the Lease, waits.
	a.start(t, bin)
	holds(t, admin, ns, lease, a, 30*time.Second)
	b.start(t, bin)
	b.waitStandby(t, a)
	for _, path := range []string{"/livez", "/healthz"} {
		if code, body := get(b.public + path); code != http.StatusOK || body != "ok\n" {
			t.Errorf("B on standby: %s %d %q", path, code, body)
		}
	}
	first := waitConverged(t, cli, instance, owner, names("a", "b", "c"), "1", 90*time.Second, a)
	a.waitReady(t)
	if h := leaseHolder(admin, ns, lease); h != a.identity() {
		t.Fatalf("the Lease is %q's, not A's (%s)", h, a.identity())
	}

	// The next commit changes a, b and c (recreated) and adds d, e and f;
	// its image is there before main moves to it. A is killed at the
	// first change the engine shows: B takes over within the lease (and a
	// retry's wait) and converges.
	sha2 := commitNext(t, repo, registry, owner, haWmYAML("2", "a", "b", "c", "d", "e", "f"))
	killed := killAtFirstChange(t, cli, instance, a, first, names("a", "b", "c", "d", "e", "f"), "2")
	holds(t, admin, ns, lease, b, haLease+2*haRetry+5*time.Second)
	t.Logf("B took the Lease %v after A was killed", time.Since(killed).Round(100*time.Millisecond))
	second := waitConverged(t, cli, instance, owner, names("a", "b", "c", "d", "e", "f"), "2", 90*time.Second, b)
	recreatedInPlace(t, first, second, names("a", "b", "c"))
	b.waitReady(t)
	if code, out, errOut := wm(t, "status", "--config", b.config); code != 0 || !strings.Contains(out, shortRev(sha2)) || !strings.Contains(out, "Ready") {
		t.Errorf("wm status through B: exit %d\n%s%s", code, out, errOut)
	}

	// A again, on standby. The next commit changes all six, and B is
	// killed as it starts recreating one (stopped, set aside, made anew,
	// the old one removed): A takes over and converges.
	a.start(t, bin)
	a.waitStandby(t, b)
	commitNext(t, repo, registry, owner, haWmYAML("3", "a", "b", "c", "d", "e", "f"))
	killed = killAtFirstChange(t, cli, instance, b, second, names("a", "b", "c", "d", "e", "f"), "3")
	holds(t, admin, ns, lease, a, haLease+2*haRetry+5*time.Second)
	t.Logf("A took the Lease %v after B was killed", time.Since(killed).Round(100*time.Millisecond))
	third := waitConverged(t, cli, instance, owner, names("a", "b", "c", "d", "e", "f"), "3", 90*time.Second, a)
	recreatedInPlace(t, second, third, names("a", "b", "c", "d", "e", "f"))
	a.waitReady(t)

	// B again, on standby; A stops cleanly and releases the Lease: B takes
	// over at once, not a lease later.
	b.start(t, bin)
	b.waitStandby(t, a)
	a.signal(t, syscall.SIGTERM)
	if code := a.wait(t, 30*time.Second); code != 0 {
		t.Errorf("A exited %d on SIGTERM:\n%s", code, a.out.String())
	}
	if !strings.Contains(a.out.String(), "the Lease is released") {
		t.Errorf("A's log does not say it released the Lease:\n%s", a.out.String())
	}
	stopped := time.Now()
	holds(t, admin, ns, lease, b, haLease)
	if took := time.Since(stopped); took > haLease-haRenew+haRetry {
		t.Errorf("B took the released Lease %v after A stopped: as long as if it had not been released", took)
	}
	b.waitReady(t)

	// A again, on standby; B loses the apiserver: it exits non-zero
	// before A may take the Lease.
	a.start(t, bin)
	a.waitStandby(t, b)
	b.proxy.cut()
	cut := time.Now()
	holds(t, admin, ns, lease, a, haLease+2*haRetry+5*time.Second)
	select {
	case <-b.exited:
		// A wrote when it took the Lease, by the same clock.
		if took := leaseAcquired(admin, ns, lease); !b.exitAt.Before(took) {
			t.Errorf("B exited at %v, not before A took the Lease at %v", b.exitAt, took)
		}
		t.Logf("B exited %v after it was cut off", b.exitAt.Sub(cut).Round(100*time.Millisecond))
	default:
		t.Fatalf("B still runs cut off from the apiserver, and A holds the Lease:\n%s", b.out.String())
	}
	if code := b.exitCode(); code == 0 || !strings.Contains(b.out.String(), "lost the Lease") {
		t.Errorf("B cut off from the apiserver exited %d:\n%s", code, b.out.String())
	}
	a.waitReady(t)
	waitConverged(t, cli, instance, owner, names("a", "b", "c", "d", "e", "f"), "3", 60*time.Second, a)
}

// commitNext makes a commit of wmYAML on top of main and the image CI
// would build for it, then moves main to it: the image is there before
// the commit is seen. It returns the commit.
func commitNext(t *testing.T, repo *gittest.Repo, registry, owner, wmYAML string) string {
	t.Helper()
	gittest.Git(t, repo.Path(), "update-ref", "refs/heads/next", "refs/heads/main")
	sha := repo.Commit(t, "next", map[string]string{"wm.yaml": wmYAML}, "next")
	dockertest.BusyboxImage(t, fmt.Sprintf("%s/%s/web:%s", registry, owner, sha))
	gittest.Git(t, repo.Path(), "update-ref", "refs/heads/main", sha)
	return sha
}

// killAtFirstChange kills the leader (SIGKILL) as soon as the engine
// shows a change from before (a container made, stopped, set aside or
// replaced), and fails the test if its pass was over by then: the
// takeover would not be tested mid-pass. It returns when it killed.
func killAtFirstChange(t *testing.T, cli *client.Client, instance string, leader *haReplica, before map[string]container.Summary, declared []string, version string) time.Time {
	t.Helper()
	waitFor(t, 60*time.Second, leader.name+"'s first change on the engine", func() (bool, string) {
		now := listInstance(t, cli, instance)
		for name, c := range now {
			if was, ok := before[name]; !ok || was.ID != c.ID || was.State != c.State {
				return true, ""
			}
		}
		return len(now) != len(before), fmt.Sprint(len(now), " containers")
	})
	leader.kill(t)
	killed := time.Now()
	atKill := listInstance(t, cli, instance)
	if convergedOn(t, cli, atKill, declared, version) {
		t.Fatalf("%s finished its pass before it was killed: no takeover mid-pass was tested\n%s", leader.name, leader.out.String())
	}
	var states []string
	for _, name := range slices.Sorted(maps.Keys(atKill)) {
		states = append(states, name+" "+string(atKill[name].State))
	}
	t.Logf("when %s was killed, the engine had: %s", leader.name, strings.Join(states, ", "))
	return killed
}

// recreatedInPlace checks that each of names is a new container that
// kept its host ports.
func recreatedInPlace(t *testing.T, before, after map[string]container.Summary, names []string) {
	t.Helper()
	for _, n := range names {
		if after[n].ID == before[n].ID {
			t.Errorf("%s was not recreated", n)
		}
		if got, want := hostPorts(after[n]), hostPorts(before[n]); got != want || want == "" {
			t.Errorf("%s: host port %s, was %s", n, got, want)
		}
	}
}

// holds waits until r holds the Lease.
func holds(t *testing.T, admin kubernetes.Interface, ns, lease string, r *haReplica, within time.Duration) {
	t.Helper()
	waitFor(t, within, r.name+" holds the Lease", func() (bool, string) {
		h := leaseHolder(admin, ns, lease)
		return h == r.identity(), "holder " + h + "\n" + r.name + "'s log:\n" + r.out.String()
	})
}

// memLock is a Lease in memory for client-go's leader election, whose
// calls can be made to hang as on an apiserver that stopped answering.
type memLock struct {
	id   string
	hang atomic.Bool

	mu  sync.Mutex
	rec *resourcelock.LeaderElectionRecord
	// accepted is when the apiserver, here, last wrote a record held by id.
	accepted time.Time
}

var _ resourcelock.Interface = (*memLock)(nil)

func (l *memLock) wait(ctx context.Context) error {
	if l.hang.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (l *memLock) Get(ctx context.Context) (*resourcelock.LeaderElectionRecord, []byte, error) {
	if err := l.wait(ctx); err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rec == nil {
		return nil, nil, apierrors.NewNotFound(coordinationv1.Resource("leases"), "wm-leader")
	}
	rec := *l.rec
	raw, err := json.Marshal(rec)
	return &rec, raw, err
}

func (l *memLock) Create(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	if err := l.wait(ctx); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rec != nil {
		return apierrors.NewAlreadyExists(coordinationv1.Resource("leases"), "wm-leader")
	}
	l.write(ler)
	return nil
}

func (l *memLock) Update(ctx context.Context, ler resourcelock.LeaderElectionRecord) error {
	if err := l.wait(ctx); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.write(ler)
	return nil
}

func (l *memLock) write(ler resourcelock.LeaderElectionRecord) {
	l.rec = &ler
	if ler.HolderIdentity == l.id {
		l.accepted = time.Now()
	}
}

func (l *memLock) record() (holder string, accepted time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rec != nil {
		holder = l.rec.HolderIdentity
	}
	return holder, l.accepted
}

func (l *memLock) RecordEvent(string) {}
func (l *memLock) Identity() string   { return l.id }
func (l *memLock) Describe() string   { return "memory/wm-leader" }

// memReplica is a replica named id on lock with h's timing, whose exit
// is sent on the channel returned instead of ending the process.
func memReplica(t *testing.T, id string, lock *memLock, h schema.HA) (*replica, chan int) {
	t.Helper()
	exits := make(chan int, 2)
	r := &replica{cfg: &schema.ServerConfig{HA: &h, Listen: "127.0.0.1:0"}, id: id, elected: make(chan struct{}),
		log: slog.New(slog.NewTextHandler(t.Output(), nil)), exit: func(code int) { exits <- code }}
	if err := r.elect(lock); err != nil {
		t.Fatal(err)
	}
	return r, exits
}

// runElection runs r's election until the test ends, and waits for it to
// end then; it returns the election's context.
func runElection(t *testing.T, r *replica) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); r.le.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	return ctx
}

func TestALeaderCutOffFromTheApiserverStopsBeforeTheLeaseRunsOut(t *testing.T) {
	// client-go alone, trying to release the Lease through an apiserver
	// that does not answer, would stop only retryPeriod + 2 ×
	// renewDeadline after the last renewal (2.2s): after the lease.
	h := schema.HA{LeaseDuration: schema.Duration(1600 * time.Millisecond), RenewDeadline: schema.Duration(time.Second), RetryPeriod: schema.Duration(200 * time.Millisecond)}
	lock := &memLock{id: "me"}
	r, exits := memReplica(t, "me", lock, h)
	ctx := runElection(t, r)
	select {
	case <-r.elected:
	case <-time.After(5 * time.Second):
		t.Fatal("not elected")
	}
	go r.watch(ctx)
	time.Sleep(3 * h.RetryPeriod.Std()) // a few renewals
	lock.hang.Store(true)
	select {
	case code := <-exits:
		stopped := time.Now()
		_, last := lock.record()
		if code == 0 || !stopped.Before(last.Add(h.LeaseDuration.Std())) {
			t.Errorf("exit %d %v after the last renewal, the lease being %v", code, stopped.Sub(last), h.LeaseDuration.Std())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a leader that cannot renew goes on")
	}
}

func TestAReplicaThatStopsCleanlyReleasesTheLeaseAndExitsNormally(t *testing.T) {
	h := schema.HA{LeaseDuration: schema.Duration(3 * time.Second), RenewDeadline: schema.Duration(2 * time.Second), RetryPeriod: schema.Duration(200 * time.Millisecond)}
	lock := &memLock{id: "me"}
	r, exits := memReplica(t, "me", lock, h)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); r.le.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	<-r.elected
	if holder, _ := lock.record(); holder != "me" {
		t.Fatalf("holder %q", holder)
	}
	r.stopping.Store(true)
	cancel()
	<-ran
	if holder, _ := lock.record(); holder != "" {
		t.Errorf("the Lease is still %q's", holder)
	}
	select {
	case code := <-exits:
		t.Errorf("exit %d on a clean stop", code)
	default:
	}
}

func TestAReplicaOnStandbyIsAliveButNotReadyAndNamesTheLeader(t *testing.T) {
	h := schema.HA{LeaseDuration: schema.Duration(time.Minute), RenewDeadline: schema.Duration(10 * time.Second), RetryPeriod: schema.Duration(200 * time.Millisecond)}
	lock := &memLock{id: "me"}
	lock.write(resourcelock.LeaderElectionRecord{HolderIdentity: "other_42", LeaseDurationSeconds: 60, AcquireTime: metav1.Now(), RenewTime: metav1.Now()})
	r, _ := memReplica(t, "me", lock, h)
	s, err := r.standby()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	base := "http://" + s.addr
	if code, body := get(base + "/readyz"); code != http.StatusServiceUnavailable || body != "standby: no replica leads yet\n" {
		t.Errorf("before the Lease is read: %d %q", code, body)
	}
	runElection(t, r)
	for _, tc := range []struct {
		path, body string
		code       int
	}{
		{"/readyz", "standby: replica other_42 leads\n", http.StatusServiceUnavailable},
		{"/livez", "ok\n", http.StatusOK},
		{"/healthz", "ok\n", http.StatusOK},
	} {
		waitFor(t, 5*time.Second, tc.path, func() (bool, string) {
			code, body := get(base + tc.path)
			return code == tc.code && body == tc.body, fmt.Sprintf("%d %q", code, body)
		})
	}
	select {
	case <-r.elected:
		t.Error("elected while another holds the Lease")
	default:
	}
}

// haWmYAML declares containers of the image self, each publishing a port,
// with V set to version.
func haWmYAML(version string, local ...string) string {
	var b strings.Builder
	b.WriteString("version: 1\ncontainers:\n")
	for _, n := range local {
		fmt.Fprintf(&b, "  %s: {image: self, ports: [8000], env: {V: %q}, cpus: 0.1, memory: 16Mi}\n", n, version)
	}
	return b.String()
}

// haReplica is one `wm serve` process of the test, restartable.
type haReplica struct {
	name   string
	config string
	public string
	proxy  *apiProxy

	// Of the process running now (or last).
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	exitAt time.Time
}

// newHAReplica writes the replica's folder under root: config (the same
// for every replica, but for listen), a kubeconfig that reaches the
// control plane through a proxy of the replica's own, and room for its
// admin socket.
func newHAReplica(t *testing.T, name, root, config string, cluster *kubetest.Cluster) *haReplica {
	t.Helper()
	dir := filepath.Join(root, name)
	r := &haReplica{name: name, proxy: startProxy(t, strings.TrimPrefix(cluster.Server(), "https://"))}
	addr := freeAddr(t)
	r.public = "http://" + addr
	r.config = writeFile(t, dir, "wm-server.yaml", config+"listen: "+addr+"\n")
	rc := cluster.AdminConfig()
	writeFile(t, dir, "kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://%s", certificate-authority-data: %s}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, r.proxy.addr(), base64.StdEncoding.EncodeToString(cluster.CAData()), rc.BearerToken))
	return r
}

// start runs the replica's wm serve; it is killed when the test ends,
// and its log shown if the test failed (or WM_HA_LOGS is set).
func (r *haReplica) start(t *testing.T, bin string) {
	t.Helper()
	r.out = &syncBuffer{}
	r.cmd = exec.Command(bin, "serve", "--config", r.config)
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	r.exited = exited
	cmd := r.cmd
	go func() {
		_ = cmd.Wait()
		r.exitAt = time.Now()
		close(exited)
	}()
	out := r.out
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() || os.Getenv("WM_HA_LOGS") != "" {
			t.Logf("%s's log (pid %d):\n%s", r.name, cmd.Process.Pid, out.String())
		}
	})
}

// waitStandby waits until r, on standby, answers /readyz with 503 and
// the leader's name.
func (r *haReplica) waitStandby(t *testing.T, leader *haReplica) {
	t.Helper()
	waitFor(t, 30*time.Second, r.name+" on standby names "+leader.name, func() (bool, string) {
		code, body := get(r.public + "/readyz")
		return code == http.StatusServiceUnavailable && body == "standby: replica "+leader.identity()+" leads\n", fmt.Sprintf("%d %q", code, body)
	})
}

// waitReady waits until r, leading, answers /readyz with 200.
func (r *haReplica) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, r.name+" ready", func() (bool, string) {
		code, body := get(r.public + "/readyz")
		return code == http.StatusOK, fmt.Sprintf("%d %q\n%s", code, body, r.out.String())
	})
}

// identity is the running process's identity in the Lease: wm's
// default, <hostname>_<pid>.
func (r *haReplica) identity() string {
	host, _ := os.Hostname()
	return host + "_" + strconv.Itoa(r.cmd.Process.Pid)
}

func (r *haReplica) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v", r.name, err)
	}
}

// kill kills the process (SIGKILL) and waits for it.
func (r *haReplica) kill(t *testing.T) {
	t.Helper()
	r.signal(t, syscall.SIGKILL)
	r.wait(t, 10*time.Second)
}

// wait waits for the process to exit and returns its exit code.
func (r *haReplica) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-r.exited:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v:\n%s", r.name, timeout, r.out.String())
	}
	return r.exitCode()
}

// exitCode is the exit code of the process that exited; -1 when a signal
// ended it.
func (r *haReplica) exitCode() int { return r.cmd.ProcessState.ExitCode() }

// buildWM builds the wm binary for tests that run it as a process of its
// own.
func buildWM(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wm")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// leaseHolder is the Lease's holder, "" when it has none or cannot be read.
func leaseHolder(admin kubernetes.Interface, ns, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := admin.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// leaseAcquired is when the Lease's holder took it, as it wrote.
func leaseAcquired(admin kubernetes.Interface, ns, name string) time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := admin.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil || l.Spec.AcquireTime == nil {
		return time.Time{}
	}
	return l.Spec.AcquireTime.Time
}

// get GETs url; code -1 when it does not answer.
func get(url string) (code int, body string) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return -1, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond until it holds, and fails the test with cond's last
// word after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v: %s", what, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listInstance lists the containers carrying the instance's label, by
// name.
func listInstance(t *testing.T, cli *client.Client, instance string) map[string]container.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", docker.LabelInstance+"="+instance))})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]container.Summary{}
	for _, c := range cs {
		out[strings.TrimPrefix(c.Names[0], "/")] = c
	}
	return out
}

// convergedOn reports whether cs is exactly the declared containers,
// each running with V=version.
func convergedOn(t *testing.T, cli *client.Client, cs map[string]container.Summary, declared []string, version string) bool {
	t.Helper()
	if len(cs) != len(declared) {
		return false
	}
	for _, n := range declared {
		c, ok := cs[n]
		if !ok || c.State != container.StateRunning {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		raw, err := cli.ContainerInspect(ctx, c.ID)
		cancel()
		if err != nil || !slices.Contains(raw.Config.Env, "V="+version) {
			return false
		}
	}
	return true
}

// waitConverged waits until the engine holds exactly the declared
// containers of the instance, each once, running with V=version, and
// checks that nothing else of the owner's or the instance's is there:
// no container set aside, none undeclared, none of another owner. It
// returns them by name.
func waitConverged(t *testing.T, cli *client.Client, instance, owner string, declared []string, version string, timeout time.Duration, leader *haReplica) map[string]container.Summary {
	t.Helper()
	var cs map[string]container.Summary
	waitFor(t, timeout, "converged on "+strings.Join(declared, ", "), func() (bool, string) {
		cs = listInstance(t, cli, instance)
		return convergedOn(t, cli, cs, declared, version), fmt.Sprintf("the engine has %v\n%s's log:\n%s", slices.Sorted(maps.Keys(cs)), leader.name, leader.out.String())
	})
	perName := map[string]int{}
	for name, c := range cs {
		perName[c.Labels[docker.LabelName]]++
		if c.Labels[docker.LabelOwner] != owner {
			t.Errorf("%s is %q's", name, c.Labels[docker.LabelOwner])
		}
	}
	for label, n := range perName {
		if n != 1 {
			t.Errorf("%d containers are labelled %s", n, label)
		}
	}
	// Whatever carries the owner's name, with or without labels.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	all, err := cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		name := strings.TrimPrefix(c.Names[0], "/")
		if strings.Contains(name, owner) && !slices.Contains(declared, name) {
			t.Errorf("%s is on the engine, labels %v", name, c.Labels)
		}
	}
	return cs
}

// hostPorts is the host ports a container publishes, sorted.
func hostPorts(c container.Summary) string {
	var ports []string
	for _, p := range c.Ports {
		if p.PublicPort != 0 {
			ports = append(ports, strconv.Itoa(int(p.PublicPort)))
		}
	}
	slices.Sort(ports)
	return strings.Join(slices.Compact(ports), ",")
}

// sweepInstance removes, when the test ends, every container, volume and
// network carrying the instance's label.
func sweepInstance(t *testing.T, cli *client.Client, instance string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		byInstance := filters.NewArgs(filters.Arg("label", docker.LabelInstance+"="+instance))
		cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: byInstance})
		if err != nil {
			t.Errorf("sweep %s: %v", instance, err)
		}
		for _, c := range cs {
			if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("sweep %s: %v", instance, err)
			}
		}
		vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: byInstance})
		if err != nil {
			t.Errorf("sweep %s: %v", instance, err)
		}
		for _, v := range vs.Volumes {
			if err := cli.VolumeRemove(ctx, v.Name, true); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("sweep %s: %v", instance, err)
			}
		}
		nets, err := cli.NetworkList(ctx, network.ListOptions{Filters: byInstance})
		if err != nil {
			t.Errorf("sweep %s: %v", instance, err)
		}
		for _, n := range nets {
			if err := cli.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("sweep %s: %v", instance, err)
			}
		}
	})
}

// apiProxy forwards TCP connections to the apiserver until it is cut:
// from then on it answers nothing and forwards nothing, as a network
// that drops every packet, so that requests hang until their timeouts.
type apiProxy struct {
	ln      net.Listener
	target  string
	isCut   atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
	stopped bool
}

func startProxy(t *testing.T, target string) *apiProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &apiProxy{ln: ln, target: target}
	go p.serve()
	t.Cleanup(p.stop)
	return p
}

func (p *apiProxy) addr() string { return p.ln.Addr().String() }

// cut stops all traffic, on the connections open and on new ones.
func (p *apiProxy) cut() { p.isCut.Store(true) }

func (p *apiProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			return
		}
		go func() {
			if p.isCut.Load() {
				_, _ = io.Copy(io.Discard, in)
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(out) {
				in.Close()
				return
			}
			go p.pipe(out, in)
			p.pipe(in, out)
		}()
	}
}

// track keeps c to close at stop; false once stopped.
func (p *apiProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		c.Close()
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

// pipe copies src to dst until either closes, dropping what comes once
// the proxy is cut.
func (p *apiProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.isCut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !p.isCut.Load() || errors.Is(err, net.ErrClosed) {
				dst.Close()
			}
			return
		}
	}
}

func (p *apiProxy) stop() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	for _, c := range p.conns {
		c.Close()
	}
}
