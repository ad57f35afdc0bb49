package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The fixtures' provenance is in testdata/README.md: each is a payload
// example from GitLab's documentation (webhook_events.md for project and
// group hooks, system_hooks.md for system hooks), except
// merge_request_update.json, derived from the open example.

const testSecret = "t0ken-of-the-hook"

// testNow is the handler's clock in the tests.
var testNow = time.Unix(1_750_000_000, 0)

// recorder is a Dispatcher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []any
}

func (r *recorder) Dispatch(_ context.Context, e any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) got() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]any(nil), r.events...)
}

type testHandler struct {
	*Handler
	rec *recorder
	reg *prometheus.Registry
}

// newTestHandler returns a handler with testSecret, the test clock and its
// own registry; change modifies the config first.
func newTestHandler(t testing.TB, change func(*Config)) testHandler {
	t.Helper()
	cfg := Config{Secret: []byte(testSecret), Now: func() time.Time { return testNow }}
	if change != nil {
		change(&cfg)
	}
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	h, err := NewHandler(cfg, rec, reg)
	if err != nil {
		t.Fatal(err)
	}
	return testHandler{h, rec, reg}
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// delivery builds a POST as GitLab sends it, with the right token; headers
// are set after, so they may override or (with "") remove one.
func delivery(event string, body []byte, headers map[string]string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hooks/gitlab", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set(headerToken, testSecret)
	if event != "" {
		r.Header.Set(headerEvent, event)
	}
	for k, v := range headers {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// answer checks the status code and the one field of the JSON answer.
func answer(t *testing.T, w *httptest.ResponseRecorder, code int, field, value string) {
	t.Helper()
	if w.Code != code {
		t.Fatalf("status %d, want %d (body %s)", w.Code, code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var got map[string]string
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatalf("answer %q is not a JSON object of strings: %v", w.Body, err)
	}
	if len(got) != 1 || (value != "" && got[field] != value) || got[field] == "" {
		t.Errorf("answer %s, want {%q: %q}", w.Body, field, value)
	}
}

func count(h testHandler, event, outcome string) float64 {
	return testutil.ToFloat64(h.metrics.requests.WithLabelValues(event, outcome))
}

func TestAcceptedDeliveriesAreDispatchedDecoded(t *testing.T) {
	const (
		before = "95790bf891e76fee5e1747ab589903a6a1f80f22"
		after  = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
	)
	documentedMR := MergeRequest{
		ProjectID:       1,
		Project:         "gitlabhq/gitlab-test",
		IID:             1,
		Action:          "open",
		State:           "opened",
		LastCommit:      after,
		SourceProjectID: 14,
		SourceProject:   "awesome_space/awesome_project",
		SourceHTTPURL:   "http://example.com/awesome_space/awesome_project.git",
		SourceBranch:    "ms-viewport",
		TargetBranch:    "master",
	}
	updatedMR := documentedMR
	updatedMR.Action = "update"

	tests := []struct {
		name    string
		event   string
		fixture string
		want    any
		label   string
	}{
		{"a push hook is a push with its project, branch, heads and user", "Push Hook", "push.json",
			Push{ProjectID: 15, Project: "mike/diaspora", DefaultBranch: "master", Ref: "refs/heads/master", Before: before, After: after, UserUsername: "jsmith"}, labelPush},
		{"a system hook push is a push too, without a user name", "System Hook", "system_push.json",
			Push{ProjectID: 15, Project: "mike/diaspora", DefaultBranch: "master", Ref: "refs/heads/master", Before: before, After: after}, labelPush},
		{"an opened merge request is a merge request with its source and target", "Merge Request Hook", "merge_request_open.json",
			documentedMR, labelMergeRequest},
		{"new commits on a merge request are an update", "Merge Request Hook", "merge_request_update.json",
			updatedMR, labelMergeRequest},
		{"a system hook merge request is a merge request too", "System Hook", "system_merge_request.json",
			documentedMR, labelMergeRequest},
		{"a created project is a project change", "System Hook", "system_project_create.json",
			ProjectChange{EventName: "project_create", ProjectID: 74, Project: "jsmith/storecloud"}, labelProject},
		{"a destroyed project is a project change", "System Hook", "system_project_destroy.json",
			ProjectChange{EventName: "project_destroy", ProjectID: 73, Project: "jsmith/underscore"}, labelProject},
		{"a renamed project is a project change with its old path", "System Hook", "system_project_rename.json",
			ProjectChange{EventName: "project_rename", ProjectID: 73, Project: "jsmith/underscore", OldProject: "jsmith/overscore"}, labelProject},
		{"a transferred project is a project change with its old path", "System Hook", "system_project_transfer.json",
			ProjectChange{EventName: "project_transfer", ProjectID: 73, Project: "scores/underscore", OldProject: "jsmith/overscore"}, labelProject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t, nil)
			w := serve(h, delivery(tt.event, fixture(t, tt.fixture), nil))
			answer(t, w, http.StatusAccepted, "status", "accepted")
			got := h.rec.got()
			if len(got) != 1 || !reflect.DeepEqual(got[0], tt.want) {
				t.Errorf("dispatched %#v\nwant [%#v]", got, tt.want)
			}
			if n := count(h, tt.label, outcomeAccepted); n != 1 {
				t.Errorf("wm_webhook_requests_total{event=%q,outcome=accepted} = %v, want 1", tt.label, n)
			}
		})
	}
}

func TestEventsWhaleMountainDoesNotActOnAreIgnoredAndCounted(t *testing.T) {
	tests := []struct {
		name  string
		event string
		body  []byte
		label string
	}{
		{"a tag push is ignored", "Tag Push Hook", fixture(t, "tag_push.json"), labelOther},
		{"a comment is ignored", "Note Hook", fixture(t, "note.json"), labelOther},
		{"a pipeline is ignored unread", "Pipeline Hook", []byte(`not even JSON`), labelOther},
		{"a job is ignored", "Job Hook", []byte(`{}`), labelOther},
		{"an unknown header is ignored", "Frobnicate Hook", []byte(`{}`), labelOther},
		{"a delivery without X-Gitlab-Event is ignored", "", []byte(`{}`), labelOther},
		{"a system hook project update is ignored", "System Hook", fixture(t, "system_project_update.json"), labelOther},
		{"a system hook tag push is ignored", "System Hook", fixture(t, "system_tag_push.json"), labelOther},
		{"a system hook repository update is ignored", "System Hook", fixture(t, "system_repository_update.json"), labelOther},
		{"a system hook of the newer object_kind shape is ignored", "System Hook",
			[]byte(`{"object_kind":"gitlab_subscription_member_approval","action":"enqueue","user_id":42}`), labelOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t, nil)
			w := serve(h, delivery(tt.event, tt.body, map[string]string{headerIdempotencyKey: "k1"}))
			answer(t, w, http.StatusOK, "status", "ignored")
			if got := h.rec.got(); len(got) != 0 {
				t.Errorf("dispatched %#v, want nothing", got)
			}
			if n := count(h, tt.label, outcomeIgnored); n != 1 {
				t.Errorf("ignored count %v, want 1", n)
			}
			if n := h.seen.len(); n != 0 {
				t.Errorf("%d keys remembered, want none: only accepted deliveries are", n)
			}
		})
	}
}

