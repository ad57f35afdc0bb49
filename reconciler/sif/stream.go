package sif

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// errSink marks a failure to write the stream: the squashfs writer
// stopped reading it (it failed, or was killed), so its own error is the
// one to report.
var errSink = errors.New("squashfs writer stopped reading")

// errNotDir: a parent of an entry is not a folder (a file or symlink came
// first), so the entry has nowhere to go.
var errNotDir = errors.New("a parent is not a folder")

// kind is what the stream holds at a path.
type kind uint8

const (
	// kindImplicit: a folder no entry has described yet, made for the
	// entries under it (owned by root, 0755, dated defTime).
	kindImplicit kind = iota + 1
	// kindDir: a folder written with its own entry.
	kindDir
	// kindFile and kindSymlink: written.
	kindFile
	kindSymlink
	// kindLink: a hard link, written at the end, once its target is known.
	kindLink
	// kindHidden: an image's entry at a path the layout writes, left out;
	// what the image has under it is left out too, as under any file.
	kindHidden
)

func (k kind) String() string {
	switch k {
	case kindImplicit, kindDir:
		return "folder"
	case kindSymlink:
		return "symlink"
	case kindLink:
		return "hard link"
	default:
		return "file"
	}
}

// streamer turns the flattened file system of an image into one tar
// stream, the input of tar2sqfs, and adds the layout apptainer expects.
// Entries come from mutate.Extract, which applies whiteouts (plain and
// opaque) and gives each path once, upper layers first: so the first entry
// at a path wins, and a later one there is skipped with a note. Every
// entry is checked and counted against the budget before a byte of it is
// written, and is written with a clean name relative to the root, so that
// tar2sqfs never sees a path that leaves the root, one under a symlink, a
// device node, or more than the limits allow.
//
// The stream never says a folder twice: a folder some entry needs before
// its own entry comes (a lower layer's) is made implicitly by tar2sqfs,
// which takes the attributes of a later entry for it; the folders no entry
// describes are written at the end with the defaults.
type streamer struct {
	tw *tar.Writer

	// owners gives entries the image's uid and gid; without it, every
	// entry is owned by root.
	owners bool
	// defTime is the mtime of what the image does not date: folders made
	// for an entry's path, and what the layout adds.
	defTime time.Time

	budget *budget
	notes  *notes

	// paths is what the stream holds (or the layout will), by clean name.
	paths map[string]kind
	// links are the hard links, written once every file is.
	links []*tar.Header
	// root is the image's entry for its root folder, if it has one.
	root *tar.Header

	buf []byte
}

func newStreamer(w io.Writer, owners bool, defTime time.Time, b *budget, n *notes) *streamer {
	return &streamer{
		tw:      tar.NewWriter(sinkWriter{w}),
		owners:  owners,
		defTime: defTime,
		budget:  b,
		notes:   n,
		paths:   map[string]kind{".": kindImplicit},
		buf:     make([]byte, 1<<20),
	}
}

// sinkWriter marks its writer's errors errSink.
type sinkWriter struct{ w io.Writer }

func (s sinkWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = fmt.Errorf("%w: %w", errSink, err)
	}
	return n, err
}

// stream writes img's flattened file system, then the layout for cfg,
// then the end of the archive. It returns the stream's errors (a download
// cut off, ctx ended, an unsafe layer) as they are, but for a limit
// crossed (ErrTooLarge), which it returns whatever the streams made of it.
// On an error the archive is left unfinished, so that what reads it cannot
// take it for a whole one.
func (s *streamer) stream(ctx context.Context, img v1.Image, cfg *v1.ConfigFile, imageID, builder string) error {
	err := s.image(ctx, img)
	if err == nil {
		err = s.layout(cfg, imageID, builder)
	}
	if err == nil {
		err = s.finish()
	}
	if lerr := s.budget.crossed(); lerr != nil {
		return lerr
	}
	return err
}

