package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/store"
)

// Prefix is where the API is served: mount Server.Handler there.
const Prefix = "/api/v1/"

// Host is one Docker host as the API uses it; *docker.Engine and
// *docker.Fake are two. Every method but Name and ListOwned refuses, as
// not found, a container that is not owner's.
type Host interface {
	Name() string
	ListOwned(ctx context.Context, owner string) ([]core.Container, error)
	Logs(ctx context.Context, owner, name string, o docker.LogOptions) (io.ReadCloser, error)
	Restart(ctx context.Context, owner, name string, timeout time.Duration) error
	CopyFrom(ctx context.Context, owner, name, path string) (io.ReadCloser, error)
	CopyTo(ctx context.Context, owner, name, dir string, content io.Reader) error
	Exec(ctx context.Context, owner, name string, o docker.ExecOptions) (*docker.Exec, error)
}

// State is the reconciler's state store as the API reads it (what each
// owner's repos are, as passes recorded them) and writes the audit log
// into; *store.Store is one.
type State interface {
	OwnerRepos(owner string) ([]core.RepoState, error)
	Repos() ([]core.RepoState, error)
	AddAudit(e store.AuditEntry) error
	Audit(since time.Time, limit int) ([]store.AuditEntry, error)
}

// Config is what a Server needs.
type Config struct {
	// Auth says who a token belongs to.
	Auth Authenticator
	// Hosts are the Docker hosts, State the state store.
	Hosts []Host
	State State
	// Cluster, when not nil, is the Kubernetes cluster: pod logs, exec
	// and copies, and students' credentials.
	Cluster Cluster
	// Addresses maps a host's name to the address students reach its
	// published ports at; a host not in it is reached at its name.
	Addresses map[string]string
	// MaxSessions bounds the exec sessions, followed log streams and
	// copies one account holds open at once (default 4).
	MaxSessions int
	// IdleTimeout ends a stream or a session that moved nothing for that
	// long (default 15m).
	IdleTimeout time.Duration
	// Stall is how long a stream waits for a slow client to take its next
	// write (or to send the next part of an upload) before it is cut off
	// (default 1m).
	Stall time.Duration
	// MaxCopyBytes bounds one copy in either direction (default 1 GiB).
	MaxCopyBytes int64
	// AllowedOrigins are the origins (scheme://host[:port]) besides the
	// server's own whose pages may open an exec WebSocket.
	AllowedOrigins []string
	// Rate is how many requests a second one account may make on
	// average (default 10), Burst how many at once (default 40); past
	// them, 429.
	Rate  float64
	Burst int
	// ClientAddr, when set, names a request's client in the audit log
	// (behind a reverse proxy, from X-Forwarded-For); by default its
	// remote address.
	ClientAddr func(r *http.Request) string
	// Waker, when set, wakes containers idle culling stopped.
	Waker Waker
	// Log receives one line per access; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Server is the access API. It is safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	sessions map[string]int           // account (or "*") → open sessions
	limiters map[string]*rate.Limiter // account (or "*") → its rate
}

// maxLimiters bounds the accounts whose rates are remembered; past it
// they all start afresh.
const maxLimiters = 10_000

// allow takes one request from id's rate.
func (s *Server) allow(id Identity) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := id.who()
	l := s.limiters[key]
	if l == nil {
		if len(s.limiters) >= maxLimiters {
			clear(s.limiters)
		}
		l = rate.NewLimiter(rate.Limit(s.cfg.Rate), s.cfg.Burst)
		s.limiters[key] = l
	}
	return l.Allow()
}

// New returns a Server for cfg, with its defaults filled in.
func New(cfg Config) *Server {
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 4
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 15 * time.Minute
	}
	if cfg.MaxCopyBytes <= 0 {
		cfg.MaxCopyBytes = 1 << 30
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Stall <= 0 {
		cfg.Stall = defaultStall
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 10
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 40
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log, sessions: map[string]int{}, limiters: map[string]*rate.Limiter{}}
}

