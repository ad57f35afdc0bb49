package reconciler

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/registry"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// TestARolloutWaitsForTheImageCIPushesToARealRegistry: while the registry
// lacks the new commit's tag the old container keeps running and the repo
// waits; once CI pushes it, the rollout goes on by itself.
func TestARolloutWaitsForTheImageCIPushesToARealRegistry(t *testing.T) {
	reg := registrytest.Start(t)
	eng := dockertest.Engine(t)
	owner := dockertest.Owner(t)
	root := t.TempDir()
	cfg, err := schema.ParseServer("gating.yaml", strings.NewReader(fmt.Sprintf(`
registry: {host: %q, insecure: true}
docker:
  hosts: [{name: local, endpoint: %q}]
`, reg.Host(), dockertest.Endpoint())), root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := New(cfg, gitsource.New(filepath.Join(root, "cache")), []core.Engine{eng}, st,
		WithRegistry(registry.New(reg.Host(), true, "", "")))
	if err != nil {
		t.Fatal(err)
	}
	git := gittest.NewRepo(t, filepath.Join(root, "git", owner, "web.git"))
	repo := Repo{Key: owner + "/web", Owner: owner, URL: git.FileURL(), Branch: "main"}
	image := registrytest.WithConfig(t, registrytest.BusyboxImage(t), v1.Config{Cmd: []string{"/bin/busybox", "sleep", "3600"}})
	commit := func(mode string) string {
		return git.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\ncontainers:\n  web:\n    image: self\n    env: {MODE: " + mode + "}\n    memory: 32Mi\n"}, mode)
	}
	ci := func(sha string) { reg.Push(t, reg.Ref(owner+"/web", sha), image) }

	first := commit("one")
	ci(first)
	if res, err := rec.Reconcile(context.Background(), repo); err != nil || !res.Ready {
		t.Fatalf("first rollout: %+v, %v", res, err)
	}
	before, _ := eng.Inspect(context.Background(), owner+"_web")

	second := commit("two")
	// wm plan and the pass share their steps up to the apply: the plan
	// says the commit waits too, not that it would recreate.
	if _, err := rec.Plan(context.Background(), repo); err == nil {
		t.Fatal("the plan of a commit whose image is not pushed says nothing of it")
	} else if o, reason := Classify(err); o != Waiting || reason != "WaitingForImage" {
		t.Fatalf("plan before CI pushed: %v/%s: %v", o, reason, err)
	}
	_, err = rec.Reconcile(context.Background(), repo)
	if o, reason := Classify(err); o != Waiting || reason != "WaitingForImage" || !strings.Contains(err.Error(), "waiting for CI to push "+reg.Ref(owner+"/web", second)) {
		t.Fatalf("before CI pushed: %v/%s: %v", o, reason, err)
	}
	if c, err := eng.Inspect(context.Background(), owner+"_web"); err != nil || c.ID != before.ID || !c.Running {
		t.Fatalf("the old container did not keep running: %+v, %v", c, err)
	}

	ci(second)
	res, err := rec.Reconcile(context.Background(), repo)
	if err != nil || !res.Ready || res.Plan.Count(ActionRecreate) != 1 {
		t.Fatalf("after CI pushed: %+v, %v", res, err)
	}
	if c, _ := eng.Inspect(context.Background(), owner+"_web"); c.Image != reg.Ref(owner+"/web", second) {
		t.Errorf("running image %s, want the second commit's", c.Image)
	}
}
