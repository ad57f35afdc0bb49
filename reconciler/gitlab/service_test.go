package gitlab_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitlab"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/reconciler/webhook"
	"github.com/whalemountain/wm/schema"
)

const (
	token    = "glpat-test-token"
	secret   = "hook-secret"
	registry = "registry.test:5000"
)

// stack is WhaleMountain's GitLab side wired as wm serve wires it, against
// the GitLab double, with one Docker host (a fake, or the real engine).
type stack struct {
	t      *testing.T
	g      *gitlabtest.GitLab
	client *gitlab.Client
	svc    *gitlab.Service
	loop   *reconciler.Loop
	engine core.Engine
	fake   *docker.Fake // nil on the real engine
	hooks  string       // URL of POST /hooks/gitlab
	store  *store.Store
	logs   *logBuffer // what the service and the loop logged
	// stop shuts the loop and the service down and waits for both to
	// return; the test's cleanup calls it too.
	stop func()
}

// logBuffer collects log lines from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// logged waits until a log line holds every one of parts, and returns it.
func (s *stack) logged(parts ...string) string {
	s.t.Helper()
	var found string
	eventually(s.t, fmt.Sprintf("a log line with %q", parts), func() bool {
		for line := range strings.Lines(s.logs.String()) {
			if all(line, parts) {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

func all(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func newStack(t *testing.T, engine core.Engine, g *gitlabtest.GitLab, opts ...gitlab.ServiceOption) *stack {
	t.Helper()
	root := t.TempDir()
	cfg, err := schema.ParseServer("wm.yaml", strings.NewReader(fmt.Sprintf(`
registry: {host: %q}
sources:
  gitlab: {url: %q, tokenFile: token, groups: [students], discoverInterval: 1h}
docker:
  hosts: [{name: %s, endpoint: "unix:///x.sock"}]
policy: {maxPrunePercent: 100}
`, registry, g.URL(), engine.Name())), root)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fast := gl.WithCustomBackoff(func(time.Duration, time.Duration, int, *http.Response) time.Duration { return time.Millisecond })
	client, err := gitlab.New(*cfg.Sources.GitLab, token, log, fast)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := gitlab.NewService(client, *cfg.Sources.GitLab, cfg.Policy.Quota, log, opts...)
	git := reconciler.GitRouter{
		Routes:  []reconciler.GitRoute{{Prefix: g.URL() + "/", Source: gitsource.New(filepath.Join(root, "git"), gitsource.WithBasicAuth("oauth2", token), gitsource.WithTimeout(5*time.Second))}},
		Default: gitsource.New(filepath.Join(root, "plain")),
	}
	rec, err := reconciler.New(cfg, git, []core.Engine{engine}, st, reconciler.WithReporter(svc.Reporter()))
	if err != nil {
		t.Fatal(err)
	}
	loop := reconciler.NewLoop(rec, svc.Repos, time.Hour, 0, 2, log)
	svc.Connect(rec, loop)
	h, err := webhook.NewHandler(webhook.Config{Secret: []byte(secret)}, svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { loop.Run(ctx); done <- struct{}{} }()
	go func() { svc.Run(ctx); done <- struct{}{} }()
	stop := sync.OnceFunc(func() { cancel(); <-done; <-done })
	t.Cleanup(func() { stop(); srv.Close() })
	s := &stack{t: t, g: g, client: client, svc: svc, loop: loop, engine: engine, hooks: srv.URL, store: st, logs: logs, stop: stop}
	s.fake, _ = engine.(*docker.Fake)
	return s
}

// rollOut commits a first wm.yaml to p, has CI push its image, lets the
// service discover the project and waits until the commit is green.
func (s *stack) rollOut(p *gitlabtest.Project) string {
	s.t.Helper()
	first := p.Commit(s.t, "main", wmYAML("dev"), "init")
	s.ci(p.Path(), first)
	s.svc.Rediscover()
	eventually(s.t, "the first commit is green", func() bool {
		return slices.Contains(s.statuses(p.Path(), first, gitlab.StatusName), "success")
	})
	return first
}

// ci makes the image CI would push for a commit available to the engine.
func (s *stack) ci(project, sha string) {
	s.t.Helper()
	ref := fmt.Sprintf("%s/%s:%s", registry, strings.ToLower(project), sha)
	if s.fake != nil {
		s.fake.AddRemoteImage(ref)
		return
	}
	dockertest.BusyboxImage(s.t, ref)
}

func (s *stack) post(event string, body []byte, header http.Header) *http.Response {
	s.t.Helper()
	if header == nil {
		header = http.Header{"X-Gitlab-Token": {secret}}
	}
	return gitlabtest.PostHook(s.t, s.hooks+"/hooks/gitlab", event, body, header)
}

func (s *stack) container(name string) (core.Container, bool) {
	s.t.Helper()
	cs, err := s.engine.ListManaged(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name {
			return c, true
		}
	}
	return core.Container{}, false
}

func (s *stack) statuses(project, sha, name string) []string {
	var out []string
	for _, st := range s.g.Statuses(project, sha) {
		if st.Name == name {
			out = append(out, st.Status)
		}
	}
	return out
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// studentProject adds a project at students/<owner>/... whose owner holds
// the group students/<owner>, as a GitLab set up for WhaleMountain has it.
func studentProject(t *testing.T, g *gitlabtest.GitLab, path string, opts ...gitlabtest.ProjectOption) *gitlabtest.Project {
	t.Helper()
	p := g.AddProject(t, path, opts...)
	owner := strings.Split(path, "/")[1]
	g.AddMember(t, "students/"+owner, owner, gitlabtest.Owner)
	return p
}

func wmYAML(mode string) map[string]string {
	return map[string]string{
		"Dockerfile": "FROM busybox\n",
		"wm.yaml": fmt.Sprintf(`version: 1
containers:
  web:
    image: self
    command: ["sleep", "3600"]
    env: {MODE: %s}
    ports: [8000]
    memory: 32Mi
`, mode),
	}
}

func TestDiscoveryFindsStudentProjectsAcrossNestedGroups(t *testing.T) {
	g := gitlabtest.New(t, token)
	with := func(path string, opts ...gitlabtest.ProjectOption) {
		g.AddProject(t, path, opts...).Commit(t, "main", wmYAML("x"), "init")
	}
	with("students/alice/web")
	with("students/2026/bob/ml/train")
	with("students/carol/old", gitlabtest.Archived())
	with("students/toplevel")
	with("students/dave.smith/x")
	with("staff/erin/web")
	g.AddProject(t, "students/frank/nowm").Commit(t, "main", map[string]string{"README.md": "hi"}, "init")
	for i := range 30 { // more than a page
		with(fmt.Sprintf("students/many/p%02d", i))
	}
	// The path alone: owners are checked in hostile_test.go.
	cfg := schema.GitLabSource{URL: g.URL(), Groups: []string{"students"}, OwnerSegment: 1, OwnerCheck: gitlab.OwnerCheckNone}
	client, err := gitlab.New(cfg, token, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	projects, skipped, err := client.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]string{}
	for _, p := range projects {
		owners[p.Path] = p.Owner
		if p.Path == "students/2026/bob/ml/train" && p.Name != "bob/ml/train" {
			t.Errorf("name below the owner: %q", p.Name)
		}
	}
	if owners["students/alice/web"] != "alice" || owners["students/2026/bob/ml/train"] != "2026" || len(projects) != 32 {
		t.Errorf("discovered %d: %v", len(projects), owners)
	}
	for _, gone := range []string{"students/carol/old", "students/toplevel", "students/dave.smith/x", "staff/erin/web", "students/frank/nowm"} {
		if _, ok := owners[gone]; ok {
			t.Errorf("%s should not be a student repo", gone)
		}
	}
	joined := fmt.Sprint(skipped)
	for _, why := range []string{"students/toplevel has no owner", "dave.smith", "students/frank/nowm: no wm.yaml"} {
		if !strings.Contains(joined, why) {
			t.Errorf("skipped reasons lack %q:\n%s", why, joined)
		}
	}
	// ownerSegment 2 makes the segment after the year the owner.
	cfg.OwnerSegment = 2
	client, _ = gitlab.New(cfg, token, slog.New(slog.DiscardHandler))
	projects, _, _ = client.Discover(context.Background())
	for _, p := range projects {
		if p.Path == "students/2026/bob/ml/train" && p.Owner != "bob" {
			t.Errorf("owner with segment 2: %s", p.Owner)
		}
	}
	if u := g.UnimplementedRequests(); len(u) != 0 {
		t.Errorf("used endpoints the double does not implement: %v", u)
	}
}

// runPushScenario: a project of owner is rolled out, a push webhook
// arrives, and the container changes and the commit status goes green.
func runPushScenario(t *testing.T, engine core.Engine, owner string) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/"+owner+"/web")
	s := newStack(t, engine, g)
	first := s.rollOut(p)
	before, _ := s.container(core.ObjectName(owner, "web"))

	second := p.Commit(t, "main", wmYAML("prod"), "prod")
	s.ci(p.Path(), second)
	start := time.Now()
	resp := s.post("Push Hook", gitlabtest.PushHook(p, "refs/heads/main", first, second), nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("webhook answered %s", resp.Status)
	}
	eventually(t, "the pushed commit is green", func() bool {
		return slices.Contains(s.statuses(p.Path(), second, gitlab.StatusName), "success")
	})
	t.Logf("push to green: %v", time.Since(start))
	after, _ := s.container(core.ObjectName(owner, "web"))
	if after.ID == before.ID || after.Labels[docker.LabelSpecHash] == before.Labels[docker.LabelSpecHash] {
		t.Errorf("container not recreated: %s → %s", before.ID, after.ID)
	}
	if got := s.statuses(p.Path(), second, gitlab.StatusName); !slices.Equal(got, []string{"success"}) {
		// GitLab keeps one record per status that moved pending → running → success.
		t.Logf("status records: %v", got)
	}
	st := g.Statuses(p.Path(), second)
	if len(st) == 0 || !strings.HasPrefix(st[len(st)-1].Description, "ready:") {
		t.Errorf("statuses: %+v", st)
	}
}

func TestAPushWebhookRollsOutAndTheStatusGoesGreen(t *testing.T) {
	runPushScenario(t, docker.NewFake("h1"), "alice")
}

func TestAPushWebhookRollsOutOnTheRealEngine(t *testing.T) {
	// A fresh owner: the engine is shared with other tests and with people.
	runPushScenario(t, dockertest.Engine(t), dockertest.Owner(t))
}

func TestWebhooksWithoutTheSecretChangeNothing(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/alice/web")
	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	first := s.rollOut(p)
	second := p.Commit(t, "main", wmYAML("prod"), "prod")
	s.ci(p.Path(), second)
	fake.ResetCalls()
	body := gitlabtest.PushHook(p, "refs/heads/main", first, second)
	for _, tc := range []struct {
		name   string
		header http.Header
		body   []byte
		want   int
	}{
		{"a wrong token is refused", http.Header{"X-Gitlab-Token": {"guess"}}, body, http.StatusUnauthorized},
		{"a missing token is refused", http.Header{"X-Gitlab-Token": {""}}, body, http.StatusUnauthorized},
		{"an oversized body is refused", http.Header{"X-Gitlab-Token": {secret}}, append(body, make([]byte, 1<<20)...), http.StatusRequestEntityTooLarge},
	} {
		if resp := s.post("Push Hook", tc.body, tc.header); resp.StatusCode != tc.want {
			t.Errorf("%s: answered %s", tc.name, resp.Status)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if m := fake.Mutations(); len(m) != 0 || len(s.g.Statuses(p.Path(), second)) != 0 {
		t.Errorf("refused webhooks changed something: %v, %v", m, s.g.Statuses(p.Path(), second))
	}
	// A good delivery, then GitLab retrying it: one rollout, one pending.
	header := http.Header{"X-Gitlab-Token": {secret}, "Idempotency-Key": {"delivery-1"}}
	if resp := s.post("Push Hook", body, header); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("good delivery: %s", resp.Status)
	}
	if resp := s.post("Push Hook", body, header); resp.StatusCode != http.StatusOK {
		t.Errorf("replayed delivery: %s", resp.Status)
	}
	eventually(t, "the pushed commit is green", func() bool {
		return slices.Contains(s.statuses(p.Path(), second, gitlab.StatusName), "success")
	})
	creates := 0
	for _, c := range fake.Mutations() {
		if c.Method == "Create" {
			creates++
		}
	}
	if creates != 1 {
		t.Errorf("%d creations for one delivery and its replay", creates)
	}
}

func TestAMergeRequestGetsOnePlanNoteEditedInPlace(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/alice/web")
	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	s.rollOut(p)
	fake.ResetCalls()

	files := wmYAML("prod")
	files["wm.yaml"] += "  db:\n    image: self\n    ports: [5432]\n"
	head1 := p.Commit(t, "feature", files, "add a db")
	mr := g.OpenMergeRequest(t, p.Path(), "feature", "main")
	g.AddNote(t, p.Path(), mr.IID(), "teacher", "Looks good, but why prod?")
	s.post("Merge Request Hook", gitlabtest.MergeRequestHook(mr, "open"), nil)
	planNote := func() (string, int) {
		body, n := "", 0
		for _, note := range g.Notes(p.Path(), mr.IID()) {
			if strings.HasPrefix(note.Body, gitlab.PlanMarker) {
				body, n = note.Body, n+1
			}
		}
		return body, n
	}
	eventually(t, "a plan note for the first head", func() bool {
		b, _ := planNote()
		return strings.Contains(b, head1[:12])
	})
	body, _ := planNote()
	for _, want := range []string{"| ➕ | create | container | `" + core.ObjectName("alice", "db") + "`", "| 🔁 | recreate | container | `" + core.ObjectName("alice", "web") + "`", "5432 → new", "**Quota**", "2 of 5 containers"} {
		if !strings.Contains(body, want) {
			t.Errorf("plan note lacks %q:\n%s", want, body)
		}
	}
	// The status follows the note.
	eventually(t, "the plan status of the first head", func() bool {
		return slices.Contains(s.statuses(p.Path(), head1, gitlab.PlanStatusName), "success")
	})

	bad := wmYAML("prod")
	bad["wm.yaml"] += "    gpus: 99\n"
	head2 := p.Commit(t, "feature", bad, "oops")
	s.post("Merge Request Hook", gitlabtest.MergeRequestHook(mr, "update"), nil)
	eventually(t, "the plan note edited for the second head", func() bool {
		b, _ := planNote()
		return strings.Contains(b, head2[:12])
	})
	body, n := planNote()
	if n != 1 || !strings.Contains(body, "wm.yaml:9:11: containers.web.gpus: 99 is not a GPU count (0-8)") {
		t.Errorf("%d plan notes; body:\n%s", n, body)
	}
	if len(g.Notes(p.Path(), mr.IID())) != 2 {
		t.Errorf("the teacher's note was touched or a note added: %d notes", len(g.Notes(p.Path(), mr.IID())))
	}
	eventually(t, "the failed plan status of the invalid head", func() bool {
		return slices.Contains(s.statuses(p.Path(), head2, gitlab.PlanStatusName), "failed")
	})
	for _, c := range fake.Mutations() {
		t.Errorf("a merge request changed a container: %+v", c)
	}
}

func TestGitLabUnreachableDeletesNothing(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/alice/web")
	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	s.rollOut(p)
	g.SetDown(true)
	fake.ResetCalls()
	// A rediscovery that fails and a pass that cannot read the repo.
	s.post("System Hook", gitlabtest.SystemHook("project_create", p, ""), nil)
	s.loop.Trigger(strings.ToLower(p.Path()))
	eventually(t, "the pass saw GitLab down", func() bool {
		st, _, _ := s.store.Repo("students/alice/web")
		c := st.Condition(core.Ready)
		return c != nil && c.Reason == "SourceUnreachable"
	})
	if _, ok := s.container(core.ObjectName("alice", "web")); !ok || len(fake.Mutations()) != 0 {
		t.Errorf("GitLab being down changed containers: %v", fake.Mutations())
	}
}

func TestATransferRetiresTheOldOwnersContainerAndCreatesTheNewOwners(t *testing.T) {
	g := gitlabtest.New(t, token)
	g.AddGroup(t, "students/bob")
	g.AddMember(t, "students/bob", "bob", gitlabtest.Owner)
	p := studentProject(t, g, "students/alice/web")
	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	first := s.rollOut(p)

	g.Transfer(t, "students/alice/web", "students/bob")
	s.ci("students/bob/web", first)
	s.post("System Hook", gitlabtest.SystemHook("project_transfer", p, "students/alice/web"), nil)
	eventually(t, "bob's container and alice's gone", func() bool {
		_, bob := s.container(core.ObjectName("bob", "web"))
		_, alice := s.container(core.ObjectName("alice", "web"))
		return bob && !alice
	})
	if _, ok, _ := s.store.Repo("students/alice/web"); ok {
		t.Error("the old repo's state is left")
	}
}