// readCounter is a body that counts the reads made of it.
type readCounter struct {
	io.Reader
	reads int
}

func (r *readCounter) Read(p []byte) (int, error) {
	r.reads++
	return r.Reader.Read(p)
}

func TestUnauthenticatedDeliveriesAreRefusedUnread(t *testing.T) {
	tests := []struct {
		name   string
		secret string
		token  string // "" removes the header
	}{
		{"a missing token is refused", testSecret, ""},
		{"a wrong token is refused", testSecret, "guess"},
		{"a token one byte short is refused", testSecret, testSecret[:len(testSecret)-1]},
		{"a token one byte long is refused", testSecret, testSecret + "x"},
		{"a token differing in case is refused", testSecret, strings.ToUpper(testSecret)},
		{"an empty secret refuses a missing token", "", ""},
		{"an empty secret refuses any token", "", "anything"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t, func(c *Config) { c.Secret = []byte(tt.secret) })
			body := &readCounter{Reader: bytes.NewReader(fixture(t, "push.json"))}
			r := delivery("Push Hook", nil, map[string]string{headerToken: tt.token, headerIdempotencyKey: "k1"})
			r.Body = io.NopCloser(body)
			w := serve(h, r)
			answer(t, w, http.StatusUnauthorized, "error", "unauthorized")
			if body.reads != 0 {
				t.Errorf("the body was read %d times, want never", body.reads)
			}
			if got := h.rec.got(); len(got) != 0 {
				t.Errorf("dispatched %#v, want nothing", got)
			}
			if n := h.seen.len(); n != 0 {
				t.Errorf("%d keys remembered, want none", n)
			}
			if n := count(h, labelPush, outcomeUnauthorized); n != 1 {
				t.Errorf("unauthorized count %v, want 1", n)
			}
			if strings.Contains(w.Body.String(), testSecret) || (tt.token != "" && strings.Contains(w.Body.String(), tt.token)) {
				t.Errorf("answer %q echoes a token", w.Body)
			}
		})
	}
}

