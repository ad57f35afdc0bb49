package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the top of the repository, from this package's folder.
const repoRoot = "../.."

// readme is the README's text.
func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// makeTargets are the targets the Makefile defines.
func makeTargets(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	targets := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^([a-z][a-z0-9-]*):`).FindAllStringSubmatch(string(b), -1) {
		targets[m[1]] = true
	}
	return targets
}

func TestWhatTheREADMESaysOfTheTreeIsTrue(t *testing.T) {
	text := readme(t)
	targets := makeTargets(t)
	for _, tc := range []struct {
		name  string
		check func(t *testing.T)
	}{
		{"examples/ has as many student repos as it says", func(t *testing.T) {
			words := map[int]string{1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
			repos, _ := filepath.Glob(filepath.Join(repoRoot, "examples", "*", "wm.yaml"))
			if want := "has " + words[len(repos)] + " student repos and a server config"; !strings.Contains(text, want) {
				t.Errorf("examples/ has %d repos with a wm.yaml; the README does not say %q", len(repos), want)
			}
		}},
		{"every make target it names exists", func(t *testing.T) {
			for _, m := range regexp.MustCompile("`make ([a-z][a-z0-9-]*)").FindAllStringSubmatch(text, -1) {
				if !targets[m[1]] {
					t.Errorf("the README names make %s, which the Makefile does not define", m[1])
				}
			}
			m := regexp.MustCompile("`make help` lists every task \\(([^)]*)\\)").FindStringSubmatch(text)
			if m == nil {
				t.Fatal("the README no longer says what make help lists")
			}
			for _, name := range regexp.MustCompile("`([a-z-]+)`").FindAllStringSubmatch(m[1], -1) {
				if !targets[name[1]] {
					t.Errorf("make help is said to list %s, which the Makefile does not define", name[1])
				}
			}
		}},
		{"every script and file it links or names exists", func(t *testing.T) {
			paths := regexp.MustCompile(`\]\(([^)#:]+)\)`).FindAllStringSubmatch(text, -1)
			paths = append(paths, regexp.MustCompile("`(ci/[a-z0-9-]+)").FindAllStringSubmatch(text, -1)...)
			for _, p := range paths {
				if _, err := os.Stat(filepath.Join(repoRoot, p[1])); err != nil {
					t.Errorf("the README names %s: %v", p[1], err)
				}
			}
		}},
		{"every flag in the CLI table is a flag of its command", func(t *testing.T) {
			table := text[strings.Index(text, "## The CLI"):]
			table = table[strings.Index(table, "|---|"):]
			table = table[:strings.Index(table, "\n\n")]
			rows := strings.Split(table, "\n")[1:]
			_, rootHelp, _ := wm(t, "--help")
			checked := 0
			for _, row := range rows {
				cells := strings.Split(row, " | ")
				helps := []string{rootHelp}
				for _, inv := range regexp.MustCompile("`wm ([a-z]+(?: [a-z]+)?)").FindAllStringSubmatch(cells[0], -1) {
					args := append(strings.Fields(inv[1]), "--help")
					_, out, _ := wm(t, args...)
					helps = append(helps, out)
				}
				for _, flag := range regexp.MustCompile(`(?:^|[\x60 (\[])(--?[a-z][a-z-]*)`).FindAllStringSubmatch(row, -1) {
					f := flag[1]
					if f == "--help" || !strings.HasPrefix(f, "-") {
						continue
					}
					found := false
					for _, h := range helps {
						found = found || strings.Contains(h, " "+f+" ") || strings.Contains(h, " "+f+",") || strings.Contains(h, ", "+f+" ")
					}
					if !found {
						t.Errorf("%s: %s is not in the help of %s", cells[0], f, cells[0])
					}
					checked++
				}
			}
			if len(rows) < 10 || checked < 10 {
				t.Errorf("only %d rows and %d flags found in the CLI table", len(rows), checked)
			}
		}},
		{"nothing in the project points outside it", func(t *testing.T) {
			needles := []string{"../" + "shared", "/work/" + "shared", "shared/" + "notes"}
			err := filepath.WalkDir(repoRoot, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if d.IsDir() {
					switch d.Name() {
					case ".git", "bin", "dist", "demo", "wm-state":
						return filepath.SkipDir
					}
					return nil
				}
				if info, err := d.Info(); err != nil || info.Size() > 1<<20 || !info.Mode().IsRegular() {
					return err
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				for _, n := range needles {
					if strings.Contains(string(b), n) {
						t.Errorf("%s points at %s", p, n)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, tc.check)
	}
}

func TestTheREADMEServerConfigForGitLabPassesWhatServeChecks(t *testing.T) {
	text := readme(t)
	start := strings.Index(text, "`/etc/wm/wm-server.yaml` can be:")
	if start < 0 {
		t.Fatal("the README has no server config for GitLab")
	}
	block := text[start:]
	block = block[strings.Index(block, "```yaml\n")+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	// Not t.TempDir: the admin socket's path must stay short.
	dir, err := os.MkdirTemp("", "wm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, f := range []string{"gitlab-token", "webhook-secret", "registry-password"} {
		if !strings.Contains(block, "/etc/wm/"+f) {
			t.Errorf("the config names no /etc/wm/%s", f)
		}
		writeFile(t, dir, "etc/"+f, "0123456789abcdef0123456789abcdef\n")
	}
	// The same config, moved under dir, on a free address.
	cfg := strings.NewReplacer("/etc/wm/", dir+"/etc/", "/var/lib/wm", dir+"/state", "/run/wm/", dir+"/run/", "127.0.0.1:8080", freeAddr(t)).Replace(block)
	path := writeFile(t, dir, "wm-server.yaml", cfg)
	if code, out, errOut := wm(t, "validate", "--server", path); code != 0 {
		t.Errorf("exit %d:\n%s%s\n%s", code, out, errOut, cfg)
	}
}
