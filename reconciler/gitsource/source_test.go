package gitsource

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
)

// fixture is one behaviour's world: a bare repo published over the
// transport under test, and a Source with an empty cache.
type fixture struct {
	repo  *gittest.Repo
	url   string
	urlOf func(name string) string // URL of another repo under the same root
	root  string
	src   *Source
}

// transports publish the repos under root and give the URL of one by its
// path under root.
var transports = []struct {
	name  string
	serve func(t *testing.T, root string) func(name string) string
}{
	{"file", func(t *testing.T, root string) func(string) string {
		return func(name string) string { return "file://" + filepath.Join(root, name) }
	}},
	{"http", func(t *testing.T, root string) func(string) string {
		base := gittest.Serve(t, root)
		return func(name string) string { return base + "/" + name }
	}},
}

// tree is a student's repo at version v.
func tree(v string) map[string]string {
	return map[string]string{
		"wm.yaml":         "version: 1\n# " + v + "\n",
		"Dockerfile":      "FROM scratch\n",
		"app/main.go":     "package main\n",
		"app/web/index.h": "<h1>" + v + "</h1>\n",
	}
}

func (f *fixture) head(t *testing.T, branch string) string {
	t.Helper()
	sha, err := f.src.Head(t.Context(), f.url, branch)
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

func (f *fixture) read(t *testing.T, rev, path string) string {
	t.Helper()
	data, err := f.src.ReadFile(t.Context(), f.url, "main", rev, path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func wantIs(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("want an error wrapping %q, got %v", target, err)
	}
}

const zeroSHA = "0123456789abcdef0123456789abcdef01234567"

// behaviours is the contract of Source, run over every transport.
var behaviours = []struct {
	name string
	run  func(t *testing.T, f *fixture)
}{
	{"head is the sha of the latest commit", func(t *testing.T, f *fixture) {
		f.repo.Commit(t, "main", tree("v1"), "first")
		want := f.repo.Commit(t, "main", tree("v2"), "second")
		if got := f.head(t, "main"); got != want {
			t.Errorf("head %s, want %s", got, want)
		}
	}},
	{"head after a new push is the new sha", func(t *testing.T, f *fixture) {
		first := f.repo.Commit(t, "main", tree("v1"), "first")
		if got := f.head(t, "main"); got != first {
			t.Fatalf("head %s, want %s", got, first)
		}
		second := f.repo.Commit(t, "main", tree("v2"), "second")
		if got := f.head(t, "main"); got != second {
			t.Errorf("head after push %s, want %s", got, second)
		}
	}},
	{"a file is read at the revision asked and an older revision keeps its content", func(t *testing.T, f *fixture) {
		f.repo.Commit(t, "main", tree("v1"), "first")
		v1 := f.head(t, "main")
		if got := f.read(t, v1, "wm.yaml"); got != tree("v1")["wm.yaml"] {
			t.Fatalf("wm.yaml at v1: %q", got)
		}
		f.repo.Commit(t, "main", tree("v2"), "second")
		v2 := f.head(t, "main")
		if got := f.read(t, v2, "wm.yaml"); got != tree("v2")["wm.yaml"] {
			t.Errorf("wm.yaml at v2: %q", got)
		}
		if got := f.read(t, v1, "wm.yaml"); got != tree("v1")["wm.yaml"] {
			t.Errorf("wm.yaml at v1 after v2: %q", got)
		}
	}},
	{"an older revision the cache never saw is fetched from the branch history", func(t *testing.T, f *fixture) {
		v1 := f.repo.Commit(t, "main", tree("v1"), "first")
		f.repo.Commit(t, "main", tree("v2"), "second")
		if got := f.read(t, v1, "app/web/index.h"); got != tree("v1")["app/web/index.h"] {
			t.Errorf("index.h at v1: %q", got)
		}
	}},
	{"a missing file is ErrFileNotFound", func(t *testing.T, f *fixture) {
		rev := f.repo.Commit(t, "main", tree("v1"), "first")
		for _, path := range []string{"nope.yaml", "app/nope.go", "nope/deeper.go", ""} {
			_, err := f.src.ReadFile(t.Context(), f.url, "main", rev, path, 1<<20)
			wantIs(t, err, ErrFileNotFound)
		}
	}},
	{"a folder is not a file", func(t *testing.T, f *fixture) {
		rev := f.repo.Commit(t, "main", tree("v1"), "first")
		_, err := f.src.ReadFile(t.Context(), f.url, "main", rev, "app", 1<<20)
		wantIs(t, err, ErrFileNotFound)
	}},
	{"a missing branch is ErrBranchNotFound", func(t *testing.T, f *fixture) {
		rev := f.repo.Commit(t, "main", tree("v1"), "first")
		_, err := f.src.Head(t.Context(), f.url, "trunk")
		wantIs(t, err, ErrBranchNotFound)
		_, err = f.src.ReadFile(t.Context(), f.url, "trunk", zeroSHA, "wm.yaml", 1<<20)
		wantIs(t, err, ErrBranchNotFound)
		// A commit the cache holds is immutable: it reads whatever the branch.
		if got := f.read(t, rev, "wm.yaml"); got == "" {
			t.Error("empty wm.yaml")
		}
	}},
	{"an empty repository has no branch", func(t *testing.T, f *fixture) {
		_, err := f.src.Head(t.Context(), f.url, "main")
		wantIs(t, err, ErrBranchNotFound)
	}},
	{"a missing repository is ErrRepoNotFound", func(t *testing.T, f *fixture) {
		url := f.urlOf("nobody/nothing.git")
		_, err := f.src.Head(t.Context(), url, "main")
		wantIs(t, err, ErrRepoNotFound)
		_, err = f.src.Files(t.Context(), url, "main", zeroSHA)
		wantIs(t, err, ErrRepoNotFound)
	}},
	{"a file over maxSize is ErrTooLarge", func(t *testing.T, f *fixture) {
		rev := f.repo.Commit(t, "main", map[string]string{"wm.yaml": "0123456789"}, "ten bytes")
		if _, err := f.src.ReadFile(t.Context(), f.url, "main", rev, "wm.yaml", 10); err != nil {
			t.Errorf("10 bytes under a cap of 10: %v", err)
		}
		_, err := f.src.ReadFile(t.Context(), f.url, "main", rev, "wm.yaml", 9)
		wantIs(t, err, ErrTooLarge)
	}},
	{"files lists the regular files", func(t *testing.T, f *fixture) {
		rev := f.repo.Commit(t, "main", tree("v1"), "first")
		got, err := f.src.Files(t.Context(), f.url, "main", rev)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"Dockerfile", "app/main.go", "app/web/index.h", "wm.yaml"}
		if !slices.Equal(got, want) {
			t.Errorf("files %q, want %q", got, want)
		}
	}},
	{"a file removed by a later commit is gone at that commit only", func(t *testing.T, f *fixture) {
		v1 := f.repo.Commit(t, "main", tree("v1"), "first")
		v2 := f.repo.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "no Dockerfile")
		_, err := f.src.ReadFile(t.Context(), f.url, "main", v2, "Dockerfile", 1<<20)
		wantIs(t, err, ErrFileNotFound)
		if got := f.read(t, v1, "Dockerfile"); got != "FROM scratch\n" {
			t.Errorf("Dockerfile at v1: %q", got)
		}
	}},
	{"a revision force-pushed away is ErrRevisionNotFound", func(t *testing.T, f *fixture) {
		gone := f.repo.Commit(t, "main", tree("v1"), "first")
		other := f.repo.Commit(t, "rewrite", tree("v2"), "a new history")
		gittest.Git(t, f.repo.Path(), "update-ref", "refs/heads/main", other)
		gittest.Git(t, f.repo.Path(), "update-ref", "-d", "refs/heads/rewrite")
		_, err := f.src.ReadFile(t.Context(), f.url, "main", gone, "wm.yaml", 1<<20)
		wantIs(t, err, ErrRevisionNotFound)
	}},
	{"another branch is read by its name", func(t *testing.T, f *fixture) {
		f.repo.Commit(t, "main", tree("v1"), "first")
		dev := f.repo.Commit(t, "dev", tree("dev"), "on dev")
		if got := f.head(t, "dev"); got != dev {
			t.Fatalf("head of dev %s, want %s", got, dev)
		}
		data, err := f.src.ReadFile(t.Context(), f.url, "dev", dev, "wm.yaml", 1<<20)
		if err != nil || string(data) != tree("dev")["wm.yaml"] {
			t.Errorf("wm.yaml on dev: %q, %v", data, err)
		}
	}},
}

