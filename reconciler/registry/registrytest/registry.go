package registrytest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry server Start runs; Debian's docker-registry
// package installs it.
const Binary = "/usr/bin/docker-registry"

// startTimeout bounds how long Start waits for the registry to listen and
// answer /v2/.
const startTimeout = 20 * time.Second

// callTimeout bounds each push or pull the helpers make.
const callTimeout = time.Minute

// Registry is a docker-registry process serving plain HTTP on 127.0.0.1.
type Registry struct {
	host string
	auth *authn.Basic // nil when the registry needs none

	cmd  *exec.Cmd
	logs *tail
	done chan struct{} // closed when the process has exited
}

// Start runs a registry without authentication and stops it when t ends.
// It fails t when the binary is missing or the registry does not come up.
func Start(t testing.TB) *Registry {
	t.Helper()
	return start(t, nil)
}

// StartWithAuth runs a registry that requires HTTP basic auth as user with
// password pass (bcrypt in an htpasswd file) for every request, and stops
// it when t ends. Push and Pull use the credentials.
func StartWithAuth(t testing.TB, user, pass string) *Registry {
	t.Helper()
	if user == "" || strings.ContainsAny(user, ":\n") {
		t.Fatalf("registrytest: user %q: want a non-empty name without ':' or newline", user)
	}
	return start(t, &authn.Basic{Username: user, Password: pass})
}

// listening is the line of the registry's log that names its address.
var listening = regexp.MustCompile(`listening on (127\.0\.0\.1:[0-9]+)`)

func start(t testing.TB, auth *authn.Basic) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("registrytest: %s is missing (apt-get install -y docker-registry): %v", Binary, err)
	}
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte(configYAML(dir, auth != nil)), 0o600); err != nil {
		t.Fatalf("registrytest: write config: %v", err)
	}
	if auth != nil {
		hash, err := bcrypt.GenerateFromPassword([]byte(auth.Password), bcrypt.MinCost)
		if err != nil {
			t.Fatalf("registrytest: hash password: %v", err)
		}
		line := auth.Username + ":" + string(hash) + "\n"
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(line), 0o600); err != nil {
			t.Fatalf("registrytest: write htpasswd: %v", err)
		}
	}

	// The registry listens on port 0 and logs the port the kernel gave it,
	// so no other process can take the port between choosing and binding.
	cmd := exec.Command(Binary, "serve", config)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	// Pdeathsig: the registry dies with the test binary, even on a crash.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("registrytest: start %s: %v", Binary, err)
	}
	r := &Registry{auth: auth, cmd: cmd, logs: &tail{max: 64}, done: make(chan struct{})}
	addr := make(chan string, 1)
	go r.read(stderr, addr)
	go func() {
		cmd.Wait()
		close(r.done)
	}()
	t.Cleanup(r.stop)

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case r.host = <-addr:
	case <-r.done:
		t.Fatalf("registrytest: %s exited at start:\n%s", Binary, r.logs)
	case <-timer.C:
		t.Fatalf("registrytest: %s did not listen within %s:\n%s", Binary, startTimeout, r.logs)
	}
	if err := r.waitReady(timer.C); err != nil {
		t.Fatalf("registrytest: %v\n%s", err, r.logs)
	}
	return r
}

// configYAML is the registry's configuration: file storage under dir, a
// loopback address, and htpasswd auth when withAuth.
func configYAML(dir string, withAuth bool) string {
	secret := make([]byte, 16)
	rand.Read(secret)
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: %q
`, filepath.Join(dir, "storage"), hex.EncodeToString(secret))
	if withAuth {
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: registrytest
    path: %q
`, filepath.Join(dir, "htpasswd"))
	}
	return b.String()
}

// read keeps the last lines of the registry's log for failure messages and
// sends the address it listens on, once.
func (r *Registry) read(stderr io.Reader, addr chan<- string) {
	sent := false
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		r.logs.add(line)
		if m := listening.FindStringSubmatch(line); m != nil && !sent {
			addr <- m[1]
			sent = true
		}
	}
}

// waitReady polls /v2/ until the registry answers 200, or 401 when it
// requires auth.
func (r *Registry) waitReady(deadline <-chan time.Time) error {
	want := http.StatusOK
	if r.auth != nil {
		want = http.StatusUnauthorized
	}
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		resp, err := client.Get("http://" + r.host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			err = fmt.Errorf("GET /v2/: status %d, want %d", resp.StatusCode, want)
		}
		last = err
		select {
		case <-deadline:
			return fmt.Errorf("registry at %s not ready within %s: %w", r.host, startTimeout, last)
		case <-r.done:
			return fmt.Errorf("registry exited before it was ready: %w", last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop ends the registry process and waits for it.
func (r *Registry) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
}

// Stop ends the registry before the test does, to test what happens when
// the registry is down. Cleanup does it anyway.
func (r *Registry) Stop() { r.stop() }

// Host returns the registry's address, "127.0.0.1:PORT".
func (r *Registry) Host() string { return r.host }

// Ref returns the reference of repo:tag on r, e.g. "127.0.0.1:PORT/a/b:1".
func (r *Registry) Ref(repo, tag string) string { return r.host + "/" + repo + ":" + tag }

// Auth returns the credentials the registry requires, or nil.
func (r *Registry) Auth() *authn.Basic { return r.auth }

// Options returns the go-containerregistry options to reach r: its
// credentials if any, and a bounded context.
func (r *Registry) options(ctx context.Context) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx)}
	if r.auth != nil {
		opts = append(opts, remote.WithAuth(r.auth))
	}
	return opts
}

// Push writes img under ref (a reference on r, see Ref) with
// go-containerregistry's remote.Write over plain HTTP, and returns the
// manifest digest.
func (r *Registry) Push(t testing.TB, ref string, img v1.Image) v1.Hash {
	t.Helper()
	tag, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("registrytest: push %s: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := remote.Write(tag, img, r.options(ctx)...); err != nil {
		t.Fatalf("registrytest: push %s: %v\n%s", ref, err, r.logs)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("registrytest: push %s: digest: %v", ref, err)
	}
	return d
}

// Pull reads the image at ref from r. Its layers are fetched when read.
func (r *Registry) Pull(t testing.TB, ref string) v1.Image {
	t.Helper()
	tag, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("registrytest: pull %s: %v", ref, err)
	}
	// The image's layers are read after Pull returns, so the context lives
	// as long as the test.
	img, err := remote.Image(tag, r.options(t.Context())...)
	if err != nil {
		t.Fatalf("registrytest: pull %s: %v", ref, err)
	}
	return img
}

// Delete removes the manifest ref points to (tag or digest), so that ref
// is no longer found.
func (r *Registry) Delete(t testing.TB, ref string) {
	t.Helper()
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("registrytest: delete %s: %v", ref, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	// The registry deletes manifests by digest only.
	desc, err := remote.Head(parsed, r.options(ctx)...)
	if err != nil {
		t.Fatalf("registrytest: delete %s: %v", ref, err)
	}
	if err := remote.Delete(parsed.Context().Digest(desc.Digest.String()), r.options(ctx)...); err != nil {
		t.Fatalf("registrytest: delete %s: %v", ref, err)
	}
}

// tail keeps the last max lines written to it.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (l *tail) add(line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, line)
	if len(l.lines) > l.max {
		l.lines = l.lines[len(l.lines)-l.max:]
	}
}

// String returns the kept lines, for failure messages.
func (l *tail) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return "docker-registry log (last lines):\n  " + strings.Join(l.lines, "\n  ")
}
