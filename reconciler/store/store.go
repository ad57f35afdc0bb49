package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/whalemountain/wm/reconciler/core"
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

// Store is the open state file. It is safe for concurrent use.
type Store struct {
	db *bolt.DB
	// setAside is where Open moved an unreadable state file.
	setAside string
}

// Open opens (creating if needed) the state file in dir. A state file
// bbolt cannot read (garbage, cut short, another format) is moved aside,
// to wm.db.corrupt-<time> beside it, and an empty one made: the engines'
// labels rebuild what passes need (see the package doc), where a refusal
// to start would leave every repo unreconciled until an admin came.
// SetAside says where it went.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	path := filepath.Join(dir, "wm.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	aside := ""
	if unreadable(err) {
		aside = fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405.000000000Z"))
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("open state: %w; and it cannot be set aside: %w", err, rerr)
		}
		db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	}
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
			var r core.RepoState
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
	return &Store{db: db, setAside: aside}, nil
}

// unreadable reports whether bbolt refused a state file for its contents.
func unreadable(err error) bool {
	return errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrChecksum) || errors.Is(err, bolterrors.ErrVersionMismatch)
}

// SetAside is where Open moved the unreadable state file it found, ""
// when it found none: what it held (port allocations of containers that
// are gone, cordons, culls, history, the audit log) is in that file only.
func (s *Store) SetAside() string { return s.setAside }

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

// CheckWritable commits an empty write: it fails when the state file
// cannot be written now (a read-only store or disk). A full disk may still
// take it, as it rewrites pages the file already has.
func (s *Store) CheckWritable() error {
	if err := s.db.Update(func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("write the state file %s: %w", s.db.Path(), err)
	}
	return nil
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
func (s *Store) Repo(key string) (state core.RepoState, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRepos).Get([]byte(key))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &state)
	})
	if err != nil {
		return core.RepoState{}, false, fmt.Errorf("read repo %s: %w", key, err)
	}
	return state, ok, nil
}

