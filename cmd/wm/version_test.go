package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"

	"github.com/whalemountain/wm/schema"
)

func TestVersionSaysVersionCommitGoAndPlatform(t *testing.T) {
	code, out, _ := wm(t, "version")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"version:  " + version, "commit:   ", "go:       " + goruntime.Version(), "platform: " + goruntime.GOOS + "/" + goruntime.GOARCH} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	_, short, _ := wm(t, "--version")
	if !strings.HasPrefix(short, "wm "+version+" (commit ") || !strings.Contains(short, goruntime.GOOS+"/"+goruntime.GOARCH) {
		t.Errorf("wm --version: %q", short)
	}
}

// TestTheBuiltBinaryCarriesItsVersionAndCommit builds wm as make build
// does, with the version and commit set by -ldflags.
func TestTheBuiltBinaryCarriesItsVersionAndCommit(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "wm")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7 -X main.commit=0123abc", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "version:  v9.8.7\ncommit:   0123abc\n") {
		t.Errorf("wm version:\n%s", out)
	}
}

func TestTheSchemaIsServedWithItsTypeAndCacheHeaders(t *testing.T) {
	mux := http.NewServeMux()
	handleSchema(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, path := range []string{"/schema/wm.schema.json", "/schema/v1/wm.schema.json"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, schema.JSONSchema) {
			t.Fatalf("GET %s: %d, %d bytes", path, resp.StatusCode, len(body))
		}
		etag := resp.Header.Get("ETag")
		if ct := resp.Header.Get("Content-Type"); ct != "application/schema+json" || etag == "" || !strings.Contains(resp.Header.Get("Cache-Control"), "max-age=") {
			t.Errorf("GET %s: headers %v", path, resp.Header)
		}
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("If-None-Match", etag)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", path, resp.StatusCode)
		}
	}
}

func TestServeServesTheSchemaOnThePublicListener(t *testing.T) {
	s := startServe(t, "")
	code, body := getStatus(t, http.DefaultClient, s.public+"/schema/v1/wm.schema.json")
	if code != http.StatusOK || body != string(schema.JSONSchema) {
		t.Errorf("GET /schema/v1/wm.schema.json: %d, %d bytes", code, len(body))
	}
}
