package gitlabtest

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"html/template"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// GitLab as an OAuth 2 provider (doc/api/oauth2.md), served by Accounts
// beside GET /api/v4/user, for code that logs people in with GitLab:
//
//	a := gitlabtest.NewAccounts(t, g)
//	app := a.AddApplication(t, "https://wm.example/auth/callback")
//	a.SignIn("alice")   // the browser's GitLab session: authorize approves at once
//	... the code under test sends the browser to a.URL()+"/oauth/authorize" ...
//
//	GET  /oauth/authorize   client_id, redirect_uri, response_type=code, state,
//	                        scope, code_challenge, code_challenge_method=S256
//	POST /oauth/authorize   the approval form: the same parameters and username
//	POST /oauth/token       grant_type=authorization_code: code, redirect_uri,
//	                        code_verifier; grant_type=refresh_token:
//	                        refresh_token; the client by client_id and
//	                        client_secret in the body or HTTP Basic auth
//
// What is faithful: an unknown client_id or a redirect_uri the application
// was not registered with is an HTML error page, never a redirect (so a
// code never goes anywhere else); other errors of the request are
// redirected back as error and error_description with the state; an
// approval redirects to redirect_uri with code and state. A code is single
// use and lasts 10 minutes; it is bound to its client, its redirect_uri and
// its code_challenge, which the code_verifier must match (S256); the token
// endpoint answers Doorkeeper's JSON, access_token (Bearer, expires_in
// 7200), refresh_token, scope and created_at, or its errors:
// invalid_client (401), invalid_grant, invalid_request and
// unsupported_grant_type (400). A refresh token is single use too and
// revokes the access token it came with. Access tokens are the account's
// tokens: GET /api/v4/user answers with them until they expire or are
// revoked (Accounts.Revoke).
//
// What is simplified: there is no GitLab login page: who is signed in is
// what SignIn said, and without it the authorize page is a form asking
// for a username, approved as given. Applications are all confidential,
// PKCE is optional as in GitLab for them, and only S256 is taken as its
// method. Scopes are recorded, not enforced (an account's token reads
// /api/v4/user only, whatever its scope).

// Application is an OAuth application registered in the double.
type Application struct {
	// ID and Secret are the client_id and client_secret.
	ID, Secret string
	// RedirectURI is the one redirect URI it was registered with.
	RedirectURI string
}

// oauth is the provider's state, guarded by Accounts.mu.
type oauth struct {
	apps     map[string]Application // by client_id
	signedIn string
	codes    map[string]*grant // by code
	refresh  map[string]*grant // by refresh token
	expires  map[string]time.Time
}

// grant is what a code or a refresh token stands for.
type grant struct {
	app         string
	redirectURI string
	username    string
	scope       string
	challenge   string
	expires     time.Time
	access      string // the access token a refresh token came with
}

// codeLifetime and tokenLifetime are Doorkeeper's defaults in GitLab.
const (
	codeLifetime  = 10 * time.Minute
	tokenLifetime = 2 * time.Hour
)

// AddApplication registers an OAuth application (Admin area →
// Applications) that may redirect to redirectURI only.
func (a *Accounts) AddApplication(t testing.TB, redirectURI string) Application {
	t.Helper()
	app := Application{ID: randomHex(32), Secret: "gloas-" + randomHex(32), RedirectURI: redirectURI}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.oauthLocked().apps[app.ID] = app
	return app
}

// SignIn makes username the account signed in to GitLab in every browser:
// from now on, authorize approves at once for it, as GitLab does for a
// signed-in user who authorized the application before. "" signs out:
// authorize then shows its form again.
func (a *Accounts) SignIn(username string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.oauthLocked().signedIn = username
}

// oauthLocked returns the provider's state, making it. The caller holds
// a.mu.
func (a *Accounts) oauthLocked() *oauth {
	if a.oauth == nil {
		a.oauth = &oauth{apps: map[string]Application{}, codes: map[string]*grant{}, refresh: map[string]*grant{}, expires: map[string]time.Time{}}
	}
	return a.oauth
}

// serveOAuth answers /oauth/*; false when r is not for it.
func (a *Accounts) serveOAuth(w http.ResponseWriter, r *http.Request) bool {
	switch {
	case r.URL.Path == "/oauth/authorize" && (r.Method == http.MethodGet || r.Method == http.MethodPost):
		a.authorize(w, r)
	case r.URL.Path == "/oauth/token" && r.Method == http.MethodPost:
		a.token(w, r)
	default:
		return false
	}
	return true
}

