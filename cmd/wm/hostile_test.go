package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// runningServe is a `wm serve` started in-process by startServe.
type runningServe struct {
	dir    string // the config's folder, short enough for a socket path
	config string // the config file
	public string // base URL of the public listener
	socket string // the admin socket
	admin  *http.Client
}

// freeAddr returns a loopback host:port nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServe runs `wm serve` on a config made of extra and a local repo
// folder, until the test ends, and waits until both listeners answer.
func startServe(t *testing.T, extra string) *runningServe {
	t.Helper()
	// Not t.TempDir: a unix socket path must stay under ~100 bytes.
	dir, err := os.MkdirTemp("", "wm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.MkdirAll(filepath.Join(dir, "repos"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := &runningServe{dir: dir, socket: filepath.Join(dir, "wm-state", "admin.sock")}
	addr := freeAddr(t)
	s.public = "http://" + addr
	s.config = writeFile(t, dir, "wm-server.yaml", "stateDir: wm-state\nlisten: "+addr+"\nsources: {dirs: [{root: repos}]}\n"+extra)
	s.admin = unixClient(s.socket)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errb syncBuffer
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"serve", "--config", s.config})
		root.SetOut(&out)
		root.SetErr(&errb)
		err := root.ExecuteContext(ctx)
		code := 0
		if err != nil {
			code = 1
		}
		done <- code
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("wm serve did not stop")
		}
		if _, err := os.Lstat(s.socket); !os.IsNotExist(err) {
			t.Errorf("the admin socket outlived wm serve: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case code := <-done:
			t.Fatalf("wm serve exited %d:\n%s", code, errb.String())
		default:
		}
		pub, err1 := http.Get(s.public + "/healthz")
		if err1 == nil {
			pub.Body.Close()
		}
		adm, err2 := s.admin.Get("http://wm/healthz")
		if err2 == nil {
			adm.Body.Close()
		}
		if err1 == nil && err2 == nil {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("wm serve does not answer (%v; %v):\n%s", err1, err2, errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// unixClient speaks HTTP over the unix socket at path, whatever the URL's
// host.
func unixClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

func getStatus(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestThePublicListenerAnswers404ForTheStatusAPIAndMetricsEvenFromLoopbackWhileTheAdminSocketAnswers(t *testing.T) {
	s := startServe(t, "")
	for _, path := range []string{statusPath, "/metrics"} {
		if code, body := getStatus(t, http.DefaultClient, s.public+path); code != http.StatusNotFound {
			t.Errorf("public %s from loopback: %d %.200s", path, code, body)
		}
	}
	if code, _ := getStatus(t, http.DefaultClient, s.public+"/healthz"); code != http.StatusOK {
		t.Errorf("public /healthz: %d", code)
	}
	code, body := getStatus(t, s.admin, "http://wm"+statusPath)
	var repos []json.RawMessage
	if code != http.StatusOK || json.Unmarshal([]byte(body), &repos) != nil {
		t.Errorf("admin status: %d %.200s", code, body)
	}
	if code, body := getStatus(t, s.admin, "http://wm/metrics"); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("admin metrics: %d %.200s", code, body)
	}
	fi, err := os.Stat(s.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode %v, want a socket with 0600", fi.Mode())
	}
	// The store is held by the running serve: wm status asks the socket.
	if code, out, errOut := wm(t, "status", "--config", s.config); code != 0 || !strings.HasPrefix(out, "OWNER") {
		t.Errorf("wm status: exit %d\n%s%s", code, out, errOut)
	}
}

func TestAClientThatSendsItsHeadersSlowlyIsCutOff(t *testing.T) {
	lim := defaultHTTPLimits
	lim.ReadHeader = 300 * time.Millisecond
	reached := make(chan struct{}, 1)
	srv := newHTTPServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached <- struct{}{} }), lim, discardLogger())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// The clock starts before the dial: the server's starts when it
	// accepts, which is later.
	start := time.Now()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A header line every 20ms, never the blank line that ends them.
	go func() {
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: wm\r\n"); err != nil {
			return
		}
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(conn, "X-Slow-%d: 1\r\n", i); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// The guard is far beyond the timeout: the server must close first.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn)
	took := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server kept a slow client for %v", took)
	}
	if took < lim.ReadHeader {
		t.Errorf("cut off after %v, before the %v timeout", took, lim.ReadHeader)
	}
	select {
	case <-reached:
		t.Error("a request whose headers never ended reached the handler")
	default:
	}
}

func TestTheServersHaveEveryTimeoutAndAHeaderCap(t *testing.T) {
	srv := newHTTPServer(http.NotFoundHandler(), defaultHTTPLimits, discardLogger())
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 ||
		srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 1<<20 {
		t.Errorf("limits: %+v", srv)
	}
}

// zeros is a large artifact made of nothing.
type zeros struct{ size, off int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.off >= z.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.size-z.off)
	clear(p[:n])
	z.off += n
	return int(n), nil
}

