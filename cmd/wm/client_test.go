package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// cli runs wm with args and stdin and returns its output and exit code.
func cli(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(t.Context())
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.code
	default:
		errb.WriteString(err.Error())
		code = exitUsage
	}
	return out.String(), errb.String(), code
}

// studentServer is the access API on the real Docker Engine with GitLab
// (the double) vouching for alice's and bob's tokens; each has a running
// container web and a SIF env.
func studentServer(t *testing.T) (url, alice, aliceToken, bobToken string) {
	t.Helper()
	alice, bob := dockertest.Owner(t), dockertest.Owner(t)
	g := gitlabtest.New(t, "glpat-wm-service")
	accounts := gitlabtest.NewAccounts(t, g)
	aliceToken, bobToken = accounts.Token(t, alice), accounts.Token(t, bob)
	e := dockertest.Engine(t)
	dockertest.BusyboxImage(t, dockertest.DefaultBusybox)
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	artifacts := t.TempDir()
	for _, owner := range []string{alice, bob} {
		_, err := e.Create(t.Context(), core.ContainerSpec{
			Name: core.ObjectName(owner, "web"), Owner: owner, Repo: owner + "/web", LocalName: "web",
			Image: dockertest.DefaultBusybox, Network: "wm-" + owner, Running: true,
			Ports:   []core.PortBinding{{Guest: 8000, Host: dockertest.FreePorts(t, 1)[0]}},
			Command: []string{"sh", "-c", "echo hello from " + owner + "; exec sleep 3600"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutRepo(core.RepoState{Key: owner + "/web", Owner: owner, SIFs: []core.SIFStatus{{Name: "env", Size: 4}}}); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(artifacts, owner), "env.sif", "SIF!")
	}
	srv := access.New(access.Config{
		Auth:  access.NewGitLab(access.GitLabConfig{URL: accounts.URL(), ServiceToken: g.Token(), TTL: 60e9}),
		Hosts: []access.Host{e}, State: st,
	})
	mux := http.NewServeMux()
	mux.Handle(access.Prefix, srv.Handler())
	mux.Handle("GET /artifacts/", srv.Artifacts(func(a func(*http.Request, string) bool) http.Handler { return sif.NewHandler(artifacts, a) }))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs.URL, alice, aliceToken, bobToken
}

func TestClientANewStudentUsesTheirContainerWithTheCLIOnly(t *testing.T) {
	url, alice, aliceToken, bobToken := studentServer(t)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	t.Setenv("WM_SERVER", "")
	t.Setenv("WM_TOKEN", "")
	work := t.TempDir()

	t.Run("before login, every command says to log in", func(t *testing.T) {
		_, errOut, code := cli(t, "", "ps")
		if code != exitInvalid || !strings.Contains(errOut, "wm login") {
			t.Errorf("ps before login: %d, %q", code, errOut)
		}
	})
	t.Run("a bad token is refused at login and nothing is kept", func(t *testing.T) {
		_, errOut, code := cli(t, "glpat-wrong\n", "login", url)
		if code != exitInvalid || !strings.Contains(errOut, "401") {
			t.Errorf("login with a bad token: %d, %q", code, errOut)
		}
		if p, _ := credentialsPath(); fileExists(p) {
			t.Errorf("credentials kept after a refused login")
		}
	})
	t.Run("login keeps the server and token readable by the user only", func(t *testing.T) {
		out, errOut, code := cli(t, aliceToken+"\n", "login", url)
		if code != 0 || !strings.Contains(out, "as "+alice) {
			t.Fatalf("login: %d, %q, %q", code, out, errOut)
		}
		p, _ := credentialsPath()
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("credentials %s: %v, mode %v; want 0600", p, err, fi.Mode().Perm())
		}
	})
	t.Run("ps lists their container", func(t *testing.T) {
		out, errOut, code := cli(t, "", "ps")
		if code != 0 || !strings.Contains(out, "web") || !strings.Contains(out, "running") || !strings.Contains(out, "->8000") {
			t.Errorf("ps: %d, %q, %q", code, out, errOut)
		}
	})
	t.Run("logs prints its output", func(t *testing.T) {
		out, errOut, code := cli(t, "", "logs", "web", "--tail", "5")
		if code != 0 || out != "hello from "+alice+"\n" {
			t.Errorf("logs: %d, %q, %q", code, out, errOut)
		}
	})
	t.Run("exec passes stdin and the exit code", func(t *testing.T) {
		out, _, code := cli(t, "ping\n", "exec", "-i", "web", "--", "sh", "-c", "cat; exit 3")
		if code != 3 || out != "ping\n" {
			t.Errorf("exec: %d, %q; want 3 and ping", code, out)
		}
	})
	t.Run("cp copies a folder in and back out", func(t *testing.T) {
		writeFile(t, filepath.Join(work, "data"), "notes.txt", "my notes")
		if _, errOut, code := cli(t, "", "cp", filepath.Join(work, "data"), "web:/tmp"); code != 0 {
			t.Fatalf("cp in: %d, %q", code, errOut)
		}
		// As docker cp: into a folder that exists...
		back := filepath.Join(work, "back")
		if err := os.Mkdir(back, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, errOut, code := cli(t, "", "cp", "web:/tmp/data", back); code != 0 {
			t.Fatalf("cp out: %d, %q", code, errOut)
		}
		if b, err := os.ReadFile(filepath.Join(back, "data", "notes.txt")); err != nil || string(b) != "my notes" {
			t.Errorf("copied back: %q, %v", b, err)
		}
		// ...and named as a path that does not exist yet.
		renamed := filepath.Join(work, "renamed.txt")
		if _, errOut, code := cli(t, "", "cp", "web:/tmp/data/notes.txt", renamed); code != 0 {
			t.Fatalf("cp out: %d, %q", code, errOut)
		}
		if b, err := os.ReadFile(renamed); err != nil || string(b) != "my notes" {
			t.Errorf("copied out as renamed.txt: %q, %v", b, err)
		}
	})
	t.Run("restart restarts it", func(t *testing.T) {
		if out, errOut, code := cli(t, "", "restart", "web"); code != 0 || out != "web\n" {
			t.Errorf("restart: %d, %q, %q", code, out, errOut)
		}
	})
	t.Run("sif get downloads their SIF", func(t *testing.T) {
		dst := filepath.Join(work, "env.sif")
		if _, errOut, code := cli(t, "", "sif", "get", "env", "-o", dst); code != 0 {
			t.Fatalf("sif get: %d, %q", code, errOut)
		}
		if b, _ := os.ReadFile(dst); string(b) != "SIF!" {
			t.Errorf("downloaded %q", b)
		}
	})
	t.Run("another student is refused every one of them", func(t *testing.T) {
		t.Setenv("WM_TOKEN", bobToken)
		full := core.ObjectName(alice, "web")
		for _, args := range [][]string{
			{"logs", full}, {"exec", full, "--", "id"}, {"cp", full + ":/etc/passwd", work}, {"cp", work, full + ":/tmp"}, {"restart", full},
		} {
			_, errOut, code := cli(t, "", args...)
			if code != exitInvalid || !strings.Contains(errOut, "403") {
				t.Errorf("bob's %v: %d, %q; want 403", args, code, errOut)
			}
		}
		if out, _, _ := cli(t, "", "ps"); strings.Contains(out, alice) {
			t.Errorf("bob's ps shows alice's: %q", out)
		}
	})
}

func TestClientServeServesTheAccessAPIWithTheTokensFile(t *testing.T) {
	tokens := writeFile(t, t.TempDir(), "tokens", "alice-token-0123456789 alice\n")
	s := startServe(t, "artifacts: {tokensFile: "+tokens+"}\n")
	for _, c := range []struct {
		token string
		want  int
	}{{"alice-token-0123456789", http.StatusOK}, {"", http.StatusUnauthorized}, {"bob-token-0123456789x", http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodGet, s.public+access.Prefix+"whoami", nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("whoami with %q: %d %s, want %d", c.token, resp.StatusCode, body, c.want)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestClientKubeconfigGivesAStudentAWorkingCredentialForTheirNamespace(t *testing.T) {
	cluster := kubetest.Env(t)
	admin := cluster.AdminClient(t)
	prefix := cluster.Namespace(t, "wmc") + "-"
	set := kube.Settings{Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
		Quota: schema.Quota{Pods: 5, CPUs: 8, Memory: "32Gi"}, Defaults: schema.Limits{CPUs: 1, Memory: "2Gi"}}
	ns := set.Namespace("alice")
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := kube.New(admin, set).EnsureOwner(t.Context(), "alice"); err != nil {
		t.Fatal(err)
	}
	srv := access.New(access.Config{
		Auth:    access.NewTokens(map[string]string{"alice-token-0123456789": "alice"}),
		Cluster: &access.Kube{Client: admin, Settings: set, Server: cluster.Server(), CA: cluster.CAData()},
	})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("WM_SERVER", hs.URL)
	t.Setenv("WM_TOKEN", "alice-token-0123456789")
	out, errOut, code := cli(t, "", "kubeconfig")
	if code != 0 {
		t.Fatalf("wm kubeconfig: %d, %s", code, errOut)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the credential does not list alice's pods: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := c.CoreV1().Pods("kube-system").List(t.Context(), metav1.ListOptions{}); err == nil {
		t.Error("the credential lists pods in kube-system")
	}
}

func TestClientServeChecksStudentsTokensWithGitLabAndItsAdminGroup(t *testing.T) {
	g := gitlabtest.New(t, "glpat-wm-service")
	accounts := gitlabtest.NewAccounts(t, g)
	g.AddGroup(t, "students")
	g.AddGroup(t, "wm-admins")
	g.AddMember(t, "wm-admins", "teacher", gitlabtest.Maintainer)
	aliceToken, teacherToken := accounts.Token(t, "alice"), accounts.Token(t, "teacher")
	dir, err := os.MkdirTemp("", "wm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	tokenFile := writeFile(t, dir, "gitlab-token", g.Token()+"\n")
	if err := os.Chmod(tokenFile, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	config := writeFile(t, dir, "wm-server.yaml", "stateDir: wm-state\nlisten: "+addr+"\n"+
		"sources: {gitlab: {url: "+accounts.URL()+", tokenFile: gitlab-token, groups: [students]}}\n"+
		"access: {gitlabAdminGroup: wm-admins, identityTTL: 10s}\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var errb syncBuffer
	go func() {
		defer close(done)
		root := newRootCmd()
		root.SetArgs([]string{"serve", "--config", config})
		root.SetOut(io.Discard)
		root.SetErr(&errb)
		_ = root.ExecuteContext(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("wm serve exited:\n%s", errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("wm serve does not answer:\n%s", errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cases := []struct {
		name      string
		token     string
		wantAdmin bool
		wantErr   int
	}{
		{"a student's GitLab token is the student", aliceToken, false, 0},
		{"a member of the admin group is an admin", teacherToken, true, 0},
		{"a token GitLab does not know is 401", "glpat-nobody", false, http.StatusUnauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := (&access.Client{BaseURL: base, Token: c.token}).WhoAmI(t.Context())
			if c.wantErr != 0 {
				if got := access.StatusOf(err); got != c.wantErr {
					t.Errorf("error %v, want %d", err, c.wantErr)
				}
				return
			}
			if err != nil || id.Admin != c.wantAdmin || id.Via != "gitlab" {
				t.Errorf("whoami = %+v, %v; want admin %v via gitlab", id, err, c.wantAdmin)
			}
		})
	}
	if !strings.Contains(errb.String(), "msg=access who=alice") {
		t.Errorf("no audit line for alice in the log:\n%s", errb.String())
	}
}
