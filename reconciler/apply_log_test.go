package reconciler

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/whalemountain/wm/schema"
)

func TestDestructiveActionsAreLoggedWithTheirCause(t *testing.T) {
	var logged bytes.Buffer
	w := newWorld(t, func(c *schema.ServerConfig) { c.Policy.MaxPrunePercent = 100 })
	w.rec.log = slog.New(slog.NewTextHandler(&logged, nil))
	repo := w.push("alice/web", "version: 1\ncontainers:\n  web: {image: self}\n  db: {image: self}\n")
	w.mustReconcile(repo)
	w.push("alice/web", "version: 1\ncontainers:\n  web: {image: self, env: {MODE: prod}}\n")
	w.mustReconcile(repo)
	w.push("alice/web", "version: 1\ncontainers:\n  web: {image: self, env: {MODE: prod}, state: stopped}\n")
	w.mustReconcile(repo)
	// Started by hand: the next pass stops it again.
	if err := w.hosts[0].Start(context.Background(), "alice_web"); err != nil {
		t.Fatal(err)
	}
	w.mustReconcile(repo)
	if _, err := w.rec.Retire(context.Background(), repo); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`level=INFO msg="stopping container" repo=alice/web container=alice_web host=h1 cause="wm.yaml at `,
		`sets containers.web.state: stopped"`,
		`level=INFO msg="removing container" repo=alice/web container=alice_db host=h1 cause="containers.db is no longer in wm.yaml at `,
		`level=INFO msg="recreating container: the old one is stopped, and removed once the new one is made" repo=alice/web container=alice_web host=h1 newHost=h1 cause="wm.yaml or the server's policy changed`,
		`level=INFO msg="recreating container: the old one is stopped, and removed once the new one is made" repo=alice/web container=alice_web host=h1 newHost=h1 cause="wm.yaml at `,
		`level=INFO msg="removing container" repo=alice/web container=alice_web host=h1 cause="its repo is gone (deleted, or moved to another path or owner)"`,
	} {
		if !strings.Contains(logged.String(), want) {
			t.Errorf("the log has no %s\n%s", want, logged.String())
		}
	}
}
