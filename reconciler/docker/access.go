package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/whalemountain/wm/reconciler/core"
)

// What a student may do with their own running containers: read their
// logs, restart them, copy files in and out and run commands in them. Each
// method takes the owner the caller speaks for and refuses, as
// ErrNotFound, any container that is not one of the engine instance's
// managed containers labelled with that owner: another student's, an
// unlabelled one, another instance's. Nothing here changes what a pass
// reconciles (the container's configuration, its state as declared).

// LogOptions select the part of a container's logs Logs returns.
type LogOptions struct {
	// Tail is how many lines from the end; 0 or less is every line.
	Tail int
	// Since, when not zero, leaves out the lines written before it.
	Since time.Time
	// Follow keeps the stream open for new lines until the container
	// stops or the context is done.
	Follow bool
}

// ExecOptions is a command to run in a container with Exec.
type ExecOptions struct {
	// Cmd is the command and its arguments, run as the container's user.
	Cmd []string
	// TTY gives the command a terminal; its output then comes on Stdout
	// only, and Resize changes its size.
	TTY bool
	// Stdin attaches the command's standard input to Exec.Stdin.
	Stdin bool
	// Rows and Cols are the terminal's first size (TTY only; 0 leaves the
	// engine's default).
	Rows, Cols uint
}

// Exec is a command running in a container. Its output must be read
// (both streams, at once, when not a TTY) for it to make progress.
type Exec struct {
	// Stdout is the command's standard output (with a TTY, the terminal);
	// it ends when the command ends or the container stops.
	Stdout io.Reader
	// Stderr is the command's standard error; nil with a TTY.
	Stderr io.Reader
	// Stdin is the command's standard input when ExecOptions.Stdin;
	// closing it sends end-of-file. A Stdin that was not asked for
	// discards what is written.
	Stdin io.WriteCloser

	resize func(ctx context.Context, rows, cols uint) error
	wait   func(ctx context.Context) (int, error)
	close  func() error
}

// Resize changes the terminal's size (TTY only).
func (x *Exec) Resize(ctx context.Context, rows, cols uint) error { return x.resize(ctx, rows, cols) }

// Wait waits for the command to end, after its output has been read to
// the end, and returns its exit code.
func (x *Exec) Wait(ctx context.Context) (int, error) { return x.wait(ctx) }

// Close ends the session: the streams are closed (the command itself may
// go on until its input or output fails it).
func (x *Exec) Close() error { return x.close() }

// ErrNotRunning (of ErrConflict's kind) is Exec's refusal of a container
// that is not running.
var ErrNotRunning = fmt.Errorf("container is not running: %w", ErrConflict)

// owned finds the managed container called name and checks it is owner's.
func (e *Engine) owned(ctx context.Context, owner, name string) (core.Container, error) {
	c, err := e.lookup(ctx, name)
	if err != nil {
		return core.Container{}, err
	}
	if owner == "" || c.Owner != owner {
		return core.Container{}, fmt.Errorf("container %s is not %s's: %w", name, owner, ErrNotFound)
	}
	return c, nil
}

// Logs streams the logs (standard output and error, interleaved as
// written) of owner's container called name. The caller closes the stream.
func (e *Engine) Logs(ctx context.Context, owner, name string, o LogOptions) (io.ReadCloser, error) {
	fail := func(err error) (io.ReadCloser, error) {
		return nil, fmt.Errorf("logs of container %s on %s: %w", name, e.name, err)
	}
	c, err := e.owned(ctx, owner, name)
	if err != nil {
		return fail(err)
	}
	opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: o.Follow, Tail: "all"}
	if o.Tail > 0 {
		opts.Tail = strconv.Itoa(o.Tail)
	}
	if !o.Since.IsZero() {
		opts.Since = fmt.Sprintf("%d.%09d", o.Since.Unix(), o.Since.Nanosecond())
	}
	rc, err := e.cli.ContainerLogs(ctx, c.ID, opts)
	if err != nil {
		return fail(classify(err, ErrNotFound, nil))
	}
	// Containers have no TTY: the daemon multiplexes the two streams.
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, rc)
		pw.CloseWithError(err)
	}()
	return &joinedCloser{Reader: pr, closers: []io.Closer{rc, pr}}, nil
}

// joinedCloser is a reader whose Close closes several things.
type joinedCloser struct {
	io.Reader
	closers []io.Closer
}

