package access

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/whalemountain/wm/reconciler/docker"
)

// defaultStall is Config.Stall's default.
const defaultStall = time.Minute

// maxArchiveEntries bounds the files, folders and links of one copy in.
const maxArchiveEntries = 100_000

// stream prepares w for a long answer: the server's read and write
// timeouts are lifted, and each write gets Config.Stall to go through
// instead; the returned writer flushes each write and calls touch.
func (s *Server) stream(w http.ResponseWriter, touch func()) io.Writer {
	stall := s.cfg.Stall
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(stall))
	return writerFunc(func(p []byte) (int, error) {
		_ = rc.SetWriteDeadline(time.Now().Add(stall))
		n, err := w.Write(p)
		_ = rc.Flush()
		touch()
		return n, err
	})
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// idle returns a context cancelled once touch has not been called for d,
// and touch.
func idle(parent context.Context, d time.Duration) (ctx context.Context, touch func(), cancel context.CancelFunc) {
	ctx, cancel = context.WithCancel(parent)
	t := time.AfterFunc(d, cancel)
	context.AfterFunc(ctx, func() { t.Stop() })
	return ctx, func() { t.Reset(d) }, cancel
}

// logs is GET /api/v1/containers/{name}/logs?tail=N&since=T&follow=1:
// the container's output as plain text; since is an RFC 3339 time or a
// duration back from now (10m). A followed stream is a session: it counts
// against the caller's and ends after the idle timeout, when the
// container stops, or when the client goes.
func (s *Server) logs(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	t, o := s.resolve(r.Context(), w, r, id)
	if o != nil {
		return *o
	}
	opts, o := s.logOptions(w, r, t.name)
	if o != nil {
		return *o
	}
	ctx, touch, cancel := idle(r.Context(), s.cfg.IdleTimeout)
	defer cancel()
	if opts.Follow {
		release, ok := s.acquire(id)
		if !ok {
			return s.tooMany(w, t.name)
		}
		defer release()
	}
	rc, err := t.host.Logs(ctx, t.owner, t.name, opts)
	if err != nil {
		return engineError(w, t.name, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, err = io.Copy(s.stream(w, touch), rc)
	result := "ok"
	switch {
	case ctx.Err() != nil && r.Context().Err() == nil:
		result = "idle timeout"
	case err != nil:
		result = "ended: " + err.Error()
	}
	return outcome{status: http.StatusOK, target: t.name, result: result}
}

// logOptions reads ?tail=, ?since= and ?follow=.
func (s *Server) logOptions(w http.ResponseWriter, r *http.Request, target string) (docker.LogOptions, *outcome) {
	q := r.URL.Query()
	var opts docker.LogOptions
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			o := fail(w, http.StatusBadRequest, target, "tail is not a number of lines")
			return opts, &o
		}
		opts.Tail = n
	}
	if v := q.Get("since"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= 0 {
			opts.Since = s.cfg.Now().Add(-d)
		} else if ts, err := time.Parse(time.RFC3339Nano, v); err == nil {
			opts.Since = ts
		} else {
			o := fail(w, http.StatusBadRequest, target, "since is neither a duration (10m) nor an RFC 3339 time")
			return opts, &o
		}
	}
	opts.Follow, _ = strconv.ParseBool(q.Get("follow"))
	return opts, nil
}

// restart is POST /api/v1/containers/{name}/restart: a running container
// stops (killed after 10 s) and starts again. A stopped one is refused
// (409): the Engine brings back one that crashed by itself, so a stopped
// container is one its wm.yaml declares stopped, and starting it would be
// undone by the next pass.
func (s *Server) restart(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	t, o := s.resolve(r.Context(), w, r, id)
	if o != nil {
		return *o
	}
	if !t.running {
		return fail(w, http.StatusConflict, t.name, "container "+t.name+" is stopped, as its wm.yaml declares: change wm.yaml to start it")
	}
	if err := t.host.Restart(r.Context(), t.owner, t.name, 10*time.Second); err != nil {
		return engineError(w, t.name, err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"restarted": t.name})
	return ok(t.name)
}

