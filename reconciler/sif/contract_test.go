package sif_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

// builder is what the reconcile pass and `wm sif build` need of a SIF
// builder; Builder and Fake both are one.
type builder interface {
	Build(ctx context.Context, ref, dst string, progress func(stage string, done, total int64)) (core.SIFBuild, error)
}

var (
	_ builder = (*sif.Builder)(nil)
	_ builder = (*sif.Fake)(nil)
)

// harness is one implementation under the contract: a builder, and a way
// to make a reference name a new image.
type harness struct {
	b builder
	// publish makes the reference for name point at image version v.
	publish func(t *testing.T, name string, v int) (ref string)
	// missing is a reference to no image.
	missing string
}

func TestBuilderContract(t *testing.T) {
	t.Run("Fake", func(t *testing.T) {
		f := sif.NewFake()
		contract(t, harness{
			b: f,
			publish: func(t *testing.T, name string, v int) string {
				ref := "fake.test/" + name + ":latest"
				f.SetImage(ref, "sha256:image-"+name+"-"+strconv.Itoa(v))
				return ref
			},
			missing: "fake.test/nothing:here",
		})
	})
	t.Run("Builder", func(t *testing.T) {
		reg := registrytest.Start(t)
		contract(t, harness{
			b: newBuilder(t, reg, sif.Options{}),
			publish: func(t *testing.T, name string, v int) string {
				ref := reg.Ref("contract/"+name, "latest")
				reg.Push(t, ref, registrytest.BusyboxImage(t, map[string]string{"/version": strconv.Itoa(v)}))
				return ref
			},
			missing: reg.Ref("contract/nothing", "here"),
		})
	})
}

// contract is what every builder does.
func contract(t *testing.T, h harness) {
	t.Run("a built SIF verifies and its sidecars describe it", func(t *testing.T) {
		ref := h.publish(t, "first", 1)
		dst := filepath.Join(t.TempDir(), "first.sif")
		res, err := h.b.Build(t.Context(), ref, dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sif.Verify(dst); err != nil {
			t.Fatal(err)
		}
		if sum := sumOf(t, dst); res.SHA256 != sum || res.Cached {
			t.Errorf("result %+v, file sha256 %s", res, sum)
		}
		if sum, err := sif.ReadSum(dst); err != nil || sum != res.SHA256 {
			t.Errorf("ReadSum = %q, %v; want %s", sum, err, res.SHA256)
		}
	})

	t.Run("the same image again is cached and keeps the file", func(t *testing.T) {
		ref := h.publish(t, "same", 1)
		dst := filepath.Join(t.TempDir(), "same.sif")
		first, err := h.b.Build(t.Context(), ref, dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := os.Stat(dst)
		second, err := h.b.Build(t.Context(), ref, dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		after, _ := os.Stat(dst)
		if !second.Cached || second.SHA256 != first.SHA256 || !os.SameFile(before, after) {
			t.Errorf("second build %+v of the first %+v: want it cached, the file kept", second, first)
		}
	})

	t.Run("a new image under the same reference rebuilds", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "moving.sif")
		first, err := h.b.Build(t.Context(), h.publish(t, "moving", 1), dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		second, err := h.b.Build(t.Context(), h.publish(t, "moving", 2), dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		if second.Cached || second.ImageID == first.ImageID || second.SHA256 == first.SHA256 {
			t.Errorf("rebuild %+v after %+v: want a new image and SIF", second, first)
		}
		if sum := sumOf(t, dst); sum != second.SHA256 {
			t.Errorf("file sha256 %s, want the rebuild's %s", sum, second.SHA256)
		}
	})

	t.Run("Remove removes the SIF and its sidecars", func(t *testing.T) {
		dir := t.TempDir()
		dst := filepath.Join(dir, "removed.sif")
		if _, err := h.b.Build(t.Context(), h.publish(t, "removed", 1), dst, nil); err != nil {
			t.Fatal(err)
		}
		for range 2 { // removing what is gone is no error
			if err := sif.Remove(dst); err != nil {
				t.Fatal(err)
			}
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Errorf("%d files left after Remove", len(entries))
		}
	})

	t.Run("a missing image is ErrImageNotFound and writes nothing", func(t *testing.T) {
		dir := t.TempDir()
		_, err := h.b.Build(t.Context(), h.missing, filepath.Join(dir, "missing.sif"), nil)
		if !errors.Is(err, sif.ErrImageNotFound) {
			t.Errorf("error %v, want ErrImageNotFound", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Errorf("a failed build left %d files", len(entries))
		}
	})

	t.Run("a cancelled context fails with context.Canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := h.b.Build(ctx, h.publish(t, "cancelled", 1), filepath.Join(t.TempDir(), "c.sif"), nil)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
	})

	t.Run("the handler serves the SIF with its sha256 as ETag", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "alice"), 0o755); err != nil {
			t.Fatal(err)
		}
		res, err := h.b.Build(t.Context(), h.publish(t, "served", 1), filepath.Join(dir, "alice", "app.sif"), nil)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(sif.NewHandler(dir, func(*http.Request, string) bool { return true }))
		t.Cleanup(srv.Close)
		resp, err := http.Get(srv.URL + "/artifacts/alice/app.sif")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("ETag") != `"`+res.SHA256+`"` || int64(len(body)) != res.Size {
			t.Errorf("GET: %d, ETag %s, %d bytes; want 200, %q, %d", resp.StatusCode, resp.Header.Get("ETag"), len(body), res.SHA256, res.Size)
		}
	})
}
