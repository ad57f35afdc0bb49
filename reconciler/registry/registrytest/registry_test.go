package registrytest_test

import (
	"archive/tar"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/whalemountain/wm/reconciler/registry/registrytest"
)

// files reads the flattened file system of the image at ref: path → content
// for files, "-> target" for symlinks, "/" for folders.
func files(t *testing.T, r *registrytest.Registry, ref string) map[string]string {
	t.Helper()
	rc := mutate.Extract(r.Pull(t, ref))
	defer rc.Close()
	out := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read flattened image: %v", err)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			out[h.Name] = "/"
		case tar.TypeSymlink:
			out[h.Name] = "-> " + h.Linkname
		default:
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("read %s: %v", h.Name, err)
			}
			out[h.Name] = string(b)
		}
	}
}

func TestPushThenPullRoundTrips(t *testing.T) {
	r := registrytest.Start(t)
	if !strings.HasPrefix(r.Host(), "127.0.0.1:") {
		t.Fatalf("Host() = %q, want 127.0.0.1:PORT", r.Host())
	}
	img := registrytest.BusyboxImage(t,
		map[string]string{"/data/old.txt": "old\n", "/data/keep.txt": "keep\n", "/cache/a": "a", "/cache/b": "b"},
		map[string]string{"/data/old.txt": registrytest.Whiteout, "/data/new.txt": "new\n",
			"/cache/": registrytest.Opaque, "/cache/c": "c", "/run.sh": "#!/bin/sh\necho hi\n",
			"/usr/bin/env": registrytest.SymlinkPrefix + "/bin/busybox"},
	)
	img = registrytest.WithConfig(t, img, func() (c v1.Config) {
		c = registrytest.DefaultConfig
		c.Entrypoint = []string{"/run.sh"}
		c.Env = append(slices.Clone(c.Env), "GREETING=hello world")
		return c
	}())
	ref := r.Ref("course/student/app", "v1")
	pushed := r.Push(t, ref, img)

	pulled := r.Pull(t, ref)
	got, err := pulled.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if got != pushed {
		t.Errorf("pulled digest %s, pushed %s", got, pushed)
	}
	cfg, err := pulled.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "amd64" || cfg.OS != "linux" {
		t.Errorf("platform %s/%s, want linux/amd64", cfg.OS, cfg.Architecture)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/run.sh"}) || !slices.Contains(cfg.Config.Env, "GREETING=hello world") {
		t.Errorf("config %+v lost the entrypoint or env", cfg.Config)
	}
	layers, err := pulled.Layers()
	if err != nil || len(layers) != 3 {
		t.Fatalf("%d layers (%v), want 3", len(layers), err)
	}

	fs := files(t, r, ref)
	bb, err := os.ReadFile(registrytest.HostBusybox)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"bin/busybox":   string(bb),
		"bin/sh":        "-> busybox",
		"data/keep.txt": "keep\n",
		"data/new.txt":  "new\n",
		"cache/c":       "c",
		"usr/bin/env":   "-> /bin/busybox",
	} {
		if fs[path] != want {
			t.Errorf("%s: %.40q, want %.40q", path, fs[path], want)
		}
	}
	for _, gone := range []string{"data/old.txt", "cache/a", "cache/b"} {
		if _, ok := fs[gone]; ok {
			t.Errorf("%s is in the flattened image, want it deleted by a whiteout", gone)
		}
	}
}

func TestSameLayersGiveSameDigests(t *testing.T) {
	layer := map[string]string{"/a": "1", "/b/c": "2"}
	d1, err := registrytest.BusyboxImage(t, layer).Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := registrytest.BusyboxImage(t, layer).Digest()
	if err != nil {
		t.Fatal(err)
	}
	d3, err := registrytest.BusyboxImage(t, map[string]string{"/a": "changed"}).Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("same maps gave digests %s and %s", d1, d2)
	}
	if d1 == d3 {
		t.Errorf("different maps gave the same digest %s", d1)
	}
}

func TestAuthRegistryRefusesAnonymousAndAcceptsTheUser(t *testing.T) {
	r := registrytest.StartWithAuth(t, "ci", "s3cret pass")
	ref := r.Ref("course/app", "1")
	r.Push(t, ref, registrytest.BusyboxImage(t))
	r.Pull(t, ref)

	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		auth authn.Authenticator
	}{
		{"anonymous", authn.Anonymous},
		{"wrong password", &authn.Basic{Username: "ci", Password: "nope"}},
	} {
		_, err := remote.Head(parsed, remote.WithAuth(tc.auth), remote.WithContext(t.Context()))
		var te *transport.Error
		if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: HEAD %s = %v, want 401", tc.name, ref, err)
		}
	}
}

func TestStoppedRegistryRefusesConnections(t *testing.T) {
	r := registrytest.Start(t)
	r.Stop()
	resp, err := http.Get("http://" + r.Host() + "/v2/")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("GET /v2/ on a stopped registry answered %d", resp.StatusCode)
	}
}

func TestDeleteMakesTheTagUnknown(t *testing.T) {
	r := registrytest.Start(t)
	ref := r.Ref("course/app", "gone")
	r.Push(t, ref, registrytest.BusyboxImage(t))
	r.Delete(t, ref)
	parsed, _ := name.ParseReference(ref, name.Insecure)
	_, err := remote.Head(parsed, remote.WithContext(t.Context()))
	var te *transport.Error
	if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD after delete = %v, want 404", err)
	}
}