func TestSourceContract(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			root := t.TempDir()
			urlOf := tr.serve(t, root)
			for i, b := range behaviours {
				t.Run(b.name, func(t *testing.T) {
					name := filepath.Join("students", "repo"+string(rune('a'+i))+".git")
					f := &fixture{
						repo:  gittest.NewRepo(t, filepath.Join(root, name)),
						url:   urlOf(name),
						urlOf: urlOf,
						root:  root,
						src:   New(t.TempDir()),
					}
					b.run(t, f)
				})
			}
		})
	}
}

// countRequests wraps h and counts the requests it serves.
func countRequests(n *atomic.Int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

// served publishes one repo with one commit over a counting server that the
// test may close.
func served(t *testing.T) (srv *httptest.Server, url, rev string, requests *atomic.Int64) {
	t.Helper()
	root := t.TempDir()
	repo := gittest.NewRepo(t, filepath.Join(root, "alice", "web.git"))
	rev = repo.Commit(t, "main", tree("v1"), "first")
	requests = new(atomic.Int64)
	srv = httptest.NewServer(countRequests(requests, gittest.Handler(t, root)))
	t.Cleanup(srv.Close)
	return srv, srv.URL + "/alice/web.git", rev, requests
}

func TestHeadIsOneRequestAndACachedReadIsNone(t *testing.T) {
	_, url, rev, requests := served(t)
	src := New(t.TempDir())
	ctx := t.Context()
	steps := []struct {
		name string
		call func() error
		want int64
	}{
		{"head is one request", func() error { _, err := src.Head(ctx, url, "main"); return err }, 1},
		{"a first read fetches: refs, then the pack", func() error {
			_, err := src.ReadFile(ctx, url, "main", rev, "wm.yaml", 1<<20)
			return err
		}, 2},
		{"a second read at the same revision is served by the cache", func() error {
			_, err := src.ReadFile(ctx, url, "main", rev, "Dockerfile", 1<<20)
			return err
		}, 0},
		{"files at the same revision too", func() error { _, err := src.Files(ctx, url, "main", rev); return err }, 0},
		{"head again is one request", func() error { _, err := src.Head(ctx, url, "main"); return err }, 1},
	}
	for _, s := range steps {
		requests.Store(0)
		if err := s.call(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := requests.Load(); got != s.want {
			t.Errorf("%s: %d requests, want %d", s.name, got, s.want)
		}
	}
}

func TestCacheSurvivesARestartWithoutTheServer(t *testing.T) {
	srv, url, rev, _ := served(t)
	cache := t.TempDir()
	if _, err := New(cache).ReadFile(t.Context(), url, "main", rev, "wm.yaml", 1<<20); err != nil {
		t.Fatal(err)
	}
	srv.Close()

	restarted := New(cache)
	data, err := restarted.ReadFile(t.Context(), url, "main", rev, "wm.yaml", 1<<20)
	if err != nil || string(data) != tree("v1")["wm.yaml"] {
		t.Errorf("read after restart: %q, %v", data, err)
	}
	if _, err := restarted.Files(t.Context(), url, "main", rev); err != nil {
		t.Errorf("files after restart: %v", err)
	}
	_, err = restarted.Head(t.Context(), url, "main")
	wantIs(t, err, ErrUnreachable)
}

func TestACorruptCacheIsEmptiedAndRefetched(t *testing.T) {
	corruptions := []struct {
		name    string
		corrupt func(t *testing.T, dir string)
	}{
		{"packs overwritten with junk", func(t *testing.T, dir string) {
			packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*"))
			if len(packs) == 0 {
				t.Fatal("no packs in the cache")
			}
			for _, p := range packs {
				if err := os.WriteFile(p, []byte("junk"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"packs removed", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, "objects", "pack")); err != nil {
				t.Fatal(err)
			}
		}},
		{"HEAD and config removed", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "HEAD"))
			os.Remove(filepath.Join(dir, "config"))
		}},
		{"the folder replaced by a file", func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir, []byte("junk"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			_, url, rev, requests := served(t)
			cache := t.TempDir()
			src := New(cache)
			if _, err := src.ReadFile(t.Context(), url, "main", rev, "wm.yaml", 1<<20); err != nil {
				t.Fatal(err)
			}
			dirs, _ := filepath.Glob(filepath.Join(cache, "*-alice-web.git"))
			if len(dirs) != 1 {
				t.Fatalf("cache folders %q, want one named after alice/web", dirs)
			}
			c.corrupt(t, dirs[0])
			requests.Store(0)
			data, err := New(cache).ReadFile(t.Context(), url, "main", rev, "wm.yaml", 1<<20)
			if err != nil || string(data) != tree("v1")["wm.yaml"] {
				t.Fatalf("read from a corrupt cache: %q, %v", data, err)
			}
			if got := requests.Load(); got != 2 {
				t.Errorf("%d requests, want 2 (one fetch)", got)
			}
		})
	}
}

