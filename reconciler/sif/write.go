package sif

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	libsif "github.com/apptainer/sif/v2/pkg/sif"
)

// ConfigObjectName names the SIF's JSON descriptor that holds the image's
// configuration, as the registry serves it.
const ConfigObjectName = "oci-config.json"

// launchScript is the SIF header's first line, as apptainer writes it: a
// SIF made executable runs itself.
const launchScript = "#!/usr/bin/env run-singularity\n"

// Sidecar names, beside a SIF at dst.
const (
	// SumSuffix: dst+".sha256" holds "<hex>  <file name>\n", as sha256sum
	// writes it (sha256sum -c checks it).
	SumSuffix = ".sha256"
	// MetaSuffix: dst+".json" records what the SIF was built from, by
	// which builder; it is written last and is what a cache hit trusts.
	MetaSuffix = ".json"
)

// Meta is the content of the dst+".json" sidecar.
type Meta struct {
	// ImageID is the digest of the image's configuration: the cache key.
	ImageID string `json:"imageID"`
	// Digest is the manifest digest, when the image came from a registry.
	Digest string `json:"digest,omitempty"`
	// Ref is the reference the build was asked for.
	Ref string `json:"ref,omitempty"`
	// Builder is the builder's version: a new one rebuilds everything.
	Builder string `json:"builder"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
	Arch    string `json:"arch"`
	// Built is when the SIF was written.
	Built time.Time `json:"built"`
	// Notes are what the build skipped.
	Notes []string `json:"notes,omitempty"`
}

// sifParts is what goes into a SIF.
type sifParts struct {
	squashfs string // path of the squashfs file
	config   []byte // the image's raw configuration
	arch     string
	id       string // the SIF's UUID
	created  time.Time
}

// writeSIF writes the SIF atomically at dst: a temporary file beside it,
// fsynced, then renamed over dst. Its name starts with a dot, and Handler
// only serves names without. It returns the SIF's sha256 (hex) and size.
func writeSIF(dst string, p sifParts, progress func(done, total int64)) (sum string, size int64, err error) {
	part, err := os.Open(p.squashfs)
	if err != nil {
		return "", 0, fmt.Errorf("open squashfs: %w", err)
	}
	defer part.Close()

	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return "", 0, fmt.Errorf("create SIF: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	configDI, err := libsif.NewDescriptorInput(libsif.DataGenericJSON, bytes.NewReader(p.config),
		libsif.OptObjectName(ConfigObjectName))
	if err != nil {
		return "", 0, fmt.Errorf("SIF config object: %w", err)
	}
	// The partition is copied from one file to the other: *os.File to
	// *os.File, so the kernel does it (copy_file_range) where it can.
	partDI, err := libsif.NewDescriptorInput(libsif.DataPartition, part,
		libsif.OptPartitionMetadata(libsif.FsSquash, libsif.PartPrimSys, p.arch))
	if err != nil {
		return "", 0, fmt.Errorf("SIF partition: %w", err)
	}
	img, err := libsif.CreateContainer(tmp,
		libsif.OptCreateWithDescriptors(configDI, partDI),
		libsif.OptCreateWithID(p.id),
		libsif.OptCreateWithTime(p.created),
		libsif.OptCreateWithLaunchScript(launchScript),
		libsif.OptCreateWithCloseOnUnload(false),
	)
	if err != nil {
		return "", 0, fmt.Errorf("create SIF: %w", err)
	}
	if err := img.UnloadContainer(); err != nil {
		return "", 0, fmt.Errorf("create SIF: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("sync SIF: %w", err)
	}
	// Hash what is on disk, as a client downloading it will.
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", 0, fmt.Errorf("hash SIF: %w", err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		return "", 0, fmt.Errorf("hash SIF: %w", err)
	}
	h := sha256.New()
	var src io.Reader = tmp
	if progress != nil {
		src = &progressReader{r: tmp, total: fi.Size(), progress: progress}
	}
	if size, err = io.Copy(h, src); err != nil {
		return "", 0, fmt.Errorf("hash SIF: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return "", 0, fmt.Errorf("SIF mode: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("close SIF: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, fmt.Errorf("replace %s: %w", dst, err)
	}
	return hex.EncodeToString(h.Sum(nil)), size, nil
}

// progressReader tells progress how much of total was read.
type progressReader struct {
	r        io.Reader
	done     int64
	unsent   int64
	total    int64
	progress func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	p.unsent += int64(n)
	if p.unsent >= 8*progressStep || (err != nil && p.unsent > 0) {
		p.unsent = 0
		p.progress(p.done, p.total)
	}
	return n, err
}

// writeSidecars writes dst's sidecars after dst itself: the sum first, the
// metadata last (it is what a cache hit trusts). Handler reads the sum
// before it opens the SIF, so during a rebuild it can pair the new SIF
// with the old sum, never the old SIF with the new sum: a download resumed
// with If-Range then starts over instead of mixing two files.
func writeSidecars(dst string, m Meta) error {
	sum := m.SHA256 + "  " + filepath.Base(dst) + "\n"
	if err := writeFileAtomic(dst+SumSuffix, []byte(sum)); err != nil {
		return err
	}
	meta, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", dst+MetaSuffix, err)
	}
	if err := writeFileAtomic(dst+MetaSuffix, append(meta, '\n')); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// writeFileAtomic writes data to a temporary file beside name, fsyncs it
// and renames it over name.
func writeFileAtomic(name string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// readMeta reads dst's metadata sidecar.
func readMeta(dst string) (Meta, error) {
	var m Meta
	b, err := os.ReadFile(dst + MetaSuffix)
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("decode %s: %w", dst+MetaSuffix, err)
	}
	return m, nil
}

// ReadSum returns the hex sha256 that the sidecar of the SIF at path
// records, checking that it is one for this file name.
func ReadSum(path string) (string, error) {
	b, err := os.ReadFile(path + SumSuffix)
	if err != nil {
		return "", err
	}
	if len(b) > 1024 {
		return "", fmt.Errorf("%s: too long", path+SumSuffix)
	}
	sum, file, ok := strings.Cut(strings.TrimSuffix(string(b), "\n"), "  ")
	if !ok || file != filepath.Base(path) || !isHexSHA256(sum) {
		return "", fmt.Errorf("%s: not \"<sha256>  %s\"", path+SumSuffix, filepath.Base(path))
	}
	return sum, nil
}

func isHexSHA256(s string) bool {
	if len(s) != sha256.Size*2 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// Remove removes the SIF at dst and its sidecars, for callers that prune:
// the metadata first, so that no half-removed SIF is ever a cache hit.
// What is already gone is no error.
func Remove(dst string) error {
	var errs []error
	for _, name := range []string{dst + MetaSuffix, dst, dst + SumSuffix} {
		if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Link hard-links the SIF at src and its sidecars to dst, which must have
// the same file name in another folder of the same file system, replacing
// what dst had; what src lacks is removed at dst. A build at dst then
// finds src's SIF cached, without copying a byte.
func Link(src, dst string) error {
	if err := sameName(src, dst); err != nil {
		return err
	}
	if err := Remove(dst); err != nil {
		return err
	}
	// The metadata last: it is what a cache hit trusts.
	for _, suffix := range []string{"", SumSuffix, MetaSuffix} {
		if err := os.Link(src+suffix, dst+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("link %s: %w", dst+suffix, err)
		}
	}
	return nil
}

// Move renames the SIF at src and its sidecars over dst, which must have
// the same file name (the sum sidecar names it) in another folder of the
// same file system: the SIF, then its sum, then its metadata, as a build
// writes them, so that Handler never pairs the old SIF with the new sum
// and no half-moved SIF is a cache hit.
func Move(src, dst string) error {
	if err := sameName(src, dst); err != nil {
		return err
	}
	for _, suffix := range []string{"", SumSuffix, MetaSuffix} {
		if err := os.Rename(src+suffix, dst+suffix); err != nil {
			return fmt.Errorf("move %s: %w", dst+suffix, err)
		}
	}
	return syncDir(filepath.Dir(dst))
}

func sameName(src, dst string) error {
	if filepath.Base(src) != filepath.Base(dst) {
		return fmt.Errorf("%s and %s: a SIF keeps its file name (its sum sidecar names it)", src, dst)
	}
	return nil
}

// Files is the SIF folder's side of core.SIFBuilder: Link, Move and Remove
// as methods, for Builder and Fake to embed.
type Files struct{}

// Link is the package's Link.
func (Files) Link(src, dst string) error { return Link(src, dst) }

// Move is the package's Move.
func (Files) Move(src, dst string) error { return Move(src, dst) }

// Remove is the package's Remove.
func (Files) Remove(dst string) error { return Remove(dst) }
