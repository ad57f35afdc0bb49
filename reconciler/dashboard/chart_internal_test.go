package dashboard

import (
	"fmt"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/store"
)

func TestTheGPUHoursChart(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	many := map[string][]store.GPUDay{}
	for i := range chartLines + 3 {
		many[fmt.Sprintf("s%02d", i)] = []store.GPUDay{{Day: "2026-03-10", Hours: float64(20 - i)}}
	}
	cases := []struct {
		name   string
		hours  map[string][]store.GPUDay
		lines  []string // names, in order
		totals []string
	}{
		{"nobody holding a GPU draws no chart", map[string][]store.GPUDay{"alice": {{Day: "2026-03-10", Hours: 0}}}, nil, nil},
		{"days before the chart's 30 are left out", map[string][]store.GPUDay{"alice": {{Day: "2026-02-01", Hours: 5}, {Day: "2026-03-09", Hours: 2}}}, []string{"alice"}, []string{"2.0"}},
		{"students come by most GPU-hours, then by name",
			map[string][]store.GPUDay{"bob": {{Day: "2026-03-10", Hours: 1}}, "alice": {{Day: "2026-03-10", Hours: 1}}, "carol": {{Day: "2026-03-01", Hours: 4}}},
			[]string{"carol", "alice", "bob"}, []string{"4.0", "1.0", "1.0"}},
		{"past the eighth student the others share a line", many,
			[]string{"s00", "s01", "s02", "s03", "s04", "s05", "s06", "s07", "the 3 others"},
			[]string{"20.0", "19.0", "18.0", "17.0", "16.0", "15.0", "14.0", "13.0", "33.0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := newGPUChart(c.hours, now)
			if c.lines == nil {
				if ch != nil {
					t.Fatalf("a chart of %d lines", len(ch.Lines))
				}
				return
			}
			if ch == nil {
				t.Fatal("no chart")
			}
			var names []string
			for _, l := range ch.Lines {
				names = append(names, l.Name)
			}
			if fmt.Sprint(names) != fmt.Sprint(c.lines) || fmt.Sprint(ch.Totals) != fmt.Sprint(c.totals) {
				t.Errorf("lines %q totals %q, want %q %q", names, ch.Totals, c.lines, c.totals)
			}
			if len(ch.Rows) != chartDays || ch.Rows[chartDays-1].Day != "2026-03-10" {
				t.Errorf("%d rows, the last %q: want %d, the last today", len(ch.Rows), ch.Rows[len(ch.Rows)-1].Day, chartDays)
			}
		})
	}
}
