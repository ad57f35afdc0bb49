package access

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/fault"
)

// Copying in and out of a pod is `tar` run in it through exec, as
// kubectl cp does: Kubernetes has no archive API. The archives are the
// containers' (see copyOut and copyIn): out, the file or folder under its
// base name; in, vetted on the way, unpacked by the pod's user.

var (
	// errNoTar is a pod whose image has no tar to copy with.
	errNoTar = fault.New(fault.Invalid, "the pod's image has no tar, which copying needs")
	// errNoPath is a path to copy from, or a folder to copy into, that
	// is not in the pod.
	errNoPath = fault.New(fault.NotFound, "no such file or folder in the pod")
)

// tarFailure is tar failing in the pod for another reason than a missing
// path or a missing tar (a folder it may not write, a full disk), with
// the first line it said.
type tarFailure struct{ said string }

func (t *tarFailure) Error() string        { return "tar failed in the pod: " + t.said }
func (t *tarFailure) Is(target error) bool { return target == fault.Invalid }

// maxTarMessage bounds what is kept of tar's standard error.
const maxTarMessage = 4 << 10

// tarCreate is the command that writes a tar archive of p on its
// standard output, its entries named from p's base name.
func tarCreate(p string) []string {
	dir, base := path.Split(path.Clean(p))
	if base == "" { // p is "/"
		dir, base = "/", "."
	}
	return []string{"tar", "cf", "-", "-C", dir, base}
}

// PodCopyFrom streams a tar archive of the file or folder p in owner's
// running pod name. A path that is not there is ErrNotFound; the stream
// fails, rather than ends, when tar fails after it started.
func (k *Kube) PodCopyFrom(ctx context.Context, owner, name, p string) (io.ReadCloser, error) {
	fail := func(err error) (io.ReadCloser, error) {
		return nil, fmt.Errorf("copy %s from pod %s of %s: %w", p, name, owner, err)
	}
	sess, err := k.PodExec(ctx, owner, name, docker.ExecOptions{Cmd: tarCreate(p)})
	if err != nil {
		return fail(err)
	}
	stdout, stderr := sess.Output()
	msg := &capped{max: maxTarMessage}
	errDone := make(chan struct{})
	go func() {
		defer close(errDone)
		_, _ = io.Copy(msg, stderr)
	}()
	out := bufio.NewReaderSize(stdout, 32<<10)
	if _, err := out.Peek(1); err != nil {
		// Nothing came: tar failed before it wrote a block.
		<-errDone
		code, werr := sess.Wait(ctx)
		_ = sess.Close()
		return fail(classifyTar(code, werr, msg.String()))
	}
	return &tarStream{out: out, sess: sess, errDone: errDone, msg: msg}, nil
}

// tarStream is tar's output; at its end, tar's exit code decides
// whether it ends (io.EOF) or fails.
type tarStream struct {
	out     *bufio.Reader
	sess    Session
	errDone chan struct{}
	msg     *capped
}

func (t *tarStream) Read(p []byte) (int, error) {
	n, err := t.out.Read(p)
	if !errors.Is(err, io.EOF) {
		return n, err
	}
	<-t.errDone
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code, werr := t.sess.Wait(ctx)
	if code != 0 || werr != nil {
		return n, classifyTar(code, werr, t.msg.String())
	}
	return n, io.EOF
}

func (t *tarStream) Close() error { return t.sess.Close() }

