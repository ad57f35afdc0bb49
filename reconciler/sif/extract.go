package sif

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// errNotDir: a parent of an entry is not a folder (a file or symlink came
// first), so the entry has nowhere to go.
var errNotDir = errors.New("a parent is not a folder")

// extractor writes the flattened file system of an image into a folder
// through an os.Root, which no name or symlink can lead out of. Entries
// come from mutate.Extract, which applies whiteouts (plain and opaque) and
// gives each path once, upper layers first: so the first entry written at
// a path wins, and a later one there is skipped with a note.
type extractor struct {
	root *os.Root

	// What to keep.

	// owners gives entries the image's uid and gid (running as root).
	owners bool
	// readable adds owner read to files and owner rwx to folders, so that
	// a mksquashfs not running as root can read everything.
	readable bool
	// defTime is the mtime of what the image does not date: folders made
	// for an entry's path, and what layout adds.
	defTime time.Time

	// State.

	// dirs are the folders to finish once everything is written (modes
	// last, so read-only folders can be filled first), by clean name.
	dirs map[string]*dirMeta
	// links are hard links, made last, when their targets exist.
	links []*tar.Header
	// budget bounds what is written, and what the layers may hold.
	budget *budget
	notes  *notes
	buf    []byte
	// open is the folder last written into, kept open: entries come
	// folder by folder, and creating a file relative to its folder's
	// descriptor is one system call where a walk from the root is one
	// per path component.
	open struct {
		name string
		f    *os.File
	}
}

// dirMeta is what a folder gets when it is finished.
type dirMeta struct {
	mode     fs.FileMode
	uid, gid int
	mtime    time.Time
}

func newExtractor(root *os.Root, owners, readable bool, defTime time.Time, b *budget, n *notes) *extractor {
	return &extractor{
		root:     root,
		budget:   b,
		owners:   owners,
		readable: readable,
		defTime:  defTime,
		dirs:     map[string]*dirMeta{".": {mode: 0o755, mtime: defTime}},
		notes:    n,
		buf:      make([]byte, 1<<20),
	}
}

// extract writes img's flattened file system. It returns the stream's
// errors (a download cut off, ctx ended, an unsafe layer) as they are,
// but for a limit crossed (ErrTooLarge), which it returns whatever the
// streams made of it.
func (x *extractor) extract(ctx context.Context, img v1.Image) error {
	err := x.extractAll(ctx, img)
	if lerr := x.budget.crossed(); lerr != nil {
		return lerr
	}
	return err
}

func (x *extractor) extractAll(ctx context.Context, img v1.Image) error {
	rc := mutate.Extract(readLayers(img, x.budget))
	defer rc.Close()
	defer x.closeDir()
	tr := tar.NewReader(rc)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			// mutate.Extract closes its tar (writing the end-of-archive
			// blocks) before it closes the pipe with its error: a layer
			// that failed to download, or was refused, between two
			// entries reads as a clean end. The error comes after it.
			if _, err := io.Copy(io.Discard, rc); err != nil {
				return fmt.Errorf("read layers: %w", err)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("read layers: %w", err)
		}
		if err := x.entry(h, tr); err != nil {
			return err
		}
	}
	x.closeDir()
	return x.hardLinks()
}

// cleanName returns an entry's name relative to the root, and false when
// it would leave the root.
func cleanName(name string) (string, bool) {
	clean := path.Clean("/" + strings.TrimPrefix(name, "./"))
	if clean == "/" {
		return ".", true
	}
	clean = clean[1:]
	// path.Clean of a rooted path cannot keep "..", but a name with ".."
	// in it was never a sound entry: refuse it rather than guess.
	if !fs.ValidPath(clean) || slices.Contains(strings.Split(name, "/"), "..") {
		return "", false
	}
	return clean, true
}

// entry writes one entry whose content, for a regular file, is r.
func (x *extractor) entry(h *tar.Header, r io.Reader) error {
	name, ok := cleanName(h.Name)
	if !ok {
		x.notes.add("skipped %q: outside the root", h.Name)
		return nil
	}
	switch h.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		x.notes.add("skipped device node /%s: Singularity provides /dev", name)
		return nil
	case tar.TypeFifo:
		x.notes.add("skipped named pipe /%s", name)
		return nil
	case tar.TypeXGlobalHeader:
		return nil
	default:
		x.notes.add("skipped /%s: tar entry type %q", name, h.Typeflag)
		return nil
	}
	if name == "." {
		if h.Typeflag == tar.TypeDir {
			x.dirs["."] = x.meta(h)
		}
		return nil
	}
	if err := checkPaths(h); err != nil {
		return x.budget.fail(err)
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := x.parents(name); errors.Is(err, errNotDir) {
		x.notes.add("skipped /%s: %v", name, err)
		return nil
	} else if err != nil {
		return err
	}
	switch h.Typeflag {
	case tar.TypeDir:
		return x.dir(name, h)
	case tar.TypeReg:
		return x.file(name, h, r)
	case tar.TypeSymlink:
		return x.symlink(name, h)
	default: // tar.TypeLink
		if err := x.budget.create(name); err != nil {
			return err
		}
		x.links = append(x.links, h)
		return nil
	}
}

