package store

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/whalemountain/wm/reconciler/core"
)

func TestAnUnreadableStateFileIsSetAsideAndAnEmptyOneOpened(t *testing.T) {
	garbage := make([]byte, 64<<10)
	if _, err := rand.Read(garbage); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data func(t *testing.T) []byte
	}{
		{"garbage bytes", func(*testing.T) []byte { return garbage }},
		{"a state file cut short", func(t *testing.T) []byte {
			dir := t.TempDir()
			s := open(t, dir)
			if err := s.PutRepo(core.RepoState{Key: "alice/web", Owner: "alice"}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			b, err := os.ReadFile(filepath.Join(dir, "wm.db"))
			if err != nil {
				t.Fatal(err)
			}
			return b[:100]
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			data := tc.data(t)
			if err := os.WriteFile(filepath.Join(dir, "wm.db"), data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer s.Close()
			aside := s.SetAside()
			if filepath.Dir(aside) != dir || !bytes.HasPrefix([]byte(filepath.Base(aside)), []byte("wm.db.corrupt-")) {
				t.Fatalf("set aside at %q", aside)
			}
			if kept, err := os.ReadFile(aside); err != nil || !bytes.Equal(kept, data) {
				t.Errorf("the file set aside does not hold what was there: %v", err)
			}
			if repos, err := s.Repos(); err != nil || len(repos) != 0 {
				t.Errorf("the new store holds %v, %v", repos, err)
			}
			if err := s.PutRepo(core.RepoState{Key: "alice/web", Owner: "alice"}); err != nil {
				t.Errorf("the new store is not writable: %v", err)
			}
		})
	}
	t.Run("a readable state file is kept as it is", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		if err := s.PutRepo(core.RepoState{Key: "alice/web", Owner: "alice"}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = open(t, dir)
		if s.SetAside() != "" {
			t.Errorf("set aside at %q", s.SetAside())
		}
		if _, ok, err := s.Repo("alice/web"); !ok || err != nil {
			t.Errorf("the repo is gone: %v", err)
		}
	})
}
