package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
)

// accessor is what the access methods need of an implementation.
type accessor interface {
	engine
	Logs(ctx context.Context, owner, name string, o docker.LogOptions) (io.ReadCloser, error)
	Restart(ctx context.Context, owner, name string, timeout time.Duration) error
	CopyFrom(ctx context.Context, owner, name, path string) (io.ReadCloser, error)
	CopyTo(ctx context.Context, owner, name, dir string, content io.Reader) error
	Exec(ctx context.Context, owner, name string, o docker.ExecOptions) (*docker.Exec, error)
}

var (
	_ accessor = (*docker.Engine)(nil)
	_ accessor = (*docker.Fake)(nil)
)

// logged is the command of a container that logs two lines and waits.
var logged = []string{"sh", "-c", "echo hello; echo world; exec sleep 3600"}

func TestAccessFake(t *testing.T) {
	t.Parallel()
	testAccess(t, func(t *testing.T) (accessor, string) {
		f := docker.NewFake("fake")
		f.AddImage(image)
		// The fake plays the commands the cases run as busybox would.
		f.SetExecHandler(func(ctx context.Context, cmd []string, stdin io.Reader, stdout, stderr io.Writer) int {
			script := strings.Join(cmd, " ")
			switch {
			case strings.Contains(script, "sleep"):
				<-ctx.Done()
				return 137
			case strings.Contains(script, "cat; exit 3"):
				_, _ = io.Copy(stdout, stdin)
				return 3
			case strings.Contains(script, "-t 1"):
				_, _ = io.WriteString(stdout, "/dev/pts/0\r\n")
				return 0
			}
			return 127
		})
		return f, dockertest.Owner(t)
	})
}

func TestAccessRealEngine(t *testing.T) {
	t.Parallel()
	testAccess(t, func(t *testing.T) (accessor, string) {
		e := dockertest.Engine(t)
		dockertest.BusyboxImage(t, image)
		return e, dockertest.Owner(t)
	})
}

// running makes owner's running container web logging two lines; on a
// Fake, the lines are added by hand.
func running(t *testing.T, a accessor, owner string) string {
	t.Helper()
	s := spec(t, owner, "web")
	s.Command = logged
	create(t, a, s)
	if f, ok := a.(*docker.Fake); ok {
		f.AppendLog(s.Name, "hello", "world")
	}
	return s.Name
}

