package reconciler

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"

	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

const testRegistry = "registry.test:5000"

// world is a reconciler over real git repos (file://), a fake Docker host
// and a real store, for fast tests of the pass's decisions.
type world struct {
	t     *testing.T
	cfg   *schema.ServerConfig
	root  string
	store *store.Store
	hosts []*docker.Fake
	rec   *Reconciler
	repos map[string]*gittest.Repo
	now   time.Time
}

func newWorld(t *testing.T, configure ...func(*schema.ServerConfig)) *world {
	t.Helper()
	root := t.TempDir()
	cfg, err := schema.ParseServer("test.yaml", strings.NewReader(`
registry: {host: "`+testRegistry+`"}
policy:
  hostPorts: {from: 50000, to: 50099}
  allowedRegistries: [docker.io/library]
docker:
  hosts:
    - {name: h1, endpoint: "unix:///h1.sock", gpus: 2}
`), root)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range configure {
		c(cfg)
	}
	w := &world{t: t, cfg: cfg, root: root, repos: map[string]*gittest.Repo{}, now: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)}
	w.store, err = store.Open(filepath.Join(root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.store.Close() })
	var engines []core.Engine
	for _, h := range cfg.Docker.Hosts {
		f := docker.NewFake(h.Name)
		w.hosts = append(w.hosts, f)
		engines = append(engines, f)
	}
	w.rec, err = New(cfg, gitsource.New(filepath.Join(root, "cache")), engines, w.store, WithClock(func() time.Time { return w.now }))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// push commits wm.yaml to the repo <key> and, unless noImage, makes the
// image CI would build for it available in the registry.
func (w *world) push(key, wmYAML string, noImage ...bool) Repo {
	w.t.Helper()
	owner, _, _ := strings.Cut(key, "/")
	r, ok := w.repos[key]
	if !ok {
		r = gittest.NewRepo(w.t, filepath.Join(w.root, "git", key+".git"))
		w.repos[key] = r
	}
	files := map[string]string{"Dockerfile": "FROM scratch\n"}
	if wmYAML != "" {
		files["wm.yaml"] = wmYAML
	}
	sha := r.Commit(w.t, "main", files, "update")
	if len(noImage) == 0 {
		for _, h := range w.hosts {
			h.AddRemoteImage(testRegistry + "/" + key + ":" + sha)
		}
	}
	return Repo{Key: key, Owner: owner, URL: r.FileURL(), Branch: "main"}
}

func (w *world) reconcile(repo Repo) (Result, error) {
	w.t.Helper()
	return w.rec.Reconcile(context.Background(), repo)
}

// mustReconcile runs a pass that must succeed and be Ready.
func (w *world) mustReconcile(repo Repo) Result {
	w.t.Helper()
	res, err := w.reconcile(repo)
	if err != nil {
		w.t.Fatalf("pass of %s: %v", repo.Key, err)
	}
	if !res.Ready {
		w.t.Fatalf("pass of %s not ready: %s", repo.Key, res.Message)
	}
	return res
}

// container returns the live container called name on h1.
func (w *world) container(name string) (core.Container, core.ContainerSpec, bool) {
	w.t.Helper()
	for _, h := range w.hosts {
		if s, ok := h.Spec(name); ok {
			cs, err := h.ListManaged(context.Background())
			if err != nil {
				w.t.Fatal(err)
			}
			for _, c := range cs {
				if c.Name == name {
					return c, s, true
				}
			}
		}
	}
	return core.Container{}, core.ContainerSpec{}, false
}

func wantReason(t *testing.T, err error, outcome Outcome, reason core.Reason) {
	t.Helper()
	if o, r := Classify(err); err == nil || o != outcome || r != reason {
		t.Fatalf("got %v/%s (%v), want %v/%s", o, r, err, outcome, reason)
	}
}

const webV1 = `version: 1
containers:
  web:
    image: self
    env: {MODE: dev}
    ports: [8000]
    volumes: {data: /data}
`

