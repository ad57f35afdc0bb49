package main

import (
	"fmt"
	"io"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// isTerminal reports whether w is a terminal: an *os.File (or anything
// with a file descriptor) that the terminal ioctl accepts. A pipe, a file,
// /dev/null and an in-memory buffer are not.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// stageProgress shows a SIF build's stages on w. On a terminal (tty) it
// is a progress bar redrawn in place; anywhere else (a pipe, a file, a
// CI log) a plain line when a stage starts, so that no carriage return or
// escape sequence ends up there.
type stageProgress struct {
	w     io.Writer
	tty   bool
	bar   *progressbar.ProgressBar
	stage string
}

// newStageProgress shows progress on w, as a bar only when w is a
// terminal.
func newStageProgress(w io.Writer) *stageProgress {
	return &stageProgress{w: w, tty: isTerminal(w)}
}

// stageTitles say in words what each stage of reconciler/sif does.
var stageTitles = map[string]string{
	"resolve": "resolve: asking which image the reference names",
	"queue":   "queue: waiting for a build slot",
	"pull":    "pull: downloading and unpacking the layers",
	"squash":  "squash: making the squashfs (tar2sqfs)",
	"write":   "write: writing and hashing the SIF",
}

// report is the builder's progress function: stage, and done of total
// bytes (total -1 when unknown).
func (p *stageProgress) report(stage string, done, total int64) {
	if !p.tty {
		if stage != p.stage {
			p.stage = stage
			title, ok := stageTitles[stage]
			if !ok {
				title = stage
			}
			fmt.Fprintln(p.w, title)
		}
		return
	}
	if p.bar == nil || p.bar.GetMax64() != total {
		if p.bar != nil {
			_ = p.bar.Finish()
		}
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(fmt.Sprintf("%-10s", stage)), progressbar.OptionShowBytes(total > 1),
			progressbar.OptionClearOnFinish())
	}
	p.stage = stage
	p.bar.Describe(fmt.Sprintf("%-10s", stage))
	_ = p.bar.Set64(done)
}

// finish clears the bar, if there is one.
func (p *stageProgress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