func (z *zeros) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		z.off = off
	case io.SeekCurrent:
		z.off += off
	case io.SeekEnd:
		z.off = z.size + off
	}
	return z.off, nil
}

func TestADownloadThatStallsIsCutOffAndOneThatKeepsReadingOutlastsTheWriteTimeout(t *testing.T) {
	lim := defaultHTTPLimits
	lim.Write = 100 * time.Millisecond
	lim.DownloadStall = time.Second
	const size = 64 << 20
	finished := make(chan error, 2)
	h := downloadDeadlines(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "a.sif", time.Time{}, &zeros{size: size})
		finished <- r.Context().Err()
	}), lim.DownloadStall)
	srv := newHTTPServer(h, lim, discardLogger())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	t.Run("a client that stops reading is cut off", func(t *testing.T) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /artifacts/alice/a.sif HTTP/1.1\r\nHost: wm\r\n\r\n")
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Fatal("the handler still writes to a client that stopped reading")
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.Copy(io.Discard, conn)
		if n >= size {
			t.Errorf("the stalled client got all %d bytes", n)
		}
	})
	t.Run("a client that keeps reading gets everything", func(t *testing.T) {
		resp, err := http.Get("http://" + ln.Addr().String() + "/artifacts/alice/a.sif")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		start := time.Now()
		var n int64
		buf := make([]byte, 1<<20)
		for {
			// 1 MiB every 10ms: slower than the server writes, never
			// stalled for DownloadStall.
			m, err := io.ReadFull(resp.Body, buf)
			n += int64(m)
			if err != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n != size {
			t.Errorf("got %d of %d bytes in %v", n, size, time.Since(start))
		}
		if took := time.Since(start); took < lim.Write {
			t.Logf("the download took %v, less than the write timeout %v: the test proves little", took, lim.Write)
		}
	})
}

func TestABurstBeyondTheLimitGets429AndAnotherClientIsUnaffected(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	l := newClientLimiter(1, 3, 100, func() time.Time { return now })
	h := rateLimit(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }), l, nil, nil, nil)
	get := func(remote string) *http.Response {
		r, _ := http.NewRequest(http.MethodGet, "/healthz", nil)
		r.RemoteAddr = remote
		w := newRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
	for i := range 3 {
		if code := get("192.0.2.1:40000").StatusCode; code != http.StatusOK {
			t.Fatalf("request %d of the burst: %d", i+1, code)
		}
	}
	resp := get("192.0.2.1:40001")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("beyond the burst: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code := get("198.51.100.7:40000").StatusCode; code != http.StatusOK {
		t.Errorf("another client: %d", code)
	}
	now = now.Add(time.Second)
	if code := get("192.0.2.1:40000").StatusCode; code != http.StatusOK {
		t.Errorf("a second later: %d", code)
	}
	// An IPv6 client is one /64: its other addresses share its bucket.
	for i := range 3 {
		get(fmt.Sprintf("[2001:db8:1:2::%x]:40000", i+1))
	}
	if code := get("[2001:db8:1:2:ffff::1]:40000").StatusCode; code != http.StatusTooManyRequests {
		t.Errorf("another address of the same /64: %d", code)
	}
}

func TestXForwardedForNamesTheClientOnlyFromATrustedProxy(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"without a proxy the peer is the client", "192.0.2.1:1234", nil, "192.0.2.1"},
		{"a student's own header is ignored", "192.0.2.1:1234", []string{"203.0.113.9"}, "192.0.2.1"},
		{"a trusted proxy names the client", "10.1.2.3:1234", []string{"192.0.2.1"}, "192.0.2.1"},
		{"what a client put before the proxy's entry is ignored", "10.1.2.3:1234", []string{"203.0.113.9, 192.0.2.1"}, "192.0.2.1"},
		{"a chain of trusted proxies is walked from the right", "[::1]:1234", []string{"192.0.2.1, 10.9.9.9", "10.0.0.2"}, "192.0.2.1"},
		{"a proxy without the header is the client", "10.1.2.3:1234", nil, "10.1.2.3"},
		{"garbage from a trusted proxy stops the walk", "10.1.2.3:1234", []string{"192.0.2.1, not-an-ip"}, "10.1.2.3"},
		{"an IPv4-mapped peer is IPv4", "[::ffff:192.0.2.1]:1234", nil, "192.0.2.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := clientAddr(r, trusted); got.String() != tc.want {
				t.Errorf("got %v, want %s", got, tc.want)
			}
		})
	}
}

func TestTheClientTableStaysBounded(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	l := newClientLimiter(10, 20, 3, func() time.Time { return now })
	key := func(s string) netip.Prefix { return clientKey(netip.MustParseAddr(s)) }
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"} {
		l.allow(key(a))
	}
	if n := l.len(); n != 3 {
		t.Errorf("%d clients kept, cap 3", n)
	}
	// A client seen longer ago than its bucket takes to fill is the same
	// as a new one: it goes.
	now = now.Add(3 * time.Second)
	l.allow(key("192.0.2.9"))
	if n := l.len(); n != 1 {
		t.Errorf("%d clients kept after the others went idle", n)
	}
}

