package gitlabtest_test

import (
	"errors"
	"net/http"
	"testing"

	gitlab "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
)

func TestAccountsAnswerWhoATokenBelongsTo(t *testing.T) {
	g := gitlabtest.New(t, "glpat-bot-token")
	a := gitlabtest.NewAccounts(t, g)
	alice := a.Token(t, "alice")
	revoked := a.Token(t, "bob")
	a.Revoke(revoked)
	client := func(tok string) *gitlab.Client {
		c, err := gitlab.NewClient(tok, gitlab.WithBaseURL(a.URL()), gitlab.WithoutRetries())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cases := []struct {
		name       string
		token      string
		wantUser   string
		wantStatus int
	}{
		{"an account's token reads its account", alice, "alice", http.StatusOK},
		{"a revoked token is unauthorized", revoked, "", http.StatusUnauthorized},
		{"a token never handed out is unauthorized", "glpat-nobody", "", http.StatusUnauthorized},
		{"the bot's token is served by the double", g.Token(), g.BotUsername(), http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, resp, err := client(c.token).Users.CurrentUser()
			if resp == nil || resp.StatusCode != c.wantStatus {
				t.Fatalf("status %v, err %v; want %d", resp, err, c.wantStatus)
			}
			if c.wantUser != "" && (u == nil || u.Username != c.wantUser) {
				t.Errorf("user %+v, want %s", u, c.wantUser)
			}
		})
	}
	t.Run("an account's token reads nothing else", func(t *testing.T) {
		_, resp, err := client(alice).Groups.GetGroup("students", nil)
		var e *gitlab.ErrorResponse
		if resp == nil || resp.StatusCode != http.StatusForbidden || !errors.As(err, &e) {
			t.Errorf("status %v, err %v; want 403", resp, err)
		}
	})
	t.Run("a GitLab that is down is down for accounts too", func(t *testing.T) {
		g.SetDown(true)
		defer g.SetDown(false)
		_, resp, _ := client(alice).Users.CurrentUser()
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("status %v, want 503", resp)
		}
	})
}
