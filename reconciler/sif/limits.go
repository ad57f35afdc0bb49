package sif

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/whalemountain/wm/reconciler/core"
)

// Limits no option changes: what Linux and squashfs can hold, and what
// no image needs.
const (
	// maxPathBytes: a path (or a link's target) must be shorter than
	// Linux's PATH_MAX, which counts the terminating NUL.
	maxPathBytes = 4096
	// maxNameBytes is Linux's NAME_MAX, for one name in a path.
	maxNameBytes = 255
	// maxPathDepth bounds the folders of a path: each level costs system
	// calls for every entry under it, and no image nests this deep.
	maxPathDepth = 256
	// namesPerEntry is the average name length the entries of an image's
	// layers may have: mutate.Extract keeps every name it has seen, so
	// their total is memory.
	namesPerEntry = 128
	// maxConfigBytes bounds an image's configuration, which is read whole
	// into memory and copied into the SIF; Docker's are a few KiB.
	maxConfigBytes = 4 << 20
)

// budget is what one build may read and unpack, and what it has so far.
// The streamer counts what it writes; the layer streams (read in
// mutate.Extract's goroutine, scanned in one of their own) count bytes as
// stored and the entries of every layer. The first limit crossed is kept:
// whatever error the streams then pass on, the build fails with it.
type budget struct {
	maxBytes, maxCompressed int64
	maxFiles                int

	// Counted by the streamer, one goroutine.
	bytes int64
	files int

	// Counted by the layer streams.
	compressed atomic.Int64
	entries    atomic.Int64
	names      atomic.Int64

	mu  sync.Mutex
	err error
}

func newBudget(o Options) *budget {
	return &budget{maxBytes: o.MaxUnpackedBytes, maxCompressed: o.MaxCompressedBytes, maxFiles: o.MaxFiles}
}

// fail records err, a limit crossed, unless one was already, and returns
// the one recorded.
func (b *budget) fail(err error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
	return b.err
}

// crossed returns the limit crossed, or nil.
func (b *budget) crossed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// tooLarge is an ErrTooLarge whose message says which limit, its value
// and where to change it.
func tooLarge(format string, args ...any) error {
	return &classified{kind: ErrTooLarge, err: fmt.Errorf(format, args...)}
}

// admins is what the student reads after a configurable limit.
const admins = "make the image smaller, or ask the admins to raise"

// write accounts for a file of size bytes about to be written, before it
// is, so that nothing past the limit ever reaches the disk.
func (b *budget) write(name string, size int64) error {
	if size > b.maxBytes-b.bytes {
		return b.fail(tooLarge("its files add up to more than %s, the most a build unpacks (at /%s): %s sif.maxUnpackedSize in the server config",
			core.FormatBytes(b.maxBytes), name, admins))
	}
	b.bytes += size
	return b.create(name)
}

// create accounts for a file, folder or link about to be made.
func (b *budget) create(name string) error {
	if b.files >= b.maxFiles {
		return b.fail(tooLarge("it has more than %d files, folders and links, the most a build unpacks (at /%s): %s sif.maxFiles in the server config",
			b.maxFiles, name, admins))
	}
	b.files++
	return nil
}

// read accounts for n bytes of layers read as stored.
func (b *budget) read(n int) error {
	if b.compressed.Add(int64(n)) > b.maxCompressed {
		return b.fail(compressedTooLarge(b.maxCompressed))
	}
	return nil
}

func compressedTooLarge(limit int64) error {
	return tooLarge("its layers are more than %s as stored, the most a build downloads: %s sif.maxCompressedSize in the server config",
		core.FormatBytes(limit), admins)
}