func TestAPushCreatesTheContainerWithItsEnvPortsAndVolume(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	res := w.mustReconcile(repo)
	c, s, ok := w.container("alice_web")
	if !ok || !c.Running {
		t.Fatalf("container missing or stopped: %+v", c)
	}
	if s.Env["MODE"] != "dev" || s.Image != testRegistry+"/alice/web:"+res.Revision || s.Network != "wm-alice" {
		t.Errorf("spec: %+v", s)
	}
	if len(s.Ports) != 1 || s.Ports[0] != (core.PortBinding{Guest: 8000, Host: 50000}) {
		t.Errorf("ports: %+v", s.Ports)
	}
	if len(s.Mounts) != 1 || s.Mounts[0] != (core.Mount{Volume: "alice_data", Target: "/data"}) {
		t.Errorf("mounts: %+v", s.Mounts)
	}
	if s.NanoCPUs != 1e9 || s.MemoryBytes != 2<<30 {
		t.Errorf("policy defaults not applied: cpus %d memory %d", s.NanoCPUs, s.MemoryBytes)
	}
	st, _, _ := w.store.Repo("alice/web")
	if st.AppliedRevision != res.Revision || !st.Condition(core.Ready).Status || len(st.Containers) != 1 || st.Containers[0].Ports["8000"] != 50000 {
		t.Errorf("state: %+v", st)
	}
}

func TestChangedEnvRecreatesTheContainerAndKeepsItsHostPort(t *testing.T) {
	w := newWorld(t)
	w.mustReconcile(w.push("alice/other", "version: 1\ncontainers:\n  db: {image: self, ports: [5432]}\n"))
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	before, _, _ := w.container("alice_web")

	w.push("alice/web", strings.Replace(webV1, "MODE: dev", "MODE: prod", 1))
	res := w.mustReconcile(repo)
	after, s, _ := w.container("alice_web")
	if res.Plan.Count(ActionRecreate) != 1 || after.ID == before.ID {
		t.Fatalf("not recreated: %+v", res.Plan)
	}
	if s.Env["MODE"] != "prod" || s.Ports[0].Host != before.Ports[0].Host {
		t.Errorf("env %v, host port %d → %d", s.Env, before.Ports[0].Host, s.Ports[0].Host)
	}
}

func TestAFailedRecreationPutsTheOldContainerBack(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	before, _, _ := w.container("alice_web")
	w.push("alice/web", strings.Replace(webV1, "dev", "prod", 1))
	w.hosts[0].FailOn("Create", docker.ErrPortInUse)
	_, err := w.reconcile(repo)
	if !errors.Is(err, docker.ErrPortInUse) {
		t.Fatalf("got %v", err)
	}
	after, s, ok := w.container("alice_web")
	if !ok || after.ID != before.ID || !after.Running || s.Env["MODE"] != "dev" {
		t.Errorf("old container not back: %+v", after)
	}
	if _, _, ok := w.container("alice_web" + asideSuffix); ok {
		t.Error("the aside container is left over")
	}
}

func TestANoOpPassChangesNothingAndWritesNothing(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	w.mustReconcile(repo) // the first no-op may still settle the status
	w.hosts[0].ResetCalls()
	writes := w.store.Writes()
	w.now = w.now.Add(time.Minute)
	res := w.mustReconcile(repo)
	if m := w.hosts[0].Mutations(); len(m) != 0 || len(res.Plan.Actions) != 0 || res.Plan.Unchanged != 1 {
		t.Errorf("mutations %v, plan %+v", m, res.Plan)
	}
	if n := w.store.Writes() - writes; n != 0 {
		t.Errorf("a no-op pass wrote %d page(s) to the state", n)
	}
}