// authorizePage is the approval form, and the error page.
var authorizePage = template.Must(template.New("authorize").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize application · GitLab</title></head><body>
{{if .Error}}<h1>An error has occurred</h1><p id="error">{{.Error}}</p>{{else}}
<h1>Authorize application</h1>
<form method="post" action="/oauth/authorize">
{{range $k, $v := .Params}}<input type="hidden" name="{{$k}}" value="{{$v}}">{{end}}
<label for="username">Username</label> <input id="username" name="username" autocomplete="username">
<button type="submit" id="authorize">Authorize</button>
</form>{{end}}
</body></html>
`))

// authorize is GET /oauth/authorize (approve at once for the signed-in
// account, or show the form) and POST /oauth/authorize (the form).
func (a *Accounts) authorize(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	p := r.Form
	a.mu.Lock()
	o := a.oauthLocked()
	app, known := o.apps[p.Get("client_id")]
	signedIn := o.signedIn
	a.mu.Unlock()
	page := func(status int, msg string, params map[string]string) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(status)
		_ = authorizePage.Execute(w, map[string]any{"Error": msg, "Params": params})
	}
	if !known {
		page(http.StatusUnauthorized, "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.", nil)
		return
	}
	if p.Get("redirect_uri") != app.RedirectURI {
		page(http.StatusBadRequest, "The redirect uri included is not valid.", nil)
		return
	}
	back := func(q url.Values) {
		if s := p.Get("state"); s != "" {
			q.Set("state", s)
		}
		u, _ := url.Parse(app.RedirectURI)
		merged := u.Query()
		maps.Copy(merged, q)
		u.RawQuery = merged.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	switch {
	case p.Get("response_type") != "code":
		back(url.Values{"error": {"unsupported_response_type"}, "error_description": {"The authorization server does not support this response type."}})
		return
	case p.Get("code_challenge") != "" && p.Get("code_challenge_method") != "S256":
		back(url.Values{"error": {"invalid_request"}, "error_description": {"The code_challenge_method is not supported: use S256."}})
		return
	}
	username := signedIn
	if r.Method == http.MethodPost {
		username = strings.TrimSpace(p.Get("username"))
	}
	if username == "" {
		params := map[string]string{}
		for _, k := range []string{"client_id", "redirect_uri", "response_type", "state", "scope", "code_challenge", "code_challenge_method"} {
			if v := p.Get(k); v != "" {
				params[k] = v
			}
		}
		page(http.StatusOK, "", params)
		return
	}
	a.g.AddUser(a.g.t, username)
	code := randomHex(32)
	a.mu.Lock()
	a.oauthLocked().codes[code] = &grant{app: app.ID, redirectURI: app.RedirectURI, username: username, scope: p.Get("scope"),
		challenge: p.Get("code_challenge"), expires: time.Now().Add(codeLifetime)}
	a.mu.Unlock()
	back(url.Values{"code": {code}})
}

// Doorkeeper's error descriptions.
const (
	invalidClient = "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method."
	invalidGrant  = "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."
)

// token is POST /oauth/token.
func (a *Accounts) token(w http.ResponseWriter, r *http.Request) {
	p, err := requestParams(r)
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || (ct != "application/x-www-form-urlencoded" && ct != "application/json") {
		accountsJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "The request is missing a required parameter, includes an unsupported parameter value, or is otherwise malformed."})
		return
	}
	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = p.Get("client_id"), p.Get("client_secret")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.oauthLocked()
	app, known := o.apps[id]
	if !known || subtle.ConstantTimeCompare([]byte(secret), []byte(app.Secret)) != 1 {
		accountsJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": invalidClient})
		return
	}
	bad := func() {
		accountsJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": invalidGrant})
	}
	var g *grant
	switch p.Get("grant_type") {
	case "authorization_code":
		g = o.codes[p.Get("code")]
		delete(o.codes, p.Get("code")) // single use, even when refused below
		if g == nil || g.app != app.ID || g.redirectURI != p.Get("redirect_uri") || time.Now().After(g.expires) || !verifierMatches(g.challenge, p.Get("code_verifier")) {
			bad()
			return
		}
	case "refresh_token":
		g = o.refresh[p.Get("refresh_token")]
		delete(o.refresh, p.Get("refresh_token"))
		if g == nil || g.app != app.ID {
			bad()
			return
		}
		a.revoked[g.access] = true
	default:
		accountsJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type", "error_description": "The authorization grant type is not supported by the authorization server."})
		return
	}
	access, refresh := randomHex(32), randomHex(32)
	a.tokens[access] = g.username
	o.expires[access] = time.Now().Add(tokenLifetime)
	o.refresh[refresh] = &grant{app: app.ID, username: g.username, scope: g.scope, access: access}
	w.Header().Set("Cache-Control", "no-store")
	accountsJSON(w, http.StatusOK, map[string]any{
		"access_token": access, "token_type": "Bearer", "expires_in": int(tokenLifetime.Seconds()),
		"refresh_token": refresh, "scope": g.scope, "created_at": time.Now().Unix(),
	})
}

// expiredLocked reports whether tok is an OAuth access token past its
// lifetime. The caller holds a.mu.
func (a *Accounts) expiredLocked(tok string) bool {
	if a.oauth == nil {
		return false
	}
	exp, ok := a.oauth.expires[tok]
	return ok && time.Now().After(exp)
}

// verifierMatches checks a code_verifier against the code_challenge of
// the authorization (S256); without a challenge there is nothing to match.
func verifierMatches(challenge, verifier string) bool {
	if challenge == "" {
		return verifier == ""
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
