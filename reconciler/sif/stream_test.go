package sif_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

// recorder is a Squasher that reads the tar stream as tar2sqfs would and
// keeps what it saw, then writes a stand-in squashfs.
type recorder struct {
	mu      sync.Mutex
	headers []tar.Header
	bytes   int64 // of regular files
}

func (r *recorder) Squash(ctx context.Context, in io.Reader, out string) error {
	tr := tar.NewReader(in)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, tr)
		r.mu.Lock()
		r.headers = append(r.headers, *h)
		r.bytes += n
		r.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return os.WriteFile(out, []byte("not a squashfs"), 0o600)
}

// unsafeEntry says what is wrong with an entry of the stream tar2sqfs
// reads, or "".
func unsafeEntry(h tar.Header) string {
	switch h.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
	default:
		return fmt.Sprintf("type %q", h.Typeflag)
	}
	name := strings.TrimSuffix(h.Name, "/")
	if name == "." {
		return ""
	}
	if strings.HasPrefix(name, "/") || strings.HasPrefix(name, "./") || filepath.Clean(name) != name {
		return "a name that is not clean"
	}
	if strings.Count(name, "/") >= 256 || len(name) >= 4096 {
		return "a path past the limits"
	}
	if h.Typeflag == tar.TypeLink && (strings.HasPrefix(h.Linkname, "/") || strings.Contains(h.Linkname, "..")) {
		return "a hard link that is not clean"
	}
	return ""
}