func TestStateStoppedStopsWithoutRemovingAndRunningStartsAgain(t *testing.T) {
	// A fixed image: with "self" every commit is a new image, and so a
	// recreation whatever else changed.
	w := newWorld(t)
	fixed := strings.Replace(webV1, "image: self", "image: nginx:1.27", 1)
	w.hosts[0].AddRemoteImage("docker.io/library/nginx:1.27")
	repo := w.push("alice/web", fixed)
	w.mustReconcile(repo)
	before, _, _ := w.container("alice_web")
	w.push("alice/web", fixed+"    state: stopped\n")
	res := w.mustReconcile(repo)
	c, _, ok := w.container("alice_web")
	if !ok || c.Running || c.ID != before.ID || res.Plan.Count(ActionStop) != 1 {
		t.Fatalf("after stop: %+v, plan %+v", c, res.Plan)
	}
	w.push("alice/web", fixed)
	w.mustReconcile(repo)
	if c, _, _ := w.container("alice_web"); !c.Running || c.ID != before.ID {
		t.Errorf("after start: %+v", c)
	}
}

func TestARemovedContainerIsPrunedAndItsVolumeStays(t *testing.T) {
	w := newWorld(t)
	w.mustReconcile(w.push("bob/keep", "version: 1\ncontainers:\n  a: {image: self}\n  b: {image: self}\n"))
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	w.push("alice/web", "version: 1\n")
	res := w.mustReconcile(repo)
	if _, _, ok := w.container("alice_web"); ok || res.Plan.Count(ActionRemove) != 1 {
		t.Fatalf("not pruned: %+v", res.Plan)
	}
	vols, _ := w.hosts[0].ListVolumes(context.Background())
	if !slices.ContainsFunc(vols, func(v core.Volume) bool { return v.Name == "alice_data" }) {
		t.Errorf("volume gone: %+v", vols)
	}
	if p, _ := w.store.Port(store.PortKey("alice_web", 8000)); p != 0 {
		t.Errorf("port of a removed container still allocated: %d", p)
	}
}

func TestAnUnlabelledContainerWithTheSameNameIsNeverTouched(t *testing.T) {
	w := newWorld(t)
	w.hosts[0].AddForeign("alice_web")
	_, err := w.reconcile(w.push("alice/web", webV1))
	wantReason(t, err, Stalled, core.NameConflict)
	for _, c := range w.hosts[0].Mutations() {
		if c.Arg == "alice_web" && c.Method != "Create" {
			t.Errorf("foreign container touched: %+v", c)
		}
	}
}

func TestAnInvalidPushKeepsTheOldContainerAndSaysWhere(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	good := w.mustReconcile(repo)
	before, _, _ := w.container("alice_web")
	w.hosts[0].ResetCalls()

	w.push("alice/web", strings.Replace(webV1, "[8000]", "[70000]", 1))
	_, err := w.reconcile(repo)
	wantReason(t, err, Stalled, core.ValidationFailed)
	if !strings.Contains(err.Error(), "wm.yaml:6:13: containers.web.ports[0]: 70000 is not a port (1-65535)") {
		t.Errorf("error does not place the problem: %v", err)
	}
	after, _, ok := w.container("alice_web")
	if !ok || after.ID != before.ID || !after.Running || len(w.hosts[0].Mutations()) != 0 {
		t.Errorf("old container disturbed: %+v, mutations %v", after, w.hosts[0].Mutations())
	}
	st, _, _ := w.store.Repo("alice/web")
	if st.AppliedRevision != good.Revision || !st.Condition(core.Stalled).Status {
		t.Errorf("state: applied %s, conditions %+v", st.AppliedRevision, st.Conditions)
	}
}

func TestAStalledRevisionIsNotRedoneUntilANewCommit(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", "version: 1\ncontainers: {web: {image: self, gpus: 9}}\n")
	_, first := w.reconcile(repo)
	_, again := w.reconcile(repo)
	wantReason(t, again, Stalled, core.ValidationFailed)
	if first.Error() != again.Error() {
		t.Errorf("the repeated pass says something else:\n%v\n%v", first, again)
	}
	if h, _ := w.store.History("alice/web"); len(h) != 1 {
		t.Errorf("history has %d passes, want 1", len(h))
	}
	w.push("alice/web", webV1)
	w.mustReconcile(repo)
}

