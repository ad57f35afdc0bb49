package store

import (
	"encoding/json"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/whalemountain/wm/reconciler/core"
)

// bucketGPUHours holds each owner's GPU-hours per day: keys are owners,
// values JSON gpuLedger. It is made by the first repo recorded with a GPU,
// so a state file without GPUs is left as it was.
var bucketGPUHours = []byte("gpuhours")

// GPUDays is how many days of GPU-hours are kept per owner (UTC days,
// today included); older days are dropped.
const GPUDays = 90

// GPUDay is the GPU-hours an owner's repos held during one UTC day.
type GPUDay struct {
	Day   string  `json:"day"` // 2006-01-02
	Hours float64 `json:"hours"`
}

// gpuLedger is one owner's GPU-hours: the days closed so far, and for
// each repo holding GPUs how many since when. Usage changes only when a
// repo's state is written, so a span stays open between writes and is
// counted up to now when read: a no-op pass writes nothing here either.
type gpuLedger struct {
	Days []GPUDay          `json:"days"`
	Open map[string]gpuRun `json:"open,omitempty"`
}

// gpuRun is a repo holding GPUs since a time.
type gpuRun struct {
	GPUs  int       `json:"gpus"`
	Since time.Time `json:"since"`
}

// noteGPUs records in tx that repo key of owner holds gpus from at on:
// the span it held before is closed into the days. It writes nothing when
// the count did not change.
func noteGPUs(tx *bolt.Tx, owner, key string, gpus int, at time.Time) error {
	b := tx.Bucket(bucketGPUHours)
	var l gpuLedger
	if b != nil {
		if v := b.Get([]byte(owner)); v != nil {
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
		}
	}
	run, open := l.Open[key]
	if run.GPUs == gpus || (!open && gpus == 0) {
		return nil
	}
	days := dayMap(l.Days)
	if open {
		addSpan(days, run.Since, at, run.GPUs)
		delete(l.Open, key)
	}
	if gpus > 0 {
		if l.Open == nil {
			l.Open = map[string]gpuRun{}
		}
		l.Open[key] = gpuRun{GPUs: gpus, Since: at.UTC()}
	}
	l.Days = dayList(days, at)
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if b == nil {
		if b, err = tx.CreateBucket(bucketGPUHours); err != nil {
			return err
		}
	}
	return b.Put([]byte(owner), v)
}

// GPUHours returns each owner's GPU-hours per day over the last GPUDays
// days up to now, oldest first, repos still holding GPUs counted up to
// now. Owners who never held a GPU are absent.
func (s *Store) GPUHours(now time.Time) (map[string][]GPUDay, error) {
	out := map[string][]GPUDay{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGPUHours)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var l gpuLedger
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			days := dayMap(l.Days)
			for _, run := range l.Open {
				addSpan(days, run.Since, now, run.GPUs)
			}
			if list := dayList(days, now); len(list) > 0 {
				out[string(k)] = list
			}
			return nil
		})
	})
	return out, err
}

// dayMap indexes days by day.
func dayMap(days []GPUDay) map[string]float64 {
	m := make(map[string]float64, len(days)+1)
	for _, d := range days {
		m[d.Day] += d.Hours
	}
	return m
}

// dayList is m in order, without the days that are GPUDays or more
// before now's.
func dayList(m map[string]float64, now time.Time) []GPUDay {
	first := dayStart(now).AddDate(0, 0, -(GPUDays - 1)).Format(time.DateOnly)
	var out []GPUDay
	for _, d := range slices.Sorted(maps.Keys(m)) {
		if d >= first {
			out = append(out, GPUDay{Day: d, Hours: m[d]})
		}
	}
	return out
}

// addSpan adds gpus × the hours from from to to into the UTC days they
// fall in; only the kept days' part is walked, however long the span.
func addSpan(days map[string]float64, from, to time.Time, gpus int) {
	from, to = from.UTC(), to.UTC()
	if floor := dayStart(to).AddDate(0, 0, -GPUDays); from.Before(floor) {
		from = floor
	}
	for from.Before(to) {
		end := dayStart(from).AddDate(0, 0, 1)
		if to.Before(end) {
			end = to
		}
		days[from.Format(time.DateOnly)] += end.Sub(from).Hours() * float64(gpus)
		from = end
	}
}

// dayStart is the start of t's UTC day.
func dayStart(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// usageTime is when a recorded state's usage began: its last pass, or
// now for a state that has none.
func usageTime(r core.RepoState) time.Time {
	if r.LastPass.IsZero() {
		return time.Now()
	}
	return r.LastPass
}
