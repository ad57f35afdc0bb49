package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GitLab's delivery headers.
const (
	headerEvent          = "X-Gitlab-Event"
	headerToken          = "X-Gitlab-Token"
	headerIdempotencyKey = "Idempotency-Key"
	headerEventUUID      = "X-Gitlab-Event-Uuid"
)

// Defaults of Config.
const (
	DefaultMaxBody        = 1 << 20
	DefaultIdempotencyTTL = time.Hour
)

// Dispatcher receives the events the handler accepted.
type Dispatcher interface {
	// Dispatch hands e, a Push, MergeRequest or ProjectChange value, on
	// (typically to a work queue) and returns at once: the handler answers
	// GitLab only after Dispatch returns, and GitLab counts a hook that
	// takes over 10 s as failed and, after four such failures, disables it.
	// ctx carries the request's values but is never cancelled, so work
	// handed to a goroutine may keep it.
	Dispatch(ctx context.Context, e any)
}

// DispatcherFunc is a function used as a Dispatcher.
type DispatcherFunc func(ctx context.Context, e any)

// Dispatch calls f(ctx, e).
func (f DispatcherFunc) Dispatch(ctx context.Context, e any) { f(ctx, e) }

// Config is what a Handler trusts and how much it remembers.
type Config struct {
	// Authentication

	// Secret is the hook's secret token, which GitLab sends in clear as
	// X-Gitlab-Token. Required: with an empty Secret every delivery is
	// refused.
	Secret []byte
	// SigningSecret, when set, is the hook's signing token, decoded (see
	// ParseSigningSecret): a delivery must then also carry a valid Standard
	// Webhooks signature made less than SignatureTolerance ago.
	SigningSecret []byte

	// Bounds

	// MaxBody is the largest body read, in bytes; larger ones are refused
	// with 413. Zero means DefaultMaxBody.
	MaxBody int64
	// IdempotencyTTL is how long the key of an accepted delivery is
	// remembered, so that GitLab's retries of it are not dispatched again.
	// Zero means DefaultIdempotencyTTL.
	IdempotencyTTL time.Duration

	// Testing

	// Now is the clock that signatures and remembered keys are checked
	// against; nil means time.Now.
	Now func() time.Time
}

// Handler is the http.Handler of POST /hooks/gitlab. It is safe for
// concurrent use.
type Handler struct {
	secret     [sha256.Size]byte // of Config.Secret, so that comparing takes the same time whatever the lengths
	hasSecret  bool
	signingKey []byte
	maxBody    int64
	now        func() time.Time

	seen    *seenKeys
	d       Dispatcher
	metrics *metrics
	recent  recent
}

var (
	_ http.Handler = (*Handler)(nil)
	_ Dispatcher   = DispatcherFunc(nil)
)

// NewHandler returns a Handler that hands what it accepts to d, and
// registers its metrics on reg unless reg is nil.
func NewHandler(cfg Config, d Dispatcher, reg prometheus.Registerer) (*Handler, error) {
	if d == nil {
		return nil, errors.New("new webhook handler: no dispatcher")
	}
	if cfg.MaxBody < 0 {
		return nil, fmt.Errorf("new webhook handler: negative body limit %d", cfg.MaxBody)
	}
	if cfg.IdempotencyTTL < 0 {
		return nil, fmt.Errorf("new webhook handler: negative idempotency TTL %s", cfg.IdempotencyTTL)
	}
	h := &Handler{
		secret:    sha256.Sum256(cfg.Secret),
		hasSecret: len(cfg.Secret) > 0,
		maxBody:   cfg.MaxBody,
		now:       cfg.Now,
		d:         d,
	}
	if len(cfg.SigningSecret) > 0 {
		h.signingKey = bytes.Clone(cfg.SigningSecret)
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBody
	}
	if h.now == nil {
		h.now = time.Now
	}
	ttl := cfg.IdempotencyTTL
	if ttl == 0 {
		ttl = DefaultIdempotencyTTL
	}
	h.seen = newSeenKeys(ttl, maxKeys)
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	h.metrics = m
	return h, nil
}