func TestARepoWithoutWmYamlKeepsWhatRuns(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	w.push("alice/web", "")
	_, err := w.reconcile(repo)
	wantReason(t, err, Stalled, core.NoWmYaml)
	if _, _, ok := w.container("alice_web"); !ok {
		t.Error("container removed because wm.yaml went missing")
	}
}

func TestAnUnreachableRepoKeepsWhatRuns(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	repo.URL = "http://127.0.0.1:1/alice/web.git"
	_, err := w.reconcile(repo)
	wantReason(t, err, Waiting, core.SourceUnreachable)
	if _, _, ok := w.container("alice_web"); !ok {
		t.Error("container removed while the repo was unreachable")
	}
}

func TestAMissingImageWaitsForCIAndTheOldContainerKeepsRunning(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	before, _, _ := w.container("alice_web")

	w.push("alice/web", strings.Replace(webV1, "dev", "prod", 1), true)
	_, err := w.reconcile(repo)
	wantReason(t, err, Waiting, core.WaitingForImage)
	if !strings.Contains(err.Error(), "waiting for CI to push "+testRegistry+"/alice/web:") {
		t.Errorf("message: %v", err)
	}
	if after, _, _ := w.container("alice_web"); after.ID != before.ID || !after.Running {
		t.Errorf("old container not kept: %+v", after)
	}
}

func TestTwoOwnersNeverSeeEachOthersContainers(t *testing.T) {
	w := newWorld(t)
	alice := w.push("alice/web", webV1)
	bob := w.push("bob/web", webV1)
	w.mustReconcile(alice)
	w.mustReconcile(bob)
	// Bob's repo declaring nothing must not prune Alice's container.
	w.push("bob/web", "version: 1\n")
	res := w.mustReconcile(bob)
	if len(res.Plan.Actions) != 1 || res.Plan.Actions[0].Name != "bob_web" {
		t.Errorf("bob's plan touches others: %+v", res.Plan)
	}
	if _, _, ok := w.container("alice_web"); !ok {
		t.Error("alice's container gone")
	}
	_, as, _ := w.container("alice_web")
	if as.Mounts[0].Volume != "alice_data" || as.Network != "wm-alice" {
		t.Errorf("alice shares bob's volume or network: %+v", as)
	}
}

func TestANameTwoReposOfOneOwnerDeclareStaysWithTheFirst(t *testing.T) {
	w := newWorld(t)
	w.mustReconcile(w.push("alice/one", "version: 1\ncontainers:\n  web: {image: self}\n"))
	_, err := w.reconcile(w.push("alice/two", "version: 1\ncontainers:\n  web: {image: self}\n"))
	wantReason(t, err, Stalled, core.NameTaken)
	if !strings.Contains(err.Error(), "already used by your repo alice/one") {
		t.Errorf("message: %v", err)
	}
	if _, s, _ := w.container("alice_web"); s.Repo != "alice/one" {
		t.Errorf("first repo lost its container: %+v", s)
	}
}

func TestTheQuotaCountsAllReposOfTheOwner(t *testing.T) {
	w := newWorld(t, func(c *schema.ServerConfig) { c.Policy.Quota.GPUs = 1 })
	w.mustReconcile(w.push("alice/one", "version: 1\ncontainers:\n  a: {image: self, gpus: 1}\n"))
	w.hosts[0].ResetCalls()
	_, err := w.reconcile(w.push("alice/two", "version: 1\ncontainers:\n  b: {image: self, gpus: 1}\n"))
	wantReason(t, err, Stalled, core.QuotaExceeded)
	if !strings.Contains(err.Error(), "2 GPUs (quota 1)") || len(w.hosts[0].Mutations()) != 0 {
		t.Errorf("message %v, mutations %v", err, w.hosts[0].Mutations())
	}
	// Another owner has a quota of their own.
	w.mustReconcile(w.push("bob/two", "version: 1\ncontainers:\n  b: {image: self, gpus: 1}\n"))
}