// pathParam reads ?path=, an absolute path in the container.
func pathParam(r *http.Request) (string, bool) {
	p := r.URL.Query().Get("path")
	if !strings.HasPrefix(p, "/") || len(p) > 4096 || strings.ContainsRune(p, 0) {
		return "", false
	}
	return path.Clean(p), true
}

// copyOut is GET /api/v1/containers/{name}/archive?path=/in/container: a
// tar archive of the file or folder, as docker cp makes it. An archive
// past the copy limit is cut off (the connection is broken, so the
// client sees a failed download, never a short one taken for whole).
func (s *Server) copyOut(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	t, o := s.resolve(r.Context(), w, r, id)
	if o != nil {
		return *o
	}
	p, okPath := pathParam(r)
	if !okPath {
		return fail(w, http.StatusBadRequest, t.name, "path must be an absolute path in the container")
	}
	release, okSession := s.acquire(id)
	if !okSession {
		return s.tooMany(w, t.name)
	}
	defer release()
	ctx, touch, cancel := idle(r.Context(), s.cfg.IdleTimeout)
	defer cancel()
	rc, err := t.host.CopyFrom(ctx, t.owner, t.name, p)
	if err != nil {
		return engineError(w, t.name+":"+p, err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p) + ".tar"}))
	w.WriteHeader(http.StatusOK)
	n, err := io.Copy(s.stream(w, touch), io.LimitReader(rc, s.cfg.MaxCopyBytes+1))
	if n > s.cfg.MaxCopyBytes {
		// Past the limit: break the connection rather than end the
		// archive cleanly.
		s.record(r, id, "cp-out", outcome{status: http.StatusOK, target: t.name + ":" + p, result: "cut off at the copy limit"})
		panic(http.ErrAbortHandler)
	}
	if err != nil {
		return outcome{status: http.StatusOK, target: t.name + ":" + p, result: "ended: " + err.Error()}
	}
	return ok(t.name + ":" + p)
}

// errArchive is an archive copyIn refuses.
var errArchive = errors.New("refused archive")

// copyIn is PUT /api/v1/containers/{name}/archive?path=/folder: the tar
// archive in the body is unpacked into the folder, owned by the
// container's user. Only regular files, folders and links go through,
// with relative names that stay below the folder, no setuid, setgid or
// sticky bits and no extended attributes; anything else, or an archive
// past the copy limit, is refused (400 or 413) before it reaches the
// container.
func (s *Server) copyIn(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	t, o := s.resolve(r.Context(), w, r, id)
	if o != nil {
		return *o
	}
	dir, okPath := pathParam(r)
	if !okPath {
		return fail(w, http.StatusBadRequest, t.name, "path must be an absolute folder in the container")
	}
	return s.upload(w, r, id, t.name, t.name+":"+dir, func(ctx context.Context, archive io.Reader) error {
		return t.host.CopyTo(ctx, t.owner, t.name, dir, archive)
	}, func(err error) outcome { return engineError(w, t.name+":"+dir, err) })
}

