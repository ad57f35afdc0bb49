package access_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/reconciler/store"
)

// clock is a settable time for the identity cache.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a wm serve's access API on the real Docker Engine, with GitLab
// (the project's double) vouching for two students' tokens and an admin's.
type env struct {
	url          string
	gitlab       *gitlabtest.GitLab
	accounts     *gitlabtest.Accounts
	engine       *docker.Engine
	state        *store.Store
	clock        *clock
	artifacts    string
	alice, bob   string // accounts (and owners)
	aliceToken   string
	bobToken     string
	adminToken   string
	srv          *access.Server
	aliceWebName string
}

// identityTTL is the tests' cache lifetime.
const identityTTL = time.Minute

// newEnv starts the API; alice has a running container web (which logged
// "hello"), bob has one too; the admin is in the GitLab group wm-admins.
func newEnv(t *testing.T, tweak ...func(*access.Config)) *env {
	t.Helper()
	e := &env{alice: dockertest.Owner(t), bob: dockertest.Owner(t), clock: &clock{now: time.Now()}}
	e.gitlab = gitlabtest.New(t, "glpat-wm-service")
	accounts := gitlabtest.NewAccounts(t, e.gitlab)
	e.accounts = accounts
	e.gitlab.AddGroup(t, "wm-admins")
	e.gitlab.AddMember(t, "wm-admins", "teacher", gitlabtest.Developer)
	e.aliceToken, e.bobToken, e.adminToken = accounts.Token(t, e.alice), accounts.Token(t, e.bob), accounts.Token(t, "teacher")
	e.engine = dockertest.Engine(t)
	dockertest.BusyboxImage(t, dockertest.DefaultBusybox)
	for _, owner := range []string{e.alice, e.bob} {
		s := core.ContainerSpec{
			Name: core.ObjectName(owner, "web"), Owner: owner, Repo: owner + "/web", LocalName: "web",
			Image: dockertest.DefaultBusybox, Network: "wm-" + owner, Running: true,
			Ports:   []core.PortBinding{{Guest: 8000, Host: dockertest.FreePorts(t, 1)[0]}},
			Command: []string{"sh", "-c", "echo hello; exec sleep 3600"},
		}
		if _, err := e.engine.Create(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	e.aliceWebName = core.ObjectName(e.alice, "web")
	var err error
	if e.state, err = store.Open(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.state.Close() })
	e.artifacts = t.TempDir()
	for _, owner := range []string{e.alice, e.bob} {
		err := e.state.PutRepo(core.RepoState{Key: owner + "/web", Owner: owner, Branch: "main", AppliedRevision: "abc123",
			Conditions: []core.Condition{{Type: core.Ready, Status: true, Reason: "Applied"}}, LastPass: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
			SIFs: []core.SIFStatus{{Name: "env", SHA256: "00", Size: 4, Image: "x"}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(e.artifacts, owner), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.artifacts, owner, "env.sif"), []byte("SIF!"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	auth := access.Chain{
		access.NewTokens(map[string]string{"file-admin-token-0123456789": "*"}),
		access.NewGitLab(access.GitLabConfig{URL: accounts.URL(), ServiceToken: e.gitlab.Token(), AdminGroup: "wm-admins", TTL: identityTTL, Now: e.clock.Now}),
	}
	cfg := access.Config{Auth: auth, Hosts: []access.Host{e.engine}, State: e.state, Addresses: map[string]string{dockertest.HostName: "blade1.example.edu"},
		MaxSessions: 2, IdleTimeout: time.Minute, MaxCopyBytes: 1 << 20}
	for _, f := range tweak {
		f(&cfg)
	}
	e.srv = access.New(cfg)
	mux := http.NewServeMux()
	mux.Handle(access.Prefix, e.srv.Handler())
	mux.Handle("GET /artifacts/", e.srv.Artifacts(func(a func(*http.Request, string) bool) http.Handler { return sif.NewHandler(e.artifacts, a) }))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	e.url = hs.URL
	return e
}

// client is the API client with token.
func (e *env) client(token string) *access.Client {
	return &access.Client{BaseURL: e.url, Token: token}
}

// ctx bounds one step of a test.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// wantStatus checks err is an API answer of status.
func wantStatus(t *testing.T, err error, status int) {
	t.Helper()
	if got := access.StatusOf(err); got != status {
		t.Errorf("error %v (status %d), want status %d", err, got, status)
	}
}

// tarOf is a tar archive of files (name → content).
func tarOf(t *testing.T, files map[string]string) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(content))
	}
	_ = tw.Close()
	return &buf
}

// untar reads the regular files of an archive.
func untar(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			out[h.Name] = string(b)
		}
	}
}

