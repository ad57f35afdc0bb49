package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var (
	bucketRepos   = []byte("repos")
	bucketPorts   = []byte("ports")
	bucketHistory = []byte("history")
	// bucketOwners indexes repos by owner: "<owner>\x00<key>", so that a
	// pass asks about one owner's repos without reading everyone's.
	bucketOwners = []byte("owners")
)

// HistoryLimit is how many passes are kept per repo.
const HistoryLimit = 50

// ErrNoFreePort is returned when the host port range is used up.
var ErrNoFreePort = errors.New("no free host port in the range")

// Condition types, the fixed vocabulary of a repo's status.
const (
	Ready       = "Ready"
	Reconciling = "Reconciling"
	Stalled     = "Stalled"
)

// Condition is one observation about a repo, as in Kubernetes: a type, a
// status, a CamelCase reason for machines and a message for people.
type Condition struct {
	Type               string    `json:"type"`
	Status             bool      `json:"status"`
	Reason             string    `json:"reason"`
	Message            string    `json:"message"`
	LastTransitionTime time.Time `json:"lastTransitionTime"`
}

// Object is one applied thing in a repo's inventory.
type Object struct {
	Kind     string `json:"kind"` // "container" or "volume"
	Host     string `json:"host"` // Docker host name
	Name     string `json:"name"` // full name on the host
	SpecHash string `json:"specHash,omitempty"`
}

// ContainerStatus is what a student sees of one container.
type ContainerStatus struct {
	Name   string            `json:"name"` // the name in wm.yaml
	Host   string            `json:"host"`
	Ports  map[string]int    `json:"ports,omitempty"` // guest port → host port, keys decimal
	State  string            `json:"state"`
	Health string            `json:"health"`
	Labels map[string]string `json:"-"`
}

// PodStatus is what a student sees of one Kubernetes pod.
type PodStatus struct {
	Name    string `json:"name"`
	Phase   string `json:"phase"`
	Message string `json:"message,omitempty"`
}

// SIFStatus is one built Singularity image.
type SIFStatus struct {
	Name   string `json:"name"`
	Path   string `json:"path"` // on disk, in the artifacts folder
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	Image  string `json:"image"` // the reference it was built from
}

// RetiredSIF is a SIF file waiting for its grace period to end.
type RetiredSIF struct {
	Path  string    `json:"path"`
	Since time.Time `json:"since"`
}

// RepoState is everything remembered about one repo.
type RepoState struct {
	Key              string            `json:"key"`
	Owner            string            `json:"owner"`
	URL              string            `json:"url"`
	Branch           string            `json:"branch"`
	ObservedRevision string            `json:"observedRevision,omitempty"`
	AppliedRevision  string            `json:"appliedRevision,omitempty"`
	Conditions       []Condition       `json:"conditions,omitempty"`
	Inventory        []Object          `json:"inventory,omitempty"`
	Containers       []ContainerStatus `json:"containers,omitempty"`
	Pods             []PodStatus       `json:"pods,omitempty"`
	SIFs             []SIFStatus       `json:"sifs,omitempty"`
	// RetiredSIFs are SIF files no longer declared, removed once their
	// grace period is over.
	RetiredSIFs []RetiredSIF `json:"retiredSIFs,omitempty"`
	// Image is what the repo's wm.yaml said of its image at the applied
	// revision, for sharing and the catalogue.
	ImageDescription string `json:"imageDescription,omitempty"`
	ImageShared      bool   `json:"imageShared,omitempty"`
	// Usage is what the applied revision counts against the owner's quota.
	Usage    Usage     `json:"usage"`
	LastPass time.Time `json:"lastPass,omitzero"`
}

// Usage is what counts against a student's quota. Stopped containers count
// as containers (and their host ports) but hold no GPU, CPU or memory.
type Usage struct {
	Containers  int     `json:"containers"`
	Pods        int     `json:"pods"`
	GPUs        int     `json:"gpus"`
	CPUs        float64 `json:"cpus"`
	MemoryBytes int64   `json:"memoryBytes"`
	Ports       int     `json:"ports,omitempty"`
}

// Add returns the sum of two usages. It saturates instead of overflowing,
// and a negative or non-finite part counts as the most there can be: no
// sum can wrap around into room under a quota.
func (u Usage) Add(v Usage) Usage {
	return Usage{
		Containers:  addInt(u.Containers, v.Containers),
		Pods:        addInt(u.Pods, v.Pods),
		GPUs:        addInt(u.GPUs, v.GPUs),
		CPUs:        addFloat(u.CPUs, v.CPUs),
		MemoryBytes: addInt(u.MemoryBytes, v.MemoryBytes),
		Ports:       addInt(u.Ports, v.Ports),
	}
}

// addInt adds two non-negative counts, saturating at the type's maximum;
// a negative operand (which no real usage has) saturates too.
func addInt[T int | int64](a, b T) T {
	sum := a + b
	if a < 0 || b < 0 || sum < a {
		return saturated(sum)
	}
	return sum
}

