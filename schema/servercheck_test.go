package schema

import (
	"strings"
	"testing"
)

func TestAServerCheckIsPlacedAtTheFieldItNames(t *testing.T) {
	config := "stateDir: s\nwebhook:\n  secretFile: secret\n"
	check := func(c *ServerConfig, report func(path, format string, args ...any)) {
		if c.Webhook.SecretFile != "/etc/wm/secret" {
			t.Errorf("the check saw an unresolved path: %q", c.Webhook.SecretFile)
		}
		report("webhook.secretFile", "cannot read %s", c.Webhook.SecretFile)
	}
	_, err := ParseServerChecked("s.yaml", strings.NewReader(config), "/etc/wm", check)
	if want := "s.yaml:3:15: webhook.secretFile: cannot read /etc/wm/secret"; err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func TestAServerCheckRunsOnlyOnAConfigTheRulesAccept(t *testing.T) {
	ran := false
	_, err := ParseServerChecked("s.yaml", strings.NewReader("listen: nowhere\n"), "/etc/wm",
		func(*ServerConfig, func(string, string, ...any)) { ran = true })
	if err == nil || ran {
		t.Errorf("err %v, check ran %v", err, ran)
	}
}
