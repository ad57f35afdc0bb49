package dashboard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/whalemountain/wm/reconciler/access"
)

// The dashboard holds no rule of its own about who may see or do what:
// every read and every action is a call to the access API, made in the
// process with the session's GitLab token in the Authorization header, so
// the API's identity, ownership checks, limits and audit apply to the
// browser exactly as to the CLI.

// apiError is an answer of the access API that is not 2xx.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%s (%d)", e.msg, e.status) }

// statusOf is the API status of err, 500 when it is not an API answer.
func statusOf(err error) int {
	var e *apiError
	if errors.As(err, &e) {
		return e.status
	}
	return http.StatusInternalServerError
}

// apiRequest is a request to the API at path, carrying token, made on
// behalf of the browser's request r (its client address and forwarding
// headers go along, for the audit log and the rate limits).
func apiRequest(ctx context.Context, r *http.Request, token, method, path string, q url.Values, body io.Reader) *http.Request {
	u := &url.URL{Path: path, RawQuery: q.Encode()}
	req := (&http.Request{Method: method, URL: u, Header: http.Header{}, Host: r.Host, RemoteAddr: r.RemoteAddr,
		Proto: r.Proto, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor}).WithContext(ctx)
	if body != nil {
		req.Body = io.NopCloser(body)
	} else {
		req.Body = http.NoBody
	}
	for _, h := range []string{"X-Forwarded-For", "User-Agent"} {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

// bufferWriter is a ResponseWriter that keeps the answer in memory.
type bufferWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferWriter) Header() http.Header { return b.header }
func (b *bufferWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}
func (b *bufferWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

// getJSON calls GET path on the API and decodes the answer into v.
func (d *Dashboard) getJSON(r *http.Request, token, path string, q url.Values, v any) error {
	return d.callJSON(r, token, http.MethodGet, path, q, nil, v)
}

// callJSON calls the API and decodes a 2xx answer into v (when not nil).
func (d *Dashboard) callJSON(r *http.Request, token, method, path string, q url.Values, body io.Reader, v any) error {
	bw := &bufferWriter{header: http.Header{}}
	d.cfg.API.ServeHTTP(bw, apiRequest(r.Context(), r, token, method, path, q, body))
	if bw.status/100 != 2 {
		return &apiError{status: bw.status, msg: errorMessage(bw.body.Bytes())}
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(bw.body.Bytes(), v); err != nil {
		return fmt.Errorf("read the API's answer to %s: %w", path, err)
	}
	return nil
}

// errorMessage is the message of an API error body.
func errorMessage(body []byte) string {
	var e access.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(string(body))
}

// pipeWriter is a ResponseWriter whose body is read from a pipe while
// the API handler writes it, for answers too long to hold in memory (a
// copy out of a container).
type pipeWriter struct {
	header http.Header
	status int
	ready  chan struct{} // closed once the status is known
	pw     *io.PipeWriter
}

func (p *pipeWriter) Header() http.Header { return p.header }
func (p *pipeWriter) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
		close(p.ready)
	}
}
func (p *pipeWriter) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return p.pw.Write(b)
}

// errAborted is the API handler breaking the connection on purpose (a
// copy past its limit), which the dashboard passes on to the browser.
var errAborted = errors.New("the answer was cut off")

// stream calls the API and returns its status, headers and body as the
// handler writes them. The caller closes the body.
func (d *Dashboard) stream(r *http.Request, token, method, path string, q url.Values, body io.Reader) (int, http.Header, io.ReadCloser) {
	pr, pw := io.Pipe()
	w := &pipeWriter{header: http.Header{}, ready: make(chan struct{}), pw: pw}
	go func() {
		defer func() {
			if v := recover(); v != nil {
				if v != http.ErrAbortHandler {
					pw.CloseWithError(fmt.Errorf("the API failed: %v", v))
				} else {
					pw.CloseWithError(errAborted)
				}
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusOK)
			pw.Close()
		}()
		d.cfg.API.ServeHTTP(w, apiRequest(r.Context(), r, token, method, path, q, body))
	}()
	<-w.ready
	return w.status, w.header, pr
}

// sseWriter turns the API's plain-text log stream into server-sent
// events, one event a line; an answer that is not 200 goes through as
// it is. Unwrap lets the API's stream reach the connection's deadlines.
type sseWriter struct {
	w       http.ResponseWriter
	header  http.Header
	status  int
	partial []byte
}

func (s *sseWriter) Header() http.Header { return s.header }

func (s *sseWriter) WriteHeader(code int) {
	if s.status != 0 {
		return
	}
	s.status = code
	h := s.w.Header()
	if code != http.StatusOK {
		for k, v := range s.header {
			h[k] = v
		}
		s.w.WriteHeader(code)
		return
	}
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
	s.w.WriteHeader(code)
}

func (s *sseWriter) Write(p []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	if s.status != http.StatusOK {
		return s.w.Write(p)
	}
	s.partial = append(s.partial, p...)
	var out bytes.Buffer
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			break
		}
		writeEvent(&out, "", string(s.partial[:i]))
		s.partial = s.partial[i+1:]
	}
	if len(s.partial) > 64<<10 { // a line without end: send what there is
		writeEvent(&out, "", string(s.partial))
		s.partial = s.partial[:0]
	}
	if _, err := s.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush sends what was written.
func (s *sseWriter) Flush() {
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap is the browser's ResponseWriter.
func (s *sseWriter) Unwrap() http.ResponseWriter { return s.w }

// writeEvent writes one server-sent event; a line's carriage returns are
// dropped (an event's data may not hold one).
func writeEvent(w io.Writer, event, data string) {
	bw := bufio.NewWriter(w)
	if event != "" {
		fmt.Fprintf(bw, "event: %s\n", event)
	}
	fmt.Fprintf(bw, "data: %s\n\n", strings.ReplaceAll(data, "\r", ""))
	_ = bw.Flush()
}
