package sif_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"

	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/sif"
)

// daemonImage makes sure the local daemon has the busybox test image
// under ref and returns its ID; a tag the test made is removed at the end.
func daemonImage(t *testing.T, ref string, untag bool) string {
	t.Helper()
	dockertest.BusyboxImage(t, ref)
	cli := dockertest.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if untag {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := cli.ImageRemove(ctx, ref, image.RemoveOptions{}); err != nil {
				t.Errorf("untag %s: %v", ref, err)
			}
		})
	}
	return res.ID
}

func TestBuildFromTheLocalDaemon(t *testing.T) {
	ref := "wm-test/sif-daemon:1"
	id := daemonImage(t, ref, false)

	b := newBuilder(t, nil, sif.Options{Source: sif.SourceDaemon, Docker: dockertest.Engine(t)})
	dst := filepath.Join(t.TempDir(), "local.sif")
	res, err := b.Build(t.Context(), ref, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ImageID != id || res.Digest != "" || res.Cached {
		t.Errorf("result %+v: want a fresh build of image %s, without a manifest digest", res, id)
	}
	files := listing(t, dst)
	for _, p := range []string{"/bin/busybox", "/bin/sleep", "/etc/passwd", "/.singularity.d/runscript"} {
		if _, ok := files[p]; !ok {
			t.Errorf("%s missing", p)
		}
	}
	if got := catFile(t, dst, ".singularity.d/runscript"); got != sif.Runscript(nil, []string{"sleep", "3600"}) {
		t.Errorf("runscript:\n%s", got)
	}

	again, err := b.Build(t.Context(), ref, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cached {
		t.Error("a second build of the same daemon image was not cached")
	}
}

func TestAutoFallsBackToTheDaemonWhenTheRegistryIsDown(t *testing.T) {
	// Nothing listens on port 1: the registry the reference names is down,
	// and the daemon has an image under that name, as a host that built
	// an image and never pushed it has.
	ref := "127.0.0.1:1/wm-test/sif-auto:1"
	id := daemonImage(t, ref, true)

	b := newBuilder(t, nil, sif.Options{Source: sif.SourceAuto, Docker: dockertest.Engine(t)})
	res, err := b.Build(t.Context(), ref, filepath.Join(t.TempDir(), "auto.sif"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.ImageID != id {
		t.Errorf("built image %s, want the daemon's %s", res.ImageID, id)
	}

	t.Run("registry only does not fall back", func(t *testing.T) {
		b := newBuilder(t, nil, sif.Options{Source: sif.SourceRegistry})
		_, err := b.Build(t.Context(), ref, filepath.Join(t.TempDir(), "auto.sif"), nil)
		if !errors.Is(err, sif.ErrUnreachable) {
			t.Errorf("error %v, want ErrUnreachable", err)
		}
	})
}

func TestAnImageTheDaemonLacksIsNotFound(t *testing.T) {
	dockertest.Client(t) // fail, not pass, when there is no daemon
	b := newBuilder(t, nil, sif.Options{Source: sif.SourceDaemon, Docker: dockertest.Engine(t)})
	_, err := b.Build(t.Context(), "wm-test/never-built:"+strings.ToLower(t.Name()), filepath.Join(t.TempDir(), "x.sif"), nil)
	if !errors.Is(err, sif.ErrImageNotFound) || !errors.Is(err, fault.NotFound) {
		t.Errorf("error %v, want ErrImageNotFound, of the kind fault.NotFound", err)
	}
}

func TestADaemonThatIsDownOrMissingIsUnreachable(t *testing.T) {
	down, err := docker.New("down", "tcp://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	for _, tc := range []struct {
		name string
		opts sif.Options
	}{
		{"a daemon nobody answers for", sif.Options{Source: sif.SourceDaemon, Docker: down}},
		{"no daemon given at all", sif.Options{Source: sif.SourceDaemon}},
		{"a registry that is down and no daemon given", sif.Options{Source: sif.SourceAuto}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(t, nil, tc.opts)
			_, err := b.Build(t.Context(), "127.0.0.1:1/wm-test/absent:1", filepath.Join(t.TempDir(), "x.sif"), nil)
			if !errors.Is(err, sif.ErrUnreachable) || !errors.Is(err, fault.Unreachable) {
				t.Errorf("error %v, want ErrUnreachable, of the kind fault.Unreachable", err)
			}
		})
	}
}

func TestEverySentinelIsOfItsKind(t *testing.T) {
	for _, tc := range []struct {
		name      string
		err, kind error
	}{
		{"an image not found is NotFound", sif.ErrImageNotFound, fault.NotFound},
		{"credentials refused by the registry are Refused", sif.ErrAccessDenied, fault.Refused},
		{"an unreachable source is Unreachable", sif.ErrUnreachable, fault.Unreachable},
		{"a reference that does not parse is Invalid", sif.ErrInvalidRef, fault.Invalid},
		{"an image unusable for a SIF is Invalid", sif.ErrInvalidImage, fault.Invalid},
		{"an image past a limit is TooLarge", sif.ErrTooLarge, fault.TooLarge},
		{"a missing tar2sqfs is Invalid: the build host cannot build", sif.ErrToolMissing, fault.Invalid},
		{"a file that is no SIF is Invalid", sif.ErrInvalidSIF, fault.Invalid},
		{"a failing tar2sqfs (a full disk) has no kind: retry", sif.ErrSquashFailed, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fault.Of(tc.err); got != tc.kind {
				t.Errorf("kind %v, want %v", got, tc.kind)
			}
		})
	}
}