// Repos returns every recorded repo, ordered by key.
func (s *Store) Repos() ([]core.RepoState, error) {
	var out []core.RepoState
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRepos).ForEach(func(_, v []byte) error {
			var r core.RepoState
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
func (s *Store) PutRepo(r core.RepoState) error {
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
		if err := noteGPUs(tx, r.Owner, r.Key, r.Usage.GPUs, usageTime(r)); err != nil {
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
func (s *Store) OwnerRepos(owner string) ([]core.RepoState, error) {
	var out []core.RepoState
	err := s.db.View(func(tx *bolt.Tx) error {
		repos := tx.Bucket(bucketRepos)
		index := tx.Bucket(bucketOwners)
		if index == nil {
			// A state file from before the index, opened read-only.
			return repos.ForEach(func(_, v []byte) error {
				var r core.RepoState
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
			var r core.RepoState
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
	var prev core.RepoState
	if err := json.Unmarshal(old, &prev); err != nil {
		return nil // an unreadable entry indexes nothing
	}
	return tx.Bucket(bucketOwners).Delete(ownerKey(prev.Owner, key))
}

func ownerKey(owner, key string) []byte { return []byte(owner + "\x00" + key) }

// DeleteRepo forgets a repo and its history (its ports stay allocated
// until released); the GPU-hours its owner's repo held stay counted.
func (s *Store) DeleteRepo(key string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRepos)
		if v := b.Get([]byte(key)); v != nil {
			var r core.RepoState
			if json.Unmarshal(v, &r) == nil {
				if err := noteGPUs(tx, r.Owner, key, 0, time.Now()); err != nil {
					return err
				}
			}
		}
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
func (s *Store) AddPass(key string, p core.Pass) error {
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
func (s *Store) History(key string) ([]core.Pass, error) {
	var out []core.Pass
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := historyPrefix(key)
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Seek(prefix); k != nil && hasPrefix(k, prefix); k, v = c.Next() {
			var p core.Pass
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

// bucketAudit holds the audit log of the access API: keys are the big-endian
// nanosecond time of the entry and a sequence number, values JSON
// AuditEntry. It is made by the first AddAudit, so that a state file
// nobody used the API on is left as it was.
var bucketAudit = []byte("audit")

// AuditLimit is how many audit entries are kept; older ones are dropped.
const AuditLimit = 100_000

// AuditEntry is one access to, or action on, a student's resources
// through the access API: who, what, when and with what result.
type AuditEntry struct {
	// Time is when the request was decided.
	Time time.Time `json:"time"`
	// Who is the account the request spoke for ("" when it had no valid
	// credential); Admin says whether it was an admin.
	Who   string `json:"who"`
	Admin bool   `json:"admin,omitempty"`
	// Action is what was asked, such as "logs", "exec", "cp-in".
	Action string `json:"action"`
	// Target is what it was asked of, such as a container's name.
	Target string `json:"target,omitempty"`
	// Status is the HTTP status answered; Result says how it ended:
	// "ok", "denied", "unauthenticated", "unavailable" or an error.
	Status int    `json:"status"`
	Result string `json:"result"`
	// Client is the client's address.
	Client string `json:"client,omitempty"`
}

// AddAudit appends e to the audit log, dropping the oldest entries past
// AuditLimit.
func (s *Store) AddAudit(e AuditEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketAudit)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(e.Time.UnixNano())), seq)
		if err := b.Put(key, v); err != nil {
			return err
		}
		if seq%1024 != 0 {
			return nil
		}
		n := b.Stats().KeyN
		c := b.Cursor()
		for k, _ := c.First(); k != nil && n > AuditLimit; k, _ = c.Next() {
			if err := c.Delete(); err != nil {
				return err
			}
			n--
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("add audit entry: %w", err)
	}
	return nil
}

// Audit returns the audit entries from since on, oldest first, at most
// limit of them (the newest, when there are more); 0 is no limit.
func (s *Store) Audit(since time.Time, limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		start := binary.BigEndian.AppendUint64(nil, uint64(max(since.UnixNano(), 0)))
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// bucketHosts holds what admins set on Docker hosts: key the host's name
// in the server config, value JSON Cordon. It is made by the first
// Cordon, so that a state file nobody cordoned anything in is left as it
// was (and reads as no host cordoned, read-only too).
var bucketHosts = []byte("hosts")

// Cordon is a Docker host that gets no new containers: a pass places
// nothing on it that is not there already, and a drain moves what is.
type Cordon struct {
	// Host is the host's name in the server config.
	Host string `json:"host"`
	// Since is when it was cordoned.
	Since time.Time `json:"since"`
	// Reason says why, in a few words ("cordoned", "drained").
	Reason string `json:"reason,omitempty"`
}

// SetCordon cordons c.Host, replacing what was recorded of it.
func (s *Store) SetCordon(c Cordon) error {
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketHosts)
		if err != nil {
			return err
		}
		return b.Put([]byte(c.Host), v)
	})
	if err != nil {
		return fmt.Errorf("cordon host %s: %w", c.Host, err)
	}
	return nil
}

// Uncordon lets host take new containers again; was reports whether it
// was cordoned.
func (s *Store) Uncordon(host string) (was bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHosts)
		if b == nil || b.Get([]byte(host)) == nil {
			return nil
		}
		was = true
		return b.Delete([]byte(host))
	})
	if err != nil {
		return false, fmt.Errorf("uncordon host %s: %w", host, err)
	}
	return was, nil
}

// Cordons returns the cordoned hosts by name; empty when none is.
func (s *Store) Cordons() (map[string]Cordon, error) {
	out := map[string]Cordon{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketHosts)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var c Cordon
			if err := json.Unmarshal(v, &c); err != nil {
				return err
			}
			out[string(k)] = c
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read cordoned hosts: %w", err)
	}
	return out, nil
}
