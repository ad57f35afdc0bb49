package gitlabtest_test

import (
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
)

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// authorize asks for a code as a browser would and returns where GitLab
// sent it back (or the page it showed, with no Location).
func authorize(t *testing.T, u string) (*url.URL, *http.Response) {
	t.Helper()
	resp, err := noRedirects.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	loc, err := resp.Location()
	if err != nil {
		return nil, resp
	}
	return loc, resp
}

func TestOAuthLogsAnAccountInWithPKCE(t *testing.T) {
	g := gitlabtest.New(t, "glpat-bot-token")
	a := gitlabtest.NewAccounts(t, g)
	app := a.AddApplication(t, "http://127.0.0.1:1/auth/callback")
	conf := func(secret string) *oauth2.Config {
		return &oauth2.Config{ClientID: app.ID, ClientSecret: secret, RedirectURL: app.RedirectURI, Scopes: []string{"read_user"},
			Endpoint: oauth2.Endpoint{AuthURL: a.URL() + "/oauth/authorize", TokenURL: a.URL() + "/oauth/token"}}
	}
	a.SignIn("alice")
	// code returns a fresh code for verifier.
	code := func(t *testing.T, verifier string) string {
		loc, resp := authorize(t, conf(app.Secret).AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier)))
		if loc == nil {
			t.Fatalf("authorize answered %d without a redirect", resp.StatusCode)
		}
		if got := loc.Query().Get("state"); got != "st4te" {
			t.Fatalf("state %q, want st4te", got)
		}
		return loc.Query().Get("code")
	}

	t.Run("an approved code with its verifier gives a token that reads the account", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		tok, err := conf(app.Secret).Exchange(t.Context(), code(t, v), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		if tok.RefreshToken == "" || tok.Expiry.IsZero() {
			t.Errorf("token %+v: want a refresh token and an expiry", tok)
		}
		if got := userStatus(t, a, tok.AccessToken); got != http.StatusOK {
			t.Errorf("GET /api/v4/user with the token: %d, want 200", got)
		}
	})

	refused := []struct {
		name   string
		mangle func(code, verifier string) (string, string, string) // code, verifier, secret
	}{
		{"a code without its verifier is refused", func(c, _ string) (string, string, string) { return c, "", app.Secret }},
		{"a code with another verifier is refused", func(c, _ string) (string, string, string) {
			return c, oauth2.GenerateVerifier(), app.Secret
		}},
		{"an unknown code is refused", func(_, v string) (string, string, string) { return "nope", v, app.Secret }},
		{"a wrong client secret is refused", func(c, v string) (string, string, string) { return c, v, "gloas-wrong" }},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			v := oauth2.GenerateVerifier()
			cd, ver, secret := c.mangle(code(t, v), v)
			var opts []oauth2.AuthCodeOption
			if ver != "" {
				opts = append(opts, oauth2.VerifierOption(ver))
			}
			_, err := conf(secret).Exchange(t.Context(), cd, opts...)
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || (re.ErrorCode != "invalid_grant" && re.ErrorCode != "invalid_client") {
				t.Errorf("err %v, want invalid_grant or invalid_client", err)
			}
		})
	}

	t.Run("a code is used once", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		cd := code(t, v)
		if _, err := conf(app.Secret).Exchange(t.Context(), cd, oauth2.VerifierOption(v)); err != nil {
			t.Fatal(err)
		}
		if _, err := conf(app.Secret).Exchange(t.Context(), cd, oauth2.VerifierOption(v)); err == nil {
			t.Error("a code was exchanged twice")
		}
	})

	t.Run("a refresh gives a new token and ends the old one", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		old, err := conf(app.Secret).Exchange(t.Context(), code(t, v), oauth2.VerifierOption(v))
		if err != nil {
			t.Fatal(err)
		}
		old.Expiry = time.Now().Add(-time.Minute) // make the client refresh
		fresh, err := conf(app.Secret).TokenSource(t.Context(), old).Token()
		if err != nil {
			t.Fatal(err)
		}
		if got := userStatus(t, a, fresh.AccessToken); got != http.StatusOK {
			t.Errorf("new token: %d", got)
		}
		if got := userStatus(t, a, old.AccessToken); got != http.StatusUnauthorized {
			t.Errorf("old token: %d, want 401", got)
		}
	})

	t.Run("a redirect URI the application does not have gets a page, not a redirect", func(t *testing.T) {
		c := conf(app.Secret)
		c.RedirectURL = "http://evil.example/cb"
		loc, resp := authorize(t, c.AuthCodeURL("s"))
		if loc != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("answered %d to %v, want 400 and no redirect", resp.StatusCode, loc)
		}
	})

	t.Run("a challenge method other than S256 is sent back as an error", func(t *testing.T) {
		loc, _ := authorize(t, conf(app.Secret).AuthCodeURL("s", oauth2.SetAuthURLParam("code_challenge", "x"), oauth2.SetAuthURLParam("code_challenge_method", "plain")))
		if loc == nil || loc.Query().Get("error") != "invalid_request" || loc.Query().Get("state") != "s" {
			t.Errorf("redirected to %v, want error=invalid_request with the state", loc)
		}
	})

	t.Run("without a signed-in account the page asks who approves", func(t *testing.T) {
		a.SignIn("")
		defer a.SignIn("alice")
		u := conf(app.Secret).AuthCodeURL("s")
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `name="username"`) {
			t.Fatalf("page %s has no username field", body)
		}
		q, _ := url.Parse(u)
		form := q.Query()
		form.Set("username", "carol")
		resp, err = noRedirects.PostForm(a.URL()+"/oauth/authorize", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil || loc.Query().Get("code") == "" {
			t.Errorf("approval answered %d %v, want a redirect with a code", resp.StatusCode, loc)
		}
	})
}

// userStatus is what GET /api/v4/user answers with an OAuth token.
func userStatus(t *testing.T, a *gitlabtest.Accounts, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, a.URL()+"/api/v4/user", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