// meta is what a folder entry asks for.
func (x *extractor) meta(h *tar.Header) *dirMeta {
	return &dirMeta{mode: x.mode(h, true), uid: h.Uid, gid: h.Gid, mtime: h.ModTime}
}

// mode is the permission and special bits of an entry, made readable for
// a non-root mksquashfs when it must be.
func (x *extractor) mode(h *tar.Header, dir bool) fs.FileMode {
	m := h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if x.readable {
		if dir {
			m |= 0o700
		} else {
			m |= 0o400
		}
	}
	return m
}

// parents makes sure every parent of name is a folder, making the missing
// ones (layers need not list them). A parent that is anything else is
// errNotDir: no entry is ever written through a symlink.
func (x *extractor) parents(name string) error {
	dir := path.Dir(name)
	if _, ok := x.dirs[dir]; ok {
		return nil
	}
	if err := x.parents(dir); err != nil {
		return err
	}
	fi, err := x.root.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := x.budget.create(dir); err != nil {
			return err
		}
		if err := x.root.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("make /%s: %w", dir, err)
		}
	case err != nil:
		return fmt.Errorf("look at /%s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("%w: /%s", errNotDir, dir)
	}
	x.dirs[dir] = &dirMeta{mode: 0o755, mtime: x.defTime}
	return nil
}

func (x *extractor) dir(name string, h *tar.Header) error {
	fi, err := x.root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := x.budget.create(name); err != nil {
			return err
		}
		if err := x.root.Mkdir(name, 0o700); err != nil {
			return fmt.Errorf("make /%s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("look at /%s: %w", name, err)
	case !fi.IsDir():
		x.notes.add("skipped folder /%s: an upper layer made it a %s", name, fi.Mode().Type())
		return nil
	}
	x.dirs[name] = x.meta(h)
	return nil
}

// dirFD returns a descriptor of the folder dir, which parents made sure
// is a folder (no symlink on the way, and nothing else writes here), so
// that an entry is created with one *at system call relative to it.
func (x *extractor) dirFD(dir string) (int, error) {
	if x.open.f != nil && x.open.name == dir {
		return int(x.open.f.Fd()), nil
	}
	x.closeDir()
	f, err := x.root.Open(dir)
	if err != nil {
		return -1, err
	}
	x.open.name, x.open.f = dir, f
	return int(f.Fd()), nil
}

// closeDir closes the folder dirFD kept open.
func (x *extractor) closeDir() {
	if x.open.f != nil {
		x.open.f.Close()
		x.open.f = nil
	}
}

// hardLinks makes the hard links, now that their targets are written.
func (x *extractor) hardLinks() error {
	for _, h := range x.links {
		name, _ := cleanName(h.Name)
		target, ok := cleanName(h.Linkname)
		if !ok || target == "." {
			x.notes.add("skipped hard link /%s: target %q outside the root", name, h.Linkname)
			continue
		}
		if fi, err := x.root.Lstat(target); err != nil || fi.IsDir() {
			x.notes.add("skipped hard link /%s: no file /%s", name, target)
			continue
		}
		if err := x.root.Link(target, name); errors.Is(err, fs.ErrExist) {
			x.notes.add("skipped hard link /%s: already there", name)
		} else if err != nil {
			return fmt.Errorf("hard link /%s: %w", name, err)
		}
	}
	return nil
}

// finish gives every folder its owner, mode and mtime, deepest first, so
// that nothing written afterwards changes a parent's mtime.
func (x *extractor) finish() error {
	names := make([]string, 0, len(x.dirs))
	for n := range x.dirs {
		names = append(names, n)
	}
	depth := func(n string) int {
		if n == "." {
			return 0
		}
		return strings.Count(n, "/") + 1
	}
	slices.SortFunc(names, func(a, b string) int { return depth(b) - depth(a) })
	for _, n := range names {
		m := x.dirs[n]
		if x.owners {
			if err := x.root.Lchown(n, m.uid, m.gid); err != nil {
				return fmt.Errorf("finish /%s: %w", n, err)
			}
		}
		if err := x.root.Chmod(n, m.mode|fs.ModeDir); err != nil {
			return fmt.Errorf("finish /%s: %w", n, err)
		}
		if err := x.root.Chtimes(n, m.mtime, m.mtime); err != nil {
			return fmt.Errorf("finish /%s: %w", n, err)
		}
	}
	return nil
}

// writerOnly hides every method of a writer but Write.
type writerOnly struct{ io.Writer }

// notes collects what a build skipped, for Result.Notes: the first
// maxNotes, then a count of the rest.
type notes struct {
	list    []string
	dropped int
}

const maxNotes = 20

func (n *notes) add(format string, args ...any) {
	if len(n.list) >= maxNotes {
		n.dropped++
		return
	}
	n.list = append(n.list, fmt.Sprintf(format, args...))
}

// all returns the notes, the count of dropped ones last.
func (n *notes) all() []string {
	out := slices.Clone(n.list)
	if n.dropped > 0 {
		out = append(out, fmt.Sprintf("and %d more", n.dropped))
	}
	return out
}
