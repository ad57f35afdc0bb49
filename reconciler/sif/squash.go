package sif

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Squasher makes a squashfs file system image of a tar stream; Tar2sqfs
// is the real one.
type Squasher interface {
	// Squash reads the tar stream r to its end and writes its squashfs to
	// out (which must not exist), or fails with ErrToolMissing,
	// ErrSquashFailed or ctx's error. The caller ends the stream, and
	// closes r once Squash returns.
	Squash(ctx context.Context, r io.Reader, out string) error
}

var _ Squasher = (*Tar2sqfs)(nil)

// Tar2sqfs runs squashfs-tools-ng's tar2sqfs, which makes a squashfs of a
// tar stream as it reads it: no file of the image touches the disk.
type Tar2sqfs struct {
	// Path is the binary, a path or a name looked up in PATH.
	Path string
	// Compression is the compressor (--compressor): gzip, lz4, zstd or
	// xz, each with tar2sqfs's default level, which is mksquashfs's (gzip
	// 9, zstd 15).
	Compression string
	// Processors is how many compressor jobs run (--num-jobs).
	Processors int
}

// waitDelay bounds how long a killed tar2sqfs may hold its output open.
const waitDelay = 5 * time.Second

// install says how to get tar2sqfs.
const install = "apt-get install squashfs-tools-ng"

// Args returns tar2sqfs's arguments for out. Besides the options:
// --no-skip (a tar record tar2sqfs cannot read fails the build instead of
// going missing), --no-xattr (the stream has none, and never will by
// accident), --defaults with mtime 0 (the squashfs's own time, so that the
// same stream always gives the same bytes; every folder of the stream has
// its own entry), --quiet.
func (t *Tar2sqfs) Args(out string) []string {
	return []string{
		"--compressor", t.Compression,
		"--num-jobs", strconv.Itoa(max(t.Processors, 1)),
		"--no-skip",
		"--no-xattr",
		"--defaults", "uid=0,gid=0,mode=0755,mtime=0",
		"--quiet",
		out,
	}
}

// Check fails with ErrToolMissing when the binary cannot be found, so that
// a build fails before it downloads anything.
func (t *Tar2sqfs) Check() error {
	if _, err := exec.LookPath(t.Path); err != nil {
		return &classified{kind: ErrToolMissing, err: fmt.Errorf("%w (%s)", err, install)}
	}
	return nil
}

// Squash runs tar2sqfs with an argument list and r as its standard input
// (directly when r is an *os.File, such as a pipe's end), in its own
// process group, killed with the group when ctx ends.
func (t *Tar2sqfs) Squash(ctx context.Context, r io.Reader, out string) error {
	cmd := exec.CommandContext(ctx, t.Path, t.Args(out)...)
	inOwnGroup(cmd)
	cmd.WaitDelay = waitDelay
	cmd.Stdin = r
	output := &lastLines{max: 20}
	cmd.Stdout = output
	cmd.Stderr = output
	err := cmd.Run()
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("tar2sqfs: %w", context.Cause(ctx))
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return &classified{kind: ErrToolMissing, err: fmt.Errorf("%w (%s)", err, install)}
	default:
		return &classified{kind: ErrSquashFailed, err: fmt.Errorf("tar2sqfs: %w: %s", err, output)}
	}
}

// lastLines keeps the last max lines written to it.
type lastLines struct {
	mu    sync.Mutex
	max   int
	lines []string
	part  string
}

func (l *lastLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	text := l.part + string(p)
	parts := strings.Split(text, "\n")
	l.part = parts[len(parts)-1]
	for _, line := range parts[:len(parts)-1] {
		if line = strings.TrimSpace(line); line != "" {
			l.lines = append(l.lines, line)
		}
	}
	if len(l.lines) > l.max {
		l.lines = l.lines[len(l.lines)-l.max:]
	}
	return len(p), nil
}

// String returns the kept lines on one line.
func (l *lastLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	if p := strings.TrimSpace(l.part); p != "" {
		lines = append(lines, p)
	}
	return strings.Join(lines, " | ")
}