// PodCopyTo unpacks the tar archive content into the folder dir of
// owner's running pod name, as the pod's user. The caller vets the
// archive (see copyIn). A folder that is not there is ErrNotFound.
//
// A tar that fails (a folder that is not there, or that it may not
// write) stops reading its input, and the runtime (containerd 1.6) may
// then never report its end, or report it as a success: it waits to hand
// tar the rest of the input. So what tar says on its standard error is
// what counts: the first word of it closes the input, the session is
// ended when tar's end is still not reported tarGrace later, and then,
// or when tar complained yet is said to have succeeded, the copy failed
// as tar said. It never hangs until it is idle for too long.
func (k *Kube) PodCopyTo(ctx context.Context, owner, name, dir string, content io.Reader) error {
	fail := func(err error) error {
		return fmt.Errorf("copy into %s of pod %s of %s: %w", dir, name, owner, err)
	}
	sess, err := k.PodExec(ctx, owner, name, docker.ExecOptions{Cmd: []string{"tar", "xf", "-", "-C", dir}, Stdin: true})
	if err != nil {
		return fail(err)
	}
	defer sess.Close()
	stdout, stderr := sess.Output()
	in := sess.Input()
	endInput := sync.OnceFunc(func() { _ = in.Close() })
	complaint := make(chan struct{})
	complain := sync.OnceFunc(func() { close(complaint); endInput() })
	msg := &capped{max: maxTarMessage}
	var drained sync.WaitGroup
	drained.Add(2)
	go func() { defer drained.Done(); _, _ = io.Copy(msg, stdout) }()
	go func() {
		defer drained.Done()
		_, _ = io.Copy(msg, readerFunc(func(p []byte) (int, error) {
			n, err := stderr.Read(p)
			if n > 0 {
				complain()
			}
			return n, err
		}))
	}()
	_, cerr := io.Copy(in, content)
	// Cut short: tar complained before it had the whole archive, or
	// ended before it read it.
	cut := cerr != nil && (closed(complaint) || errors.Is(cerr, errSessionEnded))
	if cerr != nil && !cut {
		// The archive was refused or cut short: tar is ended with the
		// session, never handed an end-of-file it would take for the
		// archive's end.
		_ = sess.Close()
		drained.Wait()
		return fail(cerr)
	}
	endInput()
	code, werr, hung := waitTar(ctx, sess, complaint)
	drained.Wait()
	said := strings.TrimSpace(msg.String())
	ok := code == 0 && werr == nil
	switch {
	case hung || ok && (cut || !onlyWarnings(said)):
		if said == "" {
			return fail(&tarFailure{said: "it ended before it had read the whole archive"})
		}
		return fail(classifyTar(1, nil, said))
	case !ok:
		return fail(classifyTar(code, werr, said))
	}
	return nil
}

// tarGrace is how long a copy in waits for the end of a tar that
// complained.
const tarGrace = 5 * time.Second

// waitTar waits for the end of tar in sess; once tar has complained, it
// waits tarGrace more, then ends the session (hung).
func waitTar(ctx context.Context, sess Session, complaint <-chan struct{}) (code int, err error, hung bool) {
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := sess.Wait(ctx)
		done <- result{code, err}
	}()
	var grace <-chan time.Time
	for {
		select {
		case r := <-done:
			return r.code, r.err, false
		case <-complaint:
			complaint, grace = nil, time.After(tarGrace)
		case <-grace:
			_ = sess.Close()
			r := <-done
			return r.code, r.err, true
		}
	}
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// onlyWarnings reports whether every line tar said is a warning it
// gives on success: GNU tar's about an archive's time stamps. Nothing
// said is no warning either.
func onlyWarnings(said string) bool {
	if said == "" {
		return true
	}
	for _, line := range strings.Split(said, "\n") {
		if !strings.Contains(line, "implausibly old time stamp") && !strings.Contains(line, "in the future") {
			return false
		}
	}
	return true
}

// classifyTar says how tar ended in a pod from its exit code, the
// stream's error and what tar said on standard error.
func classifyTar(code int, err error, stderr string) error {
	said := strings.TrimSpace(stderr)
	all := said
	if err != nil {
		all += " " + err.Error()
	}
	switch {
	case strings.Contains(all, `exec: "tar"`) || strings.Contains(all, "tar: executable file not found"):
		return errNoTar
	case err != nil && code < 0:
		return fmt.Errorf("%w: %w", docker.ErrUnreachable, err)
	case strings.Contains(said, "No such file or directory") || strings.Contains(said, "can't change directory"):
		return fmt.Errorf("%w: %s", errNoPath, firstLine(said))
	case said != "":
		return &tarFailure{said: firstLine(said)}
	default:
		return &tarFailure{said: fmt.Sprintf("exit code %d", code)}
	}
}

// firstLine is the first line of s, cut for a message.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return cut(line)
}

// capped keeps the first max bytes written to it and drops the rest.
type capped struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.b)
}

