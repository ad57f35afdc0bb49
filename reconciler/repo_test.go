package reconciler

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/schema"
)

// folderRepos makes <root>/<owner>/<repo> git repositories (a .git folder
// is enough for Repos).
func folderRepos(t *testing.T, root string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if err := os.MkdirAll(filepath.Join(root, k, ".git"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func keysOf(repos []Repo) []string {
	var out []string
	for _, r := range repos {
		out = append(out, r.Key)
	}
	return out
}

func TestAFolderRepoIsRetiredOnlyWhenItsFolderIsConfirmedGone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		repos  []string // made before the first listing
		state  []string // known from the state store only, made nowhere
		change func(t *testing.T, root string)
		want   []string // retired by the second listing
		why    string   // logged when nothing is retired
	}{{
		name:   "a repo folder removed from a readable root is retired",
		repos:  []string{"alice/web", "alice/api", "bob/web"},
		change: func(t *testing.T, root string) { rm(t, root, "alice/web") },
		want:   []string{"alice/web"},
	}, {
		name:   "an owner folder removed retires the owner's repos",
		repos:  []string{"alice/web", "alice/api", "bob/web"},
		change: func(t *testing.T, root string) { rm(t, root, "alice") },
		want:   []string{"alice/api", "alice/web"},
	}, {
		name:   "the last repo removed leaves the root legitimately empty and is retired",
		repos:  []string{"alice/web"},
		change: func(t *testing.T, root string) { rm(t, root, "alice") },
		want:   []string{"alice/web"},
	}, {
		name:   "a root that is missing (a disk not mounted) retires nothing",
		repos:  []string{"alice/web", "bob/web"},
		change: func(t *testing.T, root string) { rm(t, root, "") },
		why:    "cannot be read",
	}, {
		name:  "a root replaced by an empty folder (the mount point of a disk not mounted) retires nothing",
		repos: []string{"alice/web", "bob/web"},
		change: func(t *testing.T, root string) {
			if err := os.Rename(root, root+".away"); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
		},
		why: "not the folder it was listed from",
	}, {
		name:   "a repo folder that is no longer a git repository is not retired",
		repos:  []string{"alice/web", "bob/web"},
		change: func(t *testing.T, root string) { rm(t, root, "alice/web/.git") },
		why:    "still there",
	}, {
		name:   "a repo the state store knows under the root is retired when the root lists others",
		repos:  []string{"bob/web"},
		state:  []string{"alice/web"},
		change: func(*testing.T, string) {},
		want:   []string{"alice/web"},
	}, {
		name:   "a repo the state store knows under an empty root is not retired",
		state:  []string{"alice/web"},
		change: func(*testing.T, string) {},
		why:    "never seen listing the repo",
	}, {
		name:   "repos still listed are not retired",
		repos:  []string{"alice/web", "bob/web"},
		change: func(*testing.T, string) {},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "repos")
			if err := os.Mkdir(root, 0o755); err != nil {
				t.Fatal(err)
			}
			folderRepos(t, root, tc.repos...)
			cfg := &schema.ServerConfig{Sources: schema.Sources{Dirs: []schema.DirSource{{Root: root, Branch: "main"}}}}
			var known []Repo
			for _, k := range tc.state {
				owner, _, _ := strings.Cut(k, "/")
				known = append(known, Repo{Key: k, Owner: owner, URL: "file://" + filepath.ToSlash(filepath.Join(root, k))})
			}
			var logs bytes.Buffer
			w := NewFolderWatch(cfg.Sources.Dirs, known, slog.New(slog.NewTextHandler(&logs, nil)))
			list := func() []Repo {
				t.Helper()
				repos, _, err := Repos(cfg)
				if err != nil {
					t.Fatal(err)
				}
				return w.Vanished(repos)
			}
			if tc.state == nil { // else the watch starts as after a restart
				if first := list(); len(first) > 0 {
					t.Fatalf("the first listing retired %v", keysOf(first))
				}
			}
			tc.change(t, root)
			if got := keysOf(list()); !slices.Equal(got, tc.want) {
				t.Errorf("retired %v; want %v", got, tc.want)
			}
			if again := list(); len(again) > 0 {
				t.Errorf("retired %v a second time", keysOf(again))
			}
			if tc.why != "" && !strings.Contains(logs.String(), tc.why) {
				t.Errorf("the log does not say why nothing is retired (%q):\n%s", tc.why, logs.String())
			}
			n := 0
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, "not confirmed gone") && strings.Contains(line, "repo=alice/web") {
					n++
				}
			}
			if tc.why != "" && n != 1 {
				t.Errorf("why alice/web is not retired was logged %d times in two listings; want once", n)
			}
		})
	}
}

// rm removes rel under root (root itself when rel is "").
func rm(t *testing.T, root, rel string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(root, rel)); err != nil {
		t.Fatal(err)
	}
}

func TestALoopOverFolderSourcesRetiresARepoWhoseFolderWasRemovedAndNoOther(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repos")
	folderRepos(t, root, "alice/web", "bob/web")
	cfg := &schema.ServerConfig{Sources: schema.Sources{Dirs: []schema.DirSource{{Root: root, Branch: "main"}}}}
	p := newCounting(0)
	w := NewFolderWatch(cfg.Sources.Dirs, nil, slog.New(slog.DiscardHandler))
	var l *Loop
	discover := w.Discovering(func() ([]Repo, error) {
		repos, _, err := Repos(cfg)
		return repos, err
	}, func(r Repo) { l.Retire(r) })
	l = NewLoop(p, discover, 20*time.Millisecond, 0, 2, slog.New(slog.DiscardHandler))
	stop := func() func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { l.Run(ctx); close(done) }()
		return func() { cancel(); <-done }
	}()
	defer stop()
	waitFor(t, "a pass of each repo", func() bool { return p.count("alice/web") > 0 && p.count("bob/web") > 0 })
	rm(t, root, "alice/web")
	waitFor(t, "alice/web retired", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.retired) > 0
	})
	passes := p.count("bob/web")
	waitFor(t, "more passes of bob/web", func() bool { return p.count("bob/web") > passes+2 })
	stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Equal(p.retired, []string{"alice/web"}) {
		t.Errorf("retired %v; want [alice/web], once", p.retired)
	}
	if l.Known("alice/web") {
		t.Error("the retired repo is still polled")
	}
}
