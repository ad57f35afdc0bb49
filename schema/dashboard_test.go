package schema

import (
	"strings"
	"testing"
	"time"
)

// dashBase is a config the dashboard can run with: a GitLab source.
const dashBase = "sources:\n  gitlab: {url: https://gitlab.example.edu, tokenFile: t, groups: [students]}\n"

func TestADashboardSectionTakesItsDefaultsAndItsFilesResolve(t *testing.T) {
	c, err := ParseServer("s.yaml", strings.NewReader(dashBase+
		"dashboard: {applicationID: abc, secretFile: oauth-secret, redirectURL: \"https://wm.example.edu/auth/callback\"}\n"), "/etc/wm")
	if err != nil {
		t.Fatal(err)
	}
	want := Dashboard{ApplicationID: "abc", SecretFile: "/etc/wm/oauth-secret", RedirectURL: "https://wm.example.edu/auth/callback", SessionTTL: Duration(8 * time.Hour)}
	if c.Dashboard == nil || *c.Dashboard != want {
		t.Errorf("got %+v\nwant %+v", c.Dashboard, want)
	}
}

func TestBadDashboardSettingsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, config, want string
	}{
		{"the dashboard needs GitLab to log in with",
			"dashboard: {applicationID: a, secretFile: s, redirectURL: \"https://wm.example.edu/auth/callback\"}\n",
			"dashboard: needs sources.gitlab"},
		{"the application's ID is required",
			dashBase + "dashboard: {secretFile: s, redirectURL: \"https://wm.example.edu/auth/callback\"}\n",
			"dashboard.applicationID: is required"},
		{"the secret file is required",
			dashBase + "dashboard: {applicationID: a, redirectURL: \"https://wm.example.edu/auth/callback\"}\n",
			"dashboard.secretFile: is required"},
		{"plain http off loopback is refused",
			dashBase + "dashboard: {applicationID: a, secretFile: s, redirectURL: \"http://wm.example.edu/auth/callback\"}\n",
			"is plain http: use https"},
		{"the callback is at /auth/callback",
			dashBase + "dashboard: {applicationID: a, secretFile: s, redirectURL: \"https://wm.example.edu/oauth\"}\n",
			"must have the path /auth/callback"},
		{"a session lasts at most a week",
			dashBase + "dashboard: {applicationID: a, secretFile: s, redirectURL: \"https://wm.example.edu/auth/callback\", sessionTTL: 200h}\n",
			"dashboard.sessionTTL: 200h0m0s is not between 5m and 168h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseServer("s.yaml", strings.NewReader(tc.config), "/etc/wm")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v\nwant it to say %q", err, tc.want)
			}
		})
	}
	t.Run("http on a loopback host is allowed, for tests", func(t *testing.T) {
		_, err := ParseServer("s.yaml", strings.NewReader(dashBase+"dashboard: {applicationID: a, secretFile: s, redirectURL: \"http://127.0.0.1:8080/auth/callback\"}\n"), "/etc/wm")
		if err != nil {
			t.Error(err)
		}
	})
}
