package schema

import (
	"net/url"
	"time"
)

// Dashboard turns on the web dashboard on the public listener
// (reconciler/dashboard): students and admins log in with GitLab (OAuth 2,
// authorization code with PKCE) and see and use what the access API
// serves. It needs sources.gitlab, whose GitLab holds the OAuth
// application.
type Dashboard struct {
	// ApplicationID is the OAuth application's ID in GitLab (an instance
	// or group application with the read_user scope and RedirectURL as
	// its callback).
	ApplicationID string `yaml:"applicationID"`
	// SecretFile holds the application's secret.
	SecretFile string `yaml:"secretFile"`
	// RedirectURL is the callback GitLab sends the browser back to: the
	// dashboard's own address with the path /auth/callback, such as
	// https://wm.example.edu/auth/callback. https, except on a loopback
	// host; its scheme decides whether cookies are Secure.
	RedirectURL string `yaml:"redirectURL"`
	// SessionKeyFile, when set, holds the secret the session cookies are
	// encrypted with (replicas share it); by default a key is made once
	// and kept in stateDir (dashboard-session.key, mode 0600).
	SessionKeyFile string `yaml:"sessionKeyFile"`
	// SessionTTL is how long a login lasts; default 8h, from 5m to 7 days.
	// GitLab's access token (2h) is refreshed within it.
	SessionTTL Duration `yaml:"sessionTTL"`
}

// CallbackPath is the path of the dashboard's OAuth callback, which
// Dashboard.RedirectURL must have.
const CallbackPath = "/auth/callback"

// applyDefaults fills in the session's lifetime.
func (d *Dashboard) applyDefaults() {
	if d != nil && d.SessionTTL == 0 {
		d.SessionTTL = Duration(8 * time.Hour)
	}
}

// resolvePaths makes the dashboard's files absolute against dir.
func (d *Dashboard) resolvePaths(abs func(*string)) {
	if d != nil {
		abs(&d.SecretFile)
		abs(&d.SessionKeyFile)
	}
}

// validate checks the dashboard's settings; gitlab says whether
// sources.gitlab is set.
func (d *Dashboard) validate(report reporter, gitlab bool) {
	if d == nil {
		return
	}
	if !gitlab {
		report("dashboard", true, "needs sources.gitlab: students log in with its GitLab")
	}
	if d.ApplicationID == "" {
		report("dashboard.applicationID", false, "is required: the ID of the OAuth application in GitLab")
	}
	if d.SecretFile == "" {
		report("dashboard.secretFile", false, "is required: the file holding the OAuth application's secret")
	}
	u, err := url.Parse(d.RedirectURL)
	switch {
	case d.RedirectURL == "" || err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
		report("dashboard.redirectURL", false, "%s is not a URL such as https://wm.example.edu%s", quote(d.RedirectURL), CallbackPath)
	case u.Scheme == "http" && !loopback(u.Hostname()):
		report("dashboard.redirectURL", false, "%s is plain http: use https (http only on a loopback host, for tests), or the session cookie would cross the network in clear", quote(d.RedirectURL))
	case u.Path != CallbackPath || u.RawQuery != "" || u.Fragment != "":
		report("dashboard.redirectURL", false, "%s must have the path %s and nothing after it: the dashboard serves its callback there", quote(d.RedirectURL), CallbackPath)
	}
	if t := d.SessionTTL.Std(); t < 5*time.Minute || t > 7*24*time.Hour {
		report("dashboard.sessionTTL", false, "%v is not between 5m and 168h", t)
	}
}