func TestOnlyPOSTIsAllowed(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete} {
		t.Run(method+" is refused with 405 and an Allow header", func(t *testing.T) {
			h := newTestHandler(t, nil)
			r := delivery("Push Hook", fixture(t, "push.json"), nil)
			r.Method = method
			w := serve(h, r)
			if w.Code != http.StatusMethodNotAllowed {
				t.Fatalf("status %d, want 405", w.Code)
			}
			if allow := w.Header().Get("Allow"); allow != http.MethodPost {
				t.Errorf("Allow %q, want POST", allow)
			}
			if got := h.rec.got(); len(got) != 0 {
				t.Errorf("dispatched %#v, want nothing", got)
			}
			if n := count(h, labelPush, outcomeMethodNotAllowed); n != 1 {
				t.Errorf("method_not_allowed count %v, want 1", n)
			}
		})
	}
}

func TestBodiesOverTheLimitAreRefused(t *testing.T) {
	push := fixture(t, "push.json")
	tests := []struct {
		name          string
		maxBody       int64
		contentLength int64 // -1: unknown, as with chunked encoding
		code          int
	}{
		{"a body one byte over the limit is refused", int64(len(push)) - 1, int64(len(push)), http.StatusRequestEntityTooLarge},
		{"a body over the limit without Content-Length is refused while read", int64(len(push)) - 1, -1, http.StatusRequestEntityTooLarge},
		{"a body over the limit is refused while read even when Content-Length says it fits", 100, 50, http.StatusRequestEntityTooLarge},
		{"a body exactly at the limit is accepted", int64(len(push)), int64(len(push)), http.StatusAccepted},
		{"a body at the limit without Content-Length is accepted", int64(len(push)), -1, http.StatusAccepted},
		{"the default limit of 1 MiB accepts a documented push", 0, int64(len(push)), http.StatusAccepted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t, func(c *Config) { c.MaxBody = tt.maxBody })
			r := delivery("Push Hook", push, nil)
			r.ContentLength = tt.contentLength
			w := serve(h, r)
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.code, w.Body)
			}
			if tt.code != http.StatusRequestEntityTooLarge {
				return
			}
			answer(t, w, http.StatusRequestEntityTooLarge, "error", "")
			if got := h.rec.got(); len(got) != 0 {
				t.Errorf("dispatched %#v, want nothing", got)
			}
			if n := count(h, labelPush, outcomeTooLarge); n != 1 {
				t.Errorf("too_large count %v, want 1", n)
			}
		})
	}
	t.Run("a 2 MiB body is refused by default", func(t *testing.T) {
		h := newTestHandler(t, nil)
		w := serve(h, delivery("Push Hook", bytes.Repeat([]byte(" "), 2<<20), nil))
		answer(t, w, http.StatusRequestEntityTooLarge, "error", "body larger than 1048576 bytes")
	})
}

