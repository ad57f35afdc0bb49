package sif

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/whalemountain/wm/reconciler/core"
)

// Source finds and reads images by reference: Registry and Daemon are the
// real ones, Auto chains them. Build resolves first, which is cheap, to
// tell a cache hit, and opens only when it builds.
type Source interface {
	// Resolve names the image ref points to now, or fails with
	// ErrImageNotFound, ErrUnreachable, ErrAccessDenied or ErrInvalidRef.
	Resolve(ctx context.Context, ref string) (Resolved, error)
	// Open returns the image Resolve named. Its layers are read within
	// ctx; progress, when not nil, is told the bytes downloaded so far and
	// the total (-1 when unknown).
	Open(ctx context.Context, r Resolved, progress func(done, total int64)) (v1.Image, error)
}

// Where a Resolved image comes from.
const (
	FromRegistry = "registry"
	FromDaemon   = "daemon"
)

// Resolved is an image a Source found.
type Resolved struct {
	// Ref is the reference as asked.
	Ref string
	// From is FromRegistry or FromDaemon.
	From string
	// Digest is the manifest digest, for a registry image; a daemon's image
	// has none to hand ("").
	Digest string
	// ImageID is the digest of the image's configuration, which names its
	// content (layers and config) whatever the compression: builds are
	// cached by it.
	ImageID string
	// Pinned is the reference of exactly this image: repo@digest for a
	// registry, the reference as asked for the daemon (re-checked by ID
	// when opened).
	Pinned string
}

var (
	_ Source = (*Registry)(nil)
	_ Source = (*Daemon)(nil)
	_ Source = (*Auto)(nil)
)

// retryBackoff retries a registry call twice, briefly: a reconcile pass
// has its own backoff for longer outages.
var retryBackoff = remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 3}

// Registry reads images from registries with go-containerregistry.
type Registry struct {
	// MaxCompressedBytes refuses, before any download, an image whose
	// manifest says its layers are larger as stored; 0 is
	// DefaultMaxCompressedBytes. A Builder sets it from its Options (and
	// counts the bytes read as well).
	MaxCompressedBytes int64

	keychain  authn.Keychain
	insecure  map[string]bool
	platform  v1.Platform
	transport http.RoundTripper
}

// NewRegistry returns a Registry that finds credentials with keychain (nil
// is anonymous), talks plain HTTP to the insecure hosts ("host:port") and
// picks platform from multi-platform images.
func NewRegistry(keychain authn.Keychain, insecure []string, platform v1.Platform) *Registry {
	if keychain == nil {
		keychain = authn.NewMultiKeychain()
	}
	r := &Registry{
		keychain: keychain,
		insecure: map[string]bool{},
		platform: platform,
		// One transport for all builds keeps connections to the registry
		// open between cache checks.
		transport: remote.DefaultTransport.(*http.Transport).Clone(),
	}
	for _, h := range insecure {
		r.insecure[h] = true
	}
	return r
}

// parse parses ref, as insecure when its registry is one of r's.
func (r *Registry) parse(ref string) (name.Reference, error) {
	parsed, err := name.ParseReference(ref)
	if err != nil {
		return nil, &classified{kind: ErrInvalidRef, err: err}
	}
	if r.insecure[parsed.Context().RegistryStr()] {
		return name.ParseReference(ref, name.Insecure)
	}
	return parsed, nil
}

func (r *Registry) options(ctx context.Context, rt http.RoundTripper) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(r.keychain),
		remote.WithPlatform(r.platform),
		remote.WithRetryBackoff(retryBackoff),
		remote.WithTransport(rt),
		remote.WithUserAgent("whalemountain-sif"),
	}
}

