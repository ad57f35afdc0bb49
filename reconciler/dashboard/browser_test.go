package dashboard_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/dashboard"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/reconciler/webhook"
	"github.com/whalemountain/wm/schema"
)

// site is a wm serve's public side for the tests: the access API on the
// real Docker Engine, a fake GPU host and the test cluster's node, SIF
// downloads and the dashboard, with GitLab (the project's double) as the
// OAuth provider.
type site struct {
	url          string
	accounts     *gitlabtest.Accounts
	state        *store.Store
	alice, bob   string
	aliceWeb     string // alice's container's full name
	aliceRepo    string // her repo's key
	bobRepo      string
	heldRepo     string // bob's repo whose removals the prune limit holds
	gpuHost      string
	downloadsDir string
	cluster      *kubetest.Cluster
	podNamespace string // alice's namespace, where her pod train runs
}

// newSite starts the site: alice and bob each have a running container
// web (alice's logs a line a second), a pod train and a SIF; alice's pod
// really runs on the cluster's node (it logs a numbered line a quarter
// of a second: waitPod waits for it), bob's is only in the state; alice
// also has a GPU container train on the fake host gpu1 (device 1 of 0
// and 1); teacher is an admin through the GitLab group wm-admins.
func newSite(t *testing.T) *site {
	t.Helper()
	s := &site{alice: dockertest.Owner(t), bob: dockertest.Owner(t), gpuHost: "gpu1"}
	g := gitlabtest.New(t, "glpat-wm-service")
	s.accounts = gitlabtest.NewAccounts(t, g)
	g.AddGroup(t, "wm-admins")
	g.AddMember(t, "wm-admins", "teacher", gitlabtest.Developer)
	engine := dockertest.Engine(t)
	dockertest.BusyboxImage(t, dockertest.DefaultBusybox)
	s.cluster = kubetest.Env(t)
	set := startPod(t, s.cluster, s.alice, "students/"+s.alice+"/web")
	s.podNamespace = set.Namespace(s.alice)
	gpu := docker.NewFake(s.gpuHost)
	gpu.AddImage(dockertest.DefaultBusybox)
	var err error
	if s.state, err = store.Open(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.state.Close() })
	artifacts := t.TempDir()
	for _, owner := range []string{s.alice, s.bob} {
		key := "students/" + owner + "/web"
		spec := core.ContainerSpec{
			Name: core.ObjectName(owner, "web"), Owner: owner, Repo: key, LocalName: "web",
			Image: dockertest.DefaultBusybox, Network: "wm-" + owner, Running: true,
			Ports:   []core.PortBinding{{Guest: 8000, Host: dockertest.FreePorts(t, 1)[0]}},
			Command: []string{"sh", "-c", "echo hello; i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done"},
		}
		if _, err := engine.Create(t.Context(), spec); err != nil {
			t.Fatal(err)
		}
		// Recorded 3 hours ago with a GPU: 3 GPU-hours by now.
		err := s.state.PutRepo(core.RepoState{Key: key, Owner: owner, Branch: "main", AppliedRevision: "0123456789abcdef0123456789abcdef01234567",
			Conditions: []core.Condition{{Type: core.Ready, Status: true, Reason: "Applied", Message: "2 containers as declared"}}, LastPass: time.Now().UTC().Add(-3 * time.Hour),
			Usage: core.Usage{Containers: 2, GPUs: 1, CPUs: 1.5, MemoryBytes: 1 << 30},
			SIFs:  []core.SIFStatus{{Name: "env", SHA256: "00", Size: 4, Image: "x"}}, Pods: []core.PodStatus{{Name: "train", Phase: "Running"}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.state.AddPass(key, core.Pass{Start: time.Now().UTC(), Revision: "0123456789abcdef", Result: "Applied", Changes: 1}); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(artifacts, owner), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(artifacts, owner, "env.sif"), []byte("SIF of "+owner), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.aliceWeb, s.aliceRepo, s.bobRepo = core.ObjectName(s.alice, "web"), "students/"+s.alice+"/web", "students/"+s.bob+"/web"
	s.heldRepo = "students/" + s.bob + "/old"
	if err := s.state.PutRepo(core.RepoState{Key: s.heldRepo, Owner: s.bob, Branch: "main", LastPass: time.Now().UTC(),
		Conditions: []core.Condition{{Type: core.Ready, Status: false, Reason: core.PruneHeld, Message: "3 removal(s) held by the prune limit", LastTransitionTime: time.Now().UTC()}}}); err != nil {
		t.Fatal(err)
	}
	train := core.ContainerSpec{Name: core.ObjectName(s.alice, "train"), Owner: s.alice, Repo: s.aliceRepo, LocalName: "train",
		Image: dockertest.DefaultBusybox, Network: "wm-" + s.alice, Running: true, GPUs: 1, GPUDevices: []string{"1"}}
	if _, err := gpu.Create(t.Context(), train); err != nil {
		t.Fatal(err)
	}
	acc := access.New(access.Config{
		Auth:  access.NewGitLab(access.GitLabConfig{URL: s.accounts.URL(), ServiceToken: g.Token(), AdminGroup: "wm-admins", TTL: time.Minute}),
		Hosts: []access.Host{engine, gpu}, State: s.state, MaxSessions: 4, IdleTimeout: time.Minute, MaxCopyBytes: 1 << 20,
		Addresses: map[string]string{dockertest.HostName: "127.0.0.1"},
		Cluster:   &access.Kube{Client: s.cluster.AdminClient(t), Config: s.cluster.AdminConfig(), Settings: set, Server: s.cluster.Server(), CA: s.cluster.CAData()},
	})
	artifactsHandler := acc.Artifacts(func(a func(*http.Request, string) bool) http.Handler { return sif.NewHandler(artifacts, a) })
	hook, err := webhook.NewHandler(webhook.Config{Secret: []byte("hook-secret")}, webhook.DispatcherFunc(func(context.Context, any) {}), nil)
	if err != nil {
		t.Fatal(err)
	}
	var dash http.Handler
	mux := http.NewServeMux()
	mux.Handle("/hooks/gitlab", hook)
	mux.Handle(access.Prefix, acc.Handler())
	mux.Handle("GET /artifacts/", artifactsHandler)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { dash.ServeHTTP(w, r) }))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	app := s.accounts.AddApplication(t, srv.URL+"/auth/callback")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	d, err := dashboard.New(dashboard.Config{
		API: acc.Handler(), Artifacts: artifactsHandler, GitLabURL: s.accounts.URL(),
		ClientID: app.ID, ClientSecret: app.Secret, RedirectURL: app.RedirectURI, SessionKey: key,
		Quota:   dashboard.Quota{Containers: 4, GPUs: 2, CPUs: 4, MemoryBytes: 8 << 30},
		Hosts:   []dashboard.Host{{Name: dockertest.HostName}, {Name: s.gpuHost, GPUs: []string{"0", "1"}}},
		History: s.state.History, GPUHours: s.state.GPUHours, Deliveries: hook.Recent,
	})
	if err != nil {
		t.Fatal(err)
	}
	dash = d.Handler()
	s.downloadsDir = t.TempDir()
	return s
}

// startPod makes owner's pod train of repo with the kube backend in a
// namespace of the test's own, lets it on the node and returns the
// backend's settings; it does not wait for the pod to run (waitPod
// does). Its image is busybox with tar (copies need it) and id.
func startPod(t *testing.T, cluster *kubetest.Cluster, owner, repo string) kube.Settings {
	t.Helper()
	cluster.Node(t)
	admin := cluster.AdminClient(t)
	set := kube.Settings{
		Kubernetes: schema.Kubernetes{NamespacePrefix: cluster.Namespace(t, "wmd") + "-", GPUResource: "nvidia.com/gpu"},
		Quota:      schema.Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 2, Memory: "1Gi"},
		Defaults:   schema.Limits{CPUs: 0.1, Memory: "64Mi"},
	}
	backend := kube.New(admin, set)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	ns := set.Namespace(owner)
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := backend.EnsureOwner(ctx, owner); err != nil {
		t.Fatal(err)
	}
	cluster.AllowOnNode(t, ns)
	reg := registrytest.Start(t)
	image := reg.Ref(owner+"/web", "abc123")
	reg.Push(t, image, registrytest.BusyboxImage(t, map[string]string{"bin/tar": registrytest.SymlinkPrefix + "busybox", "bin/sleep": registrytest.SymlinkPrefix + "busybox",
		"bin/id": registrytest.SymlinkPrefix + "busybox"}))
	p := core.PodSpec{Owner: owner, Repo: repo, Name: "train", Image: image, CPUs: 0.1, MemoryBytes: 64 << 20, Restart: "Never",
		Command: []string{"sh", "-c", `i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.25; done`}}
	for {
		// A new namespace's quota refuses pods until it has a status.
		err := backend.ApplyPod(ctx, p, false)
		if err == nil {
			return set
		}
		if !errors.Is(err, kube.ErrQuotaNotReady) || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitPod waits for alice's pod to run.
func (s *site) waitPod(t *testing.T) {
	t.Helper()
	s.cluster.WaitRunning(t, s.podNamespace, "train", 2*time.Minute)
}

// podLine matches a line of alice's pod's logs.
var podLine = regexp.MustCompile(`line (\d+)\n`)

// lastPodLine is the number of the last pod line in logs, 0 without one.
func lastPodLine(logs string) int {
	m := podLine.FindAllStringSubmatch(logs, -1)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// browserContext starts one headless Chromium for a whole test.
func browserContext(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("no chromium: ci/setup installs Debian's chromium package")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1200, 900))
	alloc, cancel := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	// Every page keeps what its Content-Security-Policy refused and its
	// uncaught script errors in window.pageErrors, for the tests to see.
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.pageErrors = [];
addEventListener("securitypolicyviolation", e => pageErrors.push("refused by the CSP: " + e.violatedDirective + " " + e.blockedURI));
addEventListener("error", e => pageErrors.push("error: " + e.message + " at " + e.filename + ":" + e.lineno));`,
	}); err != nil {
		t.Fatal(err)
	}
	return ctx
}

// step bounds one browser step.
func step(t *testing.T, ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		t.Fatal(err)
	}
}

// run runs one browser action that gives a value.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// textOf is the text of the first element sel (CSS) matches.
func textOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	return run(t, ctx, chromedp.Text(chromedp.CSS(sel)))
}

// waitText waits until the text of sel holds want.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := chromedp.Run(c, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)||{textContent:""}).textContent`, sel)))
		got = v
		cancel()
		if err == nil && strings.Contains(got, want) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s never held %q; it holds %q", sel, want, got)
}

