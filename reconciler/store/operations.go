package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The buckets of the scheduled jobs, each made by its first write so that
// a state file no job ever ran on is left as it was (and reads as empty,
// read-only too).
var (
	// bucketSchedules: job name → JSON time of its last run.
	bucketSchedules = []byte("schedules")
	// bucketCulls: container name → JSON Cull.
	bucketCulls = []byte("culls")
	// bucketIdle: container name → JSON IdleSample.
	bucketIdle = []byte("idle")
	// bucketNotices: "<repo>\x00<what>" → JSON time it was sent.
	bucketNotices = []byte("notices")
)

// Cull is a container stopped for sitting idle: the passes of its repo
// keep it stopped at Revision, until a new commit or a wake.
type Cull struct {
	// Container is the container's full name (owner_name).
	Container string `json:"container"`
	// Owner and Repo are whose it is.
	Owner string `json:"owner"`
	Repo  string `json:"repo"`
	// Name is its name in wm.yaml.
	Name string `json:"name"`
	// Revision is the commit it was culled at: another one wakes it.
	Revision string `json:"revision"`
	// At is when it was culled, and Reason why, in plain words.
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// IdleSample is the last measurement of a container's CPU time, and since
// when it has been idle (zero: it was not idle at the last measurement).
type IdleSample struct {
	CPU       time.Duration `json:"cpu"`
	At        time.Time     `json:"at"`
	IdleSince time.Time     `json:"idleSince,omitzero"`
}

// putJSON writes v under key in bucket, making the bucket if needed.
func (s *Store) putJSON(bucket []byte, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return bk.Put([]byte(key), b)
	})
}

// getJSON reads key of bucket into v; false when there is none.
func (s *Store) getJSON(bucket []byte, key string, v any) (bool, error) {
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if bk == nil {
			return nil
		}
		b := bk.Get([]byte(key))
		if b == nil {
			return nil
		}
		found = true
		return json.Unmarshal(b, v)
	})
	return found, err
}

// deleteKey removes key of bucket; was reports whether it was there.
func (s *Store) deleteKey(bucket []byte, key string) (was bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if bk == nil || bk.Get([]byte(key)) == nil {
			return nil
		}
		was = true
		return bk.Delete([]byte(key))
	})
	return was, err
}

// LastRun returns when job last ran; zero when never.
func (s *Store) LastRun(job string) (time.Time, error) {
	var t time.Time
	if _, err := s.getJSON(bucketSchedules, job, &t); err != nil {
		return time.Time{}, fmt.Errorf("read last run of %s: %w", job, err)
	}
	return t, nil
}

// SetLastRun records that job ran at t.
func (s *Store) SetLastRun(job string, t time.Time) error {
	if err := s.putJSON(bucketSchedules, job, t.UTC()); err != nil {
		return fmt.Errorf("record run of %s: %w", job, err)
	}
	return nil
}

// PutCull records c, replacing what was recorded of its container.
func (s *Store) PutCull(c Cull) error {
	if err := s.putJSON(bucketCulls, c.Container, c); err != nil {
		return fmt.Errorf("record cull of %s: %w", c.Container, err)
	}
	return nil
}

// DeleteCull forgets the cull of container; was reports whether there was
// one.
func (s *Store) DeleteCull(container string) (was bool, err error) {
	if was, err = s.deleteKey(bucketCulls, container); err != nil {
		return false, fmt.Errorf("wake %s: %w", container, err)
	}
	return was, nil
}

// Culls returns the culled containers of repo (every repo when repo is
// empty), by full container name.
func (s *Store) Culls(repo string) (map[string]Cull, error) {
	out := map[string]Cull{}
	err := s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketCulls)
		if bk == nil {
			return nil
		}
		return bk.ForEach(func(k, v []byte) error {
			var c Cull
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			if repo == "" || c.Repo == repo {
				out[string(k)] = c
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read culled containers: %w", err)
	}
	return out, nil
}

// IdleSample returns the last measurement of container.
func (s *Store) IdleSample(container string) (IdleSample, bool, error) {
	var v IdleSample
	ok, err := s.getJSON(bucketIdle, container, &v)
	if err != nil {
		return IdleSample{}, false, fmt.Errorf("read idle sample of %s: %w", container, err)
	}
	return v, ok, nil
}

// PutIdleSample records the last measurement of container.
func (s *Store) PutIdleSample(container string, v IdleSample) error {
	if err := s.putJSON(bucketIdle, container, v); err != nil {
		return fmt.Errorf("record idle sample of %s: %w", container, err)
	}
	return nil
}

// RetainIdleSamples forgets the measurements of every container not in
// keep: those gone, stopped or holding no GPU any more.
func (s *Store) RetainIdleSamples(keep map[string]bool) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketIdle)
		if bk == nil {
			return nil
		}
		var drop [][]byte
		if err := bk.ForEach(func(k, _ []byte) error {
			if !keep[string(k)] {
				drop = append(drop, append([]byte(nil), k...))
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range drop {
			if err := bk.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("forget idle samples: %w", err)
	}
	return nil
}

func noticeKey(repo, what string) string { return repo + "\x00" + what }

// Noticed returns when the notice what was sent for repo; zero when never.
func (s *Store) Noticed(repo, what string) (time.Time, error) {
	var t time.Time
	if _, err := s.getJSON(bucketNotices, noticeKey(repo, what), &t); err != nil {
		return time.Time{}, fmt.Errorf("read notice %s of %s: %w", what, repo, err)
	}
	return t, nil
}

// SetNoticed records that the notice what was sent for repo at t.
func (s *Store) SetNoticed(repo, what string, t time.Time) error {
	if strings.Contains(repo, "\x00") {
		return fmt.Errorf("record notice of %q: not a repo key", repo)
	}
	if err := s.putJSON(bucketNotices, noticeKey(repo, what), t.UTC()); err != nil {
		return fmt.Errorf("record notice %s of %s: %w", what, repo, err)
	}
	return nil
}

// bucketExtensions: repo key → JSON Extension.
var bucketExtensions = []byte("extensions")

// Extension is an admin's approval of a repo running past its semester's
// end, up to Until (a day, YYYY-MM-DD), as the merge request MR carried it.
type Extension struct {
	Repo       string    `json:"repo"`
	Until      string    `json:"until"`
	MR         int       `json:"mr,omitempty"`
	ApprovedBy string    `json:"approvedBy"`
	At         time.Time `json:"at"`
}

// PutExtension records e, replacing what was recorded of its repo.
func (s *Store) PutExtension(e Extension) error {
	if err := s.putJSON(bucketExtensions, e.Repo, e); err != nil {
		return fmt.Errorf("record the extension of %s: %w", e.Repo, err)
	}
	return nil
}

// Extension returns the extension recorded for repo.
func (s *Store) Extension(repo string) (Extension, bool, error) {
	var e Extension
	ok, err := s.getJSON(bucketExtensions, repo, &e)
	if err != nil {
		return Extension{}, false, fmt.Errorf("read the extension of %s: %w", repo, err)
	}
	return e, ok, nil
}
