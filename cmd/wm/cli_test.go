package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/store"
)

// stateConfig writes a server config in a new folder whose state folder
// is dir/state, with one repo in it when withState; it returns the
// config's path and the state folder.
func stateConfig(t *testing.T, withState bool) (config, stateDir string) {
	t.Helper()
	dir := t.TempDir()
	stateDir = filepath.Join(dir, "state")
	if err := os.MkdirAll(filepath.Join(dir, "repos"), 0o755); err != nil {
		t.Fatal(err)
	}
	config = writeFile(t, dir, "wm-server.yaml", "stateDir: state\nlisten: "+freeAddr(t)+"\nsources: {dirs: [{root: repos}]}\n")
	if withState {
		st, err := store.Open(stateDir)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PutRepo(core.RepoState{Key: "alice/web", Owner: "alice"}); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return config, stateDir
}

func TestVerboseIsDashVAndTheVersionIsDashDashVersionOnEveryCommand(t *testing.T) {
	config, _ := stateConfig(t, true)
	oneLine := "wm " + version + " (commit "
	for _, tc := range []struct {
		name         string
		args         []string
		code         int
		stdout       string // must appear in stdout
		notStdout    string // must not appear in stdout
		stderr       string // must appear in stderr
		notInStderr  string // must not appear in stderr
		stderrIsVoid bool
	}{
		{"--version prints the version in one line", []string{"--version"}, 0, oneLine, "", "", "", true},
		{"wm version prints it in full", []string{"version"}, 0, "platform: ", oneLine, "", "", true},
		{"-v on the root is verbose, not the version", []string{"-v"}, 0, "Usage:", oneLine, "", "", true},
		{"-v before the command makes it verbose", []string{"-v", "status", "--config", config}, 0, "alice/web", "", "state read from the state folder", "", false},
		{"-v after the command makes it verbose", []string{"status", "--config", config, "-v"}, 0, "alice/web", "", "state read from the state folder", "", false},
		{"--verbose is -v", []string{"status", "--verbose", "--config", config}, 0, "alice/web", "", "state read from the state folder", "", false},
		{"without -v the command says nothing more", []string{"status", "--config", config}, 0, "alice/web", "", "", "state read", true},
		{"-v is accepted by a command with nothing more to say", []string{"validate", "-v", "--server", config}, 0, ": ok", "", "", "", true},
		{"--version is not a flag of the commands", []string{"status", "--version"}, 2, "", oneLine, "unknown flag: --version", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := wm(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.stdout) || (tc.notStdout != "" && strings.Contains(out, tc.notStdout)) {
				t.Errorf("stdout (want %q, not %q):\n%s", tc.stdout, tc.notStdout, out)
			}
			if !strings.Contains(errOut, tc.stderr) || (tc.notInStderr != "" && strings.Contains(errOut, tc.notInStderr)) {
				t.Errorf("stderr (want %q, not %q):\n%s", tc.stderr, tc.notInStderr, errOut)
			}
			if tc.stderrIsVoid && errOut != "" {
				t.Errorf("stderr not empty:\n%s", errOut)
			}
		})
	}
}

func TestConfigIsAcceptedBeforeAndAfterTheCommand(t *testing.T) {
	config, _ := stateConfig(t, true)
	missing := filepath.Join(t.TempDir(), "nowhere.yaml")
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"--config before the command", []string{"--config", config, "status"}, 0, "alice/web"},
		{"--config after the command", []string{"status", "--config", config}, 0, "alice/web"},
		{"--config=FILE before the command", []string{"--config=" + config, "status"}, 0, "alice/web"},
		{"-c before the command", []string{"-c", config, "status"}, 0, "alice/web"},
		{"-c after the command", []string{"status", "-c", config}, 0, "alice/web"},
		{"a missing config before the command is read, and refused", []string{"--config", missing, "status"}, 1, ""},
		{"a missing config after the command is read, and refused", []string{"status", "--config", missing}, 1, ""},
		{"validate checks --config as a server config", []string{"validate", "--config", config}, 0, config + ": ok"},
		{"validate checks --config before it as a server config", []string{"--config", config, "validate"}, 0, config + ": ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := wm(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.out) {
				t.Errorf("exit %d, want %d; stdout lacks %q?\nstdout: %s\nstderr: %s", code, tc.code, tc.out, out, errOut)
			}
		})
	}
}