func TestAPassThatWouldRemoveTooManyContainersHoldsTheRemovals(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", "version: 1\ncontainers:\n  a: {image: self}\n  b: {image: self}\n  c: {image: self}\n")
	w.mustReconcile(repo)
	w.push("alice/web", "version: 1\n")
	res, err := w.reconcile(repo)
	if err != nil || res.HeldRemovals != 3 {
		t.Fatalf("held %d, err %v", res.HeldRemovals, err)
	}
	for _, n := range []string{"alice_a", "alice_b", "alice_c"} {
		if _, _, ok := w.container(n); !ok {
			t.Errorf("%s removed despite the prune limit", n)
		}
	}
	st, _, _ := w.store.Repo("alice/web")
	if c := st.Condition(core.Ready); c.Status || c.Reason != "PruneHeld" || len(st.Inventory) != 3 {
		t.Errorf("state: %+v, inventory %d", c, len(st.Inventory))
	}
}

func TestAfterTheExpiryDateEverythingIsStoppedAndNothingDeleted(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1+"expires: 2026-11-30\n")
	w.mustReconcile(repo)
	w.now = time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC)
	res := w.mustReconcile(repo)
	c, _, ok := w.container("alice_web")
	if !ok || c.Running || !strings.Contains(res.Message, "expired on 2026-11-30") {
		t.Errorf("container %+v, message %q", c, res.Message)
	}
}

func TestImagesOutsideTheAllowedRegistriesAreRefused(t *testing.T) {
	w := newWorld(t)
	_, err := w.reconcile(w.push("alice/web", "version: 1\ncontainers:\n  x: {image: \"evil.example/miner:1\"}\n"))
	wantReason(t, err, Stalled, core.ImageNotAllowed)
	if !strings.Contains(err.Error(), "containers.x.image: evil.example/miner:1 is not from an allowed registry") {
		t.Errorf("message: %v", err)
	}
}

func TestALostStoreIsRebuiltFromTheLabelsAndKeepsHostPorts(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	c, _, _ := w.container("alice_web")

	// A new store, as if the state directory was lost.
	fresh, err := store.Open(filepath.Join(w.root, "state2"))
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	var engines []core.Engine
	for _, h := range w.hosts {
		engines = append(engines, h)
	}
	w.rec, _ = New(w.cfg, gitsource.New(filepath.Join(w.root, "cache")), engines, fresh)
	w.hosts[0].ResetCalls()
	res := w.mustReconcile(repo)
	if len(res.Plan.Actions) != 0 || len(w.hosts[0].Mutations()) != 0 {
		t.Errorf("a lost store caused changes: %+v", res.Plan)
	}
	if p, _ := fresh.Port(store.PortKey("alice_web", 8000)); p != c.Ports[0].Host {
		t.Errorf("port not adopted: %d, live %d", p, c.Ports[0].Host)
	}
}

func TestPlanChangesNothing(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	res, err := w.rec.Plan(context.Background(), repo)
	if err != nil || len(res.Plan.Actions) != 1 || res.Plan.Actions[0].Kind != ActionCreate || res.Plan.Actions[0].Spec.Ports[0].Host != 0 {
		t.Fatalf("plan %+v, %v", res.Plan, err)
	}
	if m := w.hosts[0].Mutations(); len(m) != 0 {
		t.Errorf("plan mutated: %v", m)
	}
	if _, ok, _ := w.store.Repo("alice/web"); ok {
		t.Error("plan wrote status")
	}
	if ports, _ := w.store.Ports(); len(ports) != 0 {
		t.Errorf("plan allocated ports: %v", ports)
	}
}