func TestAStudentUsesTheirOwnContainer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.client(e.aliceToken)
	t.Run("who they are comes from GitLab", func(t *testing.T) {
		id, err := alice.WhoAmI(ctx(t))
		if err != nil || id.Account != e.alice || id.Admin || id.Via != "gitlab" {
			t.Errorf("whoami = %+v, %v; want %s, not admin, via gitlab", id, err, e.alice)
		}
	})
	t.Run("they list their own containers with the address to reach them, and no one else's", func(t *testing.T) {
		list, err := alice.Containers(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Name != e.aliceWebName || list[0].State != "running" || !strings.HasPrefix(list[0].Addresses["8000"], "blade1.example.edu:") {
			t.Errorf("containers = %+v, want alice's web only, running, at blade1.example.edu", list)
		}
		if len(list) == 1 && (list[0].Reason != "Applied" || list[0].LastPass.IsZero()) {
			t.Errorf("container %+v: want its repo's reason Applied and its last pass", list[0])
		}
		repos, err := alice.Repos(ctx(t))
		if err != nil || len(repos) != 1 || repos[0].Owner != e.alice || repos[0].AppliedRevision != "abc123" {
			t.Errorf("repos = %+v, %v", repos, err)
		}
		sifs, err := alice.SIFs(ctx(t))
		if err != nil || len(sifs) != 1 || sifs[0].URL != "/artifacts/"+e.alice+"/env.sif" {
			t.Errorf("sifs = %+v, %v", sifs, err)
		}
	})
	t.Run("they read its logs by its wm.yaml name", func(t *testing.T) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			rc, err := alice.Logs(ctx(t), "web", access.LogsRequest{Tail: 10})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(rc)
			rc.Close()
			if string(b) == "hello\n" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("logs = %q, want hello", b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("they exec a command and get its output and exit code back", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code, err := alice.Exec(ctx(t), "web", access.ExecRequest{
			Cmd: []string{"sh", "-c", "read line; echo got $line; echo oops >&2; exit 7"}, Stdin: strings.NewReader("ping\n"), Stdout: &out, Stderr: &errOut,
		})
		if err != nil || code != 7 || out.String() != "got ping\n" || errOut.String() != "oops\n" {
			t.Errorf("exec = %d, %v, stdout %q, stderr %q; want 7, got ping, oops", code, err, out.String(), errOut.String())
		}
	})
	t.Run("they run an interactive shell on a terminal and resize it", func(t *testing.T) {
		pr, pw := io.Pipe()
		resize := make(chan access.Resize, 1)
		var out syncBuffer
		done := make(chan struct{})
		var code int
		var err error
		go func() {
			defer close(done)
			code, err = alice.Exec(ctx(t), e.aliceWebName, access.ExecRequest{Cmd: []string{"sh"}, TTY: true, Rows: 24, Cols: 80, Stdin: pr, Stdout: &out, Resize: resize})
		}()
		// The shell is interactive: it answers each line as it comes, on
		// a terminal of the size asked for.
		_, _ = io.WriteString(pw, "stty size\n")
		waitFor(t, func() bool { return strings.Contains(out.String(), "24 80") })
		// A resize and the keys typed travel side by side, so ask again
		// until the new size shows.
		resize <- access.Resize{Rows: 40, Cols: 100}
		asked := time.Time{}
		waitFor(t, func() bool {
			if time.Since(asked) > 200*time.Millisecond {
				asked = time.Now()
				_, _ = io.WriteString(pw, "stty size\n")
			}
			return strings.Contains(out.String(), "40 100")
		})
		_, _ = io.WriteString(pw, "exit 5\n")
		<-done
		if err != nil || code != 5 {
			t.Errorf("interactive shell = %d, %v; want 5 (output %q)", code, err, out.String())
		}
	})
	t.Run("they copy a file in and back out", func(t *testing.T) {
		if err := alice.CopyTo(ctx(t), "web", "/tmp", tarOf(t, map[string]string{"notes.txt": "my notes"})); err != nil {
			t.Fatal(err)
		}
		rc, err := alice.CopyFrom(ctx(t), "web", "/tmp/notes.txt")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if files := untar(t, rc); files["notes.txt"] != "my notes" {
			t.Errorf("copied out %v", files)
		}
	})
	t.Run("they download their own SIF", func(t *testing.T) {
		resp, err := alice.Download(ctx(t), "/artifacts/"+e.alice+"/env.sif", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "SIF!" {
			t.Errorf("downloaded %q", b)
		}
	})
	t.Run("they restart it", func(t *testing.T) {
		before, _ := e.engine.Inspect(ctx(t), e.aliceWebName)
		if err := alice.Restart(ctx(t), "web"); err != nil {
			t.Fatal(err)
		}
		after, _ := e.engine.Inspect(ctx(t), e.aliceWebName)
		if !after.Running || !after.StartedAt.After(before.StartedAt) {
			t.Errorf("after restart: running %v, started %v (before %v)", after.Running, after.StartedAt, before.StartedAt)
		}
	})
	t.Run("every access is in the audit log", func(t *testing.T) {
		entries, err := e.state.Audit(time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, a := range entries {
			if a.Who == e.alice && a.Status/100 <= 2 {
				seen[a.Action] = true
			}
		}
		for _, action := range []string{"whoami", "list-containers", "logs", "exec", "cp-in", "cp-out", "restart", "sif-download"} {
			if !seen[action] {
				t.Errorf("no audit entry of alice's %s in %+v", action, entries)
			}
		}
	})
}

func TestAnotherStudentIsRefusedEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bob := e.client(e.bobToken)
	name := e.aliceWebName
	cases := []struct {
		name string
		call func() error
	}{
		{"logs", func() error { _, err := bob.Logs(ctx(t), name, access.LogsRequest{}); return err }},
		{"followed logs", func() error { _, err := bob.Logs(ctx(t), name, access.LogsRequest{Follow: true}); return err }},
		{"exec", func() error {
			_, err := bob.Exec(ctx(t), name, access.ExecRequest{Cmd: []string{"id"}})
			return err
		}},
		{"copy out", func() error { _, err := bob.CopyFrom(ctx(t), name, "/etc/passwd"); return err }},
		{"copy in", func() error { return bob.CopyTo(ctx(t), name, "/tmp", tarOf(t, map[string]string{"x": "y"})) }},
		{"restart", func() error { return bob.Restart(ctx(t), name) }},
		{"a container that does not exist, under alice's name", func() error {
			_, err := bob.Logs(ctx(t), core.ObjectName(e.alice, "nothing"), access.LogsRequest{})
			return err
		}},
		{"alice's SIF", func() error {
			_, err := bob.Download(ctx(t), "/artifacts/"+e.alice+"/env.sif", nil)
			return err
		}},
		{"alice's container list", func() error {
			_, err := bob.Do(ctx(t), http.MethodGet, access.Prefix+"containers", map[string][]string{"owner": {e.alice}}, nil)
			return err
		}},
		{"the audit log", func() error { _, err := bob.Do(ctx(t), http.MethodGet, access.Prefix+"audit", nil, nil); return err }},
		{"everyone's repos", func() error {
			_, err := bob.Do(ctx(t), http.MethodGet, access.Prefix+"repos", map[string][]string{"owner": {"*"}}, nil)
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name+" is 403", func(t *testing.T) { wantStatus(t, c.call(), http.StatusForbidden) })
	}
	t.Run("nothing of alice's was touched", func(t *testing.T) {
		entries, _ := e.state.Audit(time.Time{}, 0)
		for _, a := range entries {
			if a.Who == e.bob && a.Status != http.StatusForbidden {
				t.Errorf("bob's %s was answered %d", a.Action, a.Status)
			}
		}
	})
}

func TestAnAdminOfTheGitLabGroupReachesEveryone(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	admin := e.client(e.adminToken)
	id, err := admin.WhoAmI(ctx(t))
	if err != nil || !id.Admin || id.Account != "teacher" {
		t.Fatalf("whoami = %+v, %v; want the admin teacher", id, err)
	}
	var out bytes.Buffer
	if code, err := admin.Exec(ctx(t), e.aliceWebName, access.ExecRequest{Cmd: []string{"echo", "hi"}, Stdout: &out}); err != nil || code != 0 || out.String() != "hi\n" {
		t.Errorf("admin exec = %d, %v, %q", code, err, out.String())
	}
	if _, err := admin.Download(ctx(t), "/artifacts/"+e.bob+"/env.sif", nil); err != nil {
		t.Errorf("admin download: %v", err)
	}
	resp, err := admin.Do(ctx(t), http.MethodGet, access.Prefix+"repos", map[string][]string{"owner": {"*"}}, nil)
	if err != nil {
		t.Fatalf("an admin lists everyone's repos: %v", err)
	}
	var repos []access.Repo
	_ = json.NewDecoder(resp.Body).Decode(&repos)
	resp.Body.Close()
	if len(repos) != 2 {
		t.Errorf("an admin's ?owner=* listed %d repos, want alice's and bob's", len(repos))
	}
	fileAdmin := e.client("file-admin-token-0123456789")
	if _, err := fileAdmin.Do(ctx(t), http.MethodGet, access.Prefix+"audit", nil, nil); err != nil {
		t.Errorf("the tokens file's admin reads the audit log: %v", err)
	}
}

func TestTokensAreCheckedWithGitLab(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.client(e.aliceToken)
	cases := []struct {
		name   string
		client *access.Client
		want   int
	}{
		{"a token GitLab does not know is 401", e.client("glpat-not-a-token"), http.StatusUnauthorized},
		{"no token is 401", e.client(""), http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.client.Containers(ctx(t))
			wantStatus(t, err, c.want)
		})
	}
	t.Run("a revoked token is believed until its identity expires, then 401", func(t *testing.T) {
		carol := e.client(e.accounts.Token(t, "carol"))
		if _, err := carol.WhoAmI(ctx(t)); err != nil {
			t.Fatal(err)
		}
		e.accounts.Revoke(carol.Token)
		if _, err := carol.WhoAmI(ctx(t)); err != nil {
			t.Errorf("within the TTL: %v", err)
		}
		e.clock.Add(identityTTL + time.Second)
		_, err := carol.WhoAmI(ctx(t))
		wantStatus(t, err, http.StatusUnauthorized)
	})
	t.Run("an identity is believed while GitLab is down, until it expires, then 503", func(t *testing.T) {
		if _, err := alice.WhoAmI(ctx(t)); err != nil {
			t.Fatal(err)
		}
		e.gitlab.SetDown(true)
		defer e.gitlab.SetDown(false)
		var out bytes.Buffer
		if code, err := alice.Exec(ctx(t), "web", access.ExecRequest{Cmd: []string{"echo", "still here"}, Stdout: &out}); err != nil || code != 0 {
			t.Errorf("exec while GitLab is down, within the TTL: %d, %v", code, err)
		}
		_, err := e.client(e.bobToken).WhoAmI(ctx(t))
		wantStatus(t, err, http.StatusServiceUnavailable)
		e.clock.Add(identityTTL + time.Second)
		_, err = alice.WhoAmI(ctx(t))
		wantStatus(t, err, http.StatusServiceUnavailable)
		if err == nil || !strings.Contains(err.Error(), "GitLab cannot be reached") {
			t.Errorf("the 503 says %v, want it to say GitLab cannot be reached", err)
		}
		e.gitlab.SetDown(false)
		if _, err := alice.WhoAmI(ctx(t)); err != nil {
			t.Errorf("once GitLab is back: %v", err)
		}
	})
}

func TestAnExecSessionEndsWhenTheContainerStops(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.client(e.aliceToken)
	pr, pw := io.Pipe()
	defer pw.Close()
	var out syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := alice.Exec(ctx(t), "web", access.ExecRequest{Cmd: []string{"sh"}, TTY: true, Stdin: pr, Stdout: &out})
		done <- err
	}()
	_, _ = io.WriteString(pw, "echo ready\n")
	waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
	if err := e.engine.Stop(ctx(t), e.aliceWebName, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-ctx(t).Done():
		t.Fatal("the exec session outlived the container")
	}
	_, err := alice.Exec(ctx(t), "web", access.ExecRequest{Cmd: []string{"true"}})
	wantStatus(t, err, http.StatusConflict)
	// A stopped container is not started behind wm.yaml's back.
	wantStatus(t, alice.Restart(ctx(t), "web"), http.StatusConflict)
	if c, _ := e.engine.Inspect(ctx(t), e.aliceWebName); c.Running {
		t.Error("a restart refused started the container")
	}
}

// syncBuffer is a buffer written and read by different goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond until it holds, failing t after 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