func TestBasicAuthWorksAndNeverShowsThePassword(t *testing.T) {
	const user, token, wrong = "wm", "glpat-Right-Token-42", "Wrong-Pa55word-17"
	root := t.TempDir()
	repo := gittest.NewRepo(t, filepath.Join(root, "bob", "ml.git"))
	rev := repo.Commit(t, "main", tree("v1"), "first")
	base := gittest.ServeWithAuth(t, root, user, token)
	host := strings.TrimPrefix(base, "http://")

	cases := []struct {
		name    string
		url     string
		opts    []Option
		wantErr error
	}{
		{"the right token reads", base + "/bob/ml.git", []Option{WithBasicAuth(user, token)}, nil},
		{"the right token in the URL reads", "http://" + user + ":" + token + "@" + host + "/bob/ml.git", nil, nil},
		{"a wrong token is ErrAccessDenied", base + "/bob/ml.git", []Option{WithBasicAuth(user, wrong)}, ErrAccessDenied},
		{"a wrong token in the URL is ErrAccessDenied", "http://" + user + ":" + wrong + "@" + host + "/bob/ml.git", nil, ErrAccessDenied},
		{"no token is ErrAccessDenied", base + "/bob/ml.git", nil, ErrAccessDenied},
		{"a token in the URL of an unreachable remote", "http://" + user + ":" + wrong + "@" + closedAddr(t) + "/bob/ml.git", nil, ErrUnreachable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := New(t.TempDir(), c.opts...)
			head, headErr := src.Head(t.Context(), c.url, "main")
			data, readErr := src.ReadFile(t.Context(), c.url, "main", rev, "wm.yaml", 1<<20)
			for _, err := range []error{headErr, readErr} {
				if c.wantErr == nil && err != nil {
					t.Fatalf("want success, got %v", err)
				}
				if c.wantErr != nil {
					wantIs(t, err, c.wantErr)
					if msg := err.Error(); strings.Contains(msg, wrong) || strings.Contains(msg, token) {
						t.Errorf("the error shows the password: %s", msg)
					}
				}
			}
			if c.wantErr == nil && (head != rev || string(data) != tree("v1")["wm.yaml"]) {
				t.Errorf("head %s, wm.yaml %q", head, data)
			}
		})
	}
}