// Resolve fetches ref's manifest (and, for a multi-platform index, the
// manifest of the platform's image): one or two small requests.
func (r *Registry) Resolve(ctx context.Context, ref string) (Resolved, error) {
	parsed, err := r.parse(ref)
	if err != nil {
		return Resolved{}, err
	}
	desc, err := remote.Get(parsed, r.options(ctx, r.transport)...)
	if err != nil {
		return Resolved{}, classify(err)
	}
	img, err := desc.Image()
	if err != nil {
		return Resolved{}, classify(err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Resolved{}, classify(err)
	}
	// The configuration's digest from the manifest: ConfigName would
	// download the configuration, whose size Open has yet to check.
	m, err := img.Manifest()
	if err != nil {
		return Resolved{}, classify(err)
	}
	return Resolved{
		Ref:     ref,
		From:    FromRegistry,
		Digest:  digest.String(),
		ImageID: m.Config.Digest.String(),
		Pinned:  parsed.Context().Digest(digest.String()).String(),
	}, nil
}

// Open reads the image by digest. progress counts the bytes of blobs
// downloaded against the sizes the manifest gives.
func (r *Registry) Open(ctx context.Context, res Resolved, progress func(done, total int64)) (v1.Image, error) {
	pinned, err := r.parse(res.Pinned)
	if err != nil {
		return nil, err
	}
	rt := r.transport
	var counter *countingTransport
	if progress != nil {
		counter = &countingTransport{base: r.transport, total: -1, progress: progress}
		rt = counter
	}
	// The manifest first, alone: its sizes are what the blobs must be
	// (go-containerregistry reads no more), so they are checked before
	// anything is downloaded, the configuration included (remote.Image
	// reads it whole into memory).
	desc, err := remote.Get(pinned, r.options(ctx, rt)...)
	if err != nil {
		return nil, classify(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, &classified{kind: ErrInvalidImage, err: fmt.Errorf("read manifest: %w", err)}
	}
	var layers int64
	for _, l := range m.Layers {
		layers += l.Size
	}
	maxLayers := r.MaxCompressedBytes
	if maxLayers <= 0 {
		maxLayers = DefaultMaxCompressedBytes
	}
	switch {
	case m.Config.Size > maxConfigBytes:
		// Read whole into memory, and written into the SIF.
		return nil, tooLarge("its configuration is %s; a build reads at most %s of it", core.FormatBytes(m.Config.Size), core.FormatBytes(maxConfigBytes))
	case layers > maxLayers:
		return nil, compressedTooLarge(maxLayers)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, classify(err)
	}
	if counter != nil {
		counter.total = m.Config.Size + layers
	}
	return img, nil
}

// countingTransport tells progress how many bytes of blobs were read.
type countingTransport struct {
	base     http.RoundTripper
	total    int64 // set before any blob is fetched
	done     atomic.Int64
	progress func(done, total int64)
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/blobs/") {
		return resp, err
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, c: c}
	return resp, nil
}

// countingBody counts what is read of a blob, telling progress at most
// every progressStep bytes and at the end.
type countingBody struct {
	io.ReadCloser
	c      *countingTransport
	unsent int64
}

const progressStep = 1 << 20

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.unsent += int64(n)
	if b.unsent >= progressStep || (err != nil && b.unsent > 0) {
		done := b.c.done.Add(b.unsent)
		b.unsent = 0
		b.c.progress(done, b.c.total)
	}
	return n, err
}

// ImageStore is a Docker daemon as Daemon reads it: *docker.Engine
// implements it, so this package needs no Docker client of its own.
// Errors are of a kind in package fault: fault.NotFound for an image that
// is not there, fault.Unreachable for a daemon that cannot be reached.
type ImageStore interface {
	// ImageID returns the ID of the image ref on the daemon: the digest
	// of its configuration.
	ImageID(ctx context.Context, ref string) (string, error)
	// ImageSave streams the image ref as `docker save` writes it: a
	// tarball with a manifest.json. The caller closes it.
	ImageSave(ctx context.Context, ref string) (io.ReadCloser, error)
}

// Daemon reads images from a Docker daemon: `docker save` of the image
// once, into a temporary file in its folder, then read like a tarball.
// The image Open returns is an io.Closer that removes the file; Builder
// closes it after the build.
type Daemon struct {
	// MaxSaveBytes bounds the file `docker save` writes, which holds the
	// image's layers uncompressed; 0 is DefaultMaxUnpackedBytes plus
	// DefaultMaxCompressedBytes (room for what upper layers shadow). A
	// Builder sets it from its Options the same way. Past it, Open fails
	// with ErrTooLarge and the file is removed.
	MaxSaveBytes int64

	store   ImageStore
	tempDir string
}

// NewDaemon returns a Daemon reading from store (nil: every call fails
// with ErrUnreachable, there being no daemon) that saves images into
// tempDir ("" is os.TempDir()).
func NewDaemon(store ImageStore, tempDir string) *Daemon {
	return &Daemon{store: store, tempDir: tempDir}
}

// errNoDaemon is the error of a Daemon without an ImageStore.
var errNoDaemon = &classified{kind: ErrUnreachable, err: errors.New("no local Docker daemon is configured")}

// Close does nothing: the ImageStore is the caller's.
func (d *Daemon) Close() error { return nil }

