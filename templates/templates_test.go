// Package templates_test checks what students include and copy: the GitLab
// CI template parses and has the jobs and rules it promises, its build
// script really builds and pushes with buildah to a registry on loopback,
// and the starter repo is valid.
package templates_test

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/schema"
)

type rule struct {
	If        string            `json:"if"`
	Exists    []string          `json:"exists"`
	Variables map[string]string `json:"variables"`
}

type job struct {
	Stage  string   `json:"stage"`
	Script []string `json:"script"`
	Rules  []rule   `json:"rules"`
}

func loadTemplate(t *testing.T) map[string]job {
	t.Helper()
	data, err := os.ReadFile("gitlab-ci/student.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		t.Fatalf("the template is not valid YAML: %v", err)
	}
	jobs := map[string]job{}
	for name, v := range doc {
		if name == "variables" || name == "workflow" {
			continue
		}
		raw, _ := yaml.Marshal(v)
		var j job
		if err := yaml.Unmarshal(raw, &j); err != nil {
			t.Fatalf("job %s: %v", name, err)
		}
		jobs[name] = j
	}
	return jobs
}

func TestTheTemplateHasAValidateAndABuildJobWithTheirRules(t *testing.T) {
	jobs := loadTemplate(t)
	if len(jobs) != 2 {
		t.Fatalf("jobs: %v", jobs)
	}
	v, b := jobs["wm:validate"], jobs["wm:build"]
	if !slices.Contains(v.Script, "wm validate wm.yaml") || len(v.Rules) != 1 || !slices.Equal(v.Rules[0].Exists, []string{"wm.yaml"}) {
		t.Errorf("wm:validate: %+v", v)
	}
	latest := map[string]string{}
	for _, r := range b.Rules {
		if !slices.Equal(r.Exists, []string{"Dockerfile"}) {
			t.Errorf("a build rule runs without a Dockerfile: %+v", r)
		}
		latest[r.If] = r.Variables["WM_PUSH_LATEST"]
	}
	if latest[`$CI_PIPELINE_SOURCE == "merge_request_event"`] != "false" {
		t.Errorf("merge request pipelines may push latest: %v", latest)
	}
	if latest[`$CI_COMMIT_BRANCH && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH`] != "true" {
		t.Errorf("the default branch does not push latest: %v", latest)
	}
	if b.Stage != "build" || v.Stage != ".pre" {
		t.Errorf("stages: validate %q, build %q", v.Stage, b.Stage)
	}
}

// TestTheBuildScriptBuildsAndPushesWithBuildah runs the build job's script
// as GitLab would, with buildah, against Debian's docker-registry.
func TestTheBuildScriptBuildsAndPushesWithBuildah(t *testing.T) {
	if _, err := exec.LookPath("buildah"); err != nil {
		t.Fatal("buildah is missing: run ci/setup")
	}
	reg := registrytest.Start(t)
	script := strings.Join(loadTemplate(t)["wm:build"].Script, "\n")
	dir := t.TempDir()
	storage := filepath.Join(dir, "storage.conf")
	conf := "[storage]\ndriver = \"vfs\"\ngraphroot = \"" + filepath.Join(dir, "graph") + "\"\nrunroot = \"" + filepath.Join(dir, "run") + "\"\n"
	if err := os.WriteFile(storage, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(dir, "repo")
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(repo, 0o755))
	must(os.WriteFile(filepath.Join(repo, "busybox"), bb, 0o755))
	must(os.WriteFile(filepath.Join(repo, "Dockerfile"), []byte("FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sleep\", \"3600\"]\n"), 0o644))

	for _, tc := range []struct {
		name, sha, pushLatest string
		wantLatest            bool
	}{
		{"a merge request pipeline pushes the commit's tag and not latest", "1111111111111111111111111111111111111111", "false", false},
		{"a default branch pipeline pushes the commit's tag and latest", "2222222222222222222222222222222222222222", "true", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("bash", "-c", script)
			cmd.Dir = repo
			cmd.Env = append(os.Environ(),
				"CONTAINERS_STORAGE_CONF="+storage, "STORAGE_DRIVER=vfs", "BUILDAH_ISOLATION=chroot", "BUILDAH_FORMAT=docker",
				"CI_REGISTRY="+reg.Host(), "CI_REGISTRY_IMAGE="+reg.Host()+"/students/alice/web", "CI_COMMIT_SHA="+tc.sha,
				"WM_DOCKERFILE=Dockerfile", "WM_CONTEXT=.", "WM_BUILD_ARGS=", "WM_CACHE=true", "WM_TLS_VERIFY=false",
				"WM_PUSH_LATEST="+tc.pushLatest)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("build script failed: %v\n%s", err, out)
			}
			img := reg.Pull(t, reg.Ref("students/alice/web", tc.sha))
			cfg, err := img.ConfigFile()
			if err != nil || !slices.Equal(cfg.Config.Cmd, []string{"/bin/busybox", "sleep", "3600"}) {
				t.Errorf("pushed image config: %+v, %v", cfg, err)
			}
			resp, err := http.Get("http://" + reg.Host() + "/v2/students/alice/web/tags/list")
			if err != nil {
				t.Fatal(err)
			}
			latest, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := strings.Contains(string(latest), `"latest"`); got != tc.wantLatest {
				t.Errorf("latest pushed: %v, want %v (tags %s)", got, tc.wantLatest, latest)
			}
		})
	}
}

func TestTheStarterRepoIsValidAndIncludesTheTemplate(t *testing.T) {
	f, err := os.Open("student-repo/wm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := schema.Parse("student-repo/wm.yaml", f); err != nil {
		t.Errorf("starter wm.yaml: %v", err)
	}
	// The modeline names the path wm serve serves the schema at.
	head, _ := os.ReadFile("student-repo/wm.yaml")
	first, _, _ := strings.Cut(string(head), "\n")
	if !strings.HasPrefix(first, "# yaml-language-server: $schema=https://") || !strings.HasSuffix(first, "/schema/v1/wm.schema.json") {
		t.Errorf("starter modeline: %q", first)
	}
	ci, err := os.ReadFile("student-repo/.gitlab-ci.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Include []struct{ Project, File string } `json:"include"`
	}
	if err := yaml.UnmarshalStrict(ci, &doc); err != nil || len(doc.Include) != 1 || doc.Include[0].File != "templates/gitlab-ci/student.yml" {
		t.Errorf("starter .gitlab-ci.yml: %+v, %v", doc, err)
	}
	for _, f := range []string{"Dockerfile", "README.md"} {
		if _, err := os.Stat(filepath.Join("student-repo", f)); err != nil {
			t.Error(err)
		}
	}
}
