package store

import (
	"testing"
	"time"
)

func TestAuditLogKeepsEntriesInOrderAndReadsFromATime(t *testing.T) {
	s := open(t, t.TempDir())
	if got, err := s.Audit(time.Time{}, 0); err != nil || len(got) != 0 {
		t.Fatalf("audit of a new store = %v, %v; want nothing", got, err)
	}
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for i, who := range []string{"alice", "bob", "alice"} {
		if err := s.AddAudit(AuditEntry{Time: base.Add(time.Duration(i) * time.Minute), Who: who, Action: "logs", Target: who + "_web", Status: 200, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		since time.Time
		limit int
		want  []string
	}{
		{"everything, oldest first", time.Time{}, 0, []string{"alice", "bob", "alice"}},
		{"from a time on", base.Add(time.Minute), 0, []string{"bob", "alice"}},
		{"the newest within a limit", time.Time{}, 1, []string{"alice"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := s.Audit(c.since, c.limit)
			if err != nil {
				t.Fatal(err)
			}
			var who []string
			for _, e := range got {
				who = append(who, e.Who)
			}
			if len(who) != len(c.want) {
				t.Fatalf("got %v, want %v", who, c.want)
			}
			for i := range who {
				if who[i] != c.want[i] {
					t.Fatalf("got %v, want %v", who, c.want)
				}
			}
		})
	}
}