// Resolve asks the daemon for the image's ID.
func (d *Daemon) Resolve(ctx context.Context, ref string) (Resolved, error) {
	if _, err := name.ParseReference(ref); err != nil {
		return Resolved{}, &classified{kind: ErrInvalidRef, err: err}
	}
	if d.store == nil {
		return Resolved{}, errNoDaemon
	}
	id, err := d.store.ImageID(ctx, ref)
	if err != nil {
		return Resolved{}, classify(fmt.Errorf("local daemon: %w", err))
	}
	return Resolved{Ref: ref, From: FromDaemon, ImageID: id, Pinned: ref}, nil
}

// Open saves the image from the daemon; progress is not told anything.
// The image's ID is checked against the resolved one, since a tag on a
// daemon can move between the two.
func (d *Daemon) Open(ctx context.Context, res Resolved, _ func(done, total int64)) (v1.Image, error) {
	if d.store == nil {
		return nil, errNoDaemon
	}
	if _, err := name.ParseReference(res.Pinned); err != nil {
		return nil, &classified{kind: ErrInvalidRef, err: err}
	}
	maxSave := d.MaxSaveBytes
	if maxSave <= 0 {
		maxSave = DefaultMaxUnpackedBytes + DefaultMaxCompressedBytes
	}
	path, err := d.save(ctx, res.Pinned, maxSave)
	if err != nil {
		return nil, classify(fmt.Errorf("local daemon: %w", err))
	}
	remove := func() error { return os.Remove(path) }
	// The tarball is read again for each layer: from the file, not the
	// daemon.
	img, err := tarball.Image(func() (io.ReadCloser, error) { return os.Open(path) }, nil)
	if err != nil {
		remove()
		return nil, classify(fmt.Errorf("local daemon: %w", err))
	}
	id, err := img.ConfigName()
	if err != nil {
		remove()
		return nil, classify(fmt.Errorf("local daemon: %w", err))
	}
	if res.ImageID != "" && id.String() != res.ImageID {
		remove()
		return nil, fmt.Errorf("local daemon: %s moved from %s to %s while building: %w", res.Ref, res.ImageID, id, ErrUnreachable)
	}
	return &closingImage{Image: img, close: remove}, nil
}

// save writes `docker save` of ref into a new file of d's folder, at most
// max bytes (ErrTooLarge past them), and returns its path.
func (d *Daemon) save(ctx context.Context, ref string, max int64) (string, error) {
	rc, err := d.store.ImageSave(ctx, ref)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	f, err := os.CreateTemp(d.tempDir, "wm-sif-docker-save-*.tar")
	if err != nil {
		return "", fmt.Errorf("save image: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(rc, max+1))
	if err == nil && n > max {
		err = tooLarge("the local Docker daemon's copy of it, its layers uncompressed, is more than %s: make the image smaller, or ask the admins to raise sif.maxUnpackedSize or sif.maxCompressedSize in the server config",
			core.FormatBytes(max))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("save image: %w", err)
	}
	return f.Name(), nil
}

// closingImage is an image holding something to release after use.
type closingImage struct {
	v1.Image
	close func() error
}

func (c *closingImage) Close() error { return c.close() }

// Auto reads from Registry and, when the reference's registry cannot be
// reached at all, from Daemon.
type Auto struct {
	Registry Source
	Daemon   Source
}

// Resolve tries the registry, then the daemon when the registry is
// unreachable. When the daemon has no such image either, the registry's
// error is returned: it is the one the caller can act on.
func (a *Auto) Resolve(ctx context.Context, ref string) (Resolved, error) {
	r, err := a.Registry.Resolve(ctx, ref)
	if err == nil || !errors.Is(err, ErrUnreachable) || ctx.Err() != nil || a.Daemon == nil {
		return r, err
	}
	if dr, derr := a.Daemon.Resolve(ctx, ref); derr == nil {
		return dr, nil
	}
	return Resolved{}, err
}

// Open opens r where Resolve found it.
func (a *Auto) Open(ctx context.Context, r Resolved, progress func(done, total int64)) (v1.Image, error) {
	if r.From == FromDaemon {
		return a.Daemon.Open(ctx, r, progress)
	}
	return a.Registry.Open(ctx, r, progress)
}

// hostKeychain gives each host of auth its credentials, and nothing to any
// other host.
type hostKeychain map[string]Auth

func (k hostKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	if a, ok := k[res.RegistryStr()]; ok {
		return &authn.Basic{Username: a.Username, Password: a.Password}, nil
	}
	return authn.Anonymous, nil
}

// multiKeychain puts the per-host credentials before keychain (nil: none).
func multiKeychain(hosts hostKeychain, keychain authn.Keychain) authn.Keychain {
	if keychain == nil {
		return hosts
	}
	return authn.NewMultiKeychain(hosts, keychain)
}