func (j *joinedCloser) Close() error {
	var errs []error
	for _, c := range j.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Restart stops (killing it after timeout, rounded up to whole seconds)
// and starts owner's container called name; a stopped one is started.
func (e *Engine) Restart(ctx context.Context, owner, name string, timeout time.Duration) error {
	c, err := e.owned(ctx, owner, name)
	if err == nil {
		seconds := int(max(timeout, 0).Seconds() + 0.999)
		err = classify(e.cli.ContainerRestart(ctx, c.ID, container.StopOptions{Timeout: &seconds}), ErrNotFound, startMessage)
	}
	if err != nil {
		return fmt.Errorf("restart container %s on %s: %w", name, e.name, err)
	}
	return nil
}

// CopyFrom streams the file or folder at path in owner's container called
// name as a tar archive (as `docker cp` does); ErrNotFound when there is
// nothing at path. The caller closes the stream.
func (e *Engine) CopyFrom(ctx context.Context, owner, name, path string) (io.ReadCloser, error) {
	c, err := e.owned(ctx, owner, name)
	if err == nil {
		var rc io.ReadCloser
		rc, _, err = e.cli.CopyFromContainer(ctx, c.ID, path)
		if err == nil {
			return rc, nil
		}
		err = classify(err, ErrNotFound, nil)
	}
	return nil, fmt.Errorf("copy %s from container %s on %s: %w", path, name, e.name, err)
}

// CopyTo unpacks the tar archive content into the folder dir of owner's
// container called name; the files belong to the container's user. The
// caller vets the archive (see package access).
func (e *Engine) CopyTo(ctx context.Context, owner, name, dir string, content io.Reader) error {
	c, err := e.owned(ctx, owner, name)
	if err == nil {
		err = classify(e.cli.CopyToContainer(ctx, c.ID, dir, content, container.CopyToContainerOptions{CopyUIDGID: true}), ErrNotFound, nil)
	}
	if err != nil {
		return fmt.Errorf("copy into %s of container %s on %s: %w", dir, name, e.name, err)
	}
	return nil
}

// Exec runs a command in owner's running container called name, as the
// container's user, never privileged: ErrNotRunning when it is not
// running. The command ends when the container stops.
func (e *Engine) Exec(ctx context.Context, owner, name string, o ExecOptions) (*Exec, error) {
	fail := func(err error) (*Exec, error) {
		return nil, fmt.Errorf("exec in container %s on %s: %w", name, e.name, err)
	}
	if len(o.Cmd) == 0 {
		return fail(errors.New("no command"))
	}
	c, err := e.owned(ctx, owner, name)
	if err != nil {
		return fail(err)
	}
	if !c.Running {
		return fail(ErrNotRunning)
	}
	var size *[2]uint
	if o.TTY && o.Rows > 0 && o.Cols > 0 {
		size = &[2]uint{o.Rows, o.Cols}
	}
	created, err := e.cli.ContainerExecCreate(ctx, c.ID, container.ExecOptions{
		Cmd: o.Cmd, Tty: o.TTY, ConsoleSize: size, AttachStdin: o.Stdin, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return fail(classify(err, ErrNotFound, nil))
	}
	att, err := e.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{Tty: o.TTY, ConsoleSize: size})
	if err != nil {
		return fail(classify(err, ErrNotFound, nil))
	}
	x := &Exec{Stdin: nopWriteCloser{io.Discard}}
	if o.Stdin {
		x.Stdin = &hijackedStdin{att: att}
	}
	if o.TTY {
		x.Stdout = att.Reader
	} else {
		outR, outW := io.Pipe()
		errR, errW := io.Pipe()
		go func() {
			_, err := stdcopy.StdCopy(outW, errW, att.Reader)
			outW.CloseWithError(err)
			errW.CloseWithError(err)
		}()
		x.Stdout, x.Stderr = outR, errR
	}
	id := created.ID
	x.resize = func(ctx context.Context, rows, cols uint) error {
		// The engine waits for the process to start before it resizes.
		if err := e.cli.ContainerExecResize(ctx, id, container.ResizeOptions{Height: rows, Width: cols}); err != nil {
			return fmt.Errorf("resize exec in %s: %w", name, classify(err, ErrNotFound, nil))
		}
		return nil
	}
	if size != nil {
		// Engines before API 1.42 ignore the console size given to the
		// create and the start: set it here, as the docker CLI does. A
		// command that has already ended has no terminal left to size.
		_ = x.resize(ctx, size[0], size[1])
	}
	x.wait = func(ctx context.Context) (int, error) {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			in, err := e.cli.ContainerExecInspect(ctx, id)
			if err != nil {
				return -1, fmt.Errorf("exec in %s: %w", name, classify(err, ErrNotFound, nil))
			}
			if !in.Running {
				return in.ExitCode, nil
			}
			select {
			case <-ctx.Done():
				return -1, ctx.Err()
			case <-tick.C:
			}
		}
	}
	var once sync.Once
	x.close = func() error {
		once.Do(att.Close)
		return nil
	}
	return x, nil
}

