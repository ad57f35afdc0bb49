package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/schema"
)

type dtoFamily = dto.MetricFamily

// scrape reads the admin listener's /metrics as families by name.
func scrape(t *testing.T, s *runningServe) (map[string]*dtoFamily, []byte) {
	t.Helper()
	code, body := getStatus(t, s.admin, "http://wm/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %.300s", code, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families, []byte(body)
}

// value is the value of the series of family name whose labels include
// want, summed over the others; ok is false when there is none.
func value(families map[string]*dtoFamily, name string, want map[string]string) (v float64, ok bool) {
	f := families[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := true
		for k, w := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == w {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		ok = true
		switch {
		case m.GetGauge() != nil:
			v += m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			v += m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v, ok
}

func TestAfterARealPassTheMetricsShowEachStepAndWhatTheOwnerHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local Docker Engine")
	}
	dockertest.Client(t)
	owner := dockertest.Owner(t)
	const registry = "wm-observe.test:5000"
	from := dockertest.FreePorts(t, 1)[0]
	// With a webhook secret, the webhook's metrics are registered too.
	secret := writeFile(t, t.TempDir(), "webhook-secret", "0123456789abcdef0123456789abcdef\n")
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, fmt.Sprintf(`poll: {interval: 1s}
registry: {host: %q}
policy: {hostPorts: {from: %d, to: %d}}
docker:
  hosts: [{name: local, endpoint: %q}]
webhook: {secretFile: %q}
`, registry, from, from+20, dockertest.Endpoint(), secret))

	// The commit and its image exist before the repo shows up in the
	// folder source, as when CI built it before the poll.
	made := filepath.Join(t.TempDir(), "web")
	repo := gittest.NewRepo(t, made)
	sha := repo.Commit(t, "main", map[string]string{"wm.yaml": `version: 1
containers:
  web: {image: self, command: ["httpd", "-f", "-p", "8000"], ports: [8000], memory: 32Mi}
  tool: {image: self, command: ["sleep", "3600"], state: stopped, memory: 32Mi}
`}, "start")
	dockertest.BusyboxImage(t, fmt.Sprintf("%s/%s/web:%s", registry, owner, sha))
	if err := os.MkdirAll(filepath.Join(s.dir, "repos", owner), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(made, filepath.Join(s.dir, "repos", owner, "web")); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(90 * time.Second)
	for {
		families, _ := scrape(t, s)
		n, _ := value(families, "wm_owner_resources", map[string]string{"owner": owner, "host": "local", "kind": "container"})
		ready, _ := value(families, "wm_passes_total", map[string]string{"outcome": "Ready", "reason": "Applied"})
		if n == 2 && ready >= 1 {
			break
		}
		if time.Now().After(deadline) {
			_, body := scrape(t, s)
			t.Fatalf("no Ready pass with 2 containers of %s after 90s:\n%s", owner, grep(body, "wm_"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	families, body := scrape(t, s)
	for _, step := range []string{"fetch source", "parse wm.yaml", "list containers", "resolve", "check quota", "plan", "check images", "pull images", "apply containers", "check health"} {
		if n, ok := value(families, "wm_pass_step_duration_seconds", map[string]string{"step": step}); !ok || n < 1 {
			t.Errorf("step %q: %v observations (series %v)", step, n, ok)
		}
	}
	for _, m := range families["wm_pass_step_duration_seconds"].GetMetric() {
		if h := m.GetHistogram(); h.GetSampleCount() > 0 && h.GetSampleSum() <= 0 {
			t.Errorf("%v: %d observations summing to %v", m.GetLabel(), h.GetSampleCount(), h.GetSampleSum())
		}
	}
	if _, ok := value(families, "wm_owner_gpus", map[string]string{"owner": owner}); ok {
		t.Errorf("%s holds GPUs:\n%s", owner, grep(body, "wm_owner_gpus"))
	}
	if _, ok := value(families, "wm_owner_resources", map[string]string{"owner": owner, "kind": "sif"}); ok {
		t.Errorf("%s holds SIFs:\n%s", owner, grep(body, "wm_owner_resources"))
	}
	for _, name := range []string{"wm_queue_depth", "wm_passes_in_flight", "wm_webhook_requests_total", "wm_webhook_duration_seconds",
		"wm_http_rate_limited_total", "go_goroutines", "process_resident_memory_bytes"} {
		if _, ok := families[name]; !ok {
			t.Errorf("no %s", name)
		}
	}

	// Everything wm serve registers follows Prometheus's conventions.
	problems, err := promlint.New(bytes.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// The probes on the public listener, reasons withheld.
	if code, body := getStatus(t, http.DefaultClient, s.public+"/readyz?verbose"); code != http.StatusOK ||
		body != "[+]store ok\n[+]docker/local ok\nreadyz check passed\n" {
		t.Errorf("public /readyz?verbose: %d\n%s", code, body)
	}
	if code, body := getStatus(t, http.DefaultClient, s.public+"/livez"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("public /livez: %d %q", code, body)
	}
}

// grep keeps the lines of body that contain sub.
func grep(body []byte, sub string) string {
	var out []string
	for _, l := range strings.Split(string(body), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// thirdEngine is a throwaway Docker Engine of this test's own, which it
// may stop and start again: ci/docker2-up's recipe (the machine's dockerd
// and containerd binaries run again, with their own containerd, state
// dir, sockets, bridge, address pool and TLS port, see ci/docker2-up) in
// /tmp/wm-docker3, beside the machine's engine and the second engine the
// other tests share, neither of which it touches. ci/docker2-down stops
// it by the pids it recorded and deletes its bridges only.
type thirdEngine struct {
	t        *testing.T
	endpoint string
}

// thirdEnv points ci/docker2-up and ci/docker2-down at the third engine.
var thirdEnv = []string{
	"WM_DOCKER2_DIR=/tmp/wm-docker3", "WM_DOCKER2_BRIDGE=wm-br3", "WM_DOCKER2_BRIDGE_CIDR=10.232.0.1/24",
	"WM_DOCKER2_POOL=10.233.0.0/16", "WM_DOCKER2_TLS_PORT=23769",
}

// startThird starts the third engine, stopped and its state dir removed
// when t ends.
func startThird(t *testing.T) *thirdEngine {
	t.Helper()
	e := &thirdEngine{t: t}
	t.Cleanup(func() { e.script("docker2-down", "--purge") })
	e.up()
	return e
}

// up starts the engine (again) and learns its socket from the env file
// ci/docker2-up prints.
func (e *thirdEngine) up() {
	e.t.Helper()
	out := e.script("docker2-up")
	words := strings.Fields(out)
	if len(words) == 0 {
		e.t.Fatal("ci/docker2-up printed no env file")
	}
	f, err := os.Open(words[len(words)-1])
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export DOCKER_HOST="); ok {
			e.endpoint = strings.Trim(v, `'"`)
		}
	}
	if !strings.HasPrefix(e.endpoint, "unix:///tmp/wm-docker3/") {
		e.t.Fatalf("the third engine's DOCKER_HOST is %q", e.endpoint)
	}
}

// down stops the engine, keeping its state dir.
func (e *thirdEngine) down() { e.t.Helper(); e.script("docker2-down") }

// script runs ci/<name> on the third engine, in its own process group
// (the daemons it starts have sessions of their own and live on), and
// returns its stdout; it fails the test when the script fails.
func (e *thirdEngine) script(name string, args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join("..", "..", "ci", name)}, args...)...)
	cmd.Env = append(os.Environ(), thirdEnv...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	if err := cmd.Run(); err != nil {
		e.t.Fatalf("ci/%s (third engine): %v\n%s", name, err, stderr.String())
	}
	e.t.Logf("ci/%s (third engine): %s", name, time.Since(start).Round(time.Millisecond))
	return stdout.String()
}

// waitProbe asks url until it answers code with a body containing each
// of want, failing t after a minute: a check's result lives readyEvery,
// and a run takes readyTimeout at most.
func waitProbe(t *testing.T, c *http.Client, url string, code int, want ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got, body := getStatus(t, c, url)
		ok := got == code
		for _, w := range want {
			ok = ok && strings.Contains(body, w)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d\n%s\nwant %d with %q", url, got, body, code, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestReadyzTurnsUnreadyWhenADockerEngineStopsAndReadyWhenItComesBack(t *testing.T) {
	if testing.Short() {
		t.Skip("starts, stops and starts a Docker Engine of its own")
	}
	third := startThird(t)
	s := startServe(t, fmt.Sprintf("docker:\n  hosts:\n    - {name: local, endpoint: %q}\n    - {name: third, endpoint: %q}\n",
		dockertest.Endpoint(), third.endpoint))
	ready := s.public + "/readyz?verbose"
	waitProbe(t, http.DefaultClient, ready, http.StatusOK, "[+]store ok\n[+]docker/local ok\n[+]docker/third ok\nreadyz check passed\n")

	third.down()
	waitProbe(t, http.DefaultClient, ready, http.StatusServiceUnavailable,
		"[+]store ok\n[+]docker/local ok\n[-]docker/third failed: reason withheld\nreadyz check failed\n")
	// The admin listener says why; the public one says which only.
	waitProbe(t, s.admin, "http://wm/readyz/docker/third", http.StatusServiceUnavailable, "[-]docker/third failed: ping docker host third: ")
	waitProbe(t, http.DefaultClient, s.public+"/readyz?exclude=docker/third", http.StatusOK, "ok\n")
	// A Docker host that is down is no reason to restart wm.
	waitProbe(t, http.DefaultClient, s.public+"/livez", http.StatusOK, "ok\n")

	third.up()
	waitProbe(t, http.DefaultClient, ready, http.StatusOK, "[+]docker/third ok\nreadyz check passed\n")
}

func TestTheLogIsWrittenAsTheConfigSays(t *testing.T) {
	for _, tc := range []struct {
		name    string
		log     schema.Log
		verbose bool
		want    []string // the level of each line written, in order
		json    bool
	}{
		{"the default is text from info", schema.Log{}, false, []string{"INFO", "WARN", "ERROR"}, false},
		{"json from warn writes JSON objects from warn", schema.Log{Format: "json", Level: "warn"}, false, []string{"WARN", "ERROR"}, true},
		{"-v writes debug whatever the level", schema.Log{Format: "json", Level: "error"}, true, []string{"DEBUG", "INFO", "WARN", "ERROR"}, true},
		{"text from debug", schema.Log{Format: "text", Level: "debug"}, false, []string{"DEBUG", "INFO", "WARN", "ERROR"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := configLogger(&buf, tc.log, tc.verbose)
			log.Debug("d")
			log.Info("i", "repo", "alice/web")
			log.Warn("w")
			log.Error("e")
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(tc.want), buf.String())
			}
			for i, line := range lines {
				var obj map[string]any
				isJSON := json.Unmarshal([]byte(line), &obj) == nil
				switch {
				case isJSON != tc.json:
					t.Errorf("line %q: JSON %v, want %v", line, isJSON, tc.json)
				case tc.json && obj["level"] != tc.want[i]:
					t.Errorf("line %q: level %v, want %s", line, obj["level"], tc.want[i])
				case !tc.json && !strings.Contains(line, "level="+tc.want[i]+" "):
					t.Errorf("line %q: want level %s", line, tc.want[i])
				}
			}
		})
	}
}

func TestTheGitLabCheckTakesTheServiceTokenToGitLab(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer int
		want   string // "" when the check passes
	}{
		{"GitLab that answers with the version passes", http.StatusOK, ""},
		{"a token GitLab refuses fails", http.StatusUnauthorized, "GitLab refuses the token of sources.gitlab.tokenFile: 401 Unauthorized"},
		{"GitLab that fails on its side fails", http.StatusBadGateway, "GitLab answered 502 Bad Gateway to GET /api/v4/version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gl := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v4/version" || r.Header.Get("Authorization") != "Bearer glpat-service" {
					http.Error(w, "not the version with the token", http.StatusTeapot)
					return
				}
				w.WriteHeader(tc.answer)
				fmt.Fprintln(w, `{"version":"17.0.0"}`)
			}))
			defer gl.Close()
			err := gitlabCheck(gl.URL, "glpat-service")(t.Context())
			if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || err.Error() != tc.want)) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
	gl := httptest.NewServer(http.NotFoundHandler())
	url := gl.URL
	gl.Close()
	if err := gitlabCheck(url, "glpat-service")(t.Context()); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("a GitLab that is down: %v", err)
	}
}

func TestTheKubernetesCheckAsksTheApiserver(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the test control plane (ci/kube-up)")
	}
	run, err := kubeCheck(kubetest.Env(t).Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), readyTimeout)
	defer cancel()
	if err := run(ctx); err != nil {
		t.Errorf("the test control plane is not ready: %v", err)
	}
	// An apiserver that does not answer.
	closed := httptest.NewServer(http.NotFoundHandler())
	addr := closed.URL
	closed.Close()
	kc := writeFile(t, t.TempDir(), "kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, addr))
	run, err = kubeCheck(kc)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context()); err == nil || !strings.Contains(err.Error(), "ask the Kubernetes apiserver's /readyz") {
		t.Errorf("an apiserver that is down: %v", err)
	}
}
