package access_test

import (
	"archive/tar"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
)

// hostileIdle is the idle timeout of the hostile cases' server.
const hostileIdle = 2 * time.Second

func TestHostileRequestsAreRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *access.Config) {
		c.IdleTimeout = hostileIdle
		c.AllowedOrigins = []string{"https://ide.example.edu"}
	})
	alice := e.client(e.aliceToken)

	t.Run("a token in the URL is refused even when it is valid", func(t *testing.T) {
		for _, param := range []string{"private_token", "access_token", "token"} {
			resp, err := http.Get(e.url + access.Prefix + "whoami?" + param + "=" + e.aliceToken)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("?%s=: status %d, want 400", param, resp.StatusCode)
			}
		}
	})

	t.Run("names that are not one container of one's own are refused", func(t *testing.T) {
		cases := []struct {
			name string
			want int
		}{
			{core.ObjectName(e.bob, "web"), http.StatusForbidden},
			{"..", http.StatusNotFound},
			{"web_", http.StatusNotFound},
			{e.alice + "__web", http.StatusNotFound},
			{strings.ToUpper(e.alice) + "_web", http.StatusNotFound},
			{"web%2F..%2F..%2Fetc", http.StatusNotFound},
			{"nothing", http.StatusNotFound},
		}
		for _, c := range cases {
			_, err := alice.Logs(ctx(t), c.name, access.LogsRequest{})
			if got := access.StatusOf(err); got != c.want {
				t.Errorf("logs of %q: %v (status %d), want %d", c.name, err, got, c.want)
			}
		}
	})

	t.Run("a container named as alice's but labelled as another's is not hers", func(t *testing.T) {
		cli := dockertest.Client(t)
		name := core.ObjectName(e.alice, "evil")
		created, err := cli.ContainerCreate(ctx(t), &container.Config{Image: dockertest.DefaultBusybox, Cmd: []string{"sleep", "3600"},
			Labels: map[string]string{docker.LabelManagedBy: docker.ManagedByValue, docker.LabelOwner: e.bob, docker.LabelName: "evil"}},
			&container.HostConfig{}, &network.NetworkingConfig{}, nil, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.ContainerRemove(t.Context(), created.ID, container.RemoveOptions{Force: true}) })
		if err := cli.ContainerStart(ctx(t), created.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err = alice.Exec(ctx(t), "evil", access.ExecRequest{Cmd: []string{"id"}})
		wantStatus(t, err, http.StatusNotFound)
		// And bob, whose label it carries, cannot reach it by its name.
		_, err = e.client(e.bobToken).Logs(ctx(t), name, access.LogsRequest{})
		wantStatus(t, err, http.StatusForbidden)
	})

	t.Run("an unlabelled container with a name of alice's is not hers", func(t *testing.T) {
		dockertest.AddForeign(t, core.ObjectName(e.alice, "foreign"))
		_, err := alice.Logs(ctx(t), "foreign", access.LogsRequest{})
		wantStatus(t, err, http.StatusNotFound)
	})

	t.Run("archives with anything but files, folders and links are refused before they reach the container", func(t *testing.T) {
		cases := []struct {
			name string
			hdr  tar.Header
			want int
		}{
			{"a character device", tar.Header{Name: "mem", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 1, Mode: 0o666}, http.StatusBadRequest},
			{"a block device", tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o666}, http.StatusBadRequest},
			{"a named pipe", tar.Header{Name: "fifo", Typeflag: tar.TypeFifo, Mode: 0o666}, http.StatusBadRequest},
			{"a path climbing out", tar.Header{Name: "../../escape", Typeflag: tar.TypeReg, Mode: 0o644}, http.StatusBadRequest},
			{"an absolute path", tar.Header{Name: "/etc/evil", Typeflag: tar.TypeReg, Mode: 0o644}, http.StatusBadRequest},
			{"a hard link out of the archive", tar.Header{Name: "link", Typeflag: tar.TypeLink, Linkname: "../../etc/shadow"}, http.StatusBadRequest},
			{"a file past the copy limit", tar.Header{Name: "big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2 << 20}, http.StatusRequestEntityTooLarge},
		}
		for _, c := range cases {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			if err := tw.WriteHeader(&tar.Header{Name: "first", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}); err != nil {
				t.Fatal(err)
			}
			_, _ = tw.Write([]byte("ok"))
			h := c.hdr
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Size > 0 {
				_, _ = io.CopyN(tw, zeros{}, h.Size)
			}
			_ = tw.Close()
			err := alice.CopyTo(ctx(t), "web", "/tmp", &buf)
			if got := access.StatusOf(err); got != c.want {
				t.Errorf("%s: %v (status %d), want %d", c.name, err, got, c.want)
			}
		}
		out, code := dockertest.Exec(t, e.aliceWebName, "ls", "/tmp")
		for _, bad := range []string{"mem", "sda", "fifo", "big", "link"} {
			if code != 0 || strings.Contains(out, bad) {
				t.Errorf("ls /tmp = %q (%d): %s reached the container", out, code, bad)
			}
		}
	})

	t.Run("files copied in lose their setuid and setgid bits", func(t *testing.T) {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		_ = tw.WriteHeader(&tar.Header{Name: "suid", Typeflag: tar.TypeReg, Mode: 0o6755, Size: 2})
		_, _ = tw.Write([]byte("#!"))
		_ = tw.Close()
		if err := alice.CopyTo(ctx(t), "web", "/tmp", &buf); err != nil {
			t.Fatal(err)
		}
		rc, err := alice.CopyFrom(ctx(t), "web", "/tmp/suid")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		h, err := tar.NewReader(rc).Next()
		if err != nil || h.Mode&0o7777 != 0o755 {
			t.Errorf("mode in the container = %o, %v; want 755", h.Mode&0o7777, err)
		}
	})

	t.Run("an exec WebSocket from another site's page is refused", func(t *testing.T) {
		cases := []struct {
			origin string
			want   int // 0: accepted
		}{
			{"https://evil.example.com", http.StatusForbidden},
			{"null", http.StatusForbidden},
			{"https://ide.example.edu", 0},
			{e.url, 0},
		}
		for _, c := range cases {
			_, err := alice.Exec(ctx(t), "web", access.ExecRequest{Cmd: []string{"true"}, Header: http.Header{"Origin": {c.origin}}})
			if got := access.StatusOf(err); got != c.want {
				t.Errorf("origin %s: %v (status %d), want %d", c.origin, err, got, c.want)
			}
		}
	})

	t.Run("a student holds only so many streams at once", func(t *testing.T) {
		var open []io.ReadCloser
		defer func() {
			for _, rc := range open {
				rc.Close()
			}
		}()
		for range 2 {
			rc, err := alice.Logs(ctx(t), "web", access.LogsRequest{Follow: true})
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, rc)
		}
		_, err := alice.Logs(ctx(t), "web", access.LogsRequest{Follow: true})
		wantStatus(t, err, http.StatusTooManyRequests)
		_, err = alice.Exec(ctx(t), "web", access.ExecRequest{Cmd: []string{"true"}})
		wantStatus(t, err, http.StatusTooManyRequests)
		// Another student is not held back by alice's.
		if _, err := e.client(e.bobToken).Exec(ctx(t), "web", access.ExecRequest{Cmd: []string{"true"}}); err != nil {
			t.Errorf("bob's exec while alice holds all of hers: %v", err)
		}
		open[0].Close()
		open = open[1:]
		waitFor(t, func() bool {
			_, err := alice.Exec(ctx(t), "web", access.ExecRequest{Cmd: []string{"true"}})
			return err == nil
		})
	})

	t.Run("an idle exec session and an idle followed stream end", func(t *testing.T) {
		start := time.Now()
		pr, pw := io.Pipe()
		defer pw.Close()
		_, err := alice.Exec(ctx(t), "web", access.ExecRequest{Cmd: []string{"sh"}, TTY: true, Stdin: pr})
		if err == nil || time.Since(start) < hostileIdle {
			t.Errorf("idle exec ended after %v with %v, want an error after %v", time.Since(start), err, hostileIdle)
		}
		rc, err := alice.Logs(ctx(t), "web", access.LogsRequest{Follow: true, Tail: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, err := io.ReadAll(rc); err != nil {
			t.Errorf("the idle stream ended with %v", err)
		}
	})

	t.Run("a copy out past the limit is cut off, never passed as whole", func(t *testing.T) {
		dockertest.Exec(t, e.aliceWebName, dockertest.HostBusybox, "dd", "if=/dev/zero", "of=/tmp/big", "bs=1024", "count=2048")
		rc, err := alice.CopyFrom(ctx(t), "web", "/tmp/big")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if n, err := io.Copy(io.Discard, rc); err == nil {
			t.Errorf("read %d bytes of a 2 MiB file through a 1 MiB limit without an error", n)
		}
	})
}

// zeros reads zeros forever.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestEachAccountHasItsOwnRate(t *testing.T) {
	t.Parallel()
	srv := access.New(access.Config{
		Auth: access.NewTokens(map[string]string{"alice-token-0123456789": "alice", "bob-token-0123456789x": "bob"}),
		Rate: 0.001, Burst: 2,
	})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	alice := &access.Client{BaseURL: hs.URL, Token: "alice-token-0123456789"}
	bob := &access.Client{BaseURL: hs.URL, Token: "bob-token-0123456789x"}
	for i := range 2 {
		if _, err := alice.WhoAmI(ctx(t)); err != nil {
			t.Fatalf("request %d within the burst: %v", i+1, err)
		}
	}
	_, err := alice.WhoAmI(ctx(t))
	wantStatus(t, err, http.StatusTooManyRequests)
	if _, err := bob.WhoAmI(ctx(t)); err != nil {
		t.Errorf("bob is held back by alice's rate: %v", err)
	}
}