func TestMalformedPayloadsOfKnownEventsAreBadRequests(t *testing.T) {
	tests := []struct {
		name  string
		event string
		body  string
		label string
	}{
		{"a push that is not JSON", "Push Hook", `{"ref": "refs/heads/main",`, labelPush},
		{"a push that is a JSON array", "Push Hook", `[1, 2]`, labelPush},
		{"a push that is null", "Push Hook", `null`, labelPush},
		{"a push with JSON after the object", "Push Hook", `{"ref":"refs/heads/x","project_id":1} {}`, labelPush},
		{"a push whose project_id is a string", "Push Hook", `{"ref":"refs/heads/x","project_id":"15"}`, labelPush},
		{"a push without a ref", "Push Hook", `{"project_id": 15}`, labelPush},
		{"a push without a project", "Push Hook", `{"ref": "refs/heads/main"}`, labelPush},
		{"an empty push body", "Push Hook", ``, labelPush},
		{"a merge request without an iid", "Merge Request Hook", `{"project":{"id":1},"object_attributes":{"action":"open"}}`, labelMergeRequest},
		{"a merge request whose attributes are a string", "Merge Request Hook", `{"project":{"id":1},"object_attributes":"open"}`, labelMergeRequest},
		{"a system hook that is not JSON", "System Hook", `{"event_name":`, labelOther},
		{"a system hook project change without a project", "System Hook", `{"event_name":"project_destroy"}`, labelProject},
		{"a system hook push without a ref", "System Hook", `{"event_name":"push","project_id":3}`, labelPush},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is a bad request", func(t *testing.T) {
			h := newTestHandler(t, nil)
			w := serve(h, delivery(tt.event, []byte(tt.body), map[string]string{headerIdempotencyKey: "k1"}))
			answer(t, w, http.StatusBadRequest, "error", "")
			if tt.body != "" && strings.Contains(w.Body.String(), tt.body) {
				t.Errorf("answer %q echoes the body", w.Body)
			}
			if got := h.rec.got(); len(got) != 0 {
				t.Errorf("dispatched %#v, want nothing", got)
			}
			if n := h.seen.len(); n != 0 {
				t.Errorf("%d keys remembered, want none", n)
			}
			if n := count(h, tt.label, outcomeBadRequest); n != 1 {
				t.Errorf("bad_request count for %s %v, want 1", tt.label, n)
			}
		})
	}
}

