package docker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
)

// mover is what a drain asks of a host besides the engine's methods.
type mover interface {
	engine
	ExportVolume(ctx context.Context, owner, name, helperImage string) (io.ReadCloser, error)
	ImportVolume(ctx context.Context, owner, name, helperImage string, content io.Reader) error
	ReadSpec(ctx context.Context, name string) (core.ContainerSpec, error)
}

var (
	_ mover = (*docker.Engine)(nil)
	_ mover = (*docker.Fake)(nil)
)

// volumeFile is a file of a volume as an export shows it.
type volumeFile struct {
	content  string
	mode     int64
	uid, gid int
}

// seededFiles are what seed writes into a volume: a file, and a file of
// another user with its own mode in a folder.
var seededFiles = map[string]string{"greeting": "hello\n", "sub/deep": "deep\n"}

// seedScript writes seededFiles into /data as a container would, then
// marks it done.
const seedScript = "mkdir -p /data/sub && echo hello > /data/greeting && echo deep > /data/sub/deep && " +
	"chown 1234:1234 /data/sub/deep && chmod 600 /data/sub/deep && touch /data/.done; exec sleep 3600"

func TestVolumeCopyFake(t *testing.T) {
	t.Parallel()
	testVolumes(t, func(t *testing.T) (mover, string) {
		f := docker.NewFake("fake")
		f.AddImage(image)
		return f, dockertest.Owner(t)
	})
}

func TestVolumeCopyRealEngine(t *testing.T) {
	t.Parallel()
	testVolumes(t, func(t *testing.T) (mover, string) {
		e := dockertest.Engine(t)
		dockertest.BusyboxImage(t, image)
		return e, dockertest.Owner(t)
	})
}

// TestVolumeCopySecondRealEngine keeps the contract on the second real
// engine (ci/docker2-up), where a drain's copies also go.
func TestVolumeCopySecondRealEngine(t *testing.T) {
	t.Parallel()
	d := dockertest.Second(t)
	testVolumes(t, func(t *testing.T) (mover, string) {
		e := d.Engine(t)
		d.BusyboxImage(t, image)
		return e, d.Owner(t)
	})
}

