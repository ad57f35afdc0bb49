package sif_test

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

// Students are hostile to each other and to the build host: an image is
// whatever a student pushed. These tests push images built to hurt (tiny
// layers that unpack to a lot, more entries than any image needs, paths
// Linux cannot hold) to a real registry and build them with small limits.

// bareImage is a linux/amd64 image of just these layers, without busybox,
// so that a limit of a few MiB refuses only what the test adds.
func bareImage(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	cfg.Config = registrytest.DefaultConfig
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// emptyFiles are n entries of zero bytes named prefix0 ... prefix<n-1>.
func emptyFiles(prefix string, n int) []registrytest.TarEntry {
	out := make([]registrytest.TarEntry, n)
	for i := range out {
		out[i] = reg(fmt.Sprintf("%s%d", prefix, i), "", 0o644, 0, 0)
	}
	return out
}

// randomData is n bytes that no compression shrinks.
func randomData(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return string(b)
}

// mustBeEmpty fails t when dir holds anything.
func mustBeEmpty(t testing.TB, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func TestHostileImagesAreRefusedAndLeaveNothingBehind(t *testing.T) {
	const mib = 1 << 20
	registry := registrytest.Start(t)
	for i, tc := range []struct {
		name   string
		layers []v1.Layer
		opts   sif.Options
		// want is the sentinel; the message must hold every one of says.
		want error
		says []string
	}{
		{
			name:   "a tiny layer of zeros that unpacks past the byte limit",
			layers: []v1.Layer{registrytest.Tar(t, reg("zeros", strings.Repeat("\x00", 16*mib), 0o644, 0, 0))},
			opts:   sif.Options{MaxUnpackedBytes: mib},
			want:   sif.ErrTooLarge,
			says:   []string{"1 MiB", "sif.maxUnpackedSize"},
		},
		{
			name: "small files that add up past the byte limit",
			layers: func() []v1.Layer {
				var files []registrytest.TarEntry
				for i := range 12 {
					files = append(files, reg(fmt.Sprintf("part%d", i), strings.Repeat("\x00", 100<<10), 0o644, 0, 0))
				}
				return []v1.Layer{registrytest.Tar(t, files...)}
			}(),
			opts: sif.Options{MaxUnpackedBytes: mib},
			want: sif.ErrTooLarge,
			says: []string{"1 MiB", "sif.maxUnpackedSize"},
		},
		{
			name:   "more empty files than the file limit",
			layers: []v1.Layer{registrytest.Tar(t, emptyFiles("f", 1500)...)},
			opts:   sif.Options{MaxFiles: 1000},
			want:   sif.ErrTooLarge,
			says:   []string{"1000", "sif.maxFiles"},
		},
		{
			name: "more whiteouts than twice the file limit, which write nothing",
			layers: []v1.Layer{
				registrytest.Tar(t, reg("keep", "x", 0o644, 0, 0)),
				registrytest.Tar(t, emptyFiles(".wh.gone", 2500)...),
			},
			opts: sif.Options{MaxFiles: 1000},
			want: sif.ErrTooLarge,
			says: []string{"2000", "sif.maxFiles"},
		},
		{
			name:   "layers larger as stored than the compressed limit",
			layers: []v1.Layer{registrytest.Tar(t, reg("noise", randomData(256<<10), 0o644, 0, 0))},
			opts:   sif.Options{MaxCompressedBytes: 64 << 10},
			want:   sif.ErrTooLarge,
			says:   []string{"64 KiB", "sif.maxCompressedSize"},
		},
		{
			name:   "a path deeper than any image needs",
			layers: []v1.Layer{registrytest.Tar(t, reg(strings.Repeat("d/", 300)+"f", "x", 0o644, 0, 0))},
			want:   sif.ErrTooLarge,
			says:   []string{"folders deep"},
		},
		{
			name:   "a path longer than Linux allows",
			layers: []v1.Layer{registrytest.Tar(t, reg(strings.Repeat(strings.Repeat("n", 200)+"/", 25)+"f", "x", 0o644, 0, 0))},
			want:   sif.ErrTooLarge,
			says:   []string{"4096 bytes"},
		},
		{
			name:   "a symlink target longer than Linux allows",
			layers: []v1.Layer{registrytest.Tar(t, sym("link", "/"+strings.Repeat("t", 5000)))},
			want:   sif.ErrTooLarge,
			says:   []string{"4096 bytes"},
		},
		{
			name:   "a file name longer than Linux allows",
			layers: []v1.Layer{registrytest.Tar(t, reg(strings.Repeat("n", 300), "x", 0o644, 0, 0))},
			want:   sif.ErrInvalidImage,
			says:   []string{"255 bytes"},
		},
	} {
		t.Run(tc.name+" is refused and leaves nothing behind", func(t *testing.T) {
			ref := registry.Ref("students/mallory/bomb", fmt.Sprintf("case%d", i))
			registry.Push(t, ref, bareImage(t, tc.layers...))
			tmp := t.TempDir()
			tc.opts.TempDir = tmp
			b := newBuilder(t, registry, tc.opts)
			out := t.TempDir()
			_, err := b.Build(t.Context(), ref, filepath.Join(out, "bomb.sif"), nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			t.Logf("refused: %v", err)
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("the error does not say %q: %v", s, err)
				}
			}
			mustBeEmpty(t, tmp)
			mustBeEmpty(t, out)
		})
	}
}

func TestAnImageWithinEveryLimitStillBuilds(t *testing.T) {
	registry := registrytest.Start(t)
	ref := registry.Ref("students/alice/small", "v1")
	registry.Push(t, ref, bareImage(t,
		registrytest.Tar(t, append(emptyFiles("f", 100), reg("data", strings.Repeat("\x00", 512<<10), 0o644, 0, 0))...),
		registrytest.Tar(t, emptyFiles(".wh.f", 50)...),
	))
	tmp := t.TempDir()
	b := newBuilder(t, registry, sif.Options{TempDir: tmp, MaxUnpackedBytes: 1 << 20, MaxFiles: 200, MaxCompressedBytes: 1 << 20})
	dst := filepath.Join(t.TempDir(), "small.sif")
	if _, err := b.Build(t.Context(), ref, dst, nil); err != nil {
		t.Fatal(err)
	}
	files := listing(t, dst)
	if _, ok := files["/data"]; !ok {
		t.Error("the SIF has no /data")
	}
	if _, ok := files["/f0"]; ok {
		t.Error("the whiteout of /f0 was not applied")
	}
	mustBeEmpty(t, tmp)
}

func TestTheDefaultLimitsAreGenerous(t *testing.T) {
	if sif.DefaultMaxUnpackedBytes < 8<<30 || sif.DefaultMaxFiles < 500_000 || sif.DefaultMaxCompressedBytes < 4<<30 {
		t.Errorf("defaults %d bytes, %d files, %d compressed: real images (CUDA, conda) need at least 8 GiB, 500,000 files, 4 GiB",
			sif.DefaultMaxUnpackedBytes, sif.DefaultMaxFiles, sif.DefaultMaxCompressedBytes)
	}
}

func TestLayersStoredAsZstdOrUncompressedUnpackAndCount(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := strings.Repeat("z", 300<<10)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "stored", Mode: 0o644, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(data))
	tw.Close()
	raw := buf.Bytes()
	zstdLayer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil },
		tarball.WithCompression(compression.ZStd))
	if err != nil {
		t.Fatal(err)
	}
	registry := registrytest.Start(t)
	for _, tc := range []struct {
		name  string
		layer v1.Layer
	}{
		{"zstd", zstdLayer},
		{"uncompressed", static.NewLayer(raw, types.OCIUncompressedLayer)},
	} {
		t.Run("a layer stored "+tc.name+" unpacks and counts against the limits", func(t *testing.T) {
			ref := registry.Ref("students/alice/"+tc.name, "v1")
			registry.Push(t, ref, bareImage(t, tc.layer))
			b := newBuilder(t, registry, sif.Options{})
			dst := filepath.Join(t.TempDir(), "img.sif")
			if _, err := b.Build(t.Context(), ref, dst, nil); err != nil {
				t.Fatal(err)
			}
			if got := catFile(t, dst, "/stored"); got != data {
				t.Errorf("/stored has %d bytes, want %d", len(got), len(data))
			}
			small := newBuilder(t, registry, sif.Options{MaxUnpackedBytes: 100 << 10})
			_, err := small.Build(t.Context(), ref, filepath.Join(t.TempDir(), "img.sif"), nil)
			if !errors.Is(err, sif.ErrTooLarge) {
				t.Errorf("err = %v, want ErrTooLarge", err)
			}
		})
	}
}

