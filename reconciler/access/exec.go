package access

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/whalemountain/wm/reconciler/docker"
)

// The exec protocol. An exec session is one WebSocket (binary messages
// only); the first byte of each message says what it carries, the rest
// is its payload.
//
// From the client:
//
//	ChanStdin   bytes for the command's standard input
//	ChanEOF     end of the standard input (no payload)
//	ChanResize  the terminal's new size, JSON {"rows": R, "cols": C}
//
// From the server:
//
//	ChanStdout  the command's output (with a TTY, the terminal's)
//	ChanStderr  the command's standard error (never with a TTY)
//	ChanExit    how it ended, JSON ExitStatus, then a normal close
const (
	ChanStdin  byte = 0
	ChanStdout byte = 1
	ChanStderr byte = 2
	ChanExit   byte = 3
	ChanResize byte = 4
	ChanEOF    byte = 5
)

// ExitStatus is the payload of ChanExit.
type ExitStatus struct {
	// ExitCode is the command's exit code (137 when it was killed, as by
	// the container stopping).
	ExitCode int `json:"exitCode"`
	// Error, when not "", says why the exit code is not known.
	Error string `json:"error,omitempty"`
}

// Resize is the payload of ChanResize.
type Resize struct {
	Rows uint `json:"rows"`
	Cols uint `json:"cols"`
}

// maxExecMessage bounds one message from the client.
const maxExecMessage = 64 << 10

// maxCmd bounds the command's words and their length.
const (
	maxCmdWords = 128
	maxCmdBytes = 16 << 10
)

// exec is GET /api/v1/containers/{name}/exec?cmd=sh&cmd=-c&cmd=...&tty=1
// &stdin=1&rows=R&cols=C, upgraded to a WebSocket speaking the exec
// protocol. Before the upgrade, the container is resolved (403, 404), the
// Origin checked (403), the caller's sessions counted (429) and the
// command started (409 when the container is not running). The session
// ends when the command ends, when the container stops, after the idle
// timeout, or when the client goes.
func (s *Server) exec(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	t, o := s.resolve(r.Context(), w, r, id)
	if o != nil {
		return *o
	}
	return s.session(w, r, id, t.name, func(ctx context.Context, opts docker.ExecOptions) (Session, error) {
		x, err := t.host.Exec(ctx, t.owner, t.name, opts)
		if err != nil {
			return nil, err
		}
		return dockerSession{x}, nil
	})
}

// Session is a command running in a container or a pod.
type Session interface {
	// Output is the command's standard output and error (nil with a
	// TTY); both must be read.
	Output() (stdout, stderr io.Reader)
	// Input is its standard input; closing it sends end-of-file.
	Input() io.WriteCloser
	// Resize changes its terminal's size.
	Resize(ctx context.Context, rows, cols uint) error
	// Wait returns its exit code once it has ended.
	Wait(ctx context.Context) (int, error)
	// Close ends the session.
	Close() error
}

// dockerSession is a *docker.Exec as a Session.
type dockerSession struct{ x *docker.Exec }

func (d dockerSession) Output() (io.Reader, io.Reader) { return d.x.Stdout, d.x.Stderr }
func (d dockerSession) Input() io.WriteCloser          { return d.x.Stdin }
func (d dockerSession) Resize(ctx context.Context, rows, cols uint) error {
	return d.x.Resize(ctx, rows, cols)
}
func (d dockerSession) Wait(ctx context.Context) (int, error) { return d.x.Wait(ctx) }
func (d dockerSession) Close() error                          { return d.x.Close() }