func TestErrorsAreClassified(t *testing.T) {
	for _, tc := range []struct {
		err    error
		want   Outcome
		reason core.Reason
	}{
		{stalled("X", "x"), Stalled, "X"},
		{waiting("Y", "y"), Waiting, "Y"},
		{errors.New("boom"), Transient, core.TransientError},
		{errors.Join(errors.New("ctx"), waiting("Z", "z")), Waiting, "Z"},
		{fmt.Errorf("list containers on h1: %w", fault.Wrap(fault.Unreachable, errors.New("dial unix: no such file"))), Waiting, core.BackendUnreachable},
		{fmt.Errorf("apply: %w", fault.Wrap(fault.NotReady, errors.New("quota"))), Waiting, core.NotReady},
		{fmt.Errorf("pull: %w", fault.Wrap(fault.Refused, errors.New("denied"))), Stalled, core.Refused},
		{fmt.Errorf("build: %w", fault.Wrap(fault.TooLarge, errors.New("8Gi"))), Stalled, core.TooLarge},
		{fmt.Errorf("create: %w", fault.Wrap(fault.Invalid, errors.New("spec"))), Stalled, core.Invalid},
		{fmt.Errorf("pass: %w", context.DeadlineExceeded), Transient, core.Interrupted},
		{fmt.Errorf("create: %w", fault.Wrap(fault.Conflict, errors.New("port in use"))), Transient, core.TransientError},
	} {
		if o, r := Classify(tc.err); o != tc.want || r != tc.reason {
			t.Errorf("%v: got %v %s", tc.err, o, r)
		}
	}
}

func TestRetireRemovesWhatARepoHadAndForgetsIt(t *testing.T) {
	w := newWorld(t)
	w.mustReconcile(w.push("bob/keep", "version: 1\ncontainers:\n  a: {image: self}\n  b: {image: self}\n"))
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	res, err := w.rec.Retire(context.Background(), repo)
	if err != nil || res.Plan.Count(ActionRemove) != 1 {
		t.Fatalf("retire: %+v, %v", res.Plan, err)
	}
	if _, _, ok := w.container("alice_web"); ok {
		t.Error("container left")
	}
	if _, ok, _ := w.store.Repo("alice/web"); ok {
		t.Error("state left")
	}
	if _, _, ok := w.container("bob_a"); !ok {
		t.Error("another owner's container removed")
	}
}

func TestAPinnedRevisionIsPlannedInsteadOfTheHead(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	old := w.mustReconcile(repo).Revision
	w.push("alice/web", "version: 1\n")
	repo.Revision = old
	res, err := w.rec.Plan(context.Background(), repo)
	if err != nil || res.Revision != old || len(res.Plan.Actions) != 0 || res.Usage.Containers != 1 {
		t.Errorf("plan of the pinned revision: %+v, %v", res, err)
	}
}

// recordingReporter records what a Reporter is told.
type recordingReporter struct{ events []string }

func (r *recordingReporter) PassStarted(_ context.Context, repo Repo, rev string) {
	r.events = append(r.events, "started "+repo.Key+" "+rev[:7])
}

func (r *recordingReporter) PassFinished(_ context.Context, repo Repo, res Result, err error) {
	_, reason := Classify(err)
	if err == nil {
		reason = "Ready"
	}
	r.events = append(r.events, "finished "+repo.Key+" "+res.Revision[:7]+" "+string(reason))
}

func TestTheReporterHearsOfEveryPassButNotOfUnchangedStalledOnes(t *testing.T) {
	w := newWorld(t)
	rep := &recordingReporter{}
	w.rec.reporter = rep
	repo := w.push("alice/web", webV1)
	good := w.mustReconcile(repo).Revision[:7]
	bad := w.push("alice/web", "version: 2\n")
	_, _ = w.reconcile(bad)
	_, _ = w.reconcile(bad)
	head, _ := w.rec.git.Head(context.Background(), repo.URL, "main")
	want := []string{"started alice/web " + good, "finished alice/web " + good + " Ready",
		"started alice/web " + head[:7], "finished alice/web " + head[:7] + " ValidationFailed"}
	if !slices.Equal(rep.events, want) {
		t.Errorf("got %q\nwant %q", rep.events, want)
	}
}

