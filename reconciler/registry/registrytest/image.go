package registrytest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// HostBusybox is the static busybox copied into the base layer; Debian's
// busybox-static package installs it.
const HostBusybox = "/bin/busybox"

// BusyboxCommands are the commands the base layer links to busybox, in
// /bin.
var BusyboxCommands = []string{"sh", "ls", "cat", "echo"}

// Values of a layer map that do something other than write a file.
const (
	// Whiteout deletes the path in this layer: an OCI whiteout file
	// ".wh.<name>" beside it.
	Whiteout = "<whiteout>"
	// Opaque, for a folder path, hides everything lower layers put in the
	// folder: an opaque whiteout "<folder>/.wh..wh..opq". The folder itself
	// stays, with what this layer puts in it.
	Opaque = "<opaque>"
	// SymlinkPrefix, followed by a target, makes the path a symlink to the
	// target: "<symlink>/bin/busybox".
	SymlinkPrefix = "<symlink>"
)

// Created is the creation time of the images BusyboxImage makes, and the
// modification time of every entry in their layers.
var Created = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// DefaultConfig is the configuration BusyboxImage gives its images: a
// shell, a PATH, and / as the working folder.
var DefaultConfig = v1.Config{
	Cmd:        []string{"sh"},
	Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	WorkingDir: "/",
}

// baseLayer is the busybox layer, made once per process.
var baseLayer = sync.OnceValues(func() (v1.Layer, error) {
	bb, err := os.ReadFile(HostBusybox)
	if err != nil {
		return nil, fmt.Errorf("read %s (apt-get install -y busybox-static): %w", HostBusybox, err)
	}
	var w layerWriter
	w.dir("bin", 0o755)
	w.dir("etc", 0o755)
	w.dir("tmp", 0o1777)
	w.file("bin/busybox", 0o755, bb)
	for _, c := range BusyboxCommands {
		w.symlink("bin/"+c, "busybox")
	}
	w.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"))
	w.file("etc/group", 0o644, []byte("root:x:0:\n"))
	return w.layer()
})

// BusyboxImage builds an image in memory: the busybox base layer, then one
// layer per map, in order. A map goes from a path ("/data/a.txt" or
// "data/a.txt") to the file's content, or to Whiteout, Opaque or a
// SymlinkPrefix value; a path ending in "/" is a folder. Files are 0644,
// or 0755 when their content starts with "#!". The image is linux/amd64
// with DefaultConfig; change it with WithConfig.
func BusyboxImage(t testing.TB, layers ...map[string]string) v1.Image {
	t.Helper()
	base, err := baseLayer()
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	all := []v1.Layer{base}
	for i, files := range layers {
		l, err := mapLayer(files)
		if err != nil {
			t.Fatalf("registrytest: layer %d: %v", i+1, err)
		}
		all = append(all, l)
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: Created},
		Config:       DefaultConfig,
	})
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if img, err = mutate.AppendLayers(img, all...); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return WithConfig(t, img, DefaultConfig)
}

// WithConfig returns img with its configuration (Entrypoint, Cmd, Env,
// WorkingDir, Labels, ...) replaced by cfg, through mutate.Config.
func WithConfig(t testing.TB, img v1.Image, cfg v1.Config) v1.Image {
	t.Helper()
	out, err := mutate.Config(img, cfg)
	if err != nil {
		t.Fatalf("registrytest: set config: %v", err)
	}
	return out
}

// mapLayer makes a layer from a map of BusyboxImage, its entries sorted by
// path so that the same map gives the same digest.
func mapLayer(files map[string]string) (v1.Layer, error) {
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	var w layerWriter
	for _, p := range paths {
		value := files[p]
		isDir := strings.HasSuffix(p, "/")
		clean := strings.TrimPrefix(path.Clean("/"+p), "/")
		if clean == "" {
			return nil, fmt.Errorf("path %q: want a path below /", p)
		}
		switch {
		case value == Whiteout:
			w.file(path.Join(path.Dir(clean), ".wh."+path.Base(clean)), 0o644, nil)
		case value == Opaque:
			w.dir(clean, 0o755)
			w.file(clean+"/.wh..wh..opq", 0o644, nil)
		case strings.HasPrefix(value, SymlinkPrefix):
			w.symlink(clean, strings.TrimPrefix(value, SymlinkPrefix))
		case isDir:
			w.dir(clean, 0o755)
		default:
			mode := int64(0o644)
			if strings.HasPrefix(value, "#!") {
				mode = 0o755
			}
			w.file(clean, mode, []byte(value))
		}
	}
	return w.layer()
}

// layerWriter writes a layer's tar, keeping the first error.
type layerWriter struct {
	buf bytes.Buffer
	tw  *tar.Writer
	err error
}

func (w *layerWriter) header(h *tar.Header, data []byte) {
	if w.tw == nil {
		w.tw = tar.NewWriter(&w.buf)
	}
	if w.err != nil {
		return
	}
	h.ModTime = Created
	h.Format = tar.FormatPAX
	if w.err = w.tw.WriteHeader(h); w.err == nil && len(data) > 0 {
		_, w.err = w.tw.Write(data)
	}
}

func (w *layerWriter) dir(name string, mode int64) {
	w.header(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}, nil)
}

func (w *layerWriter) file(name string, mode int64, data []byte) {
	w.header(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data)
}

func (w *layerWriter) symlink(name, target string) {
	w.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
}

// layer closes the tar and returns it as a gzip layer, compressed once.
func (w *layerWriter) layer() (v1.Layer, error) {
	if w.tw == nil {
		w.tw = tar.NewWriter(&w.buf)
	}
	if err := w.tw.Close(); err != nil && w.err == nil {
		w.err = err
	}
	if w.err != nil {
		return nil, fmt.Errorf("write layer: %w", w.err)
	}
	data := w.buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithCompressedCaching)
}

// Tar returns a layer of raw tar entries, for images no map can describe
// (device nodes, hard links, unusual modes or owners). Each entry's data is
// its Size bytes of content.
func Tar(t testing.TB, entries ...TarEntry) v1.Layer {
	t.Helper()
	var w layerWriter
	for _, e := range entries {
		h := e.Header
		h.Size = int64(len(e.Data))
		w.header(&h, []byte(e.Data))
	}
	l, err := w.layer()
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return l
}

// TarEntry is one entry of Tar: a header and, for a regular file, its
// content (Size is set from it).
type TarEntry struct {
	Header tar.Header
	Data   string
}

// Append returns img with layers added on top, through mutate.AppendLayers.
func Append(t testing.TB, img v1.Image, layers ...v1.Layer) v1.Image {
	t.Helper()
	out, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatalf("registrytest: append layers: %v", err)
	}
	return out
}
