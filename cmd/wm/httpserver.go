package main

import (
	"log/slog"
	"net/http"
	"time"
)

// httpLimits bound what one connection may cost wm serve.
type httpLimits struct {
	// ReadHeader is how long a client has to send a request's headers;
	// Read, its headers and body (webhook bodies are small).
	ReadHeader, Read time.Duration
	// Write is how long the answer to one request may take to write;
	// downloads instead get DownloadStall for each chunk.
	Write time.Duration
	// Idle is how long a kept-alive connection may wait for its next
	// request.
	Idle time.Duration
	// MaxHeaderBytes caps a request's headers.
	MaxHeaderBytes int
	// DownloadStall is how long a download may make no progress: a SIF of
	// gigabytes may take an hour to fetch, but a client that stops reading
	// loses its connection.
	DownloadStall time.Duration
}

// defaultHTTPLimits are the limits of both of wm serve's listeners.
var defaultHTTPLimits = httpLimits{
	ReadHeader:     10 * time.Second,
	Read:           30 * time.Second,
	Write:          time.Minute,
	Idle:           2 * time.Minute,
	MaxHeaderBytes: 64 << 10,
	DownloadStall:  time.Minute,
}

// newHTTPServer serves h within lim; the server's own errors (such as a
// malformed request) are logged at debug level.
func newHTTPServer(h http.Handler, lim httpLimits, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: lim.ReadHeader,
		ReadTimeout:       lim.Read,
		WriteTimeout:      lim.Write,
		IdleTimeout:       lim.Idle,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// downloadDeadlines lets h write for as long as the client keeps reading:
// the server's write timeout is replaced by a deadline of stall that each
// write pushes back. The read deadline is lifted, as a GET has no body
// and the server's read timeout would otherwise cancel the request's
// context in the middle of a long download.
func downloadDeadlines(h http.Handler, stall time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Now().Add(stall))
		h.ServeHTTP(&stallWriter{ResponseWriter: w, rc: rc, stall: stall}, r)
	})
}

// stallWriter pushes the write deadline back before each write. It does
// not offer io.ReaderFrom, so that a file is sent in chunks, each with its
// own deadline, rather than in one sendfile with one.
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
}

func (w *stallWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