func TestRetriesOfADeliveryAreDispatchedOnce(t *testing.T) {
	push := fixture(t, "push.json")
	// Two branches of one git push: GitLab sends both with one event UUID.
	otherBranch := bytes.Replace(push, []byte(`"ref": "refs/heads/master"`), []byte(`"ref": "refs/heads/feature"`), 1)
	key := func(k string) map[string]string { return map[string]string{headerIdempotencyKey: k} }
	uuid := func(u string) map[string]string { return map[string]string{headerEventUUID: u} }

	type step struct {
		event   string
		body    []byte
		headers map[string]string
		advance time.Duration // of the clock, before the step
		status  string        // accepted, duplicate, ignored, bad_request or unauthorized
	}
	tests := []struct {
		name           string
		steps          []step
		wantDispatched int
	}{
		{"a retry with the same Idempotency-Key is a duplicate", []step{
			{"Push Hook", push, key("a"), 0, "accepted"},
			{"Push Hook", push, key("a"), time.Minute, "duplicate"},
			{"Push Hook", push, key("a"), 30 * time.Minute, "duplicate"},
		}, 1},
		{"a retry with a wrong token is refused, not a duplicate", []step{
			{"Push Hook", push, key("a"), 0, "accepted"},
			{"Push Hook", push, map[string]string{headerIdempotencyKey: "a", headerToken: "wrong"}, 0, "unauthorized"},
		}, 1},
		{"a different Idempotency-Key dispatches again", []step{
			{"Push Hook", push, key("a"), 0, "accepted"},
			{"Push Hook", push, key("b"), 0, "accepted"},
		}, 2},
		{"without Idempotency-Key, a retry with the same event UUID is a duplicate", []step{
			{"Push Hook", push, uuid("u"), 0, "accepted"},
			{"Push Hook", push, uuid("u"), 0, "duplicate"},
		}, 1},
		{"two branches of one push share an event UUID and are both dispatched", []step{
			{"Push Hook", push, uuid("u"), 0, "accepted"},
			{"Push Hook", otherBranch, uuid("u"), 0, "accepted"},
		}, 2},
		{"Idempotency-Key wins over the event UUID", []step{
			{"Push Hook", push, map[string]string{headerIdempotencyKey: "a", headerEventUUID: "u"}, 0, "accepted"},
			{"Push Hook", push, map[string]string{headerIdempotencyKey: "b", headerEventUUID: "u"}, 0, "accepted"},
		}, 2},
		{"a delivery without a key is always dispatched", []step{
			{"Push Hook", push, nil, 0, "accepted"},
			{"Push Hook", push, nil, 0, "accepted"},
		}, 2},
		{"a key is forgotten after the TTL", []step{
			{"Push Hook", push, key("a"), 0, "accepted"},
			{"Push Hook", push, key("a"), time.Hour, "accepted"},
		}, 2},
		{"a key refused as a bad request is not remembered", []step{
			{"Push Hook", []byte(`{`), key("a"), 0, "bad_request"},
			{"Push Hook", push, key("a"), 0, "accepted"},
		}, 1},
		{"a key of an ignored event is not remembered", []step{
			{"Note Hook", fixture(t, "note.json"), key("a"), 0, "ignored"},
			{"Push Hook", push, key("a"), 0, "accepted"},
		}, 1},
		{"a key refused for its token is not remembered", []step{
			{"Push Hook", push, map[string]string{headerIdempotencyKey: "a", headerToken: "wrong"}, 0, "unauthorized"},
			{"Push Hook", push, key("a"), 0, "accepted"},
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := testNow
			h := newTestHandler(t, func(c *Config) { c.Now = func() time.Time { return now } })
			for i, s := range tt.steps {
				now = now.Add(s.advance)
				w := serve(h, delivery(s.event, s.body, s.headers))
				switch s.status {
				case "accepted":
					answer(t, w, http.StatusAccepted, "status", "accepted")
				case "duplicate", "ignored":
					answer(t, w, http.StatusOK, "status", s.status)
				case "bad_request":
					answer(t, w, http.StatusBadRequest, "error", "")
				case "unauthorized":
					answer(t, w, http.StatusUnauthorized, "error", "unauthorized")
				}
				if t.Failed() {
					t.Fatalf("at step %d", i)
				}
			}
			if got := h.rec.got(); len(got) != tt.wantDispatched {
				t.Errorf("dispatched %d events, want %d", len(got), tt.wantDispatched)
			}
		})
	}
}

func TestConcurrentRetriesAreDispatchedOnce(t *testing.T) {
	h := newTestHandler(t, nil)
	push := fixture(t, "push.json")
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			serve(h, delivery("Push Hook", push, map[string]string{headerIdempotencyKey: "same"}))
		})
	}
	wg.Wait()
	if got := h.rec.got(); len(got) != 1 {
		t.Errorf("dispatched %d events, want 1", len(got))
	}
	if a, d := count(h, labelPush, outcomeAccepted), count(h, labelPush, outcomeDuplicate); a != 1 || d != 15 {
		t.Errorf("accepted %v and duplicate %v, want 1 and 15", a, d)
	}
}

