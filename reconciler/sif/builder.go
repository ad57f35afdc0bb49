package sif

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/whalemountain/wm/reconciler/core"
)

// FormatVersion is the version of what a Builder writes (the layout, the
// scripts, the squashfs writer and its flags). Raising it rebuilds every
// SIF once. 2: tar2sqfs from a tar stream, where 1 was mksquashfs of an
// unpacked folder.
const FormatVersion = 2

// hostArch is the architecture of an image that does not name one.
const hostArch = runtime.GOARCH

// Stages a build reports to its progress function, in order. done and
// total are bytes, or 0 and 1 then 1 and 1 for a stage without a measure;
// total is -1 when unknown.
const (
	// StageResolve: asking the source which image the reference names.
	StageResolve = "resolve"
	// StageQueue: waiting for a build slot (Options.Concurrency).
	StageQueue = "queue"
	// StagePull: downloading the layers and streaming the flattened image
	// into tar2sqfs, which squashes it as it comes; bytes downloaded of
	// the manifest's total (a daemon's or an in-hand image: not told).
	StagePull = "pull"
	// StageSquash: tar2sqfs finishing the squashfs once the last layer is
	// read.
	StageSquash = "squash"
	// StageWrite: writing and hashing the SIF.
	StageWrite = "write"
)

// Builder makes SIF files from container images. Its methods are safe for
// concurrent use: builds of different files run at once up to
// Options.Concurrency; builds of one file run one after the other, so
// that the second finds the first's result cached. One Builder (one
// process) should own a folder of SIFs: nothing locks across processes.
type Builder struct {
	Files
	opts     Options
	optErr   error // an option no build can run with
	source   Source
	squasher Squasher
	version  string
	slots    chan struct{}
	locks    keyedLocks
	daemon   *Daemon // reads Options.Docker, when given
}

// NewBuilder returns a Builder with opts, defaults filled in. An invalid
// option (an unknown compression) fails every Build.
func NewBuilder(opts Options) *Builder {
	opts = opts.withDefaults()
	b := &Builder{opts: opts, optErr: opts.validate(), slots: make(chan struct{}, opts.Concurrency)}

	b.squasher = opts.Squasher
	owners := "image"
	if opts.AllRoot {
		owners = "root"
	}
	b.version = fmt.Sprintf("wm-sif/%d comp=%s owners=%s", FormatVersion, opts.Compression, owners)
	if b.squasher == nil {
		b.squasher = &Tar2sqfs{Path: opts.Tar2sqfs, Compression: opts.Compression, Processors: opts.Processors}
	} else {
		b.version = fmt.Sprintf("wm-sif/%d squasher=%T owners=%s", FormatVersion, b.squasher, owners)
	}

	b.source = opts.Images
	if b.source == nil {
		keychain := hostKeychain(opts.Auth)
		reg := NewRegistry(multiKeychain(keychain, opts.Keychain), opts.Insecure, *opts.Platform)
		reg.MaxCompressedBytes = opts.MaxCompressedBytes
		switch opts.Source {
		case SourceRegistry:
			b.source = reg
		case SourceDaemon:
			b.daemon = NewDaemon(opts.Docker, opts.TempDir)
			b.source = b.daemon
		default:
			auto := &Auto{Registry: reg}
			if opts.Docker != nil {
				b.daemon = NewDaemon(opts.Docker, opts.TempDir)
				auto.Daemon = b.daemon
			}
			b.source = auto
		}
		if b.daemon != nil {
			b.daemon.MaxSaveBytes = opts.MaxUnpackedBytes + opts.MaxCompressedBytes
		}
	}
	return b
}

// Version returns the builder version recorded beside each SIF: the
// format version and the options that change the bytes written. A SIF of
// another version is rebuilt.
func (b *Builder) Version() string { return b.version }

// Close releases what the builder holds. The Docker daemon of
// Options.Docker is the caller's to close.
func (b *Builder) Close() error {
	if b.daemon != nil {
		return b.daemon.Close()
	}
	return nil
}

