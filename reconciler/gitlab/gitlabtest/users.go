package gitlabtest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Accounts gives the double's accounts personal access tokens of their
// own, for code that asks GitLab who a token belongs to (GET /api/v4/user)
// on behalf of the people holding them.
//
//	g := gitlabtest.New(t, "glpat-bot")
//	a := gitlabtest.NewAccounts(t, g)
//	tok := a.Token(t, "alice")        // alice's personal access token
//	... code under test at a.URL(), asking GET /api/v4/user with tok ...
//	a.Revoke(tok)                     // GitLab now answers 401
//
// It is a second front of g on 127.0.0.1 (a.URL()): a request carrying a
// token Token handed out (in PRIVATE-TOKEN or Authorization: Bearer) is
// answered here, GET /api/v4/user with the token's account, as GitLab's
// CurrentUser entity; anything else such a token asks is 403 {"message":
// "403 Forbidden"}, as for a token with the read_user scope only. A token
// never handed out or revoked is 401 {"message":"401 Unauthorized"}.
// Requests carrying g's own token, or none, are served by g itself, so
// the code under test may use the bot's token against the same URL (for
// example to read group members). g.SetDown(true) takes this front down
// too: every request answers 503. The front is also GitLab's OAuth 2
// provider (oauth.go: /oauth/authorize and /oauth/token, with PKCE), whose
// access tokens are tokens of the account that approved.
type Accounts struct {
	g   *GitLab
	srv *httptest.Server

	mu       sync.Mutex
	tokens   map[string]string // token → username
	revoked  map[string]bool
	requests []string
	oauth    *oauth // the OAuth provider (oauth.go), made when first used
}

// NewAccounts starts the front of g; it is closed when the test ends.
func NewAccounts(t testing.TB, g *GitLab) *Accounts {
	t.Helper()
	a := &Accounts{g: g, tokens: map[string]string{}, revoked: map[string]bool{}}
	a.srv = httptest.NewServer(a)
	t.Cleanup(a.srv.Close)
	return a
}

// URL returns the front's base URL, without a trailing slash.
func (a *Accounts) URL() string { return a.srv.URL }

// Token makes the account username when missing and returns a new
// personal access token of it. An account may hold several.
func (a *Accounts) Token(t testing.TB, username string) string {
	t.Helper()
	a.g.AddUser(t, username)
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := "glpat-" + hex.EncodeToString(b)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[tok] = username
	return tok
}

// Revoke makes token invalid from now on.
func (a *Accounts) Revoke(token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked[token] = true
}

// Requests returns "METHOD /path" for every request the front answered
// itself (those with an account's token or a token it does not know).
func (a *Accounts) Requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.requests...)
}

// givenToken is the personal access token of a request, from where GitLab
// reads one; "" when there is none.
func givenToken(r *http.Request) string {
	if t := r.Header.Get("PRIVATE-TOKEN"); t != "" {
		return t
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return t
	}
	return r.URL.Query().Get("private_token")
}

// ServeHTTP answers the accounts' tokens and hands the rest to the double.
func (a *Accounts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/oauth/") && a.serveOAuth(w, r) {
		return
	}
	tok := givenToken(r)
	if tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(a.g.Token())) == 1 {
		a.g.ServeHTTP(w, r)
		return
	}
	a.g.mu.Lock()
	down := a.g.down
	a.g.mu.Unlock()
	a.mu.Lock()
	a.requests = append(a.requests, r.Method+" "+r.URL.EscapedPath())
	username, known := a.tokens[tok]
	if a.revoked[tok] || a.expiredLocked(tok) {
		known = false
	}
	a.mu.Unlock()
	switch {
	case down:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("<html><body><h1>503 Service Unavailable</h1></body></html>\n"))
	case !known:
		accountsJSON(w, http.StatusUnauthorized, map[string]string{"message": "401 Unauthorized"})
	case r.Method != http.MethodGet || r.URL.EscapedPath() != "/api/v4/user":
		accountsJSON(w, http.StatusForbidden, map[string]string{"message": "403 Forbidden"})
	default:
		t := a.g.t
		id := a.g.AddUser(t, username)
		accountsJSON(w, http.StatusOK, map[string]any{
			"id": id, "username": username, "name": username, "state": "active",
			"web_url": a.g.URL() + "/" + username, "email": username + "@example.invalid",
			"avatar_url": nil, "bot": false, "is_admin": false,
		})
	}
}

// accountsJSON writes v as GitLab's API writes JSON.
func accountsJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
