package sif

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
)

// FakeVersion is the builder version Fake records.
const FakeVersion = "wm-sif/fake"

// Fake builds SIFs without images, registries or tar2sqfs, for tests of
// callers (the reconcile pass, `wm serve`). Its SIFs are real SIF files
// (Verify accepts them, Handler serves them) whose primary partition is a
// stand-in that starts like a squashfs; its caching, atomic writes and
// sidecars are Builder's own. Images are set by reference with SetImage.
type Fake struct {
	Files
	mu     sync.Mutex
	images map[string]string // ref → image ID
	errs   map[string]error  // ref → error Build returns
	builds []string          // dst of every SIF written, in order
}

// NewFake returns a Fake without images: every Build fails with
// ErrImageNotFound until SetImage.
func NewFake() *Fake {
	return &Fake{images: map[string]string{}, errs: map[string]error{}}
}

// SetImage makes ref name the image with id (any string: a new one is a
// new image); "" removes it.
func (f *Fake) SetImage(ref, id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id == "" {
		delete(f.images, ref)
	} else {
		f.images[ref] = id
	}
}

// SetError makes Build of ref fail with err (nil: succeed again).
func (f *Fake) SetError(ref string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.errs, ref)
	} else {
		f.errs[ref] = err
	}
}

// Builds returns the paths of the SIFs written, in order; cache hits are
// not in it.
func (f *Fake) Builds() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.builds)
}

// Build is Builder.Build against the fake's images.
func (f *Fake) Build(ctx context.Context, ref, dst string, progress func(stage string, done, total int64)) (core.SIFBuild, error) {
	start := time.Now()
	report := serialized(progress)
	fail := func(err error) (core.SIFBuild, error) {
		return core.SIFBuild{}, fmt.Errorf("build SIF of %s: %w", ref, err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	report(StageResolve, 0, 1)
	f.mu.Lock()
	id, ok := f.images[ref]
	ferr := f.errs[ref]
	f.mu.Unlock()
	switch {
	case ferr != nil:
		return fail(ferr)
	case !ok:
		return fail(fmt.Errorf("%w: fake has no %s", ErrImageNotFound, ref))
	}
	report(StageResolve, 1, 1)
	dst, err := filepath.Abs(dst)
	if err != nil {
		return fail(err)
	}
	if r, ok := cachedAt(dst, id, FakeVersion); ok {
		r.Ref, r.Duration = ref, time.Since(start)
		return r, nil
	}

	report(StageSquash, 0, 1)
	// The stand-in partition: a squashfs magic, then the image ID.
	part, err := os.CreateTemp("", "wm-sif-fake-*")
	if err != nil {
		return fail(err)
	}
	defer os.Remove(part.Name())
	_, err = part.WriteString(string(squashfsMagic) + "\x00fake partition of " + id + "\n")
	if cerr := part.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Labels": map[string]string{"org.whalemountain.fake.ref": ref}},
	})
	report(StageWrite, 0, -1)
	sum, size, err := writeSIF(dst, sifParts{squashfs: part.Name(), config: config, arch: "amd64",
		id: sifID(id, FakeVersion), created: time.Unix(0, 0)}, nil)
	if err != nil {
		return fail(err)
	}
	m := Meta{ImageID: id, Ref: ref, Builder: FakeVersion, SHA256: sum, Size: size, Arch: "amd64", Built: time.Now().UTC()}
	if err := writeSidecars(dst, m); err != nil {
		return fail(err)
	}
	f.mu.Lock()
	f.builds = append(f.builds, dst)
	f.mu.Unlock()
	return core.SIFBuild{Ref: ref, ImageID: id, SHA256: sum, Size: size, Arch: "amd64", Duration: time.Since(start)}, nil
}

// Both builders are SIF builders as the domain core defines one.
var (
	_ core.SIFBuilder = (*Builder)(nil)
	_ core.SIFBuilder = (*Fake)(nil)
)