// Handler serves the API under Prefix.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern, action string, h func(w http.ResponseWriter, r *http.Request, id Identity) outcome) {
		mux.HandleFunc(pattern, s.authenticated(action, h))
	}
	route("GET /api/v1/whoami", "whoami", s.whoami)
	route("GET /api/v1/repos", "list-repos", s.listRepos)
	route("GET /api/v1/containers", "list-containers", s.listContainers)
	route("GET /api/v1/pods", "list-pods", s.listPods)
	route("GET /api/v1/sifs", "list-sifs", s.listSIFs)
	route("GET /api/v1/containers/{name}/logs", "logs", s.logs)
	route("POST /api/v1/containers/{name}/restart", "restart", s.restart)
	route("POST /api/v1/containers/{name}/wake", "wake", s.wake)
	route("GET /api/v1/containers/{name}/archive", "cp-out", s.copyOut)
	route("PUT /api/v1/containers/{name}/archive", "cp-in", s.copyIn)
	route("GET /api/v1/containers/{name}/exec", "exec", s.exec)
	route("GET /api/v1/pods/{name}/logs", "pod-logs", s.podLogs)
	route("GET /api/v1/pods/{name}/exec", "pod-exec", s.podExec)
	route("GET /api/v1/pods/{name}/archive", "pod-cp-out", s.podCopyOut)
	route("PUT /api/v1/pods/{name}/archive", "pod-cp-in", s.podCopyIn)
	route("POST /api/v1/kubeconfig", "kubeconfig", s.kubeconfig)
	route("GET /api/v1/audit", "audit", s.audit)
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API endpoint")
	})
	return mux
}

// outcome is how a request ended, for the audit log: the status
// answered, what it was about and a word on the result.
type outcome struct {
	status int
	target string
	result string
}

// ok is the outcome of a request answered 200 about target.
func ok(target string) outcome { return outcome{status: http.StatusOK, target: target, result: "ok"} }

// authenticated finds the request's identity, answers 400, 401 or 503
// when there is none, runs h otherwise, and audits the request.
func (s *Server) authenticated(action string, h func(w http.ResponseWriter, r *http.Request, id Identity) outcome) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, o, done := s.identify(w, r)
		if !done {
			o = h(w, r, id)
		}
		s.record(r, id, action, o)
	}
}