func TestAClientThatStopsReadingIsCutOffAndItsSessionFreed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *access.Config) {
		c.Stall = time.Second
		c.MaxSessions = 1
	})
	line := strings.Repeat("0123456789", 20)
	_, err := e.engine.Create(ctx(t), core.ContainerSpec{
		Name: core.ObjectName(e.alice, "chatty"), Owner: e.alice, Repo: e.alice + "/web", LocalName: "chatty",
		Image: dockertest.DefaultBusybox, Network: "wm-" + e.alice, Running: true,
		Command: []string{"sh", "-c", "while :; do echo " + line + "; done"},
	})
	if err != nil {
		t.Fatal(err)
	}
	follow := func() *http.Response {
		req, _ := http.NewRequestWithContext(ctx(t), http.MethodGet, e.url+access.Prefix+"containers/chatty/logs?follow=1", nil)
		req.Header.Set("Authorization", "Bearer "+e.aliceToken)
		resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	stuck := follow() // never read
	defer stuck.Body.Close()
	if stuck.StatusCode != http.StatusOK {
		t.Fatalf("the first stream: %d", stuck.StatusCode)
	}
	if again := follow(); again.StatusCode != http.StatusTooManyRequests {
		again.Body.Close()
		t.Fatalf("a second stream while the first is open: %d, want 429", again.StatusCode)
	} else {
		again.Body.Close()
	}
	// Once the unread stream has filled the connection's buffers (a few
	// MB) and stalled for a second, its session is given back.
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp := follow()
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session of a client that stopped reading was not given back within 90s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The stream's audit entry is written as its handler returns, which
	// may be just after its session was given back: wait for it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		entries, err := e.state.Audit(time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		cut := false
		for _, a := range entries {
			cut = cut || (a.Action == "logs" && strings.HasPrefix(a.Result, "ended:"))
		}
		if cut {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no audit entry of a stream cut off: %+v", entries)
		}
	}
}