// hijackedStdin writes to an exec's connection; Close half-closes it.
type hijackedStdin struct{ att types.HijackedResponse }

func (h *hijackedStdin) Write(p []byte) (int, error) { return h.att.Conn.Write(p) }

func (h *hijackedStdin) Close() error { return h.att.CloseWrite() }

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// The Fake's side of the same methods. What a Fake's containers log, hold
// and run is set by the tests: AppendLog, the files CopyTo put there, and
// SetExecHandler.

// ExecHandler plays a command in a Fake's container: it reads stdin
// (empty unless asked for), writes to stdout and stderr (the same writer
// with a TTY) and returns the exit code. It should return when ctx is done.
type ExecHandler func(ctx context.Context, cmd []string, stdin io.Reader, stdout, stderr io.Writer) int

// fakeAccess is what a Fake keeps for the access methods, beside the
// Fake's own state.
type fakeAccess struct {
	logs  map[string][]string          // container name → lines
	files map[string]map[string][]byte // container name → path → content ("" for a folder)
	exec  ExecHandler
	// stopped is closed and replaced whenever a container of the Fake
	// stops being there or running, to end its streams.
	stopped chan struct{}
}

var fakeAccessOf sync.Map // *Fake → *fakeAccess

// access returns f's access state. The caller holds f.mu.
func (f *Fake) access() *fakeAccess {
	v, _ := fakeAccessOf.LoadOrStore(f, &fakeAccess{
		logs: map[string][]string{}, files: map[string]map[string][]byte{}, stopped: make(chan struct{}),
	})
	return v.(*fakeAccess)
}

// AppendLog adds lines to what the container called name has logged.
func (f *Fake) AppendLog(name string, lines ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.access()
	a.logs[name] = append(a.logs[name], lines...)
}

// SetExecHandler makes h play every command Exec runs; by default a
// command copies its stdin to its stdout and exits 0.
func (f *Fake) SetExecHandler(h ExecHandler) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.access().exec = h
}

// fakeOwned begins a call about owner's managed container name. The
// caller holds f.mu.
func (f *Fake) fakeOwned(ctx context.Context, method, owner, name string) (*fakeContainer, error) {
	fc, err := f.lookup(ctx, method, name)
	if err != nil {
		return nil, err
	}
	if owner == "" || fc.c.Labels[LabelOwner] != owner {
		return nil, fmt.Errorf("container %s is not %s's: %w", name, owner, ErrNotFound)
	}
	return fc, nil
}

// Logs returns the lines AppendLog added (Since is not modelled); with
// Follow the stream stays open until ctx is done or the container stops.
func (f *Fake) Logs(ctx context.Context, owner, name string, o LogOptions) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.fakeOwned(ctx, "Logs", owner, name); err != nil {
		return nil, fmt.Errorf("logs of container %s on %s: %w", name, f.name, err)
	}
	a := f.access()
	lines := a.logs[name]
	if o.Tail > 0 && len(lines) > o.Tail {
		lines = lines[len(lines)-o.Tail:]
	}
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString(l + "\n")
	}
	if !o.Follow {
		return io.NopCloser(&buf), nil
	}
	pr, pw := io.Pipe()
	stopped := a.stopped
	go func() {
		if _, err := pw.Write(buf.Bytes()); err != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		pw.Close()
	}()
	return pr, nil
}

// Restart stops and starts the container: its StartedAt moves and its
// restart count does not change (as for the engine's restart).
func (f *Fake) Restart(ctx context.Context, owner, name string, timeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc, err := f.fakeOwned(ctx, "Restart", owner, name)
	if err == nil {
		f.endStreams()
		fc.c.Running, fc.c.State = false, "exited"
		err = f.start(fc)
	}
	if err != nil {
		return fmt.Errorf("restart container %s on %s: %w", name, f.name, err)
	}
	return nil
}

// endStreams ends every follow and exec stream. The caller holds f.mu.
func (f *Fake) endStreams() {
	a := f.access()
	close(a.stopped)
	a.stopped = make(chan struct{})
}

// StopStreams ends the streams of the Fake's containers as a container
// stopping would (a Fake's Stop does not know of them).
func (f *Fake) StopStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.endStreams()
}

