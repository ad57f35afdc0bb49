package reconciler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// memoryGit is a GitSource whose every repo is at one commit with one
// wm.yaml: the pass's own cost, without git's.
type memoryGit struct{ wmYAML string }

func (memoryGit) Head(context.Context, string, string) (string, error) {
	return "0123456789abcdef0123456789abcdef01234567", nil
}

func (g memoryGit) ReadFile(context.Context, string, string, string, string, int64) ([]byte, error) {
	return []byte(g.wmYAML), nil
}

// BenchmarkNoOpPass measures one pass of a repo whose commit and
// containers did not change, with 500, 2,000 and 10,000 repos rolled out
// (two repos a student, one container each, on one fake host; the state
// on tmpfs), and reports the state pages it writes (writes/op, which must
// be 0). Its baseline, run beside it, is the git head check alone (an
// ls-remote of a file:// repo through go-git), the least any poll costs:
// a no-op pass should cost a small, constant multiple of it, whatever
// the number of repos.
//
//	go test ./reconciler -run '^$' -bench NoOpPass -benchtime 200x
func BenchmarkNoOpPass(b *testing.B) {
	root := b.TempDir()
	var baseline float64 // ns of one git head check
	b.Run("baseline=git-head-check", func(b *testing.B) {
		repo := gittest.NewRepo(b, filepath.Join(root, "git", "alice", "web.git"))
		repo.Commit(b, "main", map[string]string{"wm.yaml": "version: 1\n"}, "one")
		src := gitsource.New(filepath.Join(root, "cache"))
		for b.Loop() {
			if _, err := src.Head(context.Background(), repo.FileURL(), "main"); err != nil {
				b.Fatal(err)
			}
		}
		baseline = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	})
	for _, n := range []int{500, 2000, 10000} {
		b.Run(fmt.Sprintf("repos=%d", n), func(b *testing.B) {
			rec, st, repos := noOpWorld(b, n)
			writes := st.Writes()
			i := 0
			// The passes carry a profiler label, so that a -cpuprofile
			// can be read for them alone (-tagfocus phase=no-op), without
			// the roll-out that sets the world up.
			pprof.Do(context.Background(), pprof.Labels("phase", "no-op"), func(ctx context.Context) {
				for b.Loop() {
					repo := repos[(i*7919)%n] // spread over every owner
					i++
					res, err := rec.Reconcile(ctx, repo)
					if err != nil || len(res.Plan.Actions) != 0 {
						b.Fatalf("pass of %s: %+v, %v", repo.Key, res.Plan.Actions, err)
					}
				}
			})
			b.ReportMetric(float64(st.Writes()-writes)/float64(b.N), "writes/op")
			if baseline > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/baseline, "x-git-head")
			}
			b.ReportAllocs()
		})
	}
}

// noOpWorld rolls out n repos and passes each once more, so that the next
// passes are no-ops.
func noOpWorld(b *testing.B, n int) (*Reconciler, *store.Store, []Repo) {
	b.Helper()
	dir := b.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		var err error
		if dir, err = os.MkdirTemp("/dev/shm", "wm-bench-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	cfg, err := schema.ParseServer("bench.yaml", strings.NewReader(`
registry: {host: "registry.test:5000"}
policy:
  hostPorts: {from: 20000, to: 65000}
  quota: {containers: 10, memory: 64Gi, cpus: 64}
docker:
  hosts: [{name: h1, endpoint: "unix:///h1.sock"}]
`), dir)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "state"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	host := docker.NewFake("h1")
	// An owner's two repos declare containers of different names.
	web := memoryGit{wmYAML: "version: 1\ncontainers:\n  web:\n    image: self\n    ports: [8000]\n    env: {MODE: prod}\n"}
	git := splitGit{even: web, odd: memoryGit{wmYAML: strings.Replace(web.wmYAML, "  web:", "  api:", 1)}}
	rec, err := New(cfg, git, []core.Engine{host}, st)
	if err != nil {
		b.Fatal(err)
	}
	rev, _ := git.Head(context.Background(), "", "")
	repos := make([]Repo, n)
	for i := range repos {
		owner := fmt.Sprintf("s%05d", i/2)
		key := fmt.Sprintf("%s/r%d", owner, i%2)
		repos[i] = Repo{Key: key, Owner: owner, URL: "mem://" + key, Branch: "main"}
		host.AddRemoteImage(fmt.Sprintf("registry.test:5000/%s:%s", repos[i].Key, rev))
	}
	for _, repo := range repos {
		for range 2 {
			if _, err := rec.Reconcile(context.Background(), repo); err != nil {
				b.Fatalf("roll out %s: %v", repo.Key, err)
			}
		}
	}
	return rec, st, repos
}

// splitGit serves an owner's first repo of noOpWorld one wm.yaml, their
// second ("/r1") another.
type splitGit struct{ even, odd memoryGit }

func (s splitGit) Head(ctx context.Context, url, branch string) (string, error) {
	return s.even.Head(ctx, url, branch)
}

func (s splitGit) ReadFile(ctx context.Context, url, branch, rev, path string, max int64) ([]byte, error) {
	if strings.HasSuffix(url, "/r1") {
		return s.odd.ReadFile(ctx, url, branch, rev, path, max)
	}
	return s.even.ReadFile(ctx, url, branch, rev, path, max)
}