func TestGitLabDeliveriesWithTheWebhookSecretAreNotLimited(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	l := newClientLimiter(1, 1, 100, func() time.Time { return now })
	h := rateLimit(http.NotFoundHandler(), l, nil, webhookSecretHolder("s3cret-s3cret-s3cret"), nil)
	send := func(token string) int {
		r, _ := http.NewRequest(http.MethodPost, "/hooks/gitlab", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		if token != "" {
			r.Header.Set("X-Gitlab-Token", token)
		}
		w := newRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	for i := range 5 {
		if code := send("s3cret-s3cret-s3cret"); code == http.StatusTooManyRequests {
			t.Fatalf("delivery %d limited", i+1)
		}
	}
	send("wrong")
	if code := send("wrong"); code != http.StatusTooManyRequests {
		t.Errorf("a wrong token beyond the burst: %d", code)
	}
}

func TestThePublicListenerLimitsEachClient(t *testing.T) {
	s := startServe(t, "rateLimit: {rate: 0.5, burst: 3}\n")
	limited := 0
	for range 6 {
		resp, err := http.Get(s.public + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusTooManyRequests {
			limited++
			if resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		}
	}
	if limited == 0 {
		t.Error("6 requests within a burst of 3 were all served")
	}
	// The admin socket is not limited.
	for range 6 {
		if code, _ := getStatus(t, s.admin, "http://wm/healthz"); code != http.StatusOK {
			t.Fatalf("admin: %d", code)
		}
	}
}

func TestTheAdminListenerConfigIsChecked(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, config, want string }{
		{"a wildcard address is refused", "adminListen: 0.0.0.0:9090\n", "adminListen: \"0.0.0.0:9090\" listens on every interface"},
		{"an empty host is refused", "adminListen: \":9090\"\n", "listens on every interface"},
		{"the public address is refused", "listen: 127.0.0.1:8080\nadminListen: 127.0.0.1:8080\n", "needs an address of its own"},
		{"a group needs a socket", "adminListen: 127.0.0.1:9090\nadminGroup: wm-admins\n", "adminGroup: applies to a unix socket only"},
		{"a negative rate is refused", "rateLimit: {rate: -1}\n", "rateLimit.rate"},
		{"a zero burst is refused", "rateLimit: {burst: 0}\n", "rateLimit.burst"},
		{"a proxy must be an address", "trustedProxies: [gateway]\n", "trustedProxies[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, _ := wm(t, "validate", "--server", writeFile(t, dir, "s.yaml", tc.config))
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d:\n%s", code, out)
			}
		})
	}
	// The group must exist on this machine: wm serve checks it, and so
	// does wm validate --server.
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := wm(t, "validate", "--server", writeFile(t, dir, "ok.yaml", "adminListen: unix:///run/wm/admin.sock\nadminGroup: \""+me.Gid+"\"\ntrustedProxies: [127.0.0.1, 10.0.0.0/8]\nrateLimit: {rate: 0}\n"))
	if code != 0 {
		t.Errorf("a good config: exit %d\n%s", code, out)
	}
}

func TestTheAdminSocketIsOnlyForItsOwnerAndReplacesOnlyAStaleSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "wm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "admin.sock")
	mode := func() os.FileMode {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}

	t.Run("a file that is not a socket is left alone", func(t *testing.T) {
		writeFile(t, dir, "admin.sock", "keep me")
		if ln, err := listenUnix(path, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Errorf("got %v", err)
			if ln != nil {
				ln.Close()
			}
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Error("the file was replaced")
		}
		os.Remove(path)
	})
	t.Run("a stale socket is replaced, a live one is not", func(t *testing.T) {
		stale, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		stale.(*net.UnixListener).SetUnlinkOnClose(false)
		stale.Close()
		ln, err := listenUnix(path, "")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if m := mode(); m&os.ModeSocket == 0 || m.Perm() != 0o600 {
			t.Errorf("mode %v", m)
		}
		if _, err := listenUnix(path, ""); err == nil || !strings.Contains(err.Error(), "another wm serve") {
			t.Errorf("a second listener: %v", err)
		}
		ln.Close()
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("closing left the socket: %v", err)
		}
	})
	t.Run("an admin group may connect", func(t *testing.T) {
		ln, err := listenUnix(path, strconv.Itoa(os.Getgid()))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if m := mode(); m.Perm() != 0o660 {
			t.Errorf("mode %v", m)
		}
		if _, err := listenUnix(filepath.Join(dir, "other.sock"), "no-such-group-wm"); err == nil {
			t.Error("an unknown group was accepted")
		}
	})
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// syncBuffer is a strings.Builder safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