// podError answers an error of the cluster's about the pod called name
// (its full name), for target (name or name:path).
func podError(w http.ResponseWriter, name, target string, err error) outcome {
	var tf *tarFailure
	switch {
	case errors.Is(err, errPodNotRunning):
		return fail(w, http.StatusConflict, target, "pod "+name+" is not running")
	case errors.Is(err, errNoTar):
		return fail(w, http.StatusUnprocessableEntity, target, "copying needs tar in the pod, and the image of pod "+name+" has none")
	case errors.As(err, &tf):
		return fail(w, http.StatusUnprocessableEntity, target, "in pod "+name+": "+tf.Error())
	case errors.Is(err, errNoPath):
		return fail(w, http.StatusNotFound, target, "no such file or folder in pod "+name+": "+target)
	case errors.Is(err, fault.NotFound):
		return fail(w, http.StatusNotFound, target, "you have no pod "+name)
	case errors.Is(err, fault.Unreachable):
		return fail(w, http.StatusBadGateway, target, "the cluster did not answer for pod "+name)
	default:
		return fail(w, http.StatusInternalServerError, target, "pod "+name+": the cluster failed")
	}
}

// podArchive finds the pod and the ?path= a copy names, answering the
// request itself (o not nil) when there is no cluster, the pod is not the
// caller's or the path is not absolute (badPath says so).
func (s *Server) podArchive(w http.ResponseWriter, r *http.Request, id Identity, badPath string) (owner, name, full, p string, o *outcome) {
	if s.cfg.Cluster == nil {
		f := fail(w, http.StatusNotFound, "", "this server has no Kubernetes cluster")
		return "", "", "", "", &f
	}
	if owner, name, o = s.podName(w, r, id); o != nil {
		return "", "", "", "", o
	}
	full = owner + "_" + name
	p, okPath := pathParam(r)
	if !okPath {
		f := fail(w, http.StatusBadRequest, full, badPath)
		return "", "", "", "", &f
	}
	return owner, name, full, p, nil
}

// podCopyOut is GET /api/v1/pods/{name}/archive?path=/in/pod: a tar
// archive of the file or folder, as for containers (copyOut), made by tar
// in the pod. Past the copy limit, or when tar fails once it has started,
// the connection is broken: the client sees a failed download, never a
// short one taken for whole.
func (s *Server) podCopyOut(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	owner, name, full, p, o := s.podArchive(w, r, id, "path must be an absolute path in the pod")
	if o != nil {
		return *o
	}
	target := full + ":" + p
	release, okSession := s.acquire(id)
	if !okSession {
		return s.tooMany(w, full)
	}
	defer release()
	ctx, touch, cancel := idle(r.Context(), s.cfg.IdleTimeout)
	defer cancel()
	rc, err := s.cfg.Cluster.PodCopyFrom(ctx, owner, name, p)
	if err != nil {
		return podError(w, full, target, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p) + ".tar"}))
	w.WriteHeader(http.StatusOK)
	src := &readErr{r: io.LimitReader(rc, s.cfg.MaxCopyBytes+1)}
	n, err := io.Copy(s.stream(w, touch), src)
	switch {
	case n > s.cfg.MaxCopyBytes:
		s.record(r, id, "pod-cp-out", outcome{status: http.StatusOK, target: target, result: "cut off at the copy limit"})
		panic(http.ErrAbortHandler)
	case src.err != nil:
		s.record(r, id, "pod-cp-out", outcome{status: http.StatusOK, target: target, result: "cut off: " + src.err.Error()})
		panic(http.ErrAbortHandler)
	case err != nil:
		return outcome{status: http.StatusOK, target: target, result: "ended: " + err.Error()}
	}
	return ok(target)
}

// readErr keeps the error, other than io.EOF, that its reader returned.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}

// podCopyIn is PUT /api/v1/pods/{name}/archive?path=/folder: the tar
// archive in the body is unpacked into the folder by tar in the pod, as
// the pod's user, vetted on the way as for containers (copyIn): 400 or
// 413 for what may not go in.
func (s *Server) podCopyIn(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	owner, name, full, dir, o := s.podArchive(w, r, id, "path must be an absolute folder in the pod")
	if o != nil {
		return *o
	}
	target := full + ":" + dir
	return s.upload(w, r, id, full, target, func(ctx context.Context, archive io.Reader) error {
		return s.cfg.Cluster.PodCopyTo(ctx, owner, name, dir, archive)
	}, func(err error) outcome { return podError(w, full, target, err) })
}
