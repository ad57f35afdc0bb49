package reconciler

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/registry"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/schema"
)

// On a real registry (Debian's docker-registry), the clean-up deletes a
// student's old commit images that nothing uses, and keeps the applied
// one, one a container runs, young ones, tags that are not commits, and a
// commit tag whose image is also the applied one.
func TestTheCleanUpDeletesOnlyOldUnusedCommitImagesFromARealRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Debian's docker-registry")
	}
	t.Parallel()
	reg := registrytest.Start(t)
	w := newWorld(t, func(c *schema.ServerConfig) {
		c.Registry.Host, c.Registry.Insecure = reg.Host(), true
		c.Registry.KeepTagsFor = schema.Duration(24 * time.Hour)
	})
	rec, err := New(w.cfg, gitsource.New(filepath.Join(w.root, "cache2")), []core.Engine{w.hosts[0]}, w.store,
		WithClock(func() time.Time { return w.now }), WithRegistry(registry.New(reg.Host(), true, "", "")))
	if err != nil {
		t.Fatal(err)
	}
	sha := func(c byte) string { return strings.Repeat(string(c), 40) }
	image := func(created time.Time, mark string) v1.Image {
		img, err := mutate.CreatedAt(registrytest.WithConfig(t, registrytest.BusyboxImage(t), v1.Config{Env: []string{"MARK=" + mark}}), v1.Time{Time: created})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	old, young := w.now.Add(-72*time.Hour), w.now.Add(-time.Hour)
	repo := reg.Host() + "/alice/web"
	applied := image(old, "applied")
	pushes := map[string]v1.Image{
		sha('a'): applied,               // the applied revision
		sha('b'): image(old, "running"), // a container runs it
		sha('c'): image(old, "unused"),  // deleted
		sha('d'): image(young, "young"), // too young
		sha('e'): applied,               // the applied image under another commit
		"latest": image(old, "latest"),  // not a commit
	}
	for tag, img := range pushes {
		reg.Push(t, repo+":"+tag, img)
	}
	if err := w.store.PutRepo(core.RepoState{Key: "alice/web", Owner: "alice", AppliedRevision: sha('a')}); err != nil {
		t.Fatal(err)
	}
	w.hosts[0].AddImage(repo + ":" + sha('b'))
	if _, err := w.hosts[0].Create(context.Background(), core.ContainerSpec{Name: "alice_web", Owner: "alice", Repo: "alice/web", LocalName: "web",
		Image: repo + ":" + sha('b'), Network: "wm-alice", Running: true, NanoCPUs: 1e9, MemoryBytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}

	if err := rec.PruneRegistry(context.Background()); err != nil {
		t.Fatal(err)
	}
	tags, err := registry.New(reg.Host(), true, "", "").Tags(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	client := registry.New(reg.Host(), true, "", "")
	var left []string
	for _, tag := range tags {
		if ok, err := client.Exists(context.Background(), repo+":"+tag); err != nil {
			t.Fatal(err)
		} else if ok {
			left = append(left, tag)
		}
	}
	want := []string{sha('a'), sha('b'), sha('d'), sha('e'), "latest"}
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Errorf("images left %v, want %v", left, want)
	}
}

func TestWithoutKeepTagsForTheRegistryIsNeverCleanedUp(t *testing.T) {
	w := newWorld(t)
	if err := w.rec.PruneRegistry(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls := w.hosts[0].Calls(); len(calls) != 0 {
		t.Errorf("calls %v: without keepTagsFor nothing is even listed", calls)
	}
}