func TestTheStreamTar2sqfsReadsHoldsOnlyWhatPassedTheChecks(t *testing.T) {
	const mib = 1 << 20
	outside := t.TempDir()
	for _, tc := range []struct {
		name   string
		layers []v1.Layer
		opts   sif.Options
		// check fails t when the stream holds what it must not.
		check func(t *testing.T, r *recorder)
	}{
		{
			name: "files past the byte limit are never streamed",
			layers: func() []v1.Layer {
				var files []registrytest.TarEntry
				for i := range 12 {
					files = append(files, reg(fmt.Sprintf("part%02d", i), strings.Repeat("\x00", 100<<10), 0o644, 0, 0))
				}
				return []v1.Layer{registrytest.Tar(t, files...)}
			}(),
			opts: sif.Options{MaxUnpackedBytes: mib},
			check: func(t *testing.T, r *recorder) {
				if r.bytes > mib {
					t.Errorf("%d bytes of files streamed, past the limit of %d", r.bytes, mib)
				}
			},
		},
		{
			name:   "entries past the file limit are never streamed",
			layers: []v1.Layer{registrytest.Tar(t, emptyFiles("f", 1500)...)},
			opts:   sif.Options{MaxFiles: 1000},
			check: func(t *testing.T, r *recorder) {
				if len(r.headers) > 1000 {
					t.Errorf("%d entries streamed, past the limit of 1000", len(r.headers))
				}
			},
		},
		{
			name:   "a path deeper than the limit is never streamed",
			layers: []v1.Layer{registrytest.Tar(t, reg(strings.Repeat("d/", 300)+"f", "x", 0o644, 0, 0))},
		},
		{
			name: "nothing under a symlink, no device node or named pipe is streamed, and names are clean",
			layers: []v1.Layer{registrytest.Tar(t,
				sym("escape", outside),
				reg("escape/pwned", "pwned", 0o644, 0, 0),
				reg("./dot/file", "x", 0o644, 0, 0),
				link("hard-abs", "/dot/file"),
				registrytest.TarEntry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
				registrytest.TarEntry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o644}},
			)},
			check: func(t *testing.T, r *recorder) {
				names := map[string]string{}
				for _, h := range r.headers {
					names[h.Name] = h.Linkname
				}
				for _, name := range []string{"escape/pwned", "dev/null", "fifo"} {
					if _, ok := names[name]; ok {
						t.Errorf("%s streamed", name)
					}
				}
				for _, name := range []string{"escape", "dot/file", ".singularity.d/runscript", "tmp/", "./"} {
					if _, ok := names[name]; !ok {
						t.Errorf("%s not streamed", name)
					}
				}
				if target := names["hard-abs"]; target != "dot/file" {
					t.Errorf("hard link to %q, want dot/file", target)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{}
			tc.opts.Squasher = r
			b := newBuilder(t, nil, tc.opts)
			_, err := b.BuildImage(t.Context(), bareImage(t, tc.layers...), filepath.Join(t.TempDir(), "img.sif"), nil)
			t.Logf("build: %v; %d entries, %d bytes streamed", err, len(r.headers), r.bytes)
			if tc.check == nil && !errors.Is(err, sif.ErrTooLarge) {
				t.Errorf("err = %v, want ErrTooLarge", err)
			}
			for _, h := range r.headers {
				if why := unsafeEntry(h); why != "" {
					t.Errorf("streamed %q: %s", h.Name, why)
				}
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// partition copies the SIF's primary partition into a file of its own,
// for tools that cannot read at an offset.
func partition(t *testing.T, path string) string {
	t.Helper()
	info, err := sif.Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := filepath.Join(t.TempDir(), "primary.squashfs")
	w, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := io.Copy(w, io.NewSectionReader(f, info.Primary.Offset, info.Primary.Size)); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEveryCompressionMakesASquashfsOfThatCompression(t *testing.T) {
	img := registrytest.BusyboxImage(t, map[string]string{"/etc/motd": "hello\n"})
	for _, comp := range sif.Compressions {
		t.Run(comp+" makes a "+comp+" squashfs", func(t *testing.T) {
			dst, _ := buildImage(t, img, sif.Options{Compression: comp})
			info, err := sif.Verify(dst)
			if err != nil {
				t.Fatal(err)
			}
			stat := run(t, "unsquashfs", "-s", "-o", strconv.FormatInt(info.Primary.Offset, 10), dst)
			if !strings.Contains(stat, "Compression "+comp) {
				t.Errorf("unsquashfs -s:\n%s", stat)
			}
			var got string
			if comp == "lz4" {
				// squashfs-tools 4.5.1's unsquashfs refuses a tar2sqfs lz4
				// image whose id table (one id: busybox's files are all
				// root's) lz4 made 1 byte larger; Linux mounts it, and
				// squashfs-tools-ng reads it (see sif.Compressions).
				got = run(t, "rdsquashfs", "-c", "/etc/motd", partition(t, dst))
			} else {
				got = catFile(t, dst, "etc/motd")
			}
			if got != "hello\n" {
				t.Errorf("/etc/motd = %q", got)
			}
		})
	}
}

func TestAFolderKeepsItsOwnEntryWhenAnUpperLayerAddsToItFirst(t *testing.T) {
	// mutate.Extract gives the upper layer's srv/new before the lower
	// layer's srv/ entry: the folder is made for srv/new, then takes the
	// attributes of its own entry.
	img := registrytest.Append(t, registrytest.BusyboxImage(t),
		registrytest.Tar(t, dir("srv", 0o750, 1000, 1001), reg("srv/old", "old", 0o644, 0, 0)),
		registrytest.Tar(t, reg("srv/new", "new", 0o644, 0, 0), reg("opt/made/for/file", "x", 0o644, 0, 0)),
	)
	dst, _ := buildImage(t, img, sif.Options{})
	files := listing(t, dst)
	want := "1000/1001"
	if os.Geteuid() != 0 {
		want = "0/0"
	}
	for _, tc := range []struct{ path, mode, owner string }{
		{"/srv", "drwxr-x---", want},
		{"/srv/old", "-rw-r--r--", "0/0"},
		{"/srv/new", "-rw-r--r--", "0/0"},
		{"/opt/made/for", "drwxr-xr-x", "0/0"},
	} {
		if e, ok := files[tc.path]; !ok || e.Mode != tc.mode || e.Owner != tc.owner {
			t.Errorf("%s = %+v (there: %v), want %s %s", tc.path, e, ok, tc.mode, tc.owner)
		}
	}
}

func TestTheLayoutKeepsTheImagesOtherSingularityFiles(t *testing.T) {
	img := registrytest.Append(t, registrytest.BusyboxImage(t),
		registrytest.Tar(t,
			dir(".singularity.d", 0o700, 0, 0),
			reg(".singularity.d/runscript", "#!/bin/sh\necho image-runscript\n", 0o755, 0, 0),
			reg(".singularity.d/env/90-course.sh", "export COURSE=hpc\n", 0o644, 0, 0),
		))
	dst, _ := buildImage(t, img, sif.Options{})
	if got := catFile(t, dst, ".singularity.d/runscript"); strings.Contains(got, "image-runscript") {
		t.Errorf("the image's runscript was kept:\n%s", got)
	}
	if got := catFile(t, dst, ".singularity.d/env/90-course.sh"); got != "export COURSE=hpc\n" {
		t.Errorf("90-course.sh = %q, want the image's", got)
	}
	if e := listing(t, dst)["/.singularity.d"]; e.Mode != "drwxr-xr-x" || e.Owner != "0/0" {
		t.Errorf("/.singularity.d = %+v, want the layout's drwxr-xr-x root", e)
	}
}