// identify authenticates r; done says it answered r already (401, 503 or
// 400), with the outcome.
func (s *Server) identify(w http.ResponseWriter, r *http.Request) (Identity, outcome, bool) {
	token, inURL := tokenOf(r)
	if inURL {
		writeError(w, http.StatusBadRequest, "a token in the URL is refused (it would be logged): send it in the Authorization: Bearer header")
		return Identity{}, outcome{status: http.StatusBadRequest, result: "token in URL"}, true
	}
	id, err := s.cfg.Auth.Authenticate(r.Context(), token)
	switch {
	case err == nil && !s.allow(id):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, "too many requests: slow down")
		return id, outcome{status: http.StatusTooManyRequests, result: "rate limited"}, true
	case err == nil:
		return id, outcome{}, false
	case errors.Is(err, ErrUnavailable):
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, "GitLab cannot be reached to check your token, and it was not checked recently enough to be trusted: try again in a minute")
		return Identity{}, outcome{status: http.StatusServiceUnavailable, result: "unavailable"}, true
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="whalemountain"`)
		writeError(w, http.StatusUnauthorized, "a valid GitLab token is needed, in the Authorization: Bearer header")
		return Identity{}, outcome{status: http.StatusUnauthorized, result: "unauthenticated"}, true
	}
}

// record writes the audit entry of a request: a log line and an entry in
// the state store.
func (s *Server) record(r *http.Request, id Identity, action string, o outcome) {
	e := store.AuditEntry{
		Time: s.cfg.Now().UTC(), Who: id.who(), Admin: id.Admin, Action: action, Target: o.target,
		Status: o.status, Result: o.result, Client: remoteHost(r),
	}
	if s.cfg.ClientAddr != nil {
		e.Client = s.cfg.ClientAddr(r)
	}
	s.log.Info("access", "who", e.Who, "admin", e.Admin, "action", e.Action, "target", e.Target, "status", e.Status, "result", e.Result, "client", e.Client)
	if s.cfg.State != nil {
		if err := s.cfg.State.AddAudit(e); err != nil {
			s.log.Error("audit entry not stored", "err", err)
		}
	}
}

// remoteHost is the request's remote host.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// writeJSON answers v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error is the body of every answer that is not 2xx.
type Error struct {
	Error string `json:"error"`
}

// writeError answers status with msg.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, Error{Error: msg})
}

// fail answers status with msg and returns the outcome.
func fail(w http.ResponseWriter, status int, target, msg string) outcome {
	writeError(w, status, msg)
	return outcome{status: status, target: target, result: msg}
}

// owners is whose resources a listing covers: the caller's own; for an
// admin, ?owner= or everyone's ("" in the list, asked as ?owner=*).
func owners(r *http.Request, id Identity) (string, bool) {
	if o := r.URL.Query().Get("owner"); o == "*" {
		return "", id.Admin
	} else if o != "" {
		return o, id.Admin || o == id.Account
	}
	if id.Admin && id.Account == "" {
		return "", true
	}
	return id.Account, id.Account != ""
}

// repos lists the repos of owner ("" for everyone's) from the state.
func (s *Server) repos(owner string) ([]core.RepoState, error) {
	if owner == "" {
		return s.cfg.State.Repos()
	}
	return s.cfg.State.OwnerRepos(owner)
}

func (s *Server) whoami(w http.ResponseWriter, _ *http.Request, id Identity) outcome {
	writeJSON(w, http.StatusOK, id)
	return ok("")
}

// Repo is a repo as the API lists it.
type Repo struct {
	Key              string           `json:"key"`
	Owner            string           `json:"owner"`
	Branch           string           `json:"branch"`
	AppliedRevision  string           `json:"appliedRevision,omitempty"`
	ObservedRevision string           `json:"observedRevision,omitempty"`
	Conditions       []core.Condition `json:"conditions,omitempty"`
	LastPass         time.Time        `json:"lastPass,omitzero"`
	// Usage is what the applied revision counts against the owner's
	// quota.
	Usage core.Usage `json:"usage"`
}

func (s *Server) listRepos(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	owner, allowed := owners(r, id)
	if !allowed {
		return fail(w, http.StatusForbidden, owner, "you may list only your own repos")
	}
	states, err := s.repos(owner)
	if err != nil {
		return fail(w, http.StatusInternalServerError, owner, "the state could not be read")
	}
	out := []Repo{}
	for _, st := range states {
		out = append(out, Repo{Key: st.Key, Owner: st.Owner, Branch: st.Branch, AppliedRevision: st.AppliedRevision,
			ObservedRevision: st.ObservedRevision, Conditions: st.Conditions, LastPass: st.LastPass, Usage: st.Usage})
	}
	writeJSON(w, http.StatusOK, out)
	return ok(owner)
}

// Container is a container as the API lists it.
type Container struct {
	// Name is the container's full name, "<owner>_<name>"; LocalName its
	// name in wm.yaml.
	Name      string `json:"name"`
	LocalName string `json:"localName"`
	Owner     string `json:"owner"`
	Repo      string `json:"repo"`
	Host      string `json:"host"`
	State     string `json:"state"`
	Health    string `json:"health,omitempty"`
	// Addresses are "host:port" for each published guest port.
	Addresses map[string]string `json:"addresses,omitempty"`
	// GPUs are the host's GPU devices it holds.
	GPUs      []string  `json:"gpus,omitempty"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	// Reason is the reason of its repo's Ready condition at the last
	// pass (Applied, ImageNotFound, ...), and LastPass when that was.
	Reason   core.Reason `json:"reason,omitempty"`
	LastPass time.Time   `json:"lastPass,omitzero"`
}

