package schema

import (
	"strings"
	"testing"
	"time"
)

func TestAccessSettingsAreCheckedAndDefaulted(t *testing.T) {
	cases := []struct {
		name, yaml, wantErr string
	}{
		{"the defaults are valid", "listen: 127.0.0.1:8080\n", ""},
		{"a TTL under a second is refused", "access:\n  identityTTL: 500ms\n", "access.identityTTL"},
		{"an admin group needs a GitLab source", "access:\n  gitlabAdminGroup: wm-admins\n", "access.gitlabAdminGroup"},
		{"an admin must be an account name", "access:\n  admins: [Not_An_Account]\n", "access.admins[0]"},
		{"sessions are bounded", "access:\n  maxSessions: 0\n", "access.maxSessions"},
		{"an origin is a scheme and a host", "access:\n  allowedOrigins: [wm.example.edu]\n", "access.allowedOrigins[0]"},
		{"a copy size is a size", "access:\n  maxCopySize: lots\n", "access.maxCopySize"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseServer("wm-server.yaml", strings.NewReader(c.yaml), t.TempDir())
			if c.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if a := cfg.Access; a.IdentityTTL.Std() != time.Minute || a.MaxSessions != 4 || a.IdleTimeout.Std() != 15*time.Minute || a.MaxCopySize != "1Gi" {
					t.Errorf("defaults = %+v", a)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("error = %v, want one about %s", err, c.wantErr)
			}
		})
	}
}
