package store

import (
	"errors"
	"github.com/whalemountain/wm/reconciler/core"
	"slices"
	"testing"
	"time"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPortAllocation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, s *Store)
		key   string
		taken map[int]bool
		want  int
		err   error
	}{
		{"the first port of the range goes to the first container", nil, "alice-web/80", nil, 50000, nil},
		{"an allocated port is returned again", func(t *testing.T, s *Store) {
			mustAlloc(t, s, "alice-db/5432")
			mustAlloc(t, s, "alice-web/80")
		}, "alice-web/80", nil, 50001, nil},
		{"ports bound by something else are skipped", nil, "alice-web/80", map[int]bool{50000: true, 50001: true}, 50002, nil},
		{"a released port is reused", func(t *testing.T, s *Store) {
			mustAlloc(t, s, "alice-old/80")
			mustAlloc(t, s, "alice-db/5432")
			if err := s.ReleasePorts("alice-old"); err != nil {
				t.Fatal(err)
			}
		}, "alice-web/80", nil, 50000, nil},
		{"releasing one container keeps a container whose name it prefixes", func(t *testing.T, s *Store) {
			mustAlloc(t, s, "alice-web-2/80")
			if err := s.ReleasePorts("alice-web"); err != nil {
				t.Fatal(err)
			}
		}, "alice-web-2/80", nil, 50000, nil},
		{"an adopted port overrides the allocation", func(t *testing.T, s *Store) {
			mustAlloc(t, s, "alice-web/80")
			if err := s.AdoptPort("alice-web/80", 50003); err != nil {
				t.Fatal(err)
			}
		}, "alice-web/80", nil, 50003, nil},
		{"an exhausted range is an error", func(t *testing.T, s *Store) {
			for _, k := range []string{"a/1", "b/1", "c/1", "d/1"} {
				mustAlloc(t, s, k)
			}
		}, "e/1", nil, 0, ErrNoFreePort},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir())
			if tc.setup != nil {
				tc.setup(t, s)
			}
			got, err := s.AllocatePort(tc.key, 50000, 50003, tc.taken)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("got %d, %v; want %d, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func mustAlloc(t *testing.T, s *Store, key string) int {
	t.Helper()
	p, err := s.AllocatePort(key, 50000, 50003, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStateSurvivesReopening(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	port := mustAlloc(t, s, "alice-web/8000")
	want := core.RepoState{Key: "alice/web", Owner: "alice", AppliedRevision: "abc",
		Inventory: []core.Object{{Kind: "container", Host: "local", Name: "alice-web", SpecHash: "h"}}}
	if err := s.PutRepo(want); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s = open(t, dir)
	got, ok, err := s.Repo("alice/web")
	if err != nil || !ok || got.AppliedRevision != "abc" || len(got.Inventory) != 1 || got.Inventory[0] != want.Inventory[0] {
		t.Errorf("repo after reopen: %+v, %v, %v", got, ok, err)
	}
	if again := mustAlloc(t, s, "alice-web/8000"); again != port {
		t.Errorf("port after reopen %d, want %d", again, port)
	}
	if _, ok, _ := s.Repo("bob/x"); ok {
		t.Error("unknown repo reported as present")
	}
}

func TestConditionTransitionTimeMovesOnlyWhenTheStatusChanges(t *testing.T) {
	var r core.RepoState
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	r.SetCondition(core.Condition{Type: core.Ready, Status: false, Reason: "Progressing"}, t0)
	r.SetCondition(core.Condition{Type: core.Ready, Status: false, Reason: "StillProgressing"}, t0.Add(time.Minute))
	if c := r.Condition(core.Ready); !c.LastTransitionTime.Equal(t0) || c.Reason != "StillProgressing" {
		t.Errorf("same status: %+v", c)
	}
	r.SetCondition(core.Condition{Type: core.Ready, Status: true, Reason: "Applied"}, t0.Add(2*time.Minute))
	if c := r.Condition(core.Ready); !c.LastTransitionTime.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("changed status: %+v", c)
	}
	if len(r.Conditions) != 1 {
		t.Errorf("conditions: %+v", r.Conditions)
	}
}

func TestHistoryKeepsTheLastPassesInOrderAndGoesWithTheRepo(t *testing.T) {
	s := open(t, t.TempDir())
	for i := range HistoryLimit + 5 {
		if err := s.AddPass("alice/web", core.Pass{Changes: i}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddPass("alice/web2", core.Pass{Changes: -1}); err != nil {
		t.Fatal(err)
	}
	h, err := s.History("alice/web")
	if err != nil || len(h) != HistoryLimit || h[0].Changes != 5 || h[len(h)-1].Changes != HistoryLimit+4 {
		t.Fatalf("history: %d entries, first %+v, err %v", len(h), h[0], err)
	}
	if err := s.PutRepo(core.RepoState{Key: "alice/web"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRepo("alice/web"); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.History("alice/web"); len(h) != 0 {
		t.Errorf("history after delete: %d", len(h))
	}
	if h, _ := s.History("alice/web2"); len(h) != 1 {
		t.Errorf("a repo whose key extends the deleted one lost its history: %d", len(h))
	}
}

func TestOwnerReposReadsOnlyThatOwnersAndFollowsMovesAndDeletes(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, r := range []core.RepoState{{Key: "a/x", Owner: "a"}, {Key: "a/y", Owner: "a"}, {Key: "ab/x", Owner: "ab"}, {Key: "b/x", Owner: "b"}} {
		if err := s.PutRepo(r); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(owner string) []string {
		t.Helper()
		rs, err := s.OwnerRepos(owner)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rs {
			out = append(out, r.Key)
		}
		return out
	}
	if got := keys("a"); !slices.Equal(got, []string{"a/x", "a/y"}) {
		t.Errorf("a: %v", got)
	}
	// A repo that changes hands leaves its old owner's index.
	if err := s.PutRepo(core.RepoState{Key: "a/y", Owner: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRepo("a/x"); err != nil {
		t.Fatal(err)
	}
	if got, gotB := keys("a"), keys("b"); len(got) != 0 || !slices.Equal(gotB, []string{"a/y", "b/x"}) {
		t.Errorf("a: %v, b: %v", got, gotB)
	}
}

func TestPuttingAnUnchangedStateWritesNothing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := core.RepoState{Key: "a/x", Owner: "a", AppliedRevision: "1"}
	if err := s.PutRepo(r); err != nil {
		t.Fatal(err)
	}
	before := s.Writes()
	if err := s.PutRepo(r); err != nil {
		t.Fatal(err)
	}
	if after := s.Writes(); after != before {
		t.Errorf("an unchanged state was written: %d writes", after-before)
	}
}
