package sif_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler/sif"
)

// serve builds alice's app.sif with the Fake into a new folder and serves
// the folder, letting a request through when its X-User header is the
// owner. It returns the server, the SIF's bytes and sha256.
func serve(t *testing.T) (*httptest.Server, []byte, string) {
	t.Helper()
	dir := t.TempDir()
	for _, owner := range []string{"alice", "bob"} {
		if err := os.Mkdir(filepath.Join(dir, owner), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f := sif.NewFake()
	f.SetImage("fake.test/alice/app:1", "sha256:alice-app-1")
	res, err := f.Build(t.Context(), "fake.test/alice/app:1", filepath.Join(dir, "alice", "app.sif"), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A SIF without its .sha256 sidecar, and a temporary file of a build.
	f.SetImage("fake.test/alice/nosum:1", "sha256:alice-nosum-1")
	if _, err := f.Build(t.Context(), "fake.test/alice/nosum:1", filepath.Join(dir, "alice", "nosum.sif"), nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "alice", "nosum.sif.sha256")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alice", ".app.sif.tmp-123"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.sif"), []byte("not an owner's"), 0o644); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "alice", "app.sif"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sif.NewHandler(dir, func(r *http.Request, owner string) bool {
		return r.Header.Get("X-User") == owner
	}))
	t.Cleanup(srv.Close)
	return srv, data, res.SHA256
}

func TestHandlerServesSIFs(t *testing.T) {
	srv, data, sum := serve(t)
	etag := `"` + sum + `"`
	for _, tc := range []struct {
		name    string
		method  string
		path    string
		user    string
		headers map[string]string
		// want
		status int
		body   []byte // nil: not checked
		etag   string // "-": must be absent
	}{
		{name: "a full GET gets the file with its sha256 as ETag", path: "/artifacts/alice/app.sif", user: "alice",
			status: http.StatusOK, body: data, etag: etag},
		{name: "HEAD gets the headers only", method: http.MethodHead, path: "/artifacts/alice/app.sif", user: "alice",
			status: http.StatusOK, body: []byte{}, etag: etag},
		{name: "a Range request gets those bytes", path: "/artifacts/alice/app.sif", user: "alice",
			headers: map[string]string{"Range": "bytes=10-4105"}, status: http.StatusPartialContent, body: data[10:4106], etag: etag},
		{name: "an open Range gets the tail", path: "/artifacts/alice/app.sif", user: "alice",
			headers: map[string]string{"Range": "bytes=-7"}, status: http.StatusPartialContent, body: data[len(data)-7:]},
		{name: "If-None-Match with the sha256 is not modified", path: "/artifacts/alice/app.sif", user: "alice",
			headers: map[string]string{"If-None-Match": etag}, status: http.StatusNotModified, body: []byte{}},
		{name: "If-None-Match with another sum gets the file", path: "/artifacts/alice/app.sif", user: "alice",
			headers: map[string]string{"If-None-Match": `"0000"`}, status: http.StatusOK, body: data},
		{name: "If-Range with the sha256 gets the range", path: "/artifacts/alice/app.sif", user: "alice",
			headers: map[string]string{"Range": "bytes=0-3", "If-Range": etag}, status: http.StatusPartialContent, body: data[:4]},
		{name: "If-Range with a stale sum gets the whole new file", path: "/artifacts/alice/app.sif", user: "alice",
			headers: map[string]string{"Range": "bytes=0-3", "If-Range": `"stale"`}, status: http.StatusOK, body: data},
		{name: "a SIF without its sidecar is served without ETag", path: "/artifacts/alice/nosum.sif", user: "alice",
			status: http.StatusOK, etag: "-"},
		{name: "another owner is forbidden", path: "/artifacts/alice/app.sif", user: "bob", status: http.StatusForbidden},
		{name: "nobody is forbidden", path: "/artifacts/alice/app.sif", status: http.StatusForbidden},
		{name: "another owner's missing file is forbidden too", path: "/artifacts/alice/none.sif", user: "bob", status: http.StatusForbidden},
		{name: "an owner's missing file is not found", path: "/artifacts/bob/app.sif", user: "bob", status: http.StatusNotFound},
		{name: "POST is not allowed", method: http.MethodPost, path: "/artifacts/alice/app.sif", user: "alice", status: http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req, err := http.NewRequest(method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.user != "" {
				req.Header.Set("X-User", tc.user)
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if tc.body != nil && !bytes.Equal(body, tc.body) {
				t.Errorf("body of %d bytes, want %d", len(body), len(tc.body))
			}
			switch got := resp.Header.Get("ETag"); {
			case tc.etag == "-" && got != "":
				t.Errorf("ETag %s, want none", got)
			case tc.etag != "" && tc.etag != "-" && got != tc.etag:
				t.Errorf("ETag %s, want %s", got, tc.etag)
			}
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent {
				if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
					t.Errorf("Content-Type %q", ct)
				}
				if cl := resp.Header.Get("Content-Length"); method == http.MethodGet && cl != strconv.Itoa(len(body)) {
					t.Errorf("Content-Length %s for %d bytes", cl, len(body))
				}
			}
		})
	}
}

func TestHandlerHidesEverythingElse(t *testing.T) {
	srv, _, _ := serve(t)
	for _, path := range []string{
		"/artifacts/alice/../alice/app.sif",
		"/artifacts/alice/%2e%2e/alice/app.sif",
		"/artifacts/alice%2fapp.sif",
		"/artifacts/alice/..%2fbob%2fapp.sif",
		"/artifacts/../secret.sif",
		"/artifacts/alice/",
		"/artifacts/alice",
		"/artifacts/",
		"/artifacts/alice/app.sif/",
		"/artifacts/alice/app.sif.sha256",
		"/artifacts/alice/app.sif.json",
		"/artifacts/alice/.app.sif.tmp-123",
		"/artifacts/alice/app",
		"/artifacts/alice/app.SIF",
		"/artifacts/Alice/app.sif",
		"/artifacts/alice/sub/app.sif",
		"/artifacts/-alice/app.sif",
		"/artifacts/alice/" + strings.Repeat("a", 64) + ".sif",
		"/artifacts//app.sif",
		"/other/alice/app.sif",
		"/",
	} {
		t.Run(path, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-User", "alice")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("status %d, want 404", resp.StatusCode)
			}
		})
	}
}

func TestArtifactPathAcceptsDNSLabelsOnly(t *testing.T) {
	for _, tc := range []struct {
		owner, name string
		ok          bool
	}{
		{"alice", "app", true},
		{"t3ae048", "my-app-2", true},
		{"alice", "../x", false},
		{"Alice", "app", false},
		{"alice", "", false},
		{"alice", "app-", false},
		{"alice", strings.Repeat("a", 63), true},
		{"alice", strings.Repeat("a", 64), false},
	} {
		p, ok := sif.ArtifactPath(tc.owner, tc.name)
		if ok != tc.ok || (ok && p != tc.owner+"/"+tc.name+".sif") {
			t.Errorf("ArtifactPath(%q, %q) = %q, %v; want ok %v", tc.owner, tc.name, p, ok, tc.ok)
		}
	}
}