func TestGPUContainersGoToTheHostWithFreeGPUsAndStayThere(t *testing.T) {
	w := newWorld(t, func(c *schema.ServerConfig) {
		c.Docker.Hosts = []schema.DockerHost{{Name: "cpu", Endpoint: "unix:///cpu.sock"}, {Name: "gpu", Endpoint: "unix:///gpu.sock", GPUs: 1}}
		c.Policy.Quota.GPUs = 2
	})
	repo := w.push("alice/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n  web: {image: self}\n")
	res := w.mustReconcile(repo)
	hosts := map[string]string{}
	for _, a := range res.Plan.Actions {
		hosts[a.Name] = a.Host
	}
	if hosts["alice_train"] != "gpu" {
		t.Errorf("placement: %v", hosts)
	}
	// The only GPU is taken: a second GPU container has nowhere to go.
	_, err := w.reconcile(w.push("bob/ml", "version: 1\ncontainers:\n  train: {image: self, gpus: 1}\n"))
	wantReason(t, err, Waiting, core.NoCapacity)
	// A later pass keeps alice's containers where they are.
	res = w.mustReconcile(repo)
	if len(res.Plan.Actions) != 0 {
		t.Errorf("containers moved: %+v", res.Plan.Actions)
	}
}

func TestASharedImageIsUsedOnlyWhenItsRepoSharesIt(t *testing.T) {
	w := newWorld(t)
	tools := w.push("bob/tools", "version: 1\nimage: {description: tools, share: true}\n")
	toolsRev := w.mustReconcile(tools).Revision
	for _, h := range w.hosts {
		h.AddRemoteImage(testRegistry + "/bob/tools:" + toolsRev)
	}
	w.mustReconcile(w.push("alice/web", "version: 1\ncontainers:\n  t: {image: shared/bob/tools}\n"))
	if _, s, _ := w.container("alice_t"); s.Image != testRegistry+"/bob/tools:"+toolsRev {
		t.Errorf("shared image resolved to %q", s.Image)
	}
	w.mustReconcile(w.push("bob/tools", "version: 1\nimage: {description: tools, share: false}\n"))
	_, err := w.reconcile(w.push("carol/web", "version: 1\ncontainers:\n  t: {image: shared/bob/tools}\n"))
	wantReason(t, err, Stalled, core.ImageNotShared)
	if !strings.Contains(err.Error(), `containers.t.image: shared/bob/tools is not shared`) {
		t.Errorf("message: %v", err)
	}
}