// session runs the exec protocol for a command start starts in the
// container or pod called name: the Origin is checked (403), the command
// read from the query (400), the caller's sessions counted (429), the
// command started (409 when not running) and the connection upgraded.
func (s *Server) session(w http.ResponseWriter, r *http.Request, id Identity, name string, start func(ctx context.Context, opts docker.ExecOptions) (Session, error)) outcome {
	t := struct{ name string }{name}
	if !s.originAllowed(r) {
		return fail(w, http.StatusForbidden, t.name, "a WebSocket from origin "+strconv.Quote(cut(r.Header.Get("Origin")))+" is refused")
	}
	q := r.URL.Query()
	cmd := q["cmd"]
	size := 0
	for _, c := range cmd {
		size += len(c)
	}
	if len(cmd) == 0 || len(cmd) > maxCmdWords || size > maxCmdBytes {
		return fail(w, http.StatusBadRequest, t.name, "cmd must name the command, one cmd parameter a word (at most 128)")
	}
	opts := docker.ExecOptions{Cmd: cmd}
	opts.TTY, _ = strconv.ParseBool(q.Get("tty"))
	opts.Stdin, _ = strconv.ParseBool(q.Get("stdin"))
	if opts.TTY {
		rows, _ := strconv.ParseUint(q.Get("rows"), 10, 16)
		cols, _ := strconv.ParseUint(q.Get("cols"), 10, 16)
		opts.Rows, opts.Cols = uint(rows), uint(cols)
	}
	release, ok := s.acquire(id)
	if !ok {
		return s.tooMany(w, t.name)
	}
	defer release()
	// The session outlives the request's context once the connection is
	// hijacked; it gets its own, ended by idleness or by either side.
	ctx, touch, cancel := idle(context.WithoutCancel(r.Context()), s.cfg.IdleTimeout)
	defer cancel()
	x, err := start(ctx, opts)
	if errors.Is(err, errPodNotRunning) {
		return fail(w, http.StatusConflict, t.name, t.name+" is not running")
	}
	if err != nil {
		return engineError(w, t.name, err)
	}
	defer x.Close()
	stdout, stderr := x.Output()
	stdin := x.Input()
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	// Origin was checked above, against the configured origins too.
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return outcome{status: http.StatusBadRequest, target: t.name, result: "not a WebSocket upgrade"}
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxExecMessage)
	target := t.name + " " + strconv.Quote(cut(strings.Join(cmd, " ")))

	send := func(ch byte, p []byte) error {
		touch()
		wctx, wcancel := context.WithTimeout(ctx, s.cfg.Stall)
		defer wcancel()
		return conn.Write(wctx, websocket.MessageBinary, append([]byte{ch}, p...))
	}
	var pumps sync.WaitGroup
	pump := func(ch byte, rd io.Reader) {
		defer pumps.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := rd.Read(buf)
			if n > 0 {
				if send(ch, buf[:n]) != nil {
					cancel()
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	pumps.Add(1)
	go pump(ChanStdout, stdout)
	if stderr != nil {
		pumps.Add(1)
		go pump(ChanStderr, stderr)
	}
	// The client's side: stdin, end of stdin, resizes; its going away
	// ends the session.
	go func() {
		defer cancel()
		for {
			typ, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			touch()
			if typ != websocket.MessageBinary || len(msg) == 0 {
				continue
			}
			switch msg[0] {
			case ChanStdin:
				if _, err := stdin.Write(msg[1:]); err != nil {
					_ = stdin.Close()
				}
			case ChanEOF:
				_ = stdin.Close()
			case ChanResize:
				var rs Resize
				if json.Unmarshal(msg[1:], &rs) == nil && rs.Rows > 0 && rs.Cols > 0 && rs.Rows < 1<<15 && rs.Cols < 1<<15 {
					_ = x.Resize(ctx, rs.Rows, rs.Cols)
				}
			}
		}
	}()
	outputDone := make(chan struct{})
	go func() { pumps.Wait(); close(outputDone) }()
	select {
	case <-outputDone:
	case <-ctx.Done():
		_ = x.Close()
		<-outputDone
	}
	status := ExitStatus{ExitCode: -1}
	result := ""
	if ctx.Err() != nil {
		status.Error = "the session ended: idle for too long, or the client went away"
		result = "ended before the command"
	} else {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		code, err := x.Wait(wctx)
		wcancel()
		status.ExitCode = code
		if err != nil {
			status.Error = "the exit code is not known: " + err.Error()
		}
		result = "exit " + strconv.Itoa(code)
	}
	payload, _ := json.Marshal(status)
	if send(ChanExit, payload) == nil {
		_ = conn.Close(websocket.StatusNormalClosure, "")
	}
	return outcome{status: http.StatusSwitchingProtocols, target: target, result: result}
}

// originAllowed reports whether a WebSocket upgrade may come from r's
// Origin: none (not a browser), the server's own host, or one of the
// configured origins.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return slices.ContainsFunc(s.cfg.AllowedOrigins, func(o string) bool { return strings.EqualFold(strings.TrimRight(o, "/"), origin) })
}
