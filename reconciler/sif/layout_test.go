package sif_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

// sh runs a script file with the host's busybox sh, with args and a clean
// environment plus env, and returns its output.
func sh(t *testing.T, script string, env []string, args ...string) (string, int) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(file, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, registrytest.HostBusybox, append([]string{"sh", file}, args...)...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/home/someone"}, env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func TestRunscriptFollowsDockerRules(t *testing.T) {
	// printf prints each argument on its own line, brackets showing where
	// an argument starts and ends.
	printf := []string{"/bin/busybox", "printf", "[%s]\n"}
	for _, tc := range []struct {
		name            string
		entrypoint, cmd []string
		args            []string
		want            string
		wantExit        int
	}{
		{"entrypoint and cmd run together without arguments", printf, []string{"a b", "c"}, nil, "[a b]\n[c]\n", 0},
		{"arguments replace cmd, never the entrypoint", printf, []string{"a b", "c"}, []string{"x", "y z"}, "[x]\n[y z]\n", 0},
		{"cmd alone is the command", nil, append(printf[:3:3], "only cmd"), nil, "[only cmd]\n", 0},
		{"arguments replace cmd when there is no entrypoint", nil, []string{"/bin/false"}, append(printf[:3:3], "args"), "[args]\n", 0},
		{"an entrypoint without cmd gets no arguments", append(printf[:3:3], "ep"), nil, nil, "[ep]\n", 0},
		{"nothing is evaluated by the shell", printf,
			[]string{"$HOME", "`id`", "$(id)", "it's", `"quoted"`, "a\nb", "*", ";", "\\"}, nil,
			"[$HOME]\n[`id`]\n[$(id)]\n[it's]\n[\"quoted\"]\n[a\nb]\n[*]\n[;]\n[\\]\n", 0},
		{"arguments are passed as they are", printf, nil, []string{"$HOME", "it's", ""}, "[$HOME]\n[it's]\n[]\n", 0},
		{"neither entrypoint nor cmd asks for a command", nil, nil, nil, "This image has neither Entrypoint nor Cmd: give a command.\n", 1},
		{"neither entrypoint nor cmd runs the arguments", nil, nil, append(printf[:3:3], "given"), "[given]\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, code := sh(t, sif.Runscript(tc.entrypoint, tc.cmd), nil, tc.args...)
			if got != tc.want || code != tc.wantExit {
				t.Errorf("output %q exit %d, want %q exit %d\nscript:\n%s", got, code, tc.want, tc.wantExit, sif.Runscript(tc.entrypoint, tc.cmd))
			}
		})
	}
}

func TestEnvScriptExportsTheImageEnv(t *testing.T) {
	env := []string{
		"PATH=/opt/app/bin:/usr/bin:/bin",
		"PLAIN=value",
		"SPACES=hello world",
		"QUOTES=it's \"quoted\"",
		"DOLLAR=$HOME and `id`",
		"NEWLINE=a\nb",
		"EMPTY=",
		"EQUALS=a=b=c",
		"PRESET=from image",
		"bad-name=x",
		"BARE",
	}
	script := sif.EnvScript(env)
	// Source the script, then print the environment, NUL-separated.
	probe := ". " + shellQuoteForTest(writeTemp(t, script)) + "\n/bin/busybox env -0\n"
	out, code := sh(t, probe, []string{"PRESET=from host", "BARE=from host"})
	if code != 0 {
		t.Fatalf("sourcing failed (%d): %s\n%s", code, out, script)
	}
	got := map[string]string{}
	for _, kv := range strings.Split(out, "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			got[k] = v
		}
	}
	for k, want := range map[string]string{
		"PATH":    "/opt/app/bin:/usr/bin:/bin",
		"PLAIN":   "value",
		"SPACES":  "hello world",
		"QUOTES":  "it's \"quoted\"",
		"DOLLAR":  "$HOME and `id`",
		"NEWLINE": "a\nb",
		"EMPTY":   "",
		"EQUALS":  "a=b=c",
		"PRESET":  "from host",
		"BARE":    "from host",
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %q (set: %v), want %q", k, v, ok, want)
		}
	}
	if !strings.Contains(script, `# left out "bad-name": not a shell variable name`) {
		t.Errorf("script does not say it left out bad-name:\n%s", script)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "env.sh")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func shellQuoteForTest(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
