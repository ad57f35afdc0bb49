package gittest

import (
	"bytes"
	"crypto/subtle"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Repo is a bare repository on disk that a test commits to.
type Repo struct {
	path string
}

// NewRepo creates an empty bare repository at dir, whose default branch is
// main.
func NewRepo(t testing.TB, dir string) *Repo {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	Git(t, "", "init", "--quiet", "--bare", "--initial-branch=main", abs)
	return &Repo{path: abs}
}

// Path returns the repository's absolute path.
func (r *Repo) Path() string { return r.path }

// FileURL returns the repository's file:// URL.
func (r *Repo) FileURL() string { return "file://" + filepath.ToSlash(r.path) }

// Commit makes a commit on branch whose tree is exactly files (slash
// separated path to content): files absent from the map are absent from
// the commit. The commit's parent is the branch's head, if the branch
// exists. It moves the branch to the commit and returns the commit's sha.
func (r *Repo) Commit(t testing.TB, branch string, files map[string]string, message string) string {
	t.Helper()
	work := t.TempDir()
	tree := filepath.Join(work, "tree")
	for name, content := range files {
		p := filepath.Join(tree, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"GIT_DIR=" + r.path,
		"GIT_WORK_TREE=" + tree,
		"GIT_INDEX_FILE=" + filepath.Join(work, "index"),
	}
	run(t, tree, env, "add", "--all")
	args := []string{"commit-tree", run(t, tree, env, "write-tree"), "-m", message}
	ref := "refs/heads/" + branch
	if parent, ok := r.resolve(ref); ok {
		args = append(args, "-p", parent)
	}
	sha := run(t, tree, env, args...)
	run(t, tree, env, "update-ref", ref, sha)
	return sha
}

// resolve returns the commit a ref points to, if the ref exists.
func (r *Repo) resolve(ref string) (string, bool) {
	cmd := command(r.path, nil, "rev-parse", "--verify", "--quiet", ref+"^{commit}")
	out, err := cmd.Output()
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(out)), true
}

// Git runs git with args in dir (the current folder if empty), with a
// fixed identity and date and without the machine's configuration, and
// returns its standard output, trimmed. It fails the test if git fails.
func Git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	return run(t, dir, nil, args...)
}

func run(t testing.TB, dir string, env []string, args ...string) string {
	t.Helper()
	cmd := command(dir, env, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// command prepares a git command isolated from the user's and the
// system's configuration, so that tests behave the same on every machine.
func command(dir string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_AUTHOR_NAME=gittest", "GIT_AUTHOR_EMAIL=gittest@example.invalid",
		"GIT_COMMITTER_NAME=gittest", "GIT_COMMITTER_EMAIL=gittest@example.invalid",
		"GIT_AUTHOR_DATE=2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE=2025-01-01T00:00:00Z",
	)
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// execPath is git's folder of helper programs, where git-http-backend is.
var execPath = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("git", "--exec-path").Output()
	return strings.TrimSpace(string(out)), err
})

// Handler serves every repository under root over git's smart HTTP
// protocol: a repository at root/alice/web.git is at /alice/web.git.
// Each request runs one git http-backend process, as CGI.
func Handler(t testing.TB, root string) http.Handler {
	t.Helper()
	dir, err := execPath()
	if err != nil {
		t.Fatalf("find git http-backend: git --exec-path: %v", err)
	}
	return &cgi.Handler{
		Path:       filepath.Join(dir, "git-http-backend"),
		Env:        []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1"},
		InheritEnv: []string{"PATH"},
		Stderr:     io.Discard, // "not found" and the like reach the client as statuses
	}
}

// Serve starts a server on 127.0.0.1 for every repository under root and
// returns its base URL, without a trailing slash; the server is closed when
// the test ends.
func Serve(t testing.TB, root string) (baseURL string) {
	t.Helper()
	return serve(t, Handler(t, root))
}

// ServeWithAuth is Serve behind HTTP basic auth: a request without user and
// pass gets 401 Unauthorized, as from GitLab.
func ServeWithAuth(t testing.TB, root, user, pass string) (baseURL string) {
	t.Helper()
	return serve(t, BasicAuth(Handler(t, root), user, pass))
}

// BasicAuth wraps h so that only requests carrying user and pass reach it.
func BasicAuth(h http.Handler, user, pass string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="gittest"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func serve(t testing.TB, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