// TestVolumeCopyFromOneRealEngineToTheOther moves a volume's data from
// the local engine to the second one through their APIs only, owners and
// modes kept, and leaves no helper container on either.
func TestVolumeCopyFromOneRealEngineToTheOther(t *testing.T) {
	t.Parallel()
	local, second := dockertest.Local(t), dockertest.Second(t)
	from, to := local.Engine(t), second.Engine(t)
	local.BusyboxImage(t, image)
	second.BusyboxImage(t, image)
	owner := second.Owner(t)
	vol := core.ObjectName(owner, "data")
	seed(t, from, owner, vol)
	rc, err := from.ExportVolume(ctx(t), owner, vol, image)
	if err != nil {
		t.Fatal(err)
	}
	if err := to.ImportVolume(ctx(t), owner, vol, image, rc); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	got := exported(t, to, owner, vol)
	wantSeeded(t, got, true)
	vs, err := to.ListVolumes(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(vs, func(v core.Volume) bool { return v.Name == vol })
	if i < 0 || vs[i].Labels[docker.LabelOwner] != owner || vs[i].Labels[docker.LabelManagedBy] != docker.ManagedByValue {
		t.Errorf("the imported volume is not the owner's managed one: %+v", vs)
	}
	for _, d := range []*dockertest.Daemon{local, second} {
		helpers, err := d.Client(t).ContainerList(ctx(t), container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", "dev.whalemountain.helper"), filters.Arg("label", docker.LabelOwner+"="+owner))})
		if err != nil || len(helpers) != 0 {
			t.Errorf("helper containers left on %s: %v, %v", d.Name(), helpers, err)
		}
	}
}

// testVolumes is the contract of ExportVolume, ImportVolume and ReadSpec.
func testVolumes(t *testing.T, newMover func(t *testing.T) (mover, string)) {
	cases := []struct {
		name string
		test func(t *testing.T, m mover, owner string)
	}{
		{"what a container wrote into a volume is exported and imported into a new volume whole", func(t *testing.T, m mover, owner string) {
			vol := core.ObjectName(owner, "data")
			seed(t, m, owner, vol)
			rc, err := m.ExportVolume(ctx(t), owner, vol, image)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			copyName := core.ObjectName(owner, "copy")
			if err := m.ImportVolume(ctx(t), owner, copyName, image, rc); err != nil {
				t.Fatal(err)
			}
			_, real := m.(*docker.Engine)
			wantSeeded(t, exported(t, m, owner, copyName), real)
		}},
		{"an empty volume exports as its root alone and imports as an empty volume", func(t *testing.T, m mover, owner string) {
			s := spec(t, owner, "empty")
			s.Running = false
			s.Mounts = []core.Mount{{Volume: core.ObjectName(owner, "empty"), Target: "/data"}}
			create(t, m, s)
			got := exported(t, m, owner, core.ObjectName(owner, "empty"))
			if len(got) != 0 {
				t.Errorf("files of an empty volume: %v", got)
			}
		}},
		{"import refuses a volume that exists and leaves its data as it is", func(t *testing.T, m mover, owner string) {
			vol := core.ObjectName(owner, "data")
			seed(t, m, owner, vol)
			err := m.ImportVolume(ctx(t), owner, vol, image, tarOf(t, map[string]string{"greeting": "overwritten\n"}))
			wantErr(t, err, docker.ErrConflict)
			if got := exported(t, m, owner, vol); got["greeting"].content != "hello\n" {
				t.Errorf("greeting = %q after a refused import", got["greeting"].content)
			}
		}},
		{"export refuses another owner's volume and an unlabelled one as not found", func(t *testing.T, m mover, owner string) {
			other := dockertest.OwnerNamed(t, owner+"-x")
			vol := core.ObjectName(other, "data")
			seed(t, m, other, vol)
			_, err := m.ExportVolume(ctx(t), owner, vol, image)
			wantErr(t, err, docker.ErrNotFound)
			foreign := owner + "_foreign"
			addForeignVolume(t, m, foreign)
			_, err = m.ExportVolume(ctx(t), owner, foreign, image)
			wantErr(t, err, docker.ErrNotFound)
			_, err = m.ExportVolume(ctx(t), owner, core.ObjectName(owner, "missing"), image)
			wantErr(t, err, docker.ErrNotFound)
		}},
		{"import refuses a name that is not the owner's", func(t *testing.T, m mover, owner string) {
			err := m.ImportVolume(ctx(t), owner, "someone_data", image, tarOf(t, nil))
			wantErr(t, err, core.ErrInvalidSpec)
		}},
		{"a copy needs its helper image on the host", func(t *testing.T, m mover, owner string) {
			vol := core.ObjectName(owner, "data")
			seed(t, m, owner, vol)
			_, err := m.ExportVolume(ctx(t), owner, vol, "wm-test/not-here:1")
			wantErr(t, err, docker.ErrImageNotFound)
			err = m.ImportVolume(ctx(t), owner, core.ObjectName(owner, "copy"), "wm-test/not-here:1", tarOf(t, nil))
			wantErr(t, err, docker.ErrImageNotFound)
		}},
		{"an import that fails half-way leaves no volume", func(t *testing.T, m mover, owner string) {
			vol := core.ObjectName(owner, "broken")
			broken := io.MultiReader(tarHeadOnly(t, "greeting", 100), strings.NewReader("short"))
			if err := m.ImportVolume(ctx(t), owner, vol, image, broken); err == nil {
				t.Fatal("a truncated archive was imported")
			}
			vs, err := m.ListVolumes(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(vs, func(v core.Volume) bool { return v.Name == vol }) {
				t.Errorf("volume %s left after a failed import", vol)
			}
		}},
		{"ReadSpec reads back the spec a container was made from, hash and state", func(t *testing.T, m mover, owner string) {
			s := spec(t, owner, "web")
			s.Env = map[string]string{"MODE": "dev", "EMPTY": ""}
			s.Command = []string{"sh", "-c", "exec sleep 3600"}
			s.Workdir = "/tmp"
			s.Mounts = []core.Mount{{Volume: core.ObjectName(owner, "data"), Target: "/data"}}
			s.NanoCPUs, s.MemoryBytes = 500_000_000, 64<<20
			create(t, m, s)
			got, err := m.ReadSpec(ctx(t), s.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got.Hash() != s.Hash() || !got.Running {
				t.Errorf("read back %+v (running %v), want %+v", got, got.Running, s)
			}
			if err := m.Stop(ctx(t), s.Name, 0); err != nil {
				t.Fatal(err)
			}
			if got, err := m.ReadSpec(ctx(t), s.Name); err != nil || got.Running || got.Hash() != s.Hash() {
				t.Errorf("after a stop: running %v, same hash %v, %v", got.Running, got.Hash() == s.Hash(), err)
			}
			_, err = m.ReadSpec(ctx(t), core.ObjectName(owner, "missing"))
			wantErr(t, err, docker.ErrNotFound)
		}},
		{"ReadSpec tells a spec that repeats the image's command from one that leaves it", func(t *testing.T, m mover, owner string) {
			s := spec(t, owner, "plain")
			create(t, m, s)
			got, err := m.ReadSpec(ctx(t), s.Name)
			if err != nil || got.Hash() != s.Hash() || len(got.Command) != 0 {
				t.Errorf("read back command %q, same hash %v, %v", got.Command, got.Hash() == s.Hash(), err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			m, owner := newMover(t)
			c.test(t, m, owner)
		})
	}
}

// seed writes seededFiles into owner's volume vol: on a real engine from
// a container that mounts it (then stopped), on a Fake by hand.
func seed(t *testing.T, m mover, owner, vol string) {
	t.Helper()
	if f, ok := m.(*docker.Fake); ok {
		for p, content := range seededFiles {
			f.WriteVolumeFile(owner, vol, p, []byte(content))
		}
		return
	}
	s := spec(t, owner, "seed-"+strings.TrimPrefix(vol, owner+"_"))
	s.Ports = nil
	s.Command = []string{"sh", "-c", seedScript}
	s.Mounts = []core.Mount{{Volume: vol, Target: "/data"}}
	create(t, m, s)
	acc := m.(interface {
		CopyFrom(ctx context.Context, owner, name, path string) (io.ReadCloser, error)
	})
	waitFor(t, func() bool {
		rc, err := acc.CopyFrom(ctx(t), owner, s.Name, "/data/.done")
		if err == nil {
			rc.Close()
		}
		return err == nil
	})
	if err := m.Stop(ctx(t), s.Name, 0); err != nil {
		t.Fatal(err)
	}
}

// exported exports owner's volume and reads what it holds, the root and
// the done mark left out.
func exported(t *testing.T, m mover, owner, vol string) map[string]volumeFile {
	t.Helper()
	rc, err := m.ExportVolume(ctx(t), owner, vol, image)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]volumeFile{}
	tr := tar.NewReader(rc)
	root := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "./" {
			root = true
		}
		if h.Typeflag != tar.TypeReg || h.Name == ".done" {
			continue
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = volumeFile{content: string(b), mode: h.Mode & 0o7777, uid: h.Uid, gid: h.Gid}
	}
	if !root {
		t.Error("the export has no root entry ./")
	}
	return out
}

// wantSeeded checks that got holds seededFiles, with their owners and
// modes when real says the engine keeps them.
func wantSeeded(t *testing.T, got map[string]volumeFile, real bool) {
	t.Helper()
	for p, content := range seededFiles {
		if got[p].content != content {
			t.Errorf("%s = %q, want %q (all: %v)", p, got[p].content, content, got)
		}
	}
	if len(got) != len(seededFiles) {
		t.Errorf("files %v, want those of %v", got, seededFiles)
	}
	if deep := got["sub/deep"]; real && (deep.uid != 1234 || deep.gid != 1234 || deep.mode != 0o600) {
		t.Errorf("sub/deep is %d:%d mode %o, want 1234:1234 mode 600", deep.uid, deep.gid, deep.mode)
	}
}

// tarOf is a volume archive of files.
func tarOf(t *testing.T, files map[string]string) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
		t.Fatal(err)
	}
	for p, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}); err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(tw, content)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// tarHeadOnly is the start of an archive whose one file of size bytes is
// cut off after its header.
func tarHeadOnly(t *testing.T, name string, size int64) io.Reader {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	return &buf
}