// entry accounts for one entry of a layer, whatever becomes of it
// (written, shadowed, a whiteout), and checks its paths.
func (b *budget) entry(h *tar.Header) error {
	maxEntries := 2 * int64(b.maxFiles)
	if b.entries.Add(1) > maxEntries {
		return b.fail(tooLarge("its layers hold more than %d entries, whiteouts and rewritten files included (twice the most files a build unpacks): %s sif.maxFiles in the server config",
			maxEntries, admins))
	}
	if b.names.Add(int64(len(h.Name)+len(h.Linkname))) > maxEntries*namesPerEntry {
		return b.fail(tooLarge("the names in its layers add up to more than %s (%d bytes an entry on average): make the names shorter",
			core.FormatBytes(maxEntries*namesPerEntry), namesPerEntry))
	}
	if err := checkPaths(h); err != nil {
		return b.fail(err)
	}
	return nil
}

// checkPaths refuses an entry whose path, or link target, is longer or
// deeper than a build can hold. The layer scan checks every entry (the
// ones mutate.Extract drops too), the streamer again those it writes,
// since the scan may lag a read behind.
func checkPaths(h *tar.Header) error {
	if err := checkPath(h.Name); err != nil {
		return err
	}
	if (h.Typeflag == tar.TypeSymlink || h.Typeflag == tar.TypeLink) && len(h.Linkname) >= maxPathBytes {
		return tooLarge("the link /%s points to a path %d bytes long; Linux paths are shorter than %d bytes",
			short(h.Name), len(h.Linkname), maxPathBytes)
	}
	return nil
}

// checkPath refuses a path longer or deeper than a build can hold.
func checkPath(name string) error {
	if len(name) >= maxPathBytes {
		return tooLarge("the path /%s is %d bytes long; Linux paths are shorter than %d bytes", short(name), len(name), maxPathBytes)
	}
	clean := strings.Trim(path.Clean("/"+name), "/")
	if depth := strings.Count(clean, "/") + 1; clean != "" && depth > maxPathDepth {
		return tooLarge("the path /%s is %d folders deep; a build unpacks at most %d", short(name), depth, maxPathDepth)
	}
	return nil
}

// checkName refuses a name (one element of a path) Linux cannot hold.
func checkName(name string) error {
	for elem := range strings.SplitSeq(name, "/") {
		if len(elem) > maxNameBytes {
			return &classified{kind: ErrInvalidImage, err: fmt.Errorf("the name %s… in /%s is %d bytes long; Linux names are at most %d bytes",
				elem[:16], short(name), len(elem), maxNameBytes)}
		}
	}
	return nil
}

// short is the start of a long name, for messages.
func short(name string) string {
	if len(name) > 64 {
		return name[:64] + "…"
	}
	return name
}

// countedReader counts the bytes of a layer read as stored.
type countedReader struct {
	r io.Reader
	b *budget
}

func (c *countedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if lerr := c.b.read(n); lerr != nil {
		return n, lerr
	}
	return n, err
}

// scan returns r (a layer's tar stream) as it is, while a goroutine reads
// the same bytes with archive/tar and accounts for each entry. The reader
// of the result gets the budget's error as soon as a limit is crossed:
// before mutate.Extract, which keeps the name of every entry it sees,
// holds more than a read's worth of them. closeSrc closes r's sources.
func (b *budget) scan(r io.Reader, closeSrc func() error) io.ReadCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr := tar.NewReader(pr)
		for {
			h, err := tr.Next()
			if err != nil {
				// The end, or a stream archive/tar cannot read: then
				// mutate.Extract, reading the same bytes, reports it.
				break
			}
			if err := b.entry(h); err != nil {
				pr.CloseWithError(err)
				return
			}
		}
		io.Copy(io.Discard, pr) // trailing blocks, unread so far
	}()
	return &scanned{Reader: io.TeeReader(r, pw), pw: pw, done: done, closeSrc: closeSrc}
}

// scanned is a layer stream whose copy a scan goroutine reads.
type scanned struct {
	io.Reader
	pw       *io.PipeWriter
	done     chan struct{}
	closeSrc func() error
}

func (s *scanned) Close() error {
	s.pw.Close()
	<-s.done
	return s.closeSrc()
}