func (s *streamer) image(ctx context.Context, img v1.Image) error {
	rc := mutate.Extract(readLayers(img, s.budget))
	defer rc.Close()
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
		if err := s.entry(h, tr); err != nil {
			return err
		}
	}
	return s.hardLinks()
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
func (s *streamer) entry(h *tar.Header, r io.Reader) error {
	name, ok := cleanName(h.Name)
	if !ok {
		s.notes.add("skipped %q: outside the root", h.Name)
		return nil
	}
	switch h.Typeflag {
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		s.notes.add("skipped device node /%s: Singularity provides /dev", name)
		return nil
	case tar.TypeFifo:
		s.notes.add("skipped named pipe /%s", name)
		return nil
	case tar.TypeXGlobalHeader:
		return nil
	default:
		s.notes.add("skipped /%s: tar entry type %q", name, h.Typeflag)
		return nil
	}
	if name == "." {
		if h.Typeflag == tar.TypeDir && s.root == nil {
			s.root = h
		}
		return nil
	}
	if err := checkPaths(h); err != nil {
		return s.budget.fail(err)
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := s.parents(name); errors.Is(err, errNotDir) {
		s.notes.add("skipped /%s: %v", name, err)
		return nil
	} else if err != nil {
		return err
	}
	if reserved, ok := layoutPaths[name]; ok {
		// The layout writes this path; what the image has under it stays
		// only when both are folders.
		k := kindHidden
		if reserved == kindDir && h.Typeflag == tar.TypeDir {
			k = kindDir
		}
		if _, there := s.paths[name]; !there {
			s.paths[name] = k
		}
		return nil
	}
	had, there := s.paths[name]
	if h.Typeflag == tar.TypeDir {
		switch {
		case there && had != kindImplicit:
			s.notes.add("skipped folder /%s: an upper layer made it a %s", name, had)
			return nil
		case !there:
			if err := s.budget.create(name); err != nil {
				return err
			}
		}
		s.paths[name] = kindDir
		return s.write(s.header(h, name, tar.TypeDir), nil)
	}
	if there {
		s.notes.add("skipped %s /%s: already there", kindOf(h.Typeflag), name)
		return nil
	}
	switch h.Typeflag {
	case tar.TypeReg:
		if err := s.budget.write(name, h.Size); err != nil {
			return err
		}
		s.paths[name] = kindFile
		return s.write(s.header(h, name, tar.TypeReg), r)
	case tar.TypeSymlink:
		if err := s.budget.create(name); err != nil {
			return err
		}
		s.paths[name] = kindSymlink
		return s.write(s.header(h, name, tar.TypeSymlink), nil)
	default: // tar.TypeLink
		if err := s.budget.create(name); err != nil {
			return err
		}
		s.paths[name] = kindLink
		s.links = append(s.links, h)
		return nil
	}
}

// kindOf names a tar entry type for notes.
func kindOf(t byte) kind {
	switch t {
	case tar.TypeSymlink:
		return kindSymlink
	case tar.TypeLink:
		return kindLink
	default:
		return kindFile
	}
}

// header is the entry written for h at name: its type, permission and
// special bits, owners (or root's) and mtime, and nothing else (no user
// or group names, no xattrs).
func (s *streamer) header(h *tar.Header, name string, typ byte) *tar.Header {
	out := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     h.Mode & 0o7777,
		ModTime:  h.ModTime.Truncate(time.Second), // squashfs keeps seconds
	}
	if s.owners {
		out.Uid, out.Gid = h.Uid, h.Gid
	}
	switch typ {
	case tar.TypeDir:
		out.Name += "/"
	case tar.TypeReg:
		out.Size = h.Size
	case tar.TypeSymlink, tar.TypeLink:
		out.Linkname = h.Linkname
	}
	return out
}

// write writes one entry and, for a regular file, its h.Size bytes from r.
func (s *streamer) write(h *tar.Header, r io.Reader) error {
	if err := s.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write /%s: %w", h.Name, err)
	}
	if h.Typeflag != tar.TypeReg || h.Size == 0 {
		return nil
	}
	// tar.Writer and tar.Reader check the size: a short file fails.
	if _, err := io.CopyBuffer(s.tw, io.LimitReader(r, h.Size), s.buf); err != nil {
		if errors.Is(err, errSink) {
			return fmt.Errorf("write /%s: %w", h.Name, err)
		}
		return fmt.Errorf("read layers: /%s: %w", h.Name, err)
	}
	return nil
}

// parents makes sure every parent of name is a folder, noting the missing
// ones (layers need not list them) as implicit. A parent that is anything
// else is errNotDir: no entry is ever written under a symlink or a file.
func (s *streamer) parents(name string) error {
	dir := path.Dir(name)
	switch k, ok := s.paths[dir]; {
	case ok && (k == kindDir || k == kindImplicit):
		return nil
	case ok:
		return fmt.Errorf("%w: /%s", errNotDir, dir)
	}
	if err := s.parents(dir); err != nil {
		return err
	}
	if err := s.budget.create(dir); err != nil {
		return err
	}
	s.paths[dir] = kindImplicit
	return nil
}

// hardLinks writes the hard links, now that their targets are known: a
// file, a symlink, or a hard link written before.
func (s *streamer) hardLinks() error {
	resolved := map[string]string{}
	for _, h := range s.links {
		name, _ := cleanName(h.Name)
		target, ok := cleanName(h.Linkname)
		if !ok || target == "." {
			s.notes.add("skipped hard link /%s: target %q outside the root", name, h.Linkname)
			continue
		}
		switch s.paths[target] {
		case kindFile, kindSymlink:
		case kindLink:
			if t, ok := resolved[target]; ok {
				target = t
				break
			}
			fallthrough
		default:
			s.notes.add("skipped hard link /%s: no file /%s", name, target)
			continue
		}
		resolved[name] = target
		out := s.header(h, name, tar.TypeLink)
		out.Linkname = target
		if err := s.write(out, nil); err != nil {
			return err
		}
	}
	return nil
}

// dir writes a folder of the layout (or one made for an entry's path):
// owned by root, dated defTime.
func (s *streamer) dir(name string, mode fs.FileMode) error {
	s.paths[name] = kindDir
	return s.write(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: int64(unixMode(mode)), ModTime: s.defTime}, nil)
}

// file writes a file of the layout: owned by root, dated defTime.
func (s *streamer) file(name string, data []byte, mode fs.FileMode) error {
	s.paths[name] = kindFile
	return s.write(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(unixMode(mode)), ModTime: s.defTime,
		Size: int64(len(data))}, bytes.NewReader(data))
}

// unixMode is a mode's permission and special bits as tar and Unix write
// them.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// finish writes the folders no entry described (in name order, so that
// the stream is the same every time), the root folder, and the end of the
// archive.
func (s *streamer) finish() error {
	var implicit []string
	for name, k := range s.paths {
		if k == kindImplicit && name != "." {
			implicit = append(implicit, name)
		}
	}
	slices.Sort(implicit)
	for _, name := range implicit {
		if err := s.dir(name, 0o755); err != nil {
			return err
		}
	}
	root := &tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755, ModTime: s.defTime}
	if s.root != nil {
		root = s.header(s.root, ".", tar.TypeDir)
	}
	if err := s.write(root, nil); err != nil {
		return err
	}
	if err := s.tw.Close(); err != nil {
		return fmt.Errorf("end the stream: %w", err)
	}
	return nil
}

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