// saturated returns the largest value of x's type (x itself is unused).
func saturated[T int | int64](T) T {
	m := T(1)
	for m<<1 > 0 {
		m = m<<1 | 1
	}
	return m
}

// addFloat adds two CPU counts; NaN, negative or infinite saturate.
func addFloat(a, b float64) float64 {
	if !(a >= 0) || !(b >= 0) || math.IsInf(a+b, 0) {
		return math.Inf(1)
	}
	return a + b
}

// Condition returns the condition of type t, or nil.
func (r *RepoState) Condition(t string) *Condition {
	for i := range r.Conditions {
		if r.Conditions[i].Type == t {
			return &r.Conditions[i]
		}
	}
	return nil
}

// SetCondition records a condition, keeping its transition time when the
// status did not change.
func (r *RepoState) SetCondition(c Condition, now time.Time) {
	if old := r.Condition(c.Type); old != nil {
		c.LastTransitionTime = old.LastTransitionTime
		if old.Status != c.Status {
			c.LastTransitionTime = now
		}
		*old = c
		return
	}
	c.LastTransitionTime = now
	r.Conditions = append(r.Conditions, c)
}

// Pass is one reconcile pass of one repo, for the history.
type Pass struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`
	Revision string        `json:"revision,omitempty"`
	Result   string        `json:"result"` // a condition reason, e.g. "Applied", "ValidationFailed"
	Message  string        `json:"message,omitempty"`
	Changes  int           `json:"changes"`
}

// Store is the open state file. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the state file in dir.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "wm.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketRepos, bucketPorts, bucketHistory} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if tx.Bucket(bucketOwners) != nil {
			return nil
		}
		// A state file from before the index: build it once.
		owners, err := tx.CreateBucket(bucketOwners)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketRepos).ForEach(func(k, v []byte) error {
			var r RepoState
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			return owners.Put(ownerKey(r.Owner, r.Key), nil)
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init state: %w", err)
	}
	return &Store{db: db}, nil
}

// ErrLocked is returned by OpenReadOnly when a running wm holds the file.
var ErrLocked = errors.New("state is held by a running wm")

// OpenReadOnly opens an existing state file for reading. bbolt locks the
// file for one writer, so while `wm serve` runs this fails fast with
// ErrLocked and the caller asks the server instead.
func OpenReadOnly(dir string) (*Store, error) {
	path := filepath.Join(dir, "wm.db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open state: %w (has wm reconciled anything yet?)", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 500 * time.Millisecond})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	return &Store{db: db}, nil
}

// Writes is how many pages the store has written to its file since it was
// opened: what a no-op pass must leave as it is.
func (s *Store) Writes() int64 {
	st := s.db.Stats()
	return st.TxStats.GetWrite()
}

// Close closes the state file.
func (s *Store) Close() error { return s.db.Close() }

// Repo returns the state of a repo; ok is false when none is recorded.
func (s *Store) Repo(key string) (state RepoState, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRepos).Get([]byte(key))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &state)
	})
	if err != nil {
		return RepoState{}, false, fmt.Errorf("read repo %s: %w", key, err)
	}
	return state, ok, nil
}

// Repos returns every recorded repo, ordered by key.
func (s *Store) Repos() ([]RepoState, error) {
	var out []RepoState
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRepos).ForEach(func(_, v []byte) error {
			var r RepoState
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list repos: %w", err)
	}
	return out, nil
}

// PutRepo records the state of a repo. A state equal to the one recorded
// is not written again: a pass that changed nothing writes nothing.
func (s *Store) PutRepo(r RepoState) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	same := false
	if err := s.db.View(func(tx *bolt.Tx) error {
		same = bytes.Equal(tx.Bucket(bucketRepos).Get([]byte(r.Key)), v)
		return nil
	}); err != nil || same {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRepos)
		if err := unindex(tx, r.Key); err != nil {
			return err
		}
		if err := tx.Bucket(bucketOwners).Put(ownerKey(r.Owner, r.Key), nil); err != nil {
			return err
		}
		return b.Put([]byte(r.Key), v)
	})
	if err != nil {
		return fmt.Errorf("write repo %s: %w", r.Key, err)
	}
	return nil
}

// OwnerRepos returns the recorded repos of owner, ordered by key, reading
// only theirs.
func (s *Store) OwnerRepos(owner string) ([]RepoState, error) {
	var out []RepoState
	err := s.db.View(func(tx *bolt.Tx) error {
		repos := tx.Bucket(bucketRepos)
		index := tx.Bucket(bucketOwners)
		if index == nil {
			// A state file from before the index, opened read-only.
			return repos.ForEach(func(_, v []byte) error {
				var r RepoState
				if err := json.Unmarshal(v, &r); err != nil || r.Owner != owner {
					return err
				}
				out = append(out, r)
				return nil
			})
		}
		prefix := ownerKey(owner, "")
		c := index.Cursor()
		for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
			v := repos.Get(k[len(prefix):])
			if v == nil {
				continue
			}
			var r RepoState
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list repos of %s: %w", owner, err)
	}
	return out, nil
}

// unindex removes repo key from its recorded owner's index, if recorded.
func unindex(tx *bolt.Tx, key string) error {
	old := tx.Bucket(bucketRepos).Get([]byte(key))
	if old == nil {
		return nil
	}
	var prev RepoState
	if err := json.Unmarshal(old, &prev); err != nil {
		return nil // an unreadable entry indexes nothing
	}
	return tx.Bucket(bucketOwners).Delete(ownerKey(prev.Owner, key))
}

func ownerKey(owner, key string) []byte { return []byte(owner + "\x00" + key) }

// DeleteRepo forgets a repo and its history (its ports stay allocated
// until released).
func (s *Store) DeleteRepo(key string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRepos)
		if err := unindex(tx, key); err != nil {
			return err
		}
		if err := b.Delete([]byte(key)); err != nil {
			return err
		}
		h := tx.Bucket(bucketHistory)
		prefix := historyPrefix(key)
		var drop [][]byte
		c := h.Cursor()
		for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
			drop = append(drop, slices.Clone(k))
		}
		for _, k := range drop {
			if err := h.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// PortKey names one container port for allocation: the container's full
// name and the guest port. Full names are unique per owner by construction.
func PortKey(container string, guest int) string {
	return fmt.Sprintf("%s/%d", container, guest)
}

// Port returns the host port allocated to key, or 0.
func (s *Store) Port(key string) (int, error) {
	var port int
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketPorts).Get([]byte(key)); v != nil {
			port = int(binary.BigEndian.Uint16(v))
		}
		return nil
	})
	return port, err
}

// AllocatePort returns the host port allocated to key, allocating the
// lowest free port of [from, to] when there is none. Ports in taken
// (bound on an engine by something else) are skipped.
func (s *Store) AllocatePort(key string, from, to int, taken map[int]bool) (int, error) {
	var port int
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPorts)
		if v := b.Get([]byte(key)); v != nil {
			port = int(binary.BigEndian.Uint16(v))
			return nil
		}
		used := map[int]bool{}
		if err := b.ForEach(func(_, v []byte) error {
			used[int(binary.BigEndian.Uint16(v))] = true
			return nil
		}); err != nil {
			return err
		}
		for p := from; p <= to; p++ {
			if !used[p] && !taken[p] {
				port = p
				return b.Put([]byte(key), portBytes(p))
			}
		}
		return ErrNoFreePort
	})
	if err != nil {
		return 0, fmt.Errorf("allocate host port for %s: %w", key, err)
	}
	return port, nil
}

// AdoptPort records that key is bound to port, as seen on an engine. It
// is how a lost store is rebuilt; an existing allocation is overwritten
// since the engine is the truth.
func (s *Store) AdoptPort(key string, port int) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPorts).Put([]byte(key), portBytes(port))
	})
}

// ReleasePorts frees every port allocated to the container named prefix
// (keys "prefix/<guest>").
func (s *Store) ReleasePorts(container string) error {
	return s.RetainPorts(container, nil)
}

// ReleasePort frees the port allocated to key, if any.
func (s *Store) ReleasePort(key string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPorts).Delete([]byte(key))
	})
}

// RetainPorts frees the ports allocated to the container named prefix
// whose guest port is not in keep: what a container no longer publishes
// goes back to everyone.
func (s *Store) RetainPorts(container string, keep []int) error {
	kept := map[string]bool{}
	for _, g := range keep {
		kept[PortKey(container, g)] = true
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPorts)
		prefix := []byte(container + "/")
		// Collected first: deleting under a bbolt cursor can skip keys.
		var drop [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
			if !kept[string(k)] {
				drop = append(drop, slices.Clone(k))
			}
		}
		for _, k := range drop {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Ports returns every allocation, key → host port.
func (s *Store) Ports() (map[string]int, error) {
	out := map[string]int{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPorts).ForEach(func(k, v []byte) error {
			out[string(k)] = int(binary.BigEndian.Uint16(v))
			return nil
		})
	})
	return out, err
}

// AddPass appends a pass to a repo's history, keeping the last
// HistoryLimit.
func (s *Store) AddPass(key string, p Pass) error {
	v, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		h := tx.Bucket(bucketHistory)
		seq, err := h.NextSequence()
		if err != nil {
			return err
		}
		prefix := historyPrefix(key)
		k := binary.BigEndian.AppendUint64(slices.Clone(prefix), seq)
		if err := h.Put(k, v); err != nil {
			return err
		}
		var keys [][]byte
		c := h.Cursor()
		for k, _ := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, _ = c.Next() {
			keys = append(keys, slices.Clone(k))
		}
		for _, old := range keys[:max(0, len(keys)-HistoryLimit)] {
			if err := h.Delete(old); err != nil {
				return err
			}
		}
		return nil
	})
}

// History returns a repo's passes, oldest first.
func (s *Store) History(key string) ([]Pass, error) {
	var out []Pass
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := historyPrefix(key)
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
			var p Pass
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

func historyPrefix(key string) []byte { return append([]byte(key), 0) }

func portBytes(p int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(p)) }

func hasPrefix(k, prefix []byte) bool {
	return len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix)
}