// signed returns the Standard Webhooks headers of body, signed with key at
// ts.
func signed(key []byte, id string, ts time.Time, body []byte) map[string]string {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	return map[string]string{
		"webhook-id":        id,
		"webhook-timestamp": stamp,
		"webhook-signature": "v1," + base64.StdEncoding.EncodeToString(sign(key, id, stamp, body)),
	}
}

func TestSignedDeliveriesNeedAValidRecentSignature(t *testing.T) {
	key := []byte("a-signing-key-of-32-bytes-length")
	otherKey := []byte("another-key-of-thirty-two-bytes!")
	push := fixture(t, "push.json")
	with := func(h map[string]string, k, v string) map[string]string {
		h[k] = v
		return h
	}
	tests := []struct {
		name    string
		body    []byte // sent; the headers are made for push
		headers map[string]string
		code    int
	}{
		{"a valid signature is accepted", push, signed(key, "msg_1", testNow, push), http.StatusAccepted},
		{"a signature 4 minutes old is accepted", push, signed(key, "msg_1", testNow.Add(-4*time.Minute), push), http.StatusAccepted},
		{"a signature 4 minutes ahead is accepted", push, signed(key, "msg_1", testNow.Add(4*time.Minute), push), http.StatusAccepted},
		{"several signatures of which one is valid are accepted", push,
			with(signed(key, "msg_1", testNow, push), "webhook-signature",
				"v1,"+base64.StdEncoding.EncodeToString(sign(otherKey, "msg_1", strconv.FormatInt(testNow.Unix(), 10), push))+
					" v1a,c29tZXRoaW5n "+signed(key, "msg_1", testNow, push)["webhook-signature"]),
			http.StatusAccepted},
		{"a tampered body is refused", append(bytes.Clone(push), ' '), signed(key, "msg_1", testNow, push), http.StatusUnauthorized},
		{"a signature made with another secret is refused", push, signed(otherKey, "msg_1", testNow, push), http.StatusUnauthorized},
		{"a signature 6 minutes old is refused", push, signed(key, "msg_1", testNow.Add(-6*time.Minute), push), http.StatusUnauthorized},
		{"a signature 6 minutes ahead is refused", push, signed(key, "msg_1", testNow.Add(6*time.Minute), push), http.StatusUnauthorized},
		{"a signature of another webhook-id is refused", push, with(signed(key, "msg_1", testNow, push), "webhook-id", "msg_2"), http.StatusUnauthorized},
		{"a timestamp changed after signing is refused", push,
			with(signed(key, "msg_1", testNow, push), "webhook-timestamp", strconv.FormatInt(testNow.Unix()+1, 10)), http.StatusUnauthorized},
		{"a missing webhook-signature is refused", push, with(signed(key, "msg_1", testNow, push), "webhook-signature", ""), http.StatusUnauthorized},
		{"a missing webhook-id is refused", push, with(signed(key, "msg_1", testNow, push), "webhook-id", ""), http.StatusUnauthorized},
		{"a missing webhook-timestamp is refused", push, with(signed(key, "msg_1", testNow, push), "webhook-timestamp", ""), http.StatusUnauthorized},
		{"no signature headers at all are refused", push, nil, http.StatusUnauthorized},
		{"a timestamp that is not a number is refused", push, with(signed(key, "msg_1", testNow, push), "webhook-timestamp", "yesterday"), http.StatusUnauthorized},
		{"a signature that is not base64 is refused", push, with(signed(key, "msg_1", testNow, push), "webhook-signature", "v1,!!!"), http.StatusUnauthorized},
		{"a valid signature under another version is refused", push,
			with(signed(key, "msg_1", testNow, push), "webhook-signature",
				strings.Replace(signed(key, "msg_1", testNow, push)["webhook-signature"], "v1,", "v2,", 1)), http.StatusUnauthorized},
		{"a valid signature with a wrong token is refused", push,
			with(signed(key, "msg_1", testNow, push), headerToken, "wrong"), http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newTestHandler(t, func(c *Config) { c.SigningSecret = key })
			w := serve(h, delivery("Push Hook", tt.body, tt.headers))
			if w.Code != tt.code {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.code, w.Body)
			}
			got := h.rec.got()
			if tt.code == http.StatusAccepted && len(got) != 1 {
				t.Errorf("dispatched %d events, want 1", len(got))
			}
			if tt.code == http.StatusUnauthorized {
				answer(t, w, http.StatusUnauthorized, "error", "unauthorized")
				if len(got) != 0 {
					t.Errorf("dispatched %#v, want nothing", got)
				}
				if n := h.seen.len(); n != 0 {
					t.Errorf("%d keys remembered, want none", n)
				}
			}
		})
	}
	t.Run("signature headers are not needed when no signing secret is set", func(t *testing.T) {
		h := newTestHandler(t, nil)
		w := serve(h, delivery("Push Hook", push, signed(otherKey, "msg_1", testNow.Add(-time.Hour), push)))
		answer(t, w, http.StatusAccepted, "status", "accepted")
	})
}