// tree lists the files under dir with a hash of each one's content.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			out = append(out, p+"/")
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %x", p, sha256.Sum256(b)))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestReadOnlyCommandsLeaveAMissingStateFolderMissing(t *testing.T) {
	config, stateDir := stateConfig(t, false)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		engine bool // needs the local Docker Engine
	}{
		{"status says there is no state", []string{"status", "--config", config}, 1, false},
		{"images says there is no state", []string{"images", "--config", config}, 1, false},
		{"validate --server checks the config", []string{"validate", "--server", config}, 0, false},
		{"plan plans from an empty state", []string{"plan", "--config", config}, 0, true},
		{"plan -v plans from an empty state", []string{"-v", "plan", "--config", config}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.engine && testing.Short() {
				t.Skip("needs the local Docker Engine")
			}
			code, out, errOut := wm(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if _, err := os.Lstat(stateDir); !os.IsNotExist(err) {
				t.Errorf("the state folder %s exists after %v (%v)", stateDir, tc.args, err)
			}
		})
	}
}

func TestPlanFetchesAndPlansARepoWithoutMakingOrWritingTheStateFolder(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the local Docker Engine")
	}
	for _, tc := range []struct {
		name      string
		withState bool
	}{
		{"a state folder that does not exist is not made", false},
		{"a state folder that exists is not written to", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config, stateDir := stateConfig(t, tc.withState)
			repo := gittest.NewRepo(t, filepath.Join(filepath.Dir(config), "repos", "alice", "web"))
			// No registry in the config: the plan stops at the image,
			// after fetching the repo and parsing its wm.yaml.
			rev := repo.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\ncontainers:\n  web: {image: self, ports: [8000]}\n"}, "start")
			var before []string
			if tc.withState {
				before = tree(t, stateDir)
			}
			code, out, errOut := wm(t, "plan", "-v", "--config", config)
			if code != 1 || !strings.Contains(out, "alice/web @ "+rev[:12]) || !strings.Contains(out, "registry.host") {
				t.Errorf("exit %d\nstdout: %s\nstderr: %s", code, out, errOut)
			}
			if !strings.Contains(errOut, "alice/web: parse wm.yaml") {
				t.Errorf("-v shows no stages:\n%s", errOut)
			}
			if !tc.withState {
				if _, err := os.Lstat(stateDir); !os.IsNotExist(err) {
					t.Errorf("plan made the state folder (%v)", err)
				}
				return
			}
			if after := tree(t, stateDir); strings.Join(after, "\n") != strings.Join(before, "\n") {
				t.Errorf("plan changed the state folder:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

func TestPlanSaysSoWhenARunningWmHoldsTheState(t *testing.T) {
	config, stateDir := stateConfig(t, true)
	held, err := store.Open(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	code, _, errOut := wm(t, "plan", "--config", config)
	if code != 1 || !strings.Contains(errOut, "held by a running wm") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}

func TestProgressIsABarOnATerminalAndPlainLinesElsewhere(t *testing.T) {
	stages := []struct {
		stage       string
		done, total int64
	}{
		{"resolve", 0, 1}, {"resolve", 1, 1}, {"pull", 0, 4096}, {"pull", 2048, 4096}, {"pull", 4096, 4096},
		{"squash", 0, 1}, {"squash", 1, 1}, {"write", 0, -1}, {"write", 1000, -1},
	}
	for _, tc := range []struct {
		name     string
		tty      bool
		controls bool
		lines    int
	}{
		{"not on a terminal, a plain line a stage", false, false, 4},
		{"on a terminal, a bar redrawn in place", true, true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := &stageProgress{w: &buf, tty: tc.tty}
			for _, s := range stages {
				p.report(s.stage, s.done, s.total)
			}
			p.finish()
			out := buf.String()
			if got := strings.ContainsAny(out, "\r\x1b"); got != tc.controls {
				t.Errorf("control characters: %v, want %v: %q", got, tc.controls, out)
			}
			if tc.lines >= 0 && strings.Count(out, "\n") != tc.lines {
				t.Errorf("%d lines, want %d: %q", strings.Count(out, "\n"), tc.lines, out)
			}
		})
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if newStageProgress(w).tty || newStageProgress(&bytes.Buffer{}).tty {
		t.Error("a pipe or a buffer taken for a terminal")
	}
}

// wmPiped runs wm in-process with stdout and stderr on pipes, as when
// its output goes to another program or a file.
func wmPiped(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	read := func() (*os.File, chan string) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(r)
			r.Close()
			got <- string(b)
		}()
		return w, got
	}
	outW, out := read()
	errW, errs := read()
	code = run(args, outW, errW)
	outW.Close()
	errW.Close()
	return code, <-out, <-errs
}

func TestSIFVerifyRefusesWhatIsNotASIFInWords(t *testing.T) {
	notSIF := writeFile(t, t.TempDir(), "x.sif", "not a SIF at all\n")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"text: the reason on stderr, nothing on stdout", []string{"sif", "verify", notSIF}, 1, "", "wm: "},
		{"json: valid false with the error", []string{"sif", "verify", "--format", "json", notSIF}, 1, `"valid": false`, "wm: "},
		{"a missing file", []string{"sif", "verify", notSIF + ".nope"}, 1, "", "no such file"},
		{"an unknown format is a usage error", []string{"sif", "verify", "--format", "xml", notSIF}, 2, "", `--format must be text or json`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := wm(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) || (tc.stdout == "" && out != "") {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
		})
	}
}

func TestSIFBuildAndVerifyWriteNoControlCharactersIntoPipes(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a registry and tar2sqfs")
	}
	reg := registrytest.Start(t)
	ref := reg.Ref("alice/tool", "v1")
	reg.Push(t, ref, registrytest.BusyboxImage(t, nil, map[string]string{"/opt/tool/run": "#!/bin/sh\necho run\n"}))
	out := filepath.Join(t.TempDir(), "tool.sif")

	code, stdout, stderr := wmPiped(t, "sif", "build", ref, "-o", out, "--insecure", reg.Host())
	if code != 0 || !strings.Contains(stdout, "built") {
		t.Fatalf("build: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, stage := range []string{"resolve: ", "pull: ", "squash: ", "write: "} {
		if !strings.Contains(stderr, "\n"+stage) && !strings.HasPrefix(stderr, stage) {
			t.Errorf("no line for the stage %q in:\n%s", stage, stderr)
		}
	}
	code, report, verr := wmPiped(t, "sif", "verify", out)
	if code != 0 {
		t.Fatalf("verify: exit %d: %s", code, verr)
	}
	for _, want := range []string{out + ": a valid SIF\n", "  architecture:", "  system partition:  Squashfs", "  objects:\n", "    ID  TYPE"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	for _, goSyntax := range []string{"{ID:", "Objects:[", "&{"} {
		if strings.Contains(report, goSyntax) {
			t.Errorf("the report is a Go struct (%q):\n%s", goSyntax, report)
		}
	}
	code, js, _ := wmPiped(t, "sif", "verify", "--format", "json", out)
	var got struct {
		Valid   bool `json:"valid"`
		Objects []struct {
			Partition string `json:"partition"`
		} `json:"objects"`
	}
	if code != 0 || json.Unmarshal([]byte(js), &got) != nil || !got.Valid || len(got.Objects) == 0 {
		t.Errorf("verify --format json: exit %d:\n%s", code, js)
	}
	for name, text := range map[string]string{"build's stdout": stdout, "build's stderr": stderr, "verify's report": report, "verify's JSON": js} {
		if i := strings.IndexAny(text, "\r\x1b"); i >= 0 {
			t.Errorf("%s has a control character at %d: %q", name, i, text)
		}
	}
}
