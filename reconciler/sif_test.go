package reconciler

import (
	"context"
	"strings"

	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/schema"
)

func TestSingularityImagesAreBuiltCachedAndRetiredAfterTheirGracePeriod(t *testing.T) {
	w := newWorld(t, func(c *schema.ServerConfig) {
		c.SIF.GracePeriod = schema.Duration(24 * time.Hour)
		c.SIF.SharedDir = filepath.Join(t.TempDir(), "shared")
	})
	fake := sif.NewFake()
	w.rec.sif = fake
	repo := w.push("alice/tool", "version: 1\nsingularity:\n  env: {image: self}\n", true)

	_, err := w.reconcile(repo)
	wantReason(t, err, Waiting, "WaitingForImage")

	head := w.mustReconcileAfterCI(repo, fake)
	path := filepath.Join(w.cfg.ArtifactsDir, "alice", "env.sif")
	if len(head.SIFs) != 1 || head.SIFs[0].Path != path || head.SIFs[0].SHA256 == "" {
		t.Fatalf("SIFs: %+v", head.SIFs)
	}
	if _, err := sif.Verify(path); err != nil {
		t.Errorf("the SIF does not verify: %v", err)
	}
	if _, err := os.Stat(filepath.Join(w.cfg.SIF.SharedDir, "alice", "env.sif")); err != nil {
		t.Errorf("no copy in the shared folder: %v", err)
	}
	// Another repo of alice cannot take the name.
	_, err = w.reconcile(w.push("alice/other", "version: 1\nsingularity:\n  env: {image: self}\n"))
	wantReason(t, err, Stalled, "NameTaken")

	// Dropped from wm.yaml: kept for the grace period, then removed.
	w.push("alice/tool", "version: 1\n")
	w.mustReconcile(repo)
	if _, err := os.Stat(path); err != nil {
		t.Errorf("removed before the grace period: %v", err)
	}
	w.now = w.now.Add(25 * time.Hour)
	w.mustReconcile(repo)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("still there after the grace period: %v", err)
	}
	if _, err := os.Stat(filepath.Join(w.cfg.SIF.SharedDir, "alice", "env.sif")); !os.IsNotExist(err) {
		t.Errorf("the shared copy is still there: %v", err)
	}
}

// mustReconcileAfterCI makes the head's image available to the fake SIF
// builder, as CI pushing it would, and runs a pass that must be Ready.
func (w *world) mustReconcileAfterCI(repo Repo, fake *sif.Fake) Result {
	w.t.Helper()
	head := w.repos[repo.Key]
	sha := gitHead(w.t, head.Path())
	fake.SetImage(testRegistry+"/"+repo.Key+":"+sha, "id-"+sha)
	return w.mustReconcile(repo)
}

func gitHead(t testing.TB, dir string) string {
	t.Helper()
	return strings.TrimSpace(gittest.Git(t, dir, "rev-parse", "refs/heads/main"))
}

func TestRetiringARepoRemovesItsSIFs(t *testing.T) {
	w := newWorld(t)
	fake := sif.NewFake()
	w.rec.sif = fake
	repo := w.push("alice/tool", "version: 1\nsingularity:\n  env: {image: self}\n")
	w.mustReconcileAfterCI(repo, fake)
	path := filepath.Join(w.cfg.ArtifactsDir, "alice", "env.sif")
	if _, err := w.rec.Retire(context.Background(), repo); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the retired repo's SIF is left: %v", err)
	}
}
