package sif_test

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

// reg, dir, sym and link are tar entries for registrytest.Tar.
func reg(name, data string, mode int64, uid, gid int) registrytest.TarEntry {
	return registrytest.TarEntry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Uid: uid, Gid: gid}, Data: data}
}

func dir(name string, mode int64, uid, gid int) registrytest.TarEntry {
	return registrytest.TarEntry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: gid}}
}

func sym(name, target string) registrytest.TarEntry {
	return registrytest.TarEntry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func link(name, target string) registrytest.TarEntry {
	return registrytest.TarEntry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

// buildImage builds img into a new SIF with BuildImage and returns its
// path and result.
func buildImage(t *testing.T, img v1.Image, opts sif.Options) (string, core.SIFBuild) {
	t.Helper()
	b := newBuilder(t, nil, opts)
	dst := filepath.Join(t.TempDir(), "img.sif")
	res, err := b.BuildImage(t.Context(), img, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	return dst, res
}

func TestExtractionKeepsWhatTheImageSays(t *testing.T) {
	outside := t.TempDir() // a host folder an image must never write to
	img := registrytest.Append(t, registrytest.BusyboxImage(t),
		registrytest.Tar(t,
			dir("srv", 0o750, 1000, 1001),
			reg("srv/suid", "#!/bin/sh\n", 0o4755, 0, 0),
			reg("srv/owned", "mine", 0o640, 1000, 1001),
			reg("srv/secret", "no read", 0o000, 0, 0),
			dir("srv/readonly", 0o555, 0, 0),
			reg("srv/readonly/inside", "x", 0o444, 0, 0),
			link("srv/hard", "srv/owned"),
			link("srv/hard-abs", "/etc/passwd"),
			sym("srv/abs", "/etc/passwd"),
			sym("srv/rel", "../bin/busybox"),
			sym("escape", outside),
			reg("escape/pwned", "pwned", 0o644, 0, 0),
			registrytest.TarEntry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
			registrytest.TarEntry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: "srv/fifo", Mode: 0o644}},
			reg("deep/a/b/c/file", "implicit parents", 0o644, 0, 0),
		),
	)
	dst, res := buildImage(t, img, sif.Options{})
	files := listing(t, dst)

	root := os.Geteuid() == 0
	owner := func(o string) string {
		if !root {
			return "0/0" // not root: AllRoot is forced
		}
		return o
	}
	for _, tc := range []struct {
		path, mode, owner string
	}{
		{"/srv", "drwxr-x---", owner("1000/1001")},
		{"/srv/suid", "-rwsr-xr-x", "0/0"},
		{"/srv/owned", "-rw-r-----", owner("1000/1001")},
		{"/srv/readonly", "dr-xr-xr-x", "0/0"},
		{"/srv/secret", "----------", "0/0"},
		{"/srv/readonly/inside", "-r--r--r--", "0/0"},
		{"/srv/hard", "-rw-r-----", owner("1000/1001")},
		{"/srv/abs", "lrwxrwxrwx", "0/0"},
		{"/deep/a/b/c", "drwxr-xr-x", "0/0"},
	} {
		e, ok := files[tc.path]
		if !ok {
			t.Errorf("%s missing", tc.path)
			continue
		}
		if e.Mode != tc.mode || e.Owner != tc.owner {
			t.Errorf("%s: %s %s, want %s %s", tc.path, e.Mode, e.Owner, tc.mode, tc.owner)
		}
	}
	if e := files["/srv/abs"]; e.Target != "/etc/passwd" {
		t.Errorf("absolute symlink target %q, want it kept as /etc/passwd", e.Target)
	}
	if e := files["/srv/rel"]; e.Target != "../bin/busybox" {
		t.Errorf("relative symlink target %q", e.Target)
	}
	if got := catFile(t, dst, "srv/hard-abs"); got != "root:x:0:0:root:/root:/bin/sh\n" {
		t.Errorf("hard link to /etc/passwd holds %q: want the image's passwd", got)
	}
	for _, p := range []string{"/dev/null", "/srv/fifo", "/escape/pwned"} {
		if _, ok := files[p]; ok {
			t.Errorf("%s is in the SIF", p)
		}
	}
	if left, _ := os.ReadDir(outside); len(left) > 0 {
		t.Errorf("the build wrote %v outside its folder", left)
	}
	if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "device node /dev/null") }) {
		t.Errorf("notes %q do not mention the skipped device node", res.Notes)
	}

	t.Run("a hard link shares its target's inode", func(t *testing.T) {
		root := extractAll(t, dst)
		a, err := os.Stat(filepath.Join(root, "srv/hard"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.Stat(filepath.Join(root, "srv/owned"))
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(a, b) {
			t.Error("srv/hard and srv/owned are two files")
		}
	})
}

func TestAllRootMakesEveryFileRoots(t *testing.T) {
	img := registrytest.Append(t, registrytest.BusyboxImage(t),
		registrytest.Tar(t, dir("home/u", 0o700, 1000, 1000), reg("home/u/f", "x", 0o600, 1000, 1000)))
	dst, _ := buildImage(t, img, sif.Options{AllRoot: true})
	for p, e := range listing(t, dst) {
		if e.Owner != "0/0" {
			t.Errorf("%s owned by %s with AllRoot", p, e.Owner)
		}
	}
}

func TestTheLayoutReplacesWhatTheImageHadThere(t *testing.T) {
	img := registrytest.Append(t, registrytest.BusyboxImage(t),
		registrytest.Tar(t,
			sym(".singularity.d", "/etc"),
			sym("etc/resolv.conf", "../run/resolv.conf"),
			reg("etc/hosts", "127.0.0.1 image\n", 0o644, 0, 0),
			reg("home", "a file where /home goes", 0o644, 0, 0),
		))
	dst, _ := buildImage(t, img, sif.Options{})
	files := listing(t, dst)
	if e := files["/.singularity.d"]; !strings.HasPrefix(e.Mode, "d") {
		t.Errorf("/.singularity.d is %+v, want a folder", e)
	}
	if _, ok := files["/etc/runscript"]; ok {
		t.Error("the runscript went through the image's symlink into /etc")
	}
	if e := files["/etc/resolv.conf"]; e.Target != "../run/resolv.conf" {
		t.Errorf("/etc/resolv.conf %+v: the image's symlink should stay", e)
	}
	if got := catFile(t, dst, "etc/hosts"); got != "127.0.0.1 image\n" {
		t.Errorf("/etc/hosts = %q: the image's should stay", got)
	}
	if e := files["/home"]; !strings.HasPrefix(e.Mode, "-") {
		t.Errorf("/home %+v: the image's file should stay", e)
	}
}

func TestImagesThatCannotBeSIFsAreInvalid(t *testing.T) {
	windows, err := mutate.ConfigFile(registrytest.BusyboxImage(t), &v1.ConfigFile{OS: "windows", Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		img  v1.Image
	}{
		{"a windows image", windows},
		{"a layer with a path above the root", registrytest.Append(t, registrytest.BusyboxImage(t),
			registrytest.Tar(t, reg("../../escape", "x", 0o644, 0, 0)))},
	} {
		t.Run(tc.name+" is ErrInvalidImage", func(t *testing.T) {
			b := newBuilder(t, nil, sif.Options{})
			_, err := b.BuildImage(t.Context(), tc.img, filepath.Join(t.TempDir(), "x.sif"), nil)
			if !errors.Is(err, sif.ErrInvalidImage) {
				t.Errorf("error %v, want ErrInvalidImage", err)
			}
		})
	}
}
