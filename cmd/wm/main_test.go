package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/schema"
)

// wm runs the command in-process and returns its exit code and output.
func wm(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidateExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good/wm.yaml", "version: 1\ncontainers:\n  web: {image: self, ports: [8000]}\n")
	bad := writeFile(t, dir, "bad/wm.yaml", "version: 1\ncontainers:\n  web:\n    image: self\n    ports: [8000, 70000]\n    memory: 1GB\n")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		out      string // every line must appear in stdout
		errMatch string // must appear in stderr
	}{
		{"the examples are valid", []string{"validate", "../../examples"}, 0,
			"../../examples/web-app/wm.yaml: ok", ""},
		{"a valid file prints ok", []string{"validate", good}, 0, good + ": ok", ""},
		{"an invalid file prints every error, one a line", []string{"validate", bad}, 1,
			bad + ":5:19: containers.web.ports[1]: 70000 is not a port (1-65535)\n" +
				bad + `:6:13: containers.web.memory: "1GB" is not a memory size: use a number and a unit such as 512Mi, 2Gi or 1G`, ""},
		{"a folder is searched for wm.yaml files, in lexical order", []string{"validate", dir}, 1,
			bad + ":6:13: containers.web.memory: \"1GB\" is not a memory size: use a number and a unit such as 512Mi, 2Gi or 1G\n" + good + ": ok\n", ""},
		{"a missing file is an invalid input", []string{"validate", filepath.Join(dir, "nope.yaml")}, 1,
			filepath.Join(dir, "nope.yaml") + ": no such file or folder", ""},
		{"an unknown flag is a usage error", []string{"validate", "--frmat", "json"}, 2, "", "unknown flag: --frmat"},
		{"an unknown format is a usage error", []string{"validate", "--format", "xml", good}, 2, "", `--format must be text or json, not "xml"`},
		{"an unknown command is a usage error", []string{"valdate"}, 2, "", `unknown command "valdate"`},
		{"the example server config is valid", []string{"validate", "--server", "../../examples/server/wm-server.yaml"}, 0,
			"../../examples/server/wm-server.yaml: ok", ""},
		{"a bad server config is invalid", []string{"validate", "--server", writeFile(t, dir, "s.yaml", "listen: nowhere\n")}, 1,
			`s.yaml:1:9: listen: "nowhere" is not host:port, such as 127.0.0.1:8080`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := wm(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.out) {
				t.Errorf("stdout lacks %q:\n%s", tc.out, out)
			}
			if !strings.Contains(errOut, tc.errMatch) {
				t.Errorf("stderr lacks %q:\n%s", tc.errMatch, errOut)
			}
		})
	}
}

func TestValidateWithoutArgumentsChecksWmYamlInTheCurrentFolder(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "wm.yaml", "version: 1\n")
	t.Chdir(dir)
	if code, out, _ := wm(t, "validate"); code != 0 || out != "wm.yaml: ok\n" {
		t.Errorf("exit %d, output %q", code, out)
	}
}