// Build writes the SIF of the image ref names to dst, unless dst already
// holds one of the same image (same ImageID) by the same builder version:
// then it returns quickly with Cached set, after one manifest request.
//
// The SIF is written atomically: a temporary file beside dst (named
// ".<name>.tmp-*"), fsynced, renamed over dst; then dst+".sha256" (the
// sha256sum line) and dst+".json" (Meta), each the same way. dst's folder
// must exist. A failed build leaves what was at dst as it was.
//
// Errors wrap ErrImageNotFound, ErrAccessDenied, ErrUnreachable,
// ErrInvalidRef, ErrInvalidImage, ErrTooLarge, ErrToolMissing,
// ErrSquashFailed, or
// ctx's error or context.DeadlineExceeded past Options.Timeout.
//
// progress, when not nil, is told each stage (see StageResolve and the
// others) before it starts and as it goes, one call at a time.
func (b *Builder) Build(ctx context.Context, ref, dst string, progress func(stage string, done, total int64)) (core.SIFBuild, error) {
	start := time.Now()
	report := serialized(progress)
	fail := func(err error) (core.SIFBuild, error) {
		return core.SIFBuild{}, fmt.Errorf("build SIF of %s: %w", ref, err)
	}
	if b.optErr != nil {
		return fail(b.optErr)
	}
	dst, err := filepath.Abs(dst)
	if err != nil {
		return fail(err)
	}
	unlock, err := b.locks.lock(ctx, dst)
	if err != nil {
		return fail(err)
	}
	defer unlock()

	report(StageResolve, 0, 1)
	rctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	res, err := b.source.Resolve(rctx, ref)
	cancel()
	if err != nil {
		return fail(err)
	}
	report(StageResolve, 1, 1)
	if r, ok := cachedAt(dst, res.ImageID, b.version); ok {
		r.Ref, r.Digest, r.Duration = ref, res.Digest, time.Since(start)
		return r, nil
	}
	open := func(ctx context.Context) (v1.Image, error) {
		return b.source.Open(ctx, res, func(done, total int64) { report(StagePull, done, total) })
	}
	r, err := b.build(ctx, dst, Meta{Ref: ref, Digest: res.Digest, ImageID: res.ImageID}, open, report)
	if err != nil {
		return fail(err)
	}
	r.Duration = time.Since(start)
	return r, nil
}