// waitRows waits until a row of the page's terminal (xterm.js's buffer,
// trailing blanks trimmed) is want, and returns the rows.
func waitRows(t *testing.T, ctx context.Context, want string) []string {
	t.Helper()
	const js = `(t => { const b = t._core.buffer, out = []; for (let i = 0; i < b.lines.length; i++) out.push(b.translateBufferLineToString(i, true)); return out; })(document.getElementById("terminal").terminal)`
	deadline := time.Now().Add(30 * time.Second)
	var rows []string
	for time.Now().Before(deadline) {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := chromedp.Run(c, chromedp.Evaluate[[]string](js))
		cancel()
		if err == nil {
			if rows = v; slices.Contains(rows, want) {
				return rows
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no row of the terminal is %q; it holds %q", want, rows)
	return nil
}

// screenshot saves the page as name.png in $WM_SCREENSHOTS, or the
// test's artifact folder.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("WM_SCREENSHOTS")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	png := run(t, ctx, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %s", filepath.Join(dir, name+".png"))
}

// downloaded waits for the browser to save a file name and returns what
// it holds.
func downloaded(t *testing.T, dir, name string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil && len(b) > 0 {
			return string(b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the browser saved no %s in %s", name, dir)
	return ""
}

// fetchStatus makes the page fetch path with init (a JavaScript object)
// and returns the status.
func fetchStatus(t *testing.T, ctx context.Context, path, init string) int {
	t.Helper()
	return run(t, ctx, chromedp.Evaluate[int](fmt.Sprintf(`fetch(%q, %s).then(r => r.status)`, path, init), chromedp.EvalAwaitPromise))
}

func TestAStudentAndAnAdminUseTheDashboardInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no browser")
	}
	s := newSite(t)
	ctx := browserContext(t)
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: s.downloadsDir}); err != nil {
		t.Fatal(err)
	}

	t.Run("a student logs in through GitLab's OAuth pages and sees her own things", func(t *testing.T) {
		s.accounts.SignIn(s.alice)
		step(t, ctx, chromedp.Navigate(s.url+"/"), chromedp.Click(chromedp.CSS("#login")), chromedp.WaitVisible(chromedp.CSS("#containers")))
		if got := textOf(t, ctx, "#account"); got != s.alice {
			t.Errorf("logged in as %q, want %s", got, s.alice)
		}
		repos := textOf(t, ctx, "#repos")
		for _, want := range []string{s.aliceRepo, "01234567", "Ready: Applied", "2 containers as declared"} {
			if !strings.Contains(repos, want) {
				t.Errorf("the repos table %q lacks %q", repos, want)
			}
		}
		if strings.Contains(textOf(t, ctx, "main"), s.bob) {
			t.Errorf("alice's page shows bob's things")
		}
		quota := textOf(t, ctx, ".quota")
		if !strings.Contains(quota, "1 of 2") || !strings.Contains(quota, "1.0 GiB of 8.0 GiB") {
			t.Errorf("quota %q: want GPUs 1 of 2 and memory 1.0 GiB of 8.0 GiB", quota)
		}
		screenshot(t, ctx, "home")
	})

	t.Run("her container is listed with a working link to its address and its page", func(t *testing.T) {
		attr := run(t, ctx, chromedp.AttributeValue(chromedp.CSS("#containers a.address"), "href"))
		href := attr.Value
		if !attr.Exists || !strings.HasPrefix(href, "http://127.0.0.1:") {
			t.Fatalf("address link %q", href)
		}
		step(t, ctx, chromedp.Click(chromedp.CSS(`#containers a[href="/containers/`+s.aliceWeb+`"]`)), chromedp.WaitVisible(chromedp.CSS("#state")))
		if got := textOf(t, ctx, "#state"); got != "running" {
			t.Errorf("state %q, want running", got)
		}
	})

	t.Run("her repo page is where commit statuses link, with its last passes", func(t *testing.T) {
		step(t, ctx, chromedp.Navigate(s.url+"/repos/"+strings.ReplaceAll(s.aliceRepo, "/", "%2F")), chromedp.WaitVisible(chromedp.CSS("#condition")))
		if got := textOf(t, ctx, "#passes"); !strings.Contains(got, "Applied") {
			t.Errorf("passes %q", got)
		}
		screenshot(t, ctx, "repo")
	})

	t.Run("she follows her container's log", func(t *testing.T) {
		step(t, ctx, chromedp.Navigate(s.url+"/containers/"+s.aliceWeb), chromedp.WaitVisible(chromedp.CSS("#follow")), chromedp.Click(chromedp.CSS("#follow")))
		waitText(t, ctx, "#logs", "hello")
		first := textOf(t, ctx, "#logs")
		n := strings.Count(first, "tick")
		waitText(t, ctx, "#logs", fmt.Sprintf("tick %d", n+2)) // lines written after the page opened the stream
		step(t, ctx, chromedp.Click(chromedp.CSS("#follow")))
	})

	t.Run("she types a command in the page's xterm.js shell and sees its output in its rows", func(t *testing.T) {
		step(t, ctx, chromedp.Click(chromedp.CSS("#open-shell")))
		waitText(t, ctx, "#shell-status", "connected")
		// xterm.js takes keys in its helper textarea and draws on
		// canvases; its buffer holds the rows it shows.
		step(t, ctx, chromedp.SendKeys(chromedp.CSS("#terminal textarea"), "echo dash-$((6*7)); stty size\n"))
		waitRows(t, ctx, "dash-42")
		// stty size, the line after, is the TTY's size: the rows
		// xterm.js fitted to its box and more columns than a terminal
		// that was never sized (80).
		size := run(t, ctx, chromedp.Evaluate[string](`(t => t.rows + " " + t.cols)(document.getElementById("terminal").terminal)`))
		var r, c int
		if _, err := fmt.Sscanf(size, "%d %d", &r, &c); err != nil || c <= 80 {
			t.Fatalf("xterm.js's size %q: want more than 80 columns", size)
		}
		rows := waitRows(t, ctx, size)
		if i := slices.Index(rows, "dash-42"); i < 0 || i+1 == len(rows) || rows[i+1] != size {
			t.Errorf("stty size after dash-42 is not the terminal's %s: %q", size, rows)
		}
		screenshot(t, ctx, "shell")
		step(t, ctx, chromedp.SendKeys(chromedp.CSS("#terminal textarea"), "exit 3\n"))
		waitText(t, ctx, "#shell-status", "exit 3")
		waitRows(t, ctx, "[the shell ended: exit 3]")
		if v := run(t, ctx, chromedp.Evaluate[[]string](`window.pageErrors`)); len(v) > 0 {
			t.Errorf("the page had errors: %q", v)
		}
	})

	t.Run("she uploads a file and downloads it back", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "notes.txt")
		if err := os.WriteFile(local, []byte("uploaded through the dashboard\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		step(t, ctx, chromedp.SetUploadFiles(chromedp.CSS("#upload-file"), []string{local}), chromedp.Click(chromedp.CSS("#upload")),
			chromedp.WaitVisible(chromedp.CSS("#done")))
		if out, code := dockertest.Exec(t, s.aliceWeb, "cat", "/tmp/notes.txt"); code != 0 || out != "uploaded through the dashboard\n" {
			t.Fatalf("in the container: %q (exit %d)", out, code)
		}
		step(t, ctx, chromedp.SetValue(chromedp.CSS("#download-path"), "/tmp/notes.txt"), chromedp.Click(chromedp.CSS("#download")))
		if got := downloaded(t, s.downloadsDir, "notes.txt"); got != "uploaded through the dashboard\n" {
			t.Errorf("downloaded %q", got)
		}
	})

	t.Run("her running pod is listed on her repo page with a link to its page", func(t *testing.T) {
		s.waitPod(t)
		step(t, ctx, chromedp.Navigate(s.url+"/repos/"+strings.ReplaceAll(s.aliceRepo, "/", "%2F")), chromedp.WaitVisible(chromedp.CSS("#pods")))
		if got := strings.Join(strings.Fields(textOf(t, ctx, "#pods tbody")), " "); !strings.Contains(got, "train Running "+s.aliceRepo) {
			t.Errorf("the pods table reads %q, want train Running in %s", got, s.aliceRepo)
		}
		step(t, ctx, chromedp.Click(chromedp.CSS(`#pods a[href="/pods/train"]`)), chromedp.WaitVisible(chromedp.CSS("#state")))
		if got := textOf(t, ctx, "h1"); got != "Pod train" {
			t.Errorf("heading %q, want Pod train", got)
		}
		if got := textOf(t, ctx, "#state"); got != "Running" {
			t.Errorf("phase %q, want Running", got)
		}
	})

	t.Run("she follows her pod's log", func(t *testing.T) {
		step(t, ctx, chromedp.Click(chromedp.CSS("#follow")))
		waitText(t, ctx, "#logs", "line ")
		n := lastPodLine(textOf(t, ctx, "#logs"))
		waitText(t, ctx, "#logs", fmt.Sprintf("line %d\n", n+4)) // a second of lines written after the page opened the stream
		step(t, ctx, chromedp.Click(chromedp.CSS("#follow")))
		waitText(t, ctx, "#logs-status", "stopped")
	})

	t.Run("she types a command in her pod's xterm.js shell and sees its output in its rows", func(t *testing.T) {
		step(t, ctx, chromedp.Click(chromedp.CSS("#open-shell")))
		waitText(t, ctx, "#shell-status", "connected")
		step(t, ctx, chromedp.SendKeys(chromedp.CSS("#terminal textarea"), "echo pod-$((6*7)) as $(id -u)\n"))
		waitRows(t, ctx, "pod-42 as 1000") // the pod's user, not the container's root
		screenshot(t, ctx, "pod-shell")
		step(t, ctx, chromedp.SendKeys(chromedp.CSS("#terminal textarea"), "exit 4\n"))
		waitText(t, ctx, "#shell-status", "exit 4")
		waitRows(t, ctx, "[the shell ended: exit 4]")
		if v := run(t, ctx, chromedp.Evaluate[[]string](`window.pageErrors`)); len(v) > 0 {
			t.Errorf("the page had errors: %q", v)
		}
	})

	t.Run("she uploads a file to her pod and downloads it back", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "pod-notes.txt")
		if err := os.WriteFile(local, []byte("uploaded to the pod\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		step(t, ctx, chromedp.SetUploadFiles(chromedp.CSS("#upload-file"), []string{local}), chromedp.Click(chromedp.CSS("#upload")),
			chromedp.WaitVisible(chromedp.CSS("#done")))
		if got := textOf(t, ctx, "h1"); got != "Pod train" {
			t.Errorf("after the upload the page is %q, want Pod train's", got)
		}
		step(t, ctx, chromedp.SetValue(chromedp.CSS("#download-path"), "/tmp/pod-notes.txt"), chromedp.Click(chromedp.CSS("#download")))
		if got := downloaded(t, s.downloadsDir, "pod-notes.txt"); got != "uploaded to the pod\n" {
			t.Errorf("downloaded %q", got)
		}
		// Through the pod's copies, not a container's (she has a
		// container train too). The API audits a copy out once its
		// stream ends, a moment after the browser has the file.
		for _, action := range []string{"pod-cp-in", "pod-cp-out"} {
			deadline := time.Now().Add(10 * time.Second)
			for {
				entries, err := s.state.Audit(time.Time{}, 0)
				if err != nil {
					t.Fatal(err)
				}
				if slices.ContainsFunc(entries, func(e store.AuditEntry) bool {
					return e.Who == s.alice && e.Action == action && e.Result == "ok"
				}) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the audit has no %s by %s: the file did not go through her pod", action, s.alice)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	})

	t.Run("she downloads her SIF", func(t *testing.T) {
		step(t, ctx, chromedp.Navigate(s.url+"/"), chromedp.Click(chromedp.CSS("#sifs a")))
		if got := downloaded(t, s.downloadsDir, "env.sif"); got != "SIF of "+s.alice {
			t.Errorf("downloaded %q", got)
		}
	})

	refused := []struct{ name, path string }{
		{"another student's repo page", "/repos/" + s.bobRepo},
		{"another student's container page", "/containers/" + core.ObjectName(s.bob, "web")},
		{"another student's pod page", "/pods/" + core.ObjectName(s.bob, "train")},
		{"the log stream of another student's pod", "/pods/" + core.ObjectName(s.bob, "train") + "/logs"},
		{"a download from another student's pod", "/pods/" + core.ObjectName(s.bob, "train") + "/download?path=/tmp"},
		{"another student's SIF", "/sifs/" + s.bob + "/env.sif"},
		{"the admin pages", "/admin"},
	}
	for _, c := range refused {
		t.Run(c.name+" is refused with 403", func(t *testing.T) {
			if got := fetchStatus(t, ctx, c.path, "{}"); got != http.StatusForbidden {
				t.Errorf("fetch %s: %d, want 403", c.path, got)
			}
		})
	}
	t.Run("the refusal is a page that says so", func(t *testing.T) {
		step(t, ctx, chromedp.Navigate(s.url+"/repos/"+s.bobRepo), chromedp.WaitVisible(chromedp.CSS("#message")))
		if got := textOf(t, ctx, "h1"); got != "403 Forbidden" {
			t.Errorf("heading %q", got)
		}
		screenshot(t, ctx, "refused")
	})

	forms := []struct{ name, body string }{
		{"a form without its CSRF token", "x=1"},
		{"a form with another token", "csrf=not-the-token"},
	}
	for _, c := range forms {
		t.Run(c.name+" is refused with 403 and restarts nothing", func(t *testing.T) {
			init := fmt.Sprintf(`{method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"}, body: %q}`, c.body)
			if got := fetchStatus(t, ctx, "/containers/"+s.aliceWeb+"/restart", init); got != http.StatusForbidden {
				t.Errorf("status %d, want 403", got)
			}
		})
	}
	t.Run("no restart reached the API from those forms", func(t *testing.T) {
		entries, err := s.state.Audit(time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Action == "restart" {
				t.Errorf("audit: %+v", e)
			}
		}
	})

	t.Run("an admin logs in and sees which GPU serves whom", func(t *testing.T) {
		step(t, ctx, chromedp.Navigate(s.url+"/"), chromedp.Click(chromedp.CSS(`header button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS("#login")))
		s.accounts.SignIn("teacher")
		step(t, ctx, chromedp.Click(chromedp.CSS("#login")), chromedp.WaitVisible(chromedp.CSS("#account")),
			chromedp.Click(chromedp.CSS(`a[href="/admin"]`)), chromedp.WaitVisible(chromedp.CSS("#students")))
		gpus := strings.Join(strings.Fields(textOf(t, ctx, `table.gpumap[data-host="gpu1"]`)), "")
		if !strings.Contains(gpus, "0free") || !strings.Contains(gpus, "1"+core.ObjectName(s.alice, "train")+s.alice) {
			t.Errorf("GPU map %q: want device 0 free and device 1 serving alice's train", gpus)
		}
		students := textOf(t, ctx, "#students")
		for _, who := range []string{s.alice, s.bob} {
			if !strings.Contains(students, who) {
				t.Errorf("students %q lack %s", students, who)
			}
		}
		if audit := textOf(t, ctx, "#audit"); !strings.Contains(audit, "cp-in") {
			t.Errorf("the audit log does not show alice's upload: %q", audit)
		}
		screenshot(t, ctx, "admin")
	})

	t.Run("the admin sees each student's GPU-hours charted in SVG, with a title and the figures as a table", func(t *testing.T) {
		label := run(t, ctx, chromedp.Evaluate[[]string](`(c => [c.getAttribute("role"), c.querySelector("title").textContent, c.querySelector("desc").textContent])(document.querySelector("#gpuhours-chart"))`))
		if label[0] != "img" || label[1] != "GPU-hours per student per day" || !strings.Contains(label[2], "The table below has every figure") {
			t.Errorf("the chart's role, title and description: %q", label)
		}
		lines := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#gpuhours-chart polyline.line")].map(l => l.dataset.name)`))
		slices.Sort(lines)
		if want := []string{s.alice, s.bob}; !slices.Equal(lines, slices.Sorted(slices.Values(want))) {
			t.Errorf("chart lines %q, want one for each of %q", lines, want)
		}
		// Each held a GPU for the last 3 hours: the table's totals.
		totals := run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#gpuhours tfoot td")].map(d => d.textContent)`))
		if len(totals) != 2 || totals[0] != "3.0" || totals[1] != "3.0" {
			t.Errorf("GPU-hours totals %q, want 3.0 each", totals)
		}
	})

	t.Run("the admin sees the held prune and the webhook's last deliveries with their outcome", func(t *testing.T) {
		if held := textOf(t, ctx, "#held"); !strings.Contains(held, s.heldRepo) || !strings.Contains(held, "3 removal(s) held") {
			t.Errorf("held prunes %q lack %s", held, s.heldRepo)
		}
		req, _ := http.NewRequest(http.MethodPost, s.url+"/hooks/gitlab", strings.NewReader("{}"))
		req.Header.Set("X-Gitlab-Event", "Push Hook")
		req.Header.Set("X-Gitlab-Token", "not-the-secret")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		step(t, ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("#deliveries")))
		if got := strings.Join(strings.Fields(textOf(t, ctx, "#deliveries tbody tr")), " "); !strings.Contains(got, "push unauthorized 401") {
			t.Errorf("the last delivery reads %q, want a push refused as unauthorized (401)", got)
		}
		if v := run(t, ctx, chromedp.Evaluate[[]string](`window.pageErrors`)); len(v) > 0 {
			t.Errorf("the page had errors: %q", v)
		}
		screenshot(t, ctx, "admin-charts")
	})
}
