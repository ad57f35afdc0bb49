package webhook

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// maxKeys bounds how many delivery keys are remembered: GitLab retries a
// delivery within minutes, so the newest 10,000 cover any instance this
// project serves, in about 2 MiB.
const maxKeys = 10_000

// deliveryKey identifies one delivery across GitLab's retries. It is a
// hash, so that a long header costs no more memory than a short one.
type deliveryKey [sha256.Size]byte

// keyOf returns the key of a delivery, and false when it carries none.
//
// Idempotency-Key (sent since 2024, gitlab#388692) is unique per delivery
// and kept across retries and manual resends. X-Gitlab-Event-UUID, the fallback for
// older GitLab, is shared by every hook call made while GitLab handles one
// request: a single git push that moves two branches sends two Push Hooks
// with the same UUID. Its key therefore also covers the event and the
// body, which a retry repeats byte for byte.
func keyOf(idempotencyKey, eventUUID, event string, body []byte) (deliveryKey, bool) {
	h := sha256.New()
	switch {
	case idempotencyKey != "":
		h.Write([]byte("idempotency-key\x00"))
		h.Write([]byte(idempotencyKey))
	case eventUUID != "":
		h.Write([]byte("event-uuid\x00"))
		h.Write([]byte(eventUUID))
		h.Write([]byte{0})
		h.Write([]byte(event))
		h.Write([]byte{0})
		h.Write(body)
	default:
		return deliveryKey{}, false
	}
	var k deliveryKey
	h.Sum(k[:0])
	return k, true
}

// seenKeys is a set of delivery keys, each remembered for ttl, holding at
// most max of them: the least recently added goes first. It is safe for
// concurrent use.
type seenKeys struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	order *list.List // of *seenKey, newest first
	byKey map[deliveryKey]*list.Element
}

type seenKey struct {
	key     deliveryKey
	expires time.Time
}

func newSeenKeys(ttl time.Duration, max int) *seenKeys {
	return &seenKeys{ttl: ttl, max: max, order: list.New(), byKey: make(map[deliveryKey]*list.Element)}
}

// add remembers k as of now and reports whether it is new: false means a
// delivery with that key was added less than ttl ago. Check and insert are
// one step, so two concurrent retries of one delivery cannot both be new.
func (s *seenKeys) add(k deliveryKey, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.byKey[k]; ok {
		e := el.Value.(*seenKey)
		if now.Before(e.expires) {
			return false
		}
		e.expires = now.Add(s.ttl)
		s.order.MoveToFront(el)
		return true
	}
	s.byKey[k] = s.order.PushFront(&seenKey{key: k, expires: now.Add(s.ttl)})
	// Drop what expired, and then the oldest while over the bound: the
	// oldest are at the back, so this stops at the first live one.
	for back := s.order.Back(); back != nil; back = s.order.Back() {
		e := back.Value.(*seenKey)
		if now.Before(e.expires) && s.order.Len() <= s.max {
			break
		}
		s.order.Remove(back)
		delete(s.byKey, e.key)
	}
	return true
}

// len is how many keys are remembered.
func (s *seenKeys) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len()
}
