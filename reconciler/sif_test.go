package reconciler

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"

	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"

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
	wantReason(t, err, Waiting, core.WaitingForImage)

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
	wantReason(t, err, Stalled, core.NameTaken)

	// Dropped from wm.yaml: the plan (as a merge request's note shows it)
	// says so; kept for the grace period, then removed.
	w.push("alice/tool", "version: 1\n")
	if plan, err := w.rec.Plan(context.Background(), repo); err != nil || len(plan.Plan.Of(SIF)) != 1 || plan.Plan.Of(SIF)[0].Kind != ActionRemove {
		t.Errorf("the plan of a commit that drops the SIF: %+v, %v", plan.Plan.Actions, err)
	}
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

// reconcileAfterCI is mustReconcileAfterCI for a pass that may fail.
func (w *world) reconcileAfterCI(repo Repo, fake *sif.Fake) (Result, error) {
	w.t.Helper()
	sha := gitHead(w.t, w.repos[repo.Key].Path())
	fake.SetImage(testRegistry+"/"+repo.Key+":"+sha, "id-"+sha)
	return w.reconcile(repo)
}

// stagingLeft fails t when a refused or finished build left files in the
// owner's artifacts folder that are not SIFs in use (or their sidecars).
func stagingLeft(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, "/.") {
			t.Errorf("left behind: %s", p)
		}
		return nil
	})
}

func TestAnOwnersSIFsOverAllTheirReposAreBoundByTheArtifactQuota(t *testing.T) {
	w := newWorld(t)
	fake := sif.NewFake()
	w.rec.sif = fake
	tool := w.push("alice/tool", "version: 1\nsingularity:\n  env: {image: self}\n")
	first := w.mustReconcileAfterCI(tool, fake)
	size := first.SIFs[0].Size
	// Room for one SIF and a half: the next one of alice's is refused.
	w.cfg.Policy.Quota.Artifacts = strconv.FormatInt(size*3/2, 10)

	other := w.push("alice/other", "version: 1\nsingularity:\n  big: {image: self}\n")
	_, err := w.reconcileAfterCI(other, fake)
	wantReason(t, err, Stalled, core.ArtifactQuotaExceeded)
	t.Logf("refused: %v", err)
	for _, says := range []string{"singularity.big", "policy.quota.artifacts", core.FormatBytes(size * 3 / 2)} {
		if !strings.Contains(err.Error(), says) {
			t.Errorf("the message does not say %q: %v", says, err)
		}
	}
	dir := filepath.Join(w.cfg.ArtifactsDir, "alice")
	if _, err := os.Stat(filepath.Join(dir, "big.sif")); !os.IsNotExist(err) {
		t.Errorf("the refused SIF was kept: %v", err)
	}
	if _, err := sif.Verify(filepath.Join(dir, "env.sif")); err != nil {
		t.Errorf("the SIF within the quota is gone: %v", err)
	}
	stagingLeft(t, dir)

	// The quota is per student: bob's first SIF is his own.
	bob := w.push("bob/tool", "version: 1\nsingularity:\n  env: {image: self}\n")
	w.mustReconcileAfterCI(bob, fake)
}

func TestARebuildReplacingASIFCountsOnlyTheDifferenceAgainstTheQuota(t *testing.T) {
	w := newWorld(t)
	fake := sif.NewFake()
	w.rec.sif = fake
	tool := w.push("alice/tool", "version: 1\nsingularity:\n  env: {image: self}\n")
	first := w.mustReconcileAfterCI(tool, fake)
	w.cfg.Policy.Quota.Artifacts = strconv.FormatInt(first.SIFs[0].Size*3/2, 10)

	// A new commit is a new image: the SIF is rebuilt in place.
	w.push("alice/tool", "version: 1\nsingularity:\n  env: {image: self}\n# v2\n")
	second := w.mustReconcileAfterCI(tool, fake)
	if second.SIFs[0].SHA256 == first.SIFs[0].SHA256 {
		t.Fatal("the SIF was not rebuilt")
	}
	if got := sumOfFile(t, filepath.Join(w.cfg.ArtifactsDir, "alice", "env.sif")); got != second.SIFs[0].SHA256 {
		t.Errorf("the file's sum %s is not the rebuild's %s", got, second.SIFs[0].SHA256)
	}
	stagingLeft(t, filepath.Join(w.cfg.ArtifactsDir, "alice"))

	// An unchanged image is still a cache hit.
	n := len(fake.Builds())
	w.mustReconcile(tool)
	if len(fake.Builds()) != n {
		t.Error("an unchanged image was built again")
	}
}

func TestAnImagePastTheSIFBuildLimitsStallsTheRepo(t *testing.T) {
	w := newWorld(t)
	fake := sif.NewFake()
	w.rec.sif = fake
	repo := w.push("alice/tool", "version: 1\nsingularity:\n  env: {image: self}\n")
	sha := gitHead(t, w.repos[repo.Key].Path())
	ref := testRegistry + "/" + repo.Key + ":" + sha
	fake.SetImage(ref, "id-"+sha)
	fake.SetError(ref, fmt.Errorf("%w: its files add up to more than 8 GiB", sif.ErrTooLarge))
	_, err := w.reconcile(repo)
	wantReason(t, err, Stalled, core.SIFTooLarge)
	if !strings.Contains(err.Error(), "8 GiB") {
		t.Errorf("the message does not say the limit: %v", err)
	}
}

// sumOfFile is the hex sha256 of a file.
func sumOfFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}