// closedAddr returns a 127.0.0.1 address where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachableRemotesAreErrUnreachable(t *testing.T) {
	answer := func(h http.HandlerFunc) func(t *testing.T) string {
		return func(t *testing.T) string {
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			return srv.URL
		}
	}
	cases := []struct {
		name string
		base func(t *testing.T) string
	}{
		{"a closed port", func(t *testing.T) string { return "http://" + closedAddr(t) }},
		{"a server answering 503", answer(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		})},
		{"a server answering 429", answer(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "slow down", http.StatusTooManyRequests)
		})},
		{"a server that hangs past the timeout", answer(func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		})},
		{"a server that drops the connection", answer(func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			url := c.base(t) + "/alice/web.git"
			src := New(t.TempDir(), WithTimeout(300*time.Millisecond))
			_, err := src.Head(t.Context(), url, "main")
			wantIs(t, err, ErrUnreachable)
			_, err = src.ReadFile(t.Context(), url, "main", zeroSHA, "wm.yaml", 1<<20)
			wantIs(t, err, ErrUnreachable)
		})
	}
}

func TestConcurrentCallsOnOneRepoAndOnManyAgree(t *testing.T) {
	root := t.TempDir()
	base := gittest.Serve(t, root)
	type repo struct{ url, rev, want string }
	var repos []repo
	for _, name := range []string{"a", "b", "c"} {
		r := gittest.NewRepo(t, filepath.Join(root, name+".git"))
		rev := r.Commit(t, "main", tree(name), "first")
		repos = append(repos, repo{base + "/" + name + ".git", rev, tree(name)["wm.yaml"]})
	}
	src := New(t.TempDir())
	var wg sync.WaitGroup
	for i := range 12 {
		r := repos[i%len(repos)]
		wg.Go(func() {
			head, err := src.Head(t.Context(), r.url, "main")
			if err != nil || head != r.rev {
				t.Errorf("head of %s: %s, %v", r.url, head, err)
				return
			}
			data, err := src.ReadFile(t.Context(), r.url, "main", head, "wm.yaml", 1<<20)
			if err != nil || string(data) != r.want {
				t.Errorf("wm.yaml of %s: %q, %v", r.url, data, err)
			}
		})
	}
	wg.Wait()
}

