package gitlabtest

import (
	"crypto/subtle"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	gitlab "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
)

// GitLab is one GitLab instance served on 127.0.0.1: the REST API under
// /api/v4 and git over smart HTTP for every project. Tests shape its state
// through the methods below and the code under test reaches it over HTTP.
type GitLab struct {
	// fixed at New
	t      testing.TB
	token  string
	srv    *httptest.Server
	root   string       // folder of the bare repositories, one per project id
	gitCGI http.Handler // git http-backend over root
	bot    *user        // the owner of token, an owner of every group

	mu sync.Mutex

	// failure injection and recording
	down          bool
	hang          func(request string) bool
	hanging       int
	closed        chan struct{} // closed when the test ends, releasing hung requests
	requests      []string
	unimplemented []string

	// model; every field below is guarded by mu
	users     map[string]*user // by username
	groups    map[int]*Group
	projects  map[int]*Project
	redirects map[string]int // lower-cased old full path of a project to its id
	pipelines []*pipeline
	statuses  []*commitStatus
	seq       sequences
}

// sequences hands out ids. Each kind of object has its own range so that a
// test confusing, say, a group id with a project id fails instead of
// passing by luck.
type sequences struct {
	user, group, project, mr, note, status, pipeline int
}

// user is a GitLab account: the token's owner or an author of notes.
type user struct {
	id       int
	username string
	name     string
	email    string
	created  time.Time
}

// New starts a GitLab whose only valid token is token, owned by the user
// "wm-bot", an owner of every group. The server is closed when the test
// ends.
func New(t testing.TB, token string) *GitLab {
	t.Helper()
	if token == "" {
		t.Fatal("gitlabtest: the token must not be empty")
	}
	root := t.TempDir()
	g := &GitLab{
		t:         t,
		token:     token,
		root:      root,
		gitCGI:    gittest.Handler(t, root),
		users:     map[string]*user{},
		groups:    map[int]*Group{},
		projects:  map[int]*Project{},
		redirects: map[string]int{},
		closed:    make(chan struct{}),
		seq: sequences{
			user: 1, group: 1000, project: 2000, mr: 5000,
			note: 7000, status: 9000, pipeline: 3000,
		},
	}
	g.bot = g.userLocked("wm-bot")
	g.bot.name = "WhaleMountain"
	g.srv = httptest.NewServer(g)
	t.Cleanup(func() {
		close(g.closed) // Close waits for the requests still hung
		g.srv.Close()
	})
	return g
}

// URL returns the base URL, such as http://127.0.0.1:PORT, without a
// trailing slash: the API is under URL()+"/api/v4".
func (g *GitLab) URL() string { return g.srv.URL }

// Token returns the one token the instance accepts.
func (g *GitLab) Token() string { return g.token }

// BotUsername returns the username of the token's owner: the author of the
// statuses and notes the code under test creates.
func (g *GitLab) BotUsername() string { return g.bot.username }

// Client returns a client-go client pointed at the instance with the token.
// It keeps client-go's retry policy (server errors are retried five times)
// but waits only a millisecond between tries, so tests of an unreachable
// GitLab stay fast; opts are applied after these defaults, so
// gitlab.WithoutRetries() and the like override them.
func (g *GitLab) Client(t testing.TB, opts ...gitlab.ClientOptionFunc) *gitlab.Client {
	t.Helper()
	all := append([]gitlab.ClientOptionFunc{
		gitlab.WithBaseURL(g.URL()),
		gitlab.WithCustomBackoff(func(_, _ time.Duration, _ int, _ *http.Response) time.Duration {
			return time.Millisecond
		}),
	}, opts...)
	c, err := gitlab.NewClient(g.token, all...)
	if err != nil {
		t.Fatalf("gitlabtest: new client: %v", err)
	}
	return c
}

// SetDown makes every request, API and git alike, answer 503 Service
// Unavailable while down is true, as a GitLab behind a proxy that lost it.
func (g *GitLab) SetDown(down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
}

// Hang makes every request for which match returns true hang: it is
// never answered, and its handler returns only once the client gives up
// on it (the request's context ends, as when the client's context is
// cancelled or its deadline passes) or the test ends, as a GitLab whose
// backend hangs behind its proxy. match is given the request in the form
// of Requests, "GET /api/v4/projects/2000"; the request is recorded in
// Requests all the same. A nil match answers every request again; a hang
// goes before SetDown.
func (g *GitLab) Hang(match func(request string) bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hang = match
}

// Hanging returns how many requests are hung right now by Hang, waiting
// for their client to give up.
func (g *GitLab) Hanging() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hanging
}

// Requests returns "METHOD /path" for every request received so far, in
// order, API and git alike, the path as escaped on the wire and without the
// query: "GET /api/v4/projects/students%2Falice%2Fweb".
func (g *GitLab) Requests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.requests...)
}

// UnimplementedRequests returns the requests, in the form of Requests, that
// matched no endpoint of the double. They were answered 404 as GitLab
// answers an unknown route; a test asserts this is empty to prove the code
// under test used only what the double models.
func (g *GitLab) UnimplementedRequests() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.unimplemented...)
}

// ServeHTTP serves the API and git, recording every request.
func (g *GitLab) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	line := r.Method + " " + r.URL.EscapedPath()
	g.mu.Lock()
	g.requests = append(g.requests, line)
	down, hang := g.down, g.hang
	g.mu.Unlock()
	if hang != nil && hang(line) {
		g.hangUntilDone(r)
		return
	}
	if down {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("<html><body><h1>503 Service Unavailable</h1></body></html>\n"))
		return
	}
	if p := r.URL.EscapedPath(); p == "/api/v4" || strings.HasPrefix(p, "/api/v4/") {
		g.serveAPI(w, r)
		return
	}
	g.serveGit(w, r)
}

// hangUntilDone blocks, answering nothing, until the client gives up on r
// or the test ends.
func (g *GitLab) hangUntilDone(r *http.Request) {
	// Reading the body to its end lets the server notice the client
	// closing the connection, which ends the request's context.
	_, _ = io.Copy(io.Discard, r.Body)
	g.mu.Lock()
	g.hanging++
	g.mu.Unlock()
	select {
	case <-r.Context().Done():
	case <-g.closed:
	}
	g.mu.Lock()
	g.hanging--
	g.mu.Unlock()
}

// recordUnimplemented notes a request that matched no endpoint.
func (g *GitLab) recordUnimplemented(r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.unimplemented = append(g.unimplemented, r.Method+" "+r.URL.EscapedPath())
}

// authorized reports whether an API request carries the token, in any of
// the places GitLab reads a personal access token from.
func (g *GitLab) authorized(r *http.Request) bool {
	var given string
	switch {
	case r.Header.Get("PRIVATE-TOKEN") != "":
		given = r.Header.Get("PRIVATE-TOKEN")
	case strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
		given = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	case r.URL.Query().Get("private_token") != "":
		given = r.URL.Query().Get("private_token")
	default:
		return false
	}
	return subtle.ConstantTimeCompare([]byte(given), []byte(g.token)) == 1
}

// userLocked returns the user named username, creating it. The caller holds
// mu or is New.
func (g *GitLab) userLocked(username string) *user {
	if u, ok := g.users[username]; ok {
		return u
	}
	u := &user{
		id:       g.seq.user,
		username: username,
		name:     username,
		email:    username + "@example.invalid",
		created:  now(),
	}
	g.seq.user++
	g.users[username] = u
	return u
}

// now is the clock of the double, at GitLab's millisecond precision.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
