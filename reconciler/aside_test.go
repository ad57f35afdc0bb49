package reconciler

import (
	"context"
	"strings"
	"testing"
)

// A replica killed between setting a container aside and making its
// successor (wm serve with ha) leaves the old one stopped under its aside
// name, its host port still in its configuration: the next pass, by
// whichever replica leads, makes the successor on the same port.
func TestARecreationCutShortAfterTheOldContainerWasSetAsideKeepsItsHostPort(t *testing.T) {
	w := newWorld(t)
	// Another repo's container, so that removing the aside one stays
	// within policy.maxPrunePercent.
	w.mustReconcile(w.push("bob/db", "version: 1\ncontainers:\n  db: {image: self, ports: [5432]}\n"))
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	before, _, _ := w.container("alice_web")

	// What recreate had done when the process died.
	ctx := context.Background()
	if err := w.hosts[0].Stop(ctx, "alice_web", StopTimeout); err != nil {
		t.Fatal(err)
	}
	if err := w.hosts[0].Rename(ctx, "alice_web", "alice_web"+asideSuffix); err != nil {
		t.Fatal(err)
	}

	w.push("alice/web", strings.Replace(webV1, "MODE: dev", "MODE: prod", 1))
	w.mustReconcile(repo)
	after, s, ok := w.container("alice_web")
	if !ok || !after.Running || s.Env["MODE"] != "prod" {
		t.Fatalf("no successor: %+v", after)
	}
	if len(s.Ports) != 1 || s.Ports[0].Host != before.Ports[0].Host {
		t.Errorf("host port %d → %+v", before.Ports[0].Host, s.Ports)
	}
	if _, _, ok := w.container("alice_web" + asideSuffix); ok {
		t.Error("the aside container is left over")
	}
}