// ServeHTTP answers one delivery; see the package documentation for the
// order of the checks and what each answer means.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	event, outcome, project := h.serve(w, r)
	h.metrics.requests.WithLabelValues(event, outcome).Inc()
	h.metrics.duration.Observe(time.Since(start).Seconds())
	h.recent.add(Delivery{Time: h.now(), Event: event, Outcome: outcome, Status: outcomeStatus[outcome], Project: project})
}

// serve answers and returns the labels of the delivery. Until the body is
// decoded, the event label follows X-Gitlab-Event alone, so a refused
// system hook counts as "other".
func (h *Handler) serve(w http.ResponseWriter, r *http.Request) (event, outcome, project string) {
	header := r.Header.Get(headerEvent)
	event = headerLabel(header)

	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		replyError(w, http.StatusMethodNotAllowed, "method not allowed: use POST")
		return event, outcomeMethodNotAllowed, ""
	}
	// The token comes first: nothing of an unauthenticated request is read.
	if !h.tokenOK(r.Header.Get(headerToken)) {
		replyError(w, http.StatusUnauthorized, "unauthorized")
		return event, outcomeUnauthorized, ""
	}
	body, err := h.readBody(w, r)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			replyError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", h.maxBody))
			return event, outcomeTooLarge, ""
		}
		replyError(w, http.StatusBadRequest, "unreadable body")
		return event, outcomeBadRequest, ""
	}
	if h.signingKey != nil {
		err := verifySignature(h.signingKey, r.Header.Get(headerWebhookID),
			r.Header.Get(headerWebhookTimestamp), r.Header.Get(headerWebhookSignature), body, h.now())
		if err != nil {
			replyError(w, http.StatusUnauthorized, "unauthorized")
			return event, outcomeUnauthorized, ""
		}
	}

	e, event, err := decode(header, body)
	switch {
	case err != nil:
		replyError(w, http.StatusBadRequest, err.Error())
		return event, outcomeBadRequest, ""
	case e == nil:
		replyStatus(w, http.StatusOK, outcomeIgnored)
		return event, outcomeIgnored, ""
	}
	if k, ok := keyOf(r.Header.Get(headerIdempotencyKey), r.Header.Get(headerEventUUID), header, body); ok && !h.seen.add(k, h.now()) {
		replyStatus(w, http.StatusOK, outcomeDuplicate)
		return event, outcomeDuplicate, projectOf(e)
	}
	h.d.Dispatch(context.WithoutCancel(r.Context()), e)
	replyStatus(w, http.StatusAccepted, outcomeAccepted)
	return event, outcomeAccepted, projectOf(e)
}

// tokenOK compares the token with the secret in constant time, lengths
// included.
func (h *Handler) tokenOK(token string) bool {
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], h.secret[:]) == 1 && h.hasSecret
}

// readBody reads the whole body, at most maxBody bytes of it; a larger one
// is an *http.MaxBytesError, told by Content-Length before reading when it
// can be.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > h.maxBody {
		return nil, &http.MaxBytesError{Limit: h.maxBody}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1) // +1: ReadFrom wants room to see EOF
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.maxBody))
	return buf.Bytes(), err
}

func headerLabel(header string) string {
	switch header {
	case eventPush:
		return labelPush
	case eventMergeRequest:
		return labelMergeRequest
	}
	return labelOther
}

// Answers are short JSON objects, built once.
var statusBodies = map[string][]byte{
	outcomeAccepted:  []byte(`{"status":"accepted"}` + "\n"),
	outcomeIgnored:   []byte(`{"status":"ignored"}` + "\n"),
	outcomeDuplicate: []byte(`{"status":"duplicate"}` + "\n"),
}

func replyStatus(w http.ResponseWriter, code int, status string) {
	reply(w, code, statusBodies[status])
}

// replyError answers {"error": msg}. msg never holds a secret nor any
// part of the body.
func replyError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	reply(w, code, append(b, '\n'))
}

func reply(w http.ResponseWriter, code int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(body)
}
