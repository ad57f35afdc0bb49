//go:build unix

package sif

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

func (x *extractor) file(name string, h *tar.Header, r io.Reader) error {
	// Counted before it is there: a file shadowed by one already written
	// (skipped below) is counted too, which only errs on the safe side.
	if err := x.budget.write(name, h.Size); err != nil {
		return err
	}
	dirfd, err := x.dirFD(path.Dir(name))
	if err != nil {
		return fmt.Errorf("create /%s: %w", name, err)
	}
	// O_EXCL|O_NOFOLLOW: never write through something already there.
	fd, err := unix.Openat(dirfd, path.Base(name), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EEXIST) {
		x.notes.add("skipped file /%s: already there", name)
		return nil
	}
	if err != nil {
		return fmt.Errorf("create /%s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	// writerOnly hides ReadFrom, so that CopyBuffer uses our buffer.
	_, err = io.CopyBuffer(writerOnly{f}, r, x.buf)
	if err != nil {
		f.Close()
		return fmt.Errorf("read layers: /%s: %w", name, err)
	}
	// Chown before chmod: chown clears the setuid and setgid bits.
	if x.owners {
		err = f.Chown(h.Uid, h.Gid)
	}
	if err == nil {
		err = f.Chmod(x.mode(h, false))
	}
	if err == nil {
		tv := unix.NsecToTimeval(h.ModTime.UnixNano())
		err = unix.Futimes(int(f.Fd()), []unix.Timeval{tv, tv})
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write /%s: %w", name, err)
	}
	return nil
}

// symlink makes the symlink, its owner and its mtime relative to its
// folder's descriptor, following nothing. The target is stored as it is:
// inside the SIF an absolute target resolves within the container.
func (x *extractor) symlink(name string, h *tar.Header) error {
	dirfd, err := x.dirFD(path.Dir(name))
	if err != nil {
		return fmt.Errorf("symlink /%s: %w", name, err)
	}
	if err := x.budget.create(name); err != nil {
		return err
	}
	base := path.Base(name)
	err = unix.Symlinkat(h.Linkname, dirfd, base)
	if errors.Is(err, unix.EEXIST) {
		x.notes.add("skipped symlink /%s: already there", name)
		return nil
	}
	if err == nil && x.owners {
		err = unix.Fchownat(dirfd, base, h.Uid, h.Gid, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err == nil {
		ts := unix.NsecToTimespec(h.ModTime.UnixNano())
		err = unix.UtimesNanoAt(dirfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fmt.Errorf("symlink /%s: %w", name, err)
	}
	return nil
}