func TestAnUnreachableHostStallsOnlyWhatLivesThere(t *testing.T) {
	w := newWorld(t, func(c *schema.ServerConfig) {
		c.Docker.Hosts = []schema.DockerHost{{Name: "h1", Endpoint: "unix:///h1.sock"}, {Name: "h2", Endpoint: "unix:///h2.sock"}}
	})
	onH1 := w.push("alice/web", "version: 1\ncontainers:\n  web: {image: self}\n")
	w.mustReconcile(onH1)
	host := ""
	for _, h := range w.hosts {
		if _, ok := h.Spec("alice_web"); ok {
			host = h.Name()
		}
	}
	down := w.hosts[0]
	if host == down.Name() {
		down = w.hosts[1]
	}
	down.FailOn("ListOwned", fault.Wrap(fault.Unreachable, errors.New("connection refused")))
	down.FailOn("ListManaged", fault.Wrap(fault.Unreachable, errors.New("connection refused")))

	t.Run("a repo whose containers live on the hosts that answer goes on", func(t *testing.T) {
		w.push("alice/web", "version: 1\ncontainers:\n  web: {image: self, env: {A: b}}\n")
		res, err := w.reconcile(onH1)
		if err != nil || res.Plan.Count(ActionRecreate) != 1 {
			t.Fatalf("%+v, %v", res.Plan, err)
		}
	})
	t.Run("a repo with nothing on Docker goes on", func(t *testing.T) {
		if _, err := w.reconcile(w.push("bob/empty", "version: 1\n")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a new container waits: it may live on the host that does not answer", func(t *testing.T) {
		_, err := w.reconcile(w.push("carol/web", "version: 1\ncontainers:\n  web: {image: self}\n"))
		wantReason(t, err, Waiting, core.HostUnreachable)
		if !strings.Contains(err.Error(), down.Name()+" cannot be reached") {
			t.Errorf("message: %v", err)
		}
	})
}

// After an engine restart, Docker can keep counting the host ports of
// containers killed while it was down: starting one fails with "port is
// already allocated" at every pass. The pass removes it (keeping its
// volume) and the next makes it anew on another host port.
func TestAContainerWhoseHostPortIsTakenWhenItStartsIsMadeAnewOnAnotherPort(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	before, _, _ := w.container("alice_web")
	if err := w.hosts[0].Alter("alice_web", func(c *core.Container) { c.Running, c.State = false, "exited" }); err != nil {
		t.Fatal(err)
	}
	w.hosts[0].FailOn("Start", docker.ErrPortInUse)
	_, err := w.reconcile(repo)
	if !errors.Is(err, docker.ErrPortInUse) || !strings.Contains(err.Error(), "made anew on other ports") {
		t.Fatalf("got %v", err)
	}
	if _, _, ok := w.container("alice_web"); ok {
		t.Fatal("the container that cannot start is still there")
	}
	w.hosts[0].FailOn("Start", nil)
	w.mustReconcile(repo)
	after, _, ok := w.container("alice_web")
	if !ok || !after.Running || len(after.Ports) != 1 || after.Ports[0].Host == before.Ports[0].Host {
		t.Errorf("made anew: %+v; want it running on another host port than %d", after, before.Ports[0].Host)
	}
	if vols, err := w.hosts[0].ListVolumes(context.Background()); err != nil || len(vols) != 1 {
		t.Errorf("volumes %v, %v: want the data volume kept", vols, err)
	}
}

func TestAPassOnAStateThatCannotBeWrittenChangesNothingAndSaysSo(t *testing.T) {
	w := newWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	// The store as a read-only disk leaves it: read, not written.
	if err := w.store.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := store.OpenReadOnly(filepath.Join(w.root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	var engines []core.Engine
	for _, h := range w.hosts {
		engines = append(engines, h)
	}
	rec := func(st *store.Store) *Reconciler {
		r, err := New(w.cfg, gitsource.New(filepath.Join(w.root, "cache")), engines, st, WithClock(func() time.Time { return w.now }))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	w.rec = rec(ro)
	w.hosts[0].ResetCalls()
	v2 := w.push("alice/web", strings.Replace(webV1, "dev", "prod", 1)+"  more: {image: self}\n")
	if _, err = w.reconcile(v2); err == nil || !strings.Contains(err.Error(), "the state cannot be written, so nothing is changed until it can be") {
		t.Fatalf("a pass on a state that cannot be written: %v", err)
	}
	if m := w.hosts[0].Mutations(); len(m) != 0 {
		t.Fatalf("it changed the engine: %+v", m)
	}
	// Writable again, the next pass applies the commit.
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(w.root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w.rec = rec(st)
	res := w.mustReconcile(v2)
	if _, s, ok := w.container("alice_web"); !ok || s.Env["MODE"] != "prod" {
		t.Errorf("the container after the state is writable again: %+v", s)
	}
	if got, _, _ := st.Repo("alice/web"); got.AppliedRevision != res.Revision {
		t.Errorf("the state records %s applied, %s runs", got.AppliedRevision, res.Revision)
	}
}
