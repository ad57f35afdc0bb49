package sif

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Squasher makes a squashfs file system image of a folder; Mksquashfs is
// the real one.
type Squasher interface {
	// Squash writes the squashfs of dir to out (which must not exist), or
	// fails with ErrToolMissing, ErrSquashFailed or ctx's error.
	Squash(ctx context.Context, dir, out string) error
}

var _ Squasher = (*Mksquashfs)(nil)

// Mksquashfs runs squashfs-tools' mksquashfs.
type Mksquashfs struct {
	// Path is the binary, a path or a name looked up in PATH.
	Path string
	// Compression is passed to -comp.
	Compression string
	// Processors is passed to -processors.
	Processors int
	// AllRoot passes -all-root: every file owned by root. Without it files
	// keep the owners they have in dir.
	AllRoot bool
}

// waitDelay bounds how long a killed mksquashfs may hold its output open.
const waitDelay = 5 * time.Second

// Args returns mksquashfs's arguments for dir and out. Besides the options:
// -noappend (out is new), -no-xattrs (the build folder's own labels, e.g.
// SELinux ones, must not end up in the image; the image's xattrs are not
// extracted), -mkfs-time 0 (with squashfs-tools' default -reproducible,
// the same folder always gives the same bytes), -no-progress and -quiet
// (nobody reads the bar).
func (m *Mksquashfs) Args(dir, out string) []string {
	args := []string{dir, out,
		"-noappend",
		"-comp", m.Compression,
		"-processors", strconv.Itoa(m.Processors),
		"-no-xattrs",
		"-mkfs-time", "0",
		"-no-progress", "-quiet",
	}
	if m.AllRoot {
		args = append(args, "-all-root")
	}
	return args
}

// Check fails with ErrToolMissing when the binary cannot be found, so that
// a build fails before it downloads anything.
func (m *Mksquashfs) Check() error {
	if _, err := exec.LookPath(m.Path); err != nil {
		return &classified{kind: ErrToolMissing, err: fmt.Errorf("%w (apt-get install squashfs-tools)", err)}
	}
	return nil
}

// Squash runs mksquashfs with an argument list, in its own process group,
// killed with the group when ctx ends.
func (m *Mksquashfs) Squash(ctx context.Context, dir, out string) error {
	cmd := exec.CommandContext(ctx, m.Path, m.Args(dir, out)...)
	inOwnGroup(cmd)
	cmd.WaitDelay = waitDelay
	output := &lastLines{max: 20}
	cmd.Stdout = output
	cmd.Stderr = output
	err := cmd.Run()
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("mksquashfs: %w", context.Cause(ctx))
	case errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return &classified{kind: ErrToolMissing, err: fmt.Errorf("%w (apt-get install squashfs-tools)", err)}
	default:
		return &classified{kind: ErrSquashFailed, err: fmt.Errorf("%w: %s", err, output)}
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