// upload is the body of a copy in, to a container or a pod, named name
// (target is name:folder): within the copy limit and a session of id's,
// with the idle timeout and the stall bound on the client, the archive in
// the body is vetted (vetArchive) on its way to copyTo; a refused archive
// is 400 or 413, copyTo's own error answered by failed.
func (s *Server) upload(w http.ResponseWriter, r *http.Request, id Identity, name, target string,
	copyTo func(ctx context.Context, archive io.Reader) error, failed func(error) outcome) outcome {
	if r.ContentLength > s.cfg.MaxCopyBytes {
		return fail(w, http.StatusRequestEntityTooLarge, target, fmt.Sprintf("the archive is larger than the copy limit (%d bytes)", s.cfg.MaxCopyBytes))
	}
	release, okSession := s.acquire(id)
	if !okSession {
		return s.tooMany(w, name)
	}
	defer release()
	ctx, touch, cancel := idle(r.Context(), s.cfg.IdleTimeout)
	defer cancel()
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.Stall))
	body := readerFunc(func(p []byte) (int, error) {
		_ = rc.SetReadDeadline(time.Now().Add(s.cfg.Stall))
		touch()
		return r.Body.Read(p)
	})
	pr, pw := io.Pipe()
	vetted := make(chan error, 1)
	go func() {
		err := vetArchive(pw, body, s.cfg.MaxCopyBytes)
		pw.CloseWithError(err)
		vetted <- err
	}()
	err := copyTo(ctx, pr)
	pr.CloseWithError(errors.New("copy ended"))
	if verr := <-vetted; verr != nil && errors.Is(verr, errArchive) {
		status := http.StatusBadRequest
		if strings.Contains(verr.Error(), "copy limit") {
			status = http.StatusRequestEntityTooLarge
		}
		return fail(w, status, target, verr.Error())
	}
	if err != nil {
		return failed(err)
	}
	writeJSON(w, http.StatusOK, map[string]string{"copied": target})
	return ok(target)
}

type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// vetArchive copies the tar archive src to dst, keeping only what a
// student may put in their container (see copyIn) and refusing the whole
// archive, with an error of errArchive, at the first thing it may not.
func vetArchive(dst io.Writer, src io.Reader, limit int64) error {
	tr := tar.NewReader(src)
	tw := tar.NewWriter(dst)
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("%w: not a tar archive: %w", errArchive, err)
		}
		if n >= maxArchiveEntries {
			return fmt.Errorf("%w: more than %d entries", errArchive, maxArchiveEntries)
		}
		if !safeName(h.Name) {
			return fmt.Errorf("%w: entry %q is not a relative path below the folder", errArchive, cut(h.Name))
		}
		out := &tar.Header{Name: h.Name, Mode: h.Mode & 0o777, ModTime: h.ModTime, Typeflag: h.Typeflag, Format: tar.FormatPAX}
		switch h.Typeflag {
		case tar.TypeReg:
			out.Size = h.Size
		case tar.TypeDir:
		case tar.TypeSymlink:
			if len(h.Linkname) > 4096 || strings.ContainsRune(h.Linkname, 0) {
				return fmt.Errorf("%w: link %q has a target of the wrong kind", errArchive, cut(h.Name))
			}
			out.Linkname = h.Linkname
		case tar.TypeLink:
			if !safeName(h.Linkname) {
				return fmt.Errorf("%w: hard link %q points outside the archive", errArchive, cut(h.Name))
			}
			out.Linkname = h.Linkname
		default:
			return fmt.Errorf("%w: entry %q is a %s: only files, folders and links may be copied in", errArchive, cut(h.Name), typeName(h.Typeflag))
		}
		if total += max(out.Size, 0); total > limit {
			return fmt.Errorf("%w: the archive is larger than the copy limit (%d bytes)", errArchive, limit)
		}
		if err := tw.WriteHeader(out); err != nil {
			return err
		}
		if out.Typeflag == tar.TypeReg {
			if _, err := io.CopyN(tw, tr, out.Size); err != nil {
				return fmt.Errorf("%w: entry %q is cut short: %w", errArchive, cut(h.Name), err)
			}
		}
	}
}

// safeName reports whether an archive name stays below the folder it is
// unpacked in.
func safeName(name string) bool {
	if name == "" || len(name) > 4096 || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return false
	}
	for _, part := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if part == ".." {
			return false
		}
	}
	return true
}

// typeName names a tar entry's type for a message.
func typeName(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "named pipe"
	default:
		return fmt.Sprintf("entry of type %q", t)
	}
}

// cut shortens what a client sent for a message.
func cut(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