// CopyFrom returns a tar archive of the file at p, or of the folder at p
// and what CopyTo put below it, named from p's last element.
func (f *Fake) CopyFrom(ctx context.Context, owner, name, p string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(err error) (io.ReadCloser, error) {
		return nil, fmt.Errorf("copy %s from container %s on %s: %w", p, name, f.name, err)
	}
	if _, err := f.fakeOwned(ctx, "CopyFrom", owner, name); err != nil {
		return fail(err)
	}
	p = path.Clean("/" + p)
	files := f.access().files[name]
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	base := path.Dir(p)
	found := false
	for _, fp := range slices.Sorted(maps.Keys(files)) {
		if fp != p && !strings.HasPrefix(fp, strings.TrimSuffix(p, "/")+"/") {
			continue
		}
		found = true
		rel := strings.TrimPrefix(strings.TrimPrefix(fp, base), "/")
		content := files[fp]
		if content == nil {
			_ = tw.WriteHeader(&tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: 0o755})
			continue
		}
		_ = tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))})
		_, _ = tw.Write(content)
	}
	if !found {
		return fail(fmt.Errorf("no such file or folder %s: %w", p, ErrNotFound))
	}
	_ = tw.Close()
	return io.NopCloser(&buf), nil
}

// CopyTo unpacks the regular files and folders of the archive under dir.
func (f *Fake) CopyTo(ctx context.Context, owner, name, dir string, content io.Reader) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(err error) error {
		return fmt.Errorf("copy into %s of container %s on %s: %w", dir, name, f.name, err)
	}
	if _, err := f.fakeOwned(ctx, "CopyTo", owner, name); err != nil {
		return fail(err)
	}
	a := f.access()
	if a.files[name] == nil {
		a.files[name] = map[string][]byte{}
	}
	tr := tar.NewReader(content)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fail(err)
		}
		p := path.Join("/", dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			a.files[name][p] = nil
		case tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return fail(err)
			}
			if b == nil {
				b = []byte{}
			}
			a.files[name][p] = b
		}
	}
}

// Exec plays the command with the handler SetExecHandler set: ErrNotRunning
// when the container is not running. Its streams end when the handler
// returns, or when the container restarts or StopStreams is called.
func (f *Fake) Exec(ctx context.Context, owner, name string, o ExecOptions) (*Exec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(err error) (*Exec, error) {
		return nil, fmt.Errorf("exec in container %s on %s: %w", name, f.name, err)
	}
	if len(o.Cmd) == 0 {
		return fail(errors.New("no command"))
	}
	fc, err := f.fakeOwned(ctx, "Exec", owner, name)
	if err != nil {
		return fail(err)
	}
	if !fc.c.Running {
		return fail(ErrNotRunning)
	}
	a := f.access()
	h := a.exec
	if h == nil {
		h = func(_ context.Context, _ []string, stdin io.Reader, stdout, _ io.Writer) int {
			_, _ = io.Copy(stdout, stdin)
			return 0
		}
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var errR *io.PipeReader
	var errW *io.PipeWriter
	stderr := io.Writer(outW)
	if !o.TTY {
		errR, errW = io.Pipe()
		stderr = errW
	}
	var stdin io.Reader = inR
	if !o.Stdin {
		stdin = strings.NewReader("")
	}
	runCtx, cancel := context.WithCancel(context.Background())
	stopped := a.stopped
	go func() {
		select {
		case <-stopped:
			cancel()
			inR.CloseWithError(io.ErrClosedPipe)
		case <-runCtx.Done():
		}
	}()
	done := make(chan struct{})
	code := -1
	go func() {
		defer close(done)
		c := h(runCtx, slices.Clone(o.Cmd), stdin, outW, stderr)
		select {
		case <-stopped:
			c = 137
		default:
		}
		outW.Close()
		if errW != nil {
			errW.Close()
		}
		cancel()
		code = c
	}()
	x := &Exec{Stdout: outR, Stdin: nopWriteCloser{io.Discard}}
	if errR != nil {
		x.Stderr = errR
	}
	if o.Stdin {
		x.Stdin = inW
	}
	x.resize = func(context.Context, uint, uint) error { return nil }
	x.wait = func(ctx context.Context) (int, error) {
		select {
		case <-done:
			return code, nil
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	}
	x.close = func() error {
		cancel()
		inW.Close()
		outR.Close()
		if errR != nil {
			errR.Close()
		}
		return nil
	}
	return x, nil
}