// BuildImage is Build for an image already in hand (a daemon's, a
// layout's, one made in memory). Its Digest is img.Digest(), which for
// some images (a daemon's) means compressing every layer: Build with
// SourceDaemon avoids that.
func (b *Builder) BuildImage(ctx context.Context, img v1.Image, dst string, progress func(stage string, done, total int64)) (core.SIFBuild, error) {
	start := time.Now()
	report := serialized(progress)
	fail := func(err error) (core.SIFBuild, error) {
		return core.SIFBuild{}, fmt.Errorf("build SIF %s: %w", filepath.Base(dst), err)
	}
	if b.optErr != nil {
		return fail(b.optErr)
	}
	dst, err := filepath.Abs(dst)
	if err != nil {
		return fail(err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return fail(classify(err))
	}
	digest, err := img.Digest()
	if err != nil {
		return fail(classify(err))
	}
	unlock, err := b.locks.lock(ctx, dst)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	if r, ok := cachedAt(dst, id.String(), b.version); ok {
		r.Digest, r.Duration = digest.String(), time.Since(start)
		return r, nil
	}
	// Only v1.Image's methods: build closes what a Source opened, never
	// the caller's image.
	open := func(context.Context) (v1.Image, error) { return struct{ v1.Image }{img}, nil }
	r, err := b.build(ctx, dst, Meta{Digest: digest.String(), ImageID: id.String()}, open, report)
	if err != nil {
		return fail(err)
	}
	r.Duration = time.Since(start)
	return r, nil
}

// cachedAt returns the result of the SIF at dst when it is a complete
// build of imageID by builder version: its metadata says so, and its size
// and sum sidecar agree with the metadata. It reads no SIF content.
func cachedAt(dst, imageID, version string) (core.SIFBuild, bool) {
	m, err := readMeta(dst)
	if err != nil || m.ImageID != imageID || m.Builder != version {
		return core.SIFBuild{}, false
	}
	fi, err := os.Stat(dst)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != m.Size {
		return core.SIFBuild{}, false
	}
	if sum, err := ReadSum(dst); err != nil || sum != m.SHA256 {
		return core.SIFBuild{}, false
	}
	return core.SIFBuild{ImageID: m.ImageID, SHA256: m.SHA256, Size: m.Size, Arch: m.Arch, Cached: true, Notes: m.Notes}, true
}

// build runs one build in a slot: open the image, stream its flattened
// file system and the layout into the squasher, write the SIF and its
// sidecars.
func (b *Builder) build(ctx context.Context, dst string, meta Meta, open func(context.Context) (v1.Image, error),
	report func(string, int64, int64)) (core.SIFBuild, error) {
	// Fail before any work on what would fail after all of it.
	if fi, err := os.Stat(filepath.Dir(dst)); err != nil {
		return core.SIFBuild{}, fmt.Errorf("destination folder: %w", err)
	} else if !fi.IsDir() {
		return core.SIFBuild{}, fmt.Errorf("destination folder %s: not a folder", filepath.Dir(dst))
	}
	if c, ok := b.squasher.(interface{ Check() error }); ok {
		if err := c.Check(); err != nil {
			return core.SIFBuild{}, err
		}
	}
	release, err := b.acquire(ctx, report)
	if err != nil {
		return core.SIFBuild{}, err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
	defer cancel()
	// wrap keeps the deadline visible to errors.Is whatever failed first.
	wrap := func(err error) error {
		err = classify(err)
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			return fmt.Errorf("%w: %w", cerr, err)
		}
		return err
	}

	img, err := open(ctx)
	if err != nil {
		return core.SIFBuild{}, wrap(err)
	}
	if c, ok := img.(io.Closer); ok {
		defer c.Close()
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return core.SIFBuild{}, wrap(fmt.Errorf("read image config: %w", err))
	}
	if cfg == nil {
		return core.SIFBuild{}, &classified{kind: ErrInvalidImage, err: errors.New("no image config")}
	}
	if cfg.OS != "" && cfg.OS != "linux" {
		return core.SIFBuild{}, &classified{kind: ErrInvalidImage, err: fmt.Errorf("a %s image; a SIF holds a linux one", cfg.OS)}
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return core.SIFBuild{}, wrap(fmt.Errorf("read image config: %w", err))
	}
	arch := archOf(cfg)
	created := time.Unix(0, 0).UTC()
	if t := cfg.Created.Time; t.After(created) {
		created = t.UTC()
	}

	work, err := os.MkdirTemp(b.opts.TempDir, "wm-sif-*")
	if err != nil {
		return core.SIFBuild{}, fmt.Errorf("work folder: %w", err)
	}
	defer os.RemoveAll(work)
	squashfs := filepath.Join(work, "rootfs.squashfs")
	var n notes
	if err := b.squash(ctx, img, cfg, meta.ImageID, created, squashfs, &n, report); err != nil {
		return core.SIFBuild{}, wrap(err)
	}
	if err := ctx.Err(); err != nil {
		return core.SIFBuild{}, err
	}

	report(StageWrite, 0, -1)
	sum, size, err := writeSIF(dst, sifParts{
		squashfs: squashfs,
		config:   rawConfig,
		arch:     arch,
		id:       sifID(meta.ImageID, b.version),
		created:  created,
	}, func(done, total int64) { report(StageWrite, done, total) })
	if err != nil {
		return core.SIFBuild{}, err
	}
	meta.Builder, meta.SHA256, meta.Size, meta.Arch = b.version, sum, size, arch
	meta.Built, meta.Notes = time.Now().UTC(), n.all()
	if err := writeSidecars(dst, meta); err != nil {
		return core.SIFBuild{}, err
	}
	return core.SIFBuild{Ref: meta.Ref, Digest: meta.Digest, ImageID: meta.ImageID, SHA256: sum, Size: size,
		Arch: arch, Notes: meta.Notes}, nil
}

// squash streams img's flattened file system and the layout for cfg into
// the squasher through a pipe, and has it write out. The stream is checked
// and bounded as it is written (see streamer); when it fails, the squasher
// is killed before it reads the end of the stream, and the stream's error
// is the build's. When the squasher fails first, the stream stops writing
// and the squasher's error is the build's.
func (b *Builder) squash(ctx context.Context, img v1.Image, cfg *v1.ConfigFile, imageID string, created time.Time,
	out string, n *notes, report func(string, int64, int64)) error {
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s := newStreamer(pw, !b.opts.AllRoot, created, newBudget(b.opts), n)
	report(StagePull, 0, -1)
	streamed := make(chan error, 1)
	go func() {
		err := s.stream(ctx, img, cfg, imageID, b.version)
		if err != nil {
			cancel(err) // kills the squasher before it sees the end
		}
		pw.Close()
		if err == nil {
			report(StageSquash, 0, 1)
		}
		streamed <- err
	}()
	serr := b.squasher.Squash(ctx, pr, out)
	if serr != nil {
		cancel(serr)
	}
	pr.Close() // a stream still writing fails at once
	err = <-streamed
	switch {
	case err != nil && !errors.Is(err, errSink):
		return err
	case serr != nil:
		return serr
	case err != nil:
		return err
	}
	report(StageSquash, 1, 1)
	return nil
}

// acquire takes a build slot, waiting (and saying so) when all are taken.
func (b *Builder) acquire(ctx context.Context, report func(string, int64, int64)) (func(), error) {
	select {
	case b.slots <- struct{}{}:
		return func() { <-b.slots }, nil
	default:
	}
	report(StageQueue, 0, 1)
	select {
	case b.slots <- struct{}{}:
		report(StageQueue, 1, 1)
		return func() { <-b.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sifID is the SIF's UUID: derived from the image and the builder version
// (an RFC 9562 version 8 UUID), so that the same build gives the same
// bytes, and two different ones different IDs.
func sifID(imageID, version string) string {
	s := sha256.Sum256([]byte("whalemountain-sif\x00" + imageID + "\x00" + version))
	u := s[:16]
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// serialized returns progress made safe to call from several goroutines
// (and a no-op for nil).
func serialized(progress func(stage string, done, total int64)) func(string, int64, int64) {
	if progress == nil {
		return func(string, int64, int64) {}
	}
	var mu sync.Mutex
	return func(stage string, done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		progress(stage, done, total)
	}
}

// keyedLocks are mutexes by key (a SIF's path), made on demand, that a
// waiter can give up on with its context.
type keyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	ch      chan struct{}
	holders int // holding or waiting
}

func (k *keyedLocks) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.holders++
	k.mu.Unlock()
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; k.release(key, l) }, nil
	case <-ctx.Done():
		k.release(key, l)
		return nil, ctx.Err()
	}
}

func (k *keyedLocks) release(key string, l *keyedLock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.holders--; l.holders == 0 {
		delete(k.m, key)
	}
}