// testAccess is the contract of the access methods.
func testAccess(t *testing.T, newAccessor func(t *testing.T) (accessor, string)) {
	cases := []struct {
		name string
		test func(t *testing.T, a accessor, owner string)
	}{
		{"every access method refuses another owner's container as not found", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			other := dockertest.OwnerNamed(t, owner+"-x")
			_, err := a.Logs(ctx(t), other, name, docker.LogOptions{})
			wantErr(t, err, docker.ErrNotFound)
			wantErr(t, a.Restart(ctx(t), other, name, time.Second), docker.ErrNotFound)
			_, err = a.CopyFrom(ctx(t), other, name, "/etc")
			wantErr(t, err, docker.ErrNotFound)
			wantErr(t, a.CopyTo(ctx(t), other, name, "/tmp", archive(t, "x", "y")), docker.ErrNotFound)
			_, err = a.Exec(ctx(t), other, name, docker.ExecOptions{Cmd: []string{"true"}})
			wantErr(t, err, docker.ErrNotFound)
			_, err = a.Logs(ctx(t), "", name, docker.LogOptions{})
			wantErr(t, err, docker.ErrNotFound)
		}},
		{"a container without WhaleMountain's labels is not found", func(t *testing.T, a accessor, owner string) {
			name := core.ObjectName(owner, "foreign")
			addForeign(t, a, name)
			_, err := a.Logs(ctx(t), owner, name, docker.LogOptions{})
			wantErr(t, err, docker.ErrNotFound)
			_, err = a.Exec(ctx(t), owner, name, docker.ExecOptions{Cmd: []string{"true"}})
			wantErr(t, err, docker.ErrNotFound)
			wantErr(t, a.Restart(ctx(t), owner, name, time.Second), docker.ErrNotFound)
		}},
		{"logs give the container's lines, the last ones with tail", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			want := "hello\nworld\n"
			waitFor(t, func() bool { return readLogs(t, a, owner, name, docker.LogOptions{}) == want })
			if got := readLogs(t, a, owner, name, docker.LogOptions{Tail: 1}); got != "world\n" {
				t.Errorf("tail 1 = %q, want %q", got, "world\n")
			}
		}},
		{"a followed log stream ends when the container restarts", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			waitFor(t, func() bool { return readLogs(t, a, owner, name, docker.LogOptions{}) == "hello\nworld\n" })
			rc, err := a.Logs(ctx(t), owner, name, docker.LogOptions{Follow: true, Tail: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got := make(chan string, 1)
			go func() { b, _ := io.ReadAll(rc); got <- string(b) }()
			if err := a.Restart(ctx(t), owner, name, 0); err != nil {
				t.Fatal(err)
			}
			select {
			case s := <-got:
				if !strings.HasPrefix(s, "world\n") {
					t.Errorf("followed %q, want it to start with the last line", s)
				}
			case <-ctx(t).Done():
				t.Fatal("the followed stream did not end when the container restarted")
			}
		}},
		{"restart starts the container again", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			before := inspect(t, a, name).StartedAt
			if err := a.Restart(ctx(t), owner, name, 0); err != nil {
				t.Fatal(err)
			}
			if c := inspect(t, a, name); !c.Running || !c.StartedAt.After(before) {
				t.Errorf("after restart: running %v, started %v (before %v)", c.Running, c.StartedAt, before)
			}
		}},
		{"a file copied in comes back out", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			if err := a.CopyTo(ctx(t), owner, name, "/tmp", archive(t, "notes.txt", "my notes")); err != nil {
				t.Fatal(err)
			}
			rc, err := a.CopyFrom(ctx(t), owner, name, "/tmp/notes.txt")
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			files := unpack(t, rc)
			if files["notes.txt"] != "my notes" {
				t.Errorf("copied out %v, want notes.txt with my notes", files)
			}
			_, err = a.CopyFrom(ctx(t), owner, name, "/no/such/file")
			wantErr(t, err, docker.ErrNotFound)
		}},
		{"exec passes stdin through and the exit code back", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			x, err := a.Exec(ctx(t), owner, name, docker.ExecOptions{Cmd: []string{"sh", "-c", "cat; exit 3"}, Stdin: true})
			if err != nil {
				t.Fatal(err)
			}
			defer x.Close()
			out := make(chan string, 1)
			go func() { b, _ := io.ReadAll(x.Stdout); out <- string(b) }()
			go func() { _, _ = io.Copy(io.Discard, x.Stderr) }()
			if _, err := io.WriteString(x.Stdin, "ping\n"); err != nil {
				t.Fatal(err)
			}
			x.Stdin.Close()
			if got := <-out; got != "ping\n" {
				t.Errorf("stdout %q, want ping", got)
			}
			if code, err := x.Wait(ctx(t)); err != nil || code != 3 {
				t.Errorf("exit %d, %v; want 3", code, err)
			}
		}},
		{"exec with a TTY runs on a terminal", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			x, err := a.Exec(ctx(t), owner, name, docker.ExecOptions{Cmd: []string{"sh", "-c", "[ -t 1 ] && echo /dev/pts/terminal"}, TTY: true, Rows: 24, Cols: 80})
			if err != nil {
				t.Fatal(err)
			}
			defer x.Close()
			b, _ := io.ReadAll(x.Stdout)
			if !strings.HasPrefix(string(b), "/dev/pts/") || x.Stderr != nil {
				t.Errorf("tty printed %q (stderr %v), want a /dev/pts terminal and no stderr", b, x.Stderr)
			}
			if code, err := x.Wait(ctx(t)); err != nil || code != 0 {
				t.Errorf("exit %d, %v; want 0", code, err)
			}
		}},
		{"an exec session ends when the container restarts", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			x, err := a.Exec(ctx(t), owner, name, docker.ExecOptions{Cmd: []string{"sleep", "3600"}, TTY: true})
			if err != nil {
				t.Fatal(err)
			}
			defer x.Close()
			ended := make(chan struct{})
			go func() { _, _ = io.Copy(io.Discard, x.Stdout); close(ended) }()
			if err := a.Restart(ctx(t), owner, name, 0); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ended:
			case <-ctx(t).Done():
				t.Fatal("the exec session outlived the container's stop")
			}
		}},
		{"exec refuses a stopped container", func(t *testing.T, a accessor, owner string) {
			name := running(t, a, owner)
			if err := a.Stop(ctx(t), name, 0); err != nil {
				t.Fatal(err)
			}
			_, err := a.Exec(ctx(t), owner, name, docker.ExecOptions{Cmd: []string{"true"}})
			if !errors.Is(err, docker.ErrNotRunning) {
				t.Errorf("exec in a stopped container: %v, want ErrNotRunning", err)
			}
			wantErr(t, err, docker.ErrConflict)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			a, owner := newAccessor(t)
			c.test(t, a, owner)
		})
	}
}

// readLogs reads owner's container's logs to the end.
func readLogs(t *testing.T, a accessor, owner, name string, o docker.LogOptions) string {
	t.Helper()
	rc, err := a.Logs(ctx(t), owner, name, o)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds, failing t after 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// archive is a tar archive of one file.
func archive(t *testing.T, name, content string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write([]byte(content))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// unpack reads the regular files of a tar archive.
func unpack(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			out[h.Name] = string(b)
		}
	}
}