func (s *Server) listContainers(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	owner, allowed := owners(r, id)
	if !allowed {
		return fail(w, http.StatusForbidden, owner, "you may list only your own containers")
	}
	var who []string
	if owner != "" {
		who = []string{owner}
	} else {
		states, err := s.cfg.State.Repos()
		if err != nil {
			return fail(w, http.StatusInternalServerError, owner, "the state could not be read")
		}
		for _, st := range states {
			if !slices.Contains(who, st.Owner) {
				who = append(who, st.Owner)
			}
		}
	}
	passes := map[string]core.RepoState{}
	if states, err := s.repos(owner); err == nil {
		for _, st := range states {
			passes[st.Key] = st
		}
	}
	out := []Container{}
	for _, h := range s.cfg.Hosts {
		for _, o := range who {
			list, err := h.ListOwned(r.Context(), o)
			if err != nil {
				return fail(w, http.StatusBadGateway, owner, "Docker host "+h.Name()+" did not answer")
			}
			for _, c := range list {
				x := s.container(h.Name(), c)
				if st, ok := passes[c.Repo]; ok {
					x.LastPass = st.LastPass
					if cond := st.Condition(core.Ready); cond != nil {
						x.Reason = cond.Reason
					}
				}
				out = append(out, x)
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return ok(owner)
}

// container is c of host as the API shows it.
func (s *Server) container(host string, c core.Container) Container {
	addr := host
	if a, ok := s.cfg.Addresses[host]; ok {
		addr = a
	}
	out := Container{Name: c.Name, LocalName: c.LocalName, Owner: c.Owner, Repo: c.Repo, Host: host, State: c.State, Health: c.Health, StartedAt: c.StartedAt, GPUs: c.GPUDevices}
	for _, p := range c.Ports {
		if out.Addresses == nil {
			out.Addresses = map[string]string{}
		}
		out.Addresses[strconv.Itoa(p.Guest)] = net.JoinHostPort(addr, strconv.Itoa(p.Host))
	}
	return out
}

// Pod is a pod as the API lists it.
type Pod struct {
	core.PodStatus
	Owner string `json:"owner"`
	Repo  string `json:"repo"`
}

func (s *Server) listPods(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	owner, allowed := owners(r, id)
	if !allowed {
		return fail(w, http.StatusForbidden, owner, "you may list only your own pods")
	}
	states, err := s.repos(owner)
	if err != nil {
		return fail(w, http.StatusInternalServerError, owner, "the state could not be read")
	}
	out := []Pod{}
	for _, st := range states {
		for _, p := range st.Pods {
			out = append(out, Pod{PodStatus: p, Owner: st.Owner, Repo: st.Key})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return ok(owner)
}

// SIF is a Singularity image as the API lists it.
type SIF struct {
	Name   string `json:"name"`
	Owner  string `json:"owner"`
	Repo   string `json:"repo"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Image  string `json:"image"`
	// URL is the path it is downloaded from on this server.
	URL string `json:"url"`
}

func (s *Server) listSIFs(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	owner, allowed := owners(r, id)
	if !allowed {
		return fail(w, http.StatusForbidden, owner, "you may list only your own SIFs")
	}
	states, err := s.repos(owner)
	if err != nil {
		return fail(w, http.StatusInternalServerError, owner, "the state could not be read")
	}
	out := []SIF{}
	for _, st := range states {
		for _, f := range st.SIFs {
			out = append(out, SIF{Name: f.Name, Owner: st.Owner, Repo: st.Key, SHA256: f.SHA256, Size: f.Size, Image: f.Image,
				URL: "/artifacts/" + st.Owner + "/" + f.Name + ".sif"})
		}
	}
	writeJSON(w, http.StatusOK, out)
	return ok(owner)
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	if !id.Admin {
		return fail(w, http.StatusForbidden, "", "the audit log is for admins")
	}
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return fail(w, http.StatusBadRequest, "", "since is not an RFC 3339 time")
		}
		since = t
	}
	entries, err := s.cfg.State.Audit(since, 1000)
	if err != nil {
		return fail(w, http.StatusInternalServerError, "", "the audit log could not be read")
	}
	writeJSON(w, http.StatusOK, entries)
	return ok("")
}

// target is a container a request is about: its owner, full name and
// host.
type target struct {
	owner, name string
	host        Host
	// running is whether the container was running when it was found.
	running bool
}

// resolve finds the container a request names: a name of the caller's
// own wm.yaml ("web"), or a full name ("alice_web"). A full name of
// another owner's is 403 for anyone but an admin, decided from the name
// alone, before anything is looked up, so that the answer says nothing of
// whether it exists; a name of one's own that no host has is 404. The
// hosts then check the container's labels again.
func (s *Server) resolve(ctx context.Context, w http.ResponseWriter, r *http.Request, id Identity) (target, *outcome) {
	raw := r.PathValue("name")
	owner, local, full := strings.Cut(raw, "_")
	if !full {
		owner, local = id.Account, raw
	}
	if owner == "" || local == "" || !validLabel(owner) || !validLabel(local) {
		o := fail(w, http.StatusNotFound, raw, "no container "+strconv.Quote(raw)+": name one of yours, such as web, or alice_web")
		return target{}, &o
	}
	name := core.ObjectName(owner, local)
	if owner != id.Account && !id.Admin {
		o := fail(w, http.StatusForbidden, name, "container "+name+" is not yours")
		return target{}, &o
	}
	for _, h := range s.cfg.Hosts {
		list, err := h.ListOwned(ctx, owner)
		if err != nil {
			o := fail(w, http.StatusBadGateway, name, "Docker host "+h.Name()+" did not answer")
			return target{}, &o
		}
		for _, c := range list {
			if c.Name == name && c.Owner == owner {
				return target{owner: owner, name: name, host: h, running: c.Running}, nil
			}
		}
	}
	o := fail(w, http.StatusNotFound, name, "you have no container "+name)
	return target{}, &o
}

// validLabel reports whether s is a DNS label: what accounts and wm.yaml
// names are.
func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, r := range s {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

// engineError answers an error of a host's.
func engineError(w http.ResponseWriter, name string, err error) outcome {
	switch {
	case errors.Is(err, docker.ErrNotRunning):
		return fail(w, http.StatusConflict, name, "container "+name+" is not running")
	case errors.Is(err, fault.NotFound):
		return fail(w, http.StatusNotFound, name, "not found in "+name)
	case errors.Is(err, fault.Unreachable):
		return fail(w, http.StatusBadGateway, name, "the Docker host of "+name+" did not answer")
	default:
		return fail(w, http.StatusInternalServerError, name, fmt.Sprintf("%s: the Docker host failed", name))
	}
}

// acquire takes one of id's sessions; false when all are in use.
func (s *Server) acquire(id Identity) (release func(), ok bool) {
	key := id.who()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[key] >= s.cfg.MaxSessions {
		return nil, false
	}
	s.sessions[key]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.sessions[key]--; s.sessions[key] <= 0 {
				delete(s.sessions, key)
			}
		})
	}, true
}

// tooMany answers 429 for a caller whose sessions are all in use.
func (s *Server) tooMany(w http.ResponseWriter, name string) outcome {
	w.Header().Set("Retry-After", "10")
	return fail(w, http.StatusTooManyRequests, name, fmt.Sprintf("you have %d sessions, streams and copies open already, the most at once: close one first", s.cfg.MaxSessions))
}

// Artifacts wraps a SIF download handler: the request is authenticated
// first (401 or 503 answered here, as for the API), and the handler's
// authorize lets through the owner's own and an admin's. Every download
// is audited.
func (s *Server) Artifacts(newHandler func(authorize func(r *http.Request, owner string) bool) http.Handler) http.Handler {
	h := newHandler(func(r *http.Request, owner string) bool {
		id, ok := r.Context().Value(identityKey{}).(Identity)
		return ok && (id.Admin || (id.Account != "" && id.Account == owner))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, o, done := s.identify(w, r)
		if !done {
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			h.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
			o = outcome{status: rec.status, target: r.URL.Path, result: http.StatusText(rec.status)}
		}
		s.record(r, id, "sif-download", o)
	})
}

// identityKey carries an Identity in a request's context.
type identityKey struct{}

// statusRecorder notes the status a handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
