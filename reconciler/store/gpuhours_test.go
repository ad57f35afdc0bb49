package store

import (
	"reflect"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
)

func TestGPUHoursCountWhatEachOwnersReposHeldPerDay(t *testing.T) {
	day := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	at := func(h float64) time.Time { return day.Add(time.Duration(h * float64(time.Hour))) }
	// write is a repo state recorded at a time with a GPU count.
	type write struct {
		key, owner string
		gpus       int
		at         time.Time
	}
	cases := []struct {
		name   string
		writes []write
		now    time.Time
		want   map[string][]GPUDay
	}{
		{"a repo holding 2 GPUs for 3 hours counts 6 GPU-hours, up to now",
			[]write{{"s/alice/a", "alice", 2, at(9)}}, at(12),
			map[string][]GPUDay{"alice": {{"2026-03-10", 6}}}},
		{"a span across midnight is split between its days",
			[]write{{"s/alice/a", "alice", 1, at(-2)}}, at(1),
			map[string][]GPUDay{"alice": {{"2026-03-09", 2}, {"2026-03-10", 1}}}},
		{"a repo that gave its GPUs back stops counting",
			[]write{{"s/alice/a", "alice", 1, at(1)}, {"s/alice/a", "alice", 0, at(4)}}, at(20),
			map[string][]GPUDay{"alice": {{"2026-03-10", 3}}}},
		{"a change of count closes the span at the old count",
			[]write{{"s/alice/a", "alice", 1, at(1)}, {"s/alice/a", "alice", 3, at(2)}}, at(4),
			map[string][]GPUDay{"alice": {{"2026-03-10", 7}}}},
		{"a state written again with the same count keeps the span's start",
			[]write{{"s/alice/a", "alice", 1, at(1)}, {"s/alice/a", "alice", 1, at(5)}}, at(6),
			map[string][]GPUDay{"alice": {{"2026-03-10", 5}}}},
		{"two repos of an owner add up, other owners apart, owners without GPUs absent",
			[]write{{"s/alice/a", "alice", 1, at(0)}, {"s/alice/b", "alice", 2, at(1)}, {"s/bob/a", "bob", 1, at(2)}, {"s/carol/a", "carol", 0, at(0)}}, at(3),
			map[string][]GPUDay{"alice": {{"2026-03-10", 7}}, "bob": {{"2026-03-10", 1}}}},
		{"days older than GPUDays are not kept",
			[]write{{"s/alice/a", "alice", 1, at(-24 * 200)}}, at(1),
			func() map[string][]GPUDay {
				var days []GPUDay
				for i := GPUDays - 1; i > 0; i-- {
					days = append(days, GPUDay{day.AddDate(0, 0, -i).Format(time.DateOnly), 24})
				}
				return map[string][]GPUDay{"alice": append(days, GPUDay{"2026-03-10", 1})}
			}()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := open(t, t.TempDir())
			for _, w := range c.writes {
				if err := s.PutRepo(core.RepoState{Key: w.key, Owner: w.owner, LastPass: w.at, Usage: core.Usage{GPUs: w.gpus}}); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.GPUHours(c.now)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("GPUHours:\n got %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestADeletedReposGPUHoursStayCounted(t *testing.T) {
	s := open(t, t.TempDir())
	start := time.Now().Add(-2 * time.Hour)
	if err := s.PutRepo(core.RepoState{Key: "s/alice/a", Owner: "alice", LastPass: start, Usage: core.Usage{GPUs: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRepo("s/alice/a"); err != nil {
		t.Fatal(err)
	}
	got, err := s.GPUHours(time.Now().Add(48 * time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, d := range got["alice"] {
		sum += d.Hours
	}
	if sum < 1.99 || sum > 2.01 {
		t.Errorf("alice's GPU-hours after the delete: %v (%g), want 2 (and no more counted after it)", got, sum)
	}
}