func TestAnImageOfTheLocalDaemonPastTheLimitsIsRefusedBeforeItIsSavedWhole(t *testing.T) {
	ref := "wm-test/sif-daemon:1"
	daemonImage(t, ref, false) // busybox: about 2 MiB uncompressed
	tmp := t.TempDir()
	b := newBuilder(t, nil, sif.Options{Source: sif.SourceDaemon, Docker: dockertest.Engine(t), TempDir: tmp,
		MaxUnpackedBytes: 256 << 10, MaxCompressedBytes: 256 << 10})
	out := t.TempDir()
	_, err := b.Build(t.Context(), ref, filepath.Join(out, "local.sif"), nil)
	if !errors.Is(err, sif.ErrTooLarge) || !errors.Is(err, fault.TooLarge) || !strings.Contains(err.Error(), "512 KiB") {
		t.Fatalf("err = %v, want ErrTooLarge (fault.TooLarge) at 512 KiB", err)
	}
	mustBeEmpty(t, tmp)
	mustBeEmpty(t, out)
}

func TestAnImageTheManifestSaysIsTooLargeIsRefusedBeforeAnyBlobIsDownloaded(t *testing.T) {
	registry := registrytest.Start(t)
	target, _ := url.Parse("http://" + registry.Host())
	proxy := httputil.NewSingleHostReverseProxy(target)
	var blobs atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			blobs.Add(1)
			t.Logf("GET %s", r.URL.Path)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	host := strings.TrimPrefix(front.URL, "http://")

	bigConfig := registrytest.DefaultConfig
	bigConfig.Labels = map[string]string{"padding": randomData(5 << 20)}
	for _, tc := range []struct {
		name string
		img  v1.Image
		says string
	}{
		{"layers larger as stored than the compressed limit", bareImage(t, registrytest.Tar(t, reg("noise", randomData(256<<10), 0o644, 0, 0))), "sif.maxCompressedSize"},
		{"a configuration of megabytes", registrytest.WithConfig(t, bareImage(t), bigConfig), "configuration"},
	} {
		t.Run(tc.name+" is refused before any blob is downloaded", func(t *testing.T) {
			registry.Push(t, registry.Ref("students/mallory/big", "1"), tc.img)
			blobs.Store(0)
			tmp := t.TempDir()
			b := newBuilder(t, nil, sif.Options{Insecure: []string{host}, Source: sif.SourceRegistry, TempDir: tmp, MaxCompressedBytes: 64 << 10})
			_, err := b.Build(t.Context(), host+"/students/mallory/big:1", filepath.Join(t.TempDir(), "big.sif"), nil)
			if !errors.Is(err, sif.ErrTooLarge) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want ErrTooLarge saying %q", err, tc.says)
			}
			if n := blobs.Load(); n != 0 {
				t.Errorf("%d blobs downloaded", n)
			}
			mustBeEmpty(t, tmp)
		})
	}
}

func TestLayersLargerAsStoredThanTheLimitAreRefusedAsTheyAreRead(t *testing.T) {
	// An image in hand has no manifest to trust: its bytes are counted.
	img := bareImage(t, registrytest.Tar(t, reg("noise", randomData(256<<10), 0o644, 0, 0)))
	tmp := t.TempDir()
	b := newBuilder(t, nil, sif.Options{TempDir: tmp, MaxCompressedBytes: 64 << 10})
	_, err := b.BuildImage(t.Context(), img, filepath.Join(t.TempDir(), "img.sif"), nil)
	if !errors.Is(err, sif.ErrTooLarge) || !strings.Contains(err.Error(), "64 KiB") {
		t.Fatalf("err = %v, want ErrTooLarge at 64 KiB", err)
	}
	mustBeEmpty(t, tmp)
}