func TestServeHTTPReturnsBeforeTheDispatchedWorkEnds(t *testing.T) {
	// The Dispatcher contract: Dispatch hands off and returns; the work
	// goes on after GitLab has its answer, with a context that the end of
	// the request does not cancel.
	release := make(chan struct{})
	done := make(chan error, 1)
	d := DispatcherFunc(func(ctx context.Context, e any) {
		go func() {
			<-release
			done <- ctx.Err()
		}()
	})
	h, err := NewHandler(Config{Secret: []byte(testSecret)}, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := delivery("Push Hook", fixture(t, "push.json"), nil).WithContext(ctx)
	w := serve(h, r)
	cancel() // as net/http does when ServeHTTP returns
	answer(t, w, http.StatusAccepted, "status", "accepted")
	select {
	case <-done:
		t.Fatal("the dispatched work ended before it was released")
	default:
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the dispatched work's context was cancelled with the request: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the dispatched work never ended")
	}
}

func TestMetricsCountEveryOutcome(t *testing.T) {
	h := newTestHandler(t, nil)
	push := fixture(t, "push.json")
	steps := []*http.Request{
		delivery("Push Hook", push, map[string]string{headerIdempotencyKey: "a"}),                    // push accepted
		delivery("Push Hook", push, map[string]string{headerIdempotencyKey: "a"}),                    // push duplicate
		delivery("Push Hook", push, map[string]string{headerToken: ""}),                              // push unauthorized
		delivery("Merge Request Hook", fixture(t, "merge_request_open.json"), nil),                   // merge_request accepted
		delivery("System Hook", fixture(t, "system_project_rename.json"), nil),                       // project accepted
		delivery("System Hook", fixture(t, "system_push.json"), nil),                                 // push accepted
		delivery("System Hook", fixture(t, "system_project_update.json"), nil),                       // other ignored
		delivery("System Hook", fixture(t, "system_push.json"), map[string]string{headerToken: "x"}), // other unauthorized: not decoded
		delivery("Tag Push Hook", fixture(t, "tag_push.json"), nil),                                  // other ignored
		delivery("Push Hook", []byte(`{`), nil),                                                      // push bad_request
	}
	get := delivery("Push Hook", nil, nil)
	get.Method = http.MethodGet
	steps = append(steps, get) // push method_not_allowed
	for _, r := range steps {
		serve(h, r)
	}
	want := map[[2]string]float64{
		{labelPush, outcomeAccepted}:         2,
		{labelPush, outcomeDuplicate}:        1,
		{labelPush, outcomeUnauthorized}:     1,
		{labelPush, outcomeBadRequest}:       1,
		{labelPush, outcomeMethodNotAllowed}: 1,
		{labelMergeRequest, outcomeAccepted}: 1,
		{labelProject, outcomeAccepted}:      1,
		{labelOther, outcomeIgnored}:         2,
		{labelOther, outcomeUnauthorized}:    1,
	}
	for _, e := range allEvents {
		for _, o := range allOutcomes {
			if got := count(h, e, o); got != want[[2]string{e, o}] {
				t.Errorf("wm_webhook_requests_total{event=%q,outcome=%q} = %v, want %v", e, o, got, want[[2]string{e, o}])
			}
		}
	}

	// Both metrics are registered, every counter series exists from the
	// start, and every request was timed.
	if n, err := testutil.GatherAndCount(h.reg, "wm_webhook_requests_total"); err != nil || n != len(allEvents)*len(allOutcomes) {
		t.Errorf("registry has %d wm_webhook_requests_total series (%v), want %d", n, err, len(allEvents)*len(allOutcomes))
	}
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var observed uint64
	for _, f := range families {
		if f.GetName() == "wm_webhook_duration_seconds" {
			observed = f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	if observed != uint64(len(steps)) {
		t.Errorf("wm_webhook_duration_seconds counted %d requests, want %d", observed, len(steps))
	}
}

func TestNewHandlerRefusesWhatCannotWork(t *testing.T) {
	rec := &recorder{}
	tests := []struct {
		name string
		cfg  Config
		d    Dispatcher
	}{
		{"no dispatcher is an error", Config{Secret: []byte("s")}, nil},
		{"a negative body limit is an error", Config{Secret: []byte("s"), MaxBody: -1}, rec},
		{"a negative TTL is an error", Config{Secret: []byte("s"), IdempotencyTTL: -time.Second}, rec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewHandler(tt.cfg, tt.d, nil); err == nil {
				t.Error("NewHandler succeeded")
			}
		})
	}
	t.Run("a second handler on one registry is an error and leaves the first one's metrics", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		if _, err := NewHandler(Config{Secret: []byte("s")}, rec, reg); err != nil {
			t.Fatal(err)
		}
		if _, err := NewHandler(Config{Secret: []byte("s")}, rec, reg); err == nil {
			t.Error("registering twice succeeded")
		}
		if n, _ := testutil.GatherAndCount(reg, "wm_webhook_requests_total", "wm_webhook_duration_seconds"); n != len(allEvents)*len(allOutcomes)+1 {
			t.Errorf("registry has %d series, want the first handler's", n)
		}
	})
	t.Run("the signing secret is copied", func(t *testing.T) {
		key := []byte("a-signing-key-of-32-bytes-length")
		h, err := NewHandler(Config{Secret: []byte(testSecret), SigningSecret: key, Now: func() time.Time { return testNow }}, rec, nil)
		if err != nil {
			t.Fatal(err)
		}
		push := fixture(t, "push.json")
		headers := signed(key, "msg_1", testNow, push)
		key[0] ^= 0xff
		answer(t, serve(h, delivery("Push Hook", push, headers)), http.StatusAccepted, "status", "accepted")
	})
}

// BenchmarkPushHook is the cost of one accepted push: token check, read,
// decode of the documented payload (two commits), idempotency record and
// dispatch.
func BenchmarkPushHook(b *testing.B) {
	h, err := NewHandler(Config{Secret: []byte(testSecret)}, DispatcherFunc(func(context.Context, any) {}), nil)
	if err != nil {
		b.Fatal(err)
	}
	push := fixture(b, "push.json")
	body := bytes.NewReader(push)
	r := delivery("Push Hook", nil, nil)
	r.Body = io.NopCloser(body)
	r.ContentLength = int64(len(push))
	b.SetBytes(int64(len(push)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		body.Reset(push)
		r.Header.Set(headerIdempotencyKey, strconv.Itoa(i))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusAccepted {
			b.Fatalf("status %d", w.Code)
		}
	}
}