func TestValidateJSONListsErrorsWithPositions(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "wm.yaml", "version: 1\nextra: 1\n")
	code, out, _ := wm(t, "validate", "--format", "json", bad)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	var got struct {
		Valid bool `json:"valid"`
		Files []struct {
			File   string `json:"file"`
			Valid  bool   `json:"valid"`
			Errors []struct {
				Line, Column  int
				Path, Message string
			} `json:"errors"`
		} `json:"files"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if got.Valid || len(got.Files) != 1 || got.Files[0].File != bad || len(got.Files[0].Errors) != 1 {
		t.Fatalf("unexpected: %+v", got)
	}
	e := got.Files[0].Errors[0]
	if e.Line != 2 || e.Column != 1 || e.Path != "extra" || !strings.HasPrefix(e.Message, "unknown field") {
		t.Errorf("error: %+v", e)
	}
}

func TestSchemaCommandPrintsTheJSONSchema(t *testing.T) {
	code, out, _ := wm(t, "schema")
	var s map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || s["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("exit %d, output %.200s", code, out)
	}
}

func TestShellCompletionIsGenerated(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, _ := wm(t, "completion", shell)
		if code != 0 || !strings.Contains(out, "wm") || len(out) < 500 {
			t.Errorf("%s: exit %d, %d bytes", shell, code, len(out))
		}
	}
}

func TestTheStudentKubeconfigReachesTheirNamespaceWithTLSVerified(t *testing.T) {
	cluster := kubetest.Env(t)
	student := cluster.Students()[0]
	dir := t.TempDir()
	cfg := writeFile(t, dir, "wm.yaml", "kubernetes: {kubeconfig: "+cluster.Kubeconfig()+", namespacePrefix: wmk-}\n")
	token := writeFile(t, dir, "token", "token-"+student+"\n")
	code, out, errOut := wm(t, "kubeconfig", "--owner", student, "--config", cfg, "--token-file", token)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(out, "insecure-skip-tls-verify") || !strings.Contains(out, "certificate-authority-data") || !strings.Contains(out, "namespace: wmk-"+student) {
		t.Fatalf("kubeconfig:\n%s", out)
	}
	kc := writeFile(t, dir, "student.kubeconfig", out)
	rc, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	// The student is who the cluster sees: a namespace without their
	// RoleBinding answers 403, not 401.
	_, err = client.CoreV1().Pods("wmk-"+student).List(context.Background(), metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `User "`+student+`"`) {
		t.Errorf("as the student: %v", err)
	}
	if code, _, _ := wm(t, "kubeconfig", "--owner", "Not_An_Account", "--config", cfg); code != exitUsage {
		t.Errorf("a bad owner: exit %d", code)
	}
}

func TestSIFBuildWritesASIFThatSiftoolAccepts(t *testing.T) {
	reg := registrytest.Start(t)
	img := registrytest.BusyboxImage(t, map[string]string{"/opt/tool/README": "hello"}, map[string]string{"/opt/tool/README": "<whiteout>", "/opt/tool/run": "#!/bin/sh\necho run\n"})
	ref := reg.Ref("alice/tool", "v1")
	reg.Push(t, ref, img)
	out := filepath.Join(t.TempDir(), "tool.sif")
	code, stdout, stderr := wm(t, "sif", "build", ref, "-o", out, "--insecure", reg.Host(), "-q")
	if code != 0 || !strings.Contains(stdout, "built") {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	list, err := exec.Command("siftool", "list", out).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "Squashfs") {
		t.Errorf("siftool list: %v\n%s", err, list)
	}
	if _, err := os.Stat(out + ".sha256"); err != nil {
		t.Error(err)
	}
	if code, stdout, _ := wm(t, "sif", "build", ref, "-o", out, "--insecure", reg.Host(), "-q"); code != 0 || !strings.Contains(stdout, "up to date") {
		t.Errorf("rebuild: exit %d: %s", code, stdout)
	}
	if code, _, _ := wm(t, "sif", "verify", out); code != 0 {
		t.Errorf("verify: exit %d", code)
	}
}

func TestArtifactTokensLetTheOwnerAndAdminsIn(t *testing.T) {
	path := writeFile(t, t.TempDir(), "tokens", "# who may download\nalice-token-0123456789 alice\nadmin-token-0123456789 *\n")
	tok, err := readTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	req := func(token string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "/artifacts/alice/env.sif", nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		return r
	}
	for _, tc := range []struct {
		name, token, owner string
		want               bool
	}{
		{"the owner gets their own", "alice-token-0123456789", "alice", true},
		{"the owner does not get another's", "alice-token-0123456789", "bob", false},
		{"an admin gets anyone's", "admin-token-0123456789", "bob", true},
		{"no token gets nothing", "", "alice", false},
		{"a wrong token gets nothing", "alice-token-0123456788", "alice", false},
	} {
		if got := tok.authorize(req(tc.token), tc.owner); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
	if _, err := readTokens(writeFile(t, t.TempDir(), "bad", "short alice\n")); err == nil {
		t.Error("a short token was accepted")
	}
}

func TestStatusListsContainersWithTheirGPUsPodsAndSIFs(t *testing.T) {
	cfg := &schema.ServerConfig{Kubernetes: &schema.Kubernetes{NamespacePrefix: "wm-"},
		Docker: schema.Docker{Hosts: []schema.DockerHost{{Name: "blade1", Endpoint: "tcp://blade1.example.edu:2376"}}}}
	r := core.RepoState{Owner: "alice",
		Containers: []core.ContainerStatus{{Name: "web", Host: "blade1", Health: "Healthy", Ports: map[string]int{"8000": 49152}},
			{Name: "train", Host: "blade1", Health: "Healthy", GPUs: []string{"2", "3"}}},
		Pods: []core.PodStatus{{Name: "train", Phase: "Pending"}},
		SIFs: []core.SIFStatus{{Name: "env"}}}
	got := workloads(cfg, r)
	want := [][3]string{
		{"web", "Healthy", "blade1.example.edu:49152→8000"},
		{"train", "Healthy", "GPU 2,3 on blade1"},
		{"pod train", "Pending", "namespace wm-alice"},
		{"sif env", "Built", "/artifacts/alice/env.sif"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q", got)
	}
}