func TestANonBareLocalRepositoryIsReadLikeABareOne(t *testing.T) {
	bare := gittest.NewRepo(t, filepath.Join(t.TempDir(), "origin.git"))
	rev := bare.Commit(t, "main", tree("v1"), "first")
	work := filepath.Join(t.TempDir(), "work")
	gittest.Git(t, "", "clone", "--quiet", bare.Path(), work)

	src := New(t.TempDir())
	url := "file://" + work
	head, err := src.Head(t.Context(), url, "main")
	if err != nil || head != rev {
		t.Fatalf("head %s, %v; want %s", head, err, rev)
	}
	data, err := src.ReadFile(t.Context(), url, "main", rev, "wm.yaml", 1<<20)
	if err != nil || string(data) != tree("v1")["wm.yaml"] {
		t.Errorf("wm.yaml: %q, %v", data, err)
	}
}

func TestBadArgumentsAreRefusedBeforeAnyNetwork(t *testing.T) {
	src := New(t.TempDir())
	cases := []struct {
		name, url, rev, want string
	}{
		{"ssh is not supported", "ssh://git@gitlab.example.edu/alice/web.git", zeroSHA, `scheme "ssh" not supported`},
		{"scp-like addresses are ssh", "git@gitlab.example.edu:alice/web.git", zeroSHA, "not supported"},
		{"a branch name is not a revision", "file:///nowhere.git", "main", `"main" is not a commit sha`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := src.ReadFile(t.Context(), c.url, "main", c.rev, "wm.yaml", 1<<20)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error saying %s", err, c.want)
			}
		})
	}
}

func TestScrubURLRemovesCredentials(t *testing.T) {
	cases := []struct{ in, want string }{
		{"https://oauth2:glpat-secret@gitlab.example.edu/alice/web.git", "https://gitlab.example.edu/alice/web.git"},
		{"http://user@127.0.0.1:8080/a.git", "http://127.0.0.1:8080/a.git"},
		{"https://gitlab.example.edu/alice/web.git", "https://gitlab.example.edu/alice/web.git"},
		{"file:///srv/wm/repos/alice.git", "file:///srv/wm/repos/alice.git"},
		{"/srv/wm/repos/alice", "/srv/wm/repos/alice"},
		{"https://u:p%zz@host/x.git", "https://host/x.git"}, // does not parse
	}
	for _, c := range cases {
		if got := ScrubURL(c.in); got != c.want {
			t.Errorf("ScrubURL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCacheNamesAreUniqueReadableAndFreeOfCredentials(t *testing.T) {
	a := cacheName(ScrubURL("https://oauth2:secret@gitlab.example.edu/alice/web.git"))
	if a != cacheName("https://gitlab.example.edu/alice/web.git") {
		t.Error("the same repo with and without credentials has two caches")
	}
	if !strings.HasSuffix(a, "-alice-web.git") || strings.Contains(a, "secret") {
		t.Errorf("name %q", a)
	}
	if a == cacheName("https://gitlab.example.edu/alice/web2.git") {
		t.Error("two repos share a cache")
	}
	if n := cacheName("file:///"); n == "" || strings.Contains(n, "/") {
		t.Errorf("name of file:/// is %q", n)
	}
}
