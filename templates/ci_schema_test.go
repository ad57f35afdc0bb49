package templates_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// gitlabCISchema compiles testdata/gitlab-ci.schema.json, GitLab CI's
// keywords as GitLab's CI/CD YAML reference documents them.
func gitlabCISchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open("testdata/gitlab-ci.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("gitlab-ci.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("gitlab-ci.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ciVerdict converts a CI file to JSON as GitLab reads it and validates it.
func ciVerdict(s *jsonschema.Schema, data []byte) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

func TestEveryCIFileFollowsGitLabsDocumentedSchema(t *testing.T) {
	s := gitlabCISchema(t)
	for _, path := range []string{"gitlab-ci/student.yml", "student-repo/.gitlab-ci.yml", "../.gitlab-ci.yml"} {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := ciVerdict(s, data); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}

func TestTheCISchemaRefusesWhatGitLabRefuses(t *testing.T) {
	s := gitlabCISchema(t)
	for _, tc := range []struct{ name, yaml string }{
		{"a misspelt job keyword", "job:\n  scripts: [true]\n"},
		{"a job without a script", "job:\n  stage: build\n"},
		{"a workflow rule that is manual", "workflow:\n  rules:\n    - when: manual\n"},
		{"an unknown workflow key", "workflow:\n  rule: []\n"},
		{"an unknown rules key", "job:\n  script: [true]\n  rules:\n    - iff: $CI_COMMIT_BRANCH\n"},
		{"an include without its file", "include:\n  - project: group/project\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ciVerdict(s, []byte(tc.yaml)) == nil {
				t.Errorf("accepted:\n%s", tc.yaml)
			}
		})
	}
}

// workflowRules reads the template's workflow:rules.
func workflowRules(t *testing.T) []rule {
	t.Helper()
	data, err := os.ReadFile("gitlab-ci/student.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Workflow struct {
			Rules []struct {
				If   string `json:"if"`
				When string `json:"when"`
			} `json:"rules"`
		} `json:"workflow"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var rules []rule
	for _, r := range doc.Workflow.Rules {
		rules = append(rules, rule{If: r.If, Variables: map[string]string{"when": r.When}})
	}
	if len(rules) == 0 {
		t.Fatal("the template has no workflow:rules")
	}
	return rules
}

// evalIf evaluates the CI/CD expressions the template uses: $VAR,
// $VAR == "string", $VAR == $OTHER, joined by &&.
func evalIf(t *testing.T, expr string, env map[string]string) bool {
	t.Helper()
	value := func(s string) string {
		s = strings.TrimSpace(s)
		if v, ok := strings.CutPrefix(s, "$"); ok {
			return env[v]
		}
		if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
			return s[1 : len(s)-1]
		}
		t.Fatalf("expression %q: cannot evaluate %q", expr, s)
		return ""
	}
	for _, term := range strings.Split(expr, "&&") {
		if l, r, ok := strings.Cut(term, "=="); ok {
			if value(l) != value(r) {
				return false
			}
		} else if value(term) == "" {
			return false
		}
	}
	return true
}

// runs reports whether the workflow creates a pipeline: the first rule
// whose if matches decides, and no match means no pipeline.
func runs(t *testing.T, rules []rule, env map[string]string) bool {
	for _, r := range rules {
		if r.If == "" || evalIf(t, r.If, env) {
			return r.Variables["when"] != "never"
		}
	}
	return false
}

func TestOnePushMakesOnePipeline(t *testing.T) {
	rules := workflowRules(t)
	branch := func(name string, openMR bool) map[string]string {
		env := map[string]string{"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": name, "CI_DEFAULT_BRANCH": "main"}
		if openMR {
			env["CI_OPEN_MERGE_REQUESTS"] = "students/alice/web!1"
		}
		return env
	}
	mr := map[string]string{"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "1", "CI_DEFAULT_BRANCH": "main"}
	tag := map[string]string{"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_TAG": "v1", "CI_DEFAULT_BRANCH": "main"}
	for _, tc := range []struct {
		name      string
		pipelines []map[string]string // what GitLab would start for the push
		want      int
	}{
		{"a push to the default branch runs one branch pipeline", []map[string]string{branch("main", false)}, 1},
		{"a push to a branch without a merge request runs one branch pipeline", []map[string]string{branch("feature", false)}, 1},
		{"a push to a branch with an open merge request runs the merge request pipeline only", []map[string]string{branch("feature", true), mr}, 1},
		{"a tag runs no pipeline", []map[string]string{tag}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			for _, env := range tc.pipelines {
				if runs(t, rules, env) {
					n++
				}
			}
			if n != tc.want {
				t.Errorf("%d pipelines, want %d", n, tc.want)
			}
		})
	}
	if !runs(t, rules, mr) || runs(t, rules, branch("feature", true)) {
		t.Error("with a merge request open, the merge request pipeline must be the one that runs")
	}
}
