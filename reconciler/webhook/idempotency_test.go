package webhook

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func key(s string) deliveryKey {
	k, _ := keyOf(s, "", "", nil)
	return k
}

func TestSeenKeysRememberForTheTTLWithinTheBound(t *testing.T) {
	t0 := time.Unix(1_750_000_000, 0)
	type step struct {
		key   string
		at    time.Duration // after t0
		isNew bool
	}
	tests := []struct {
		name  string
		max   int
		steps []step
		len   int // keys remembered at the end
	}{
		{"a key is new once, then seen until the TTL runs out", 10, []step{
			{"a", 0, true}, {"a", time.Second, false}, {"a", 59 * time.Minute, false}, {"a", time.Hour, true}, {"a", time.Hour + time.Minute, false},
		}, 1},
		{"the oldest key goes first past the bound", 2, []step{
			{"a", 0, true}, {"b", 1, true}, {"c", 2, true}, {"b", 3, false}, {"c", 4, false}, {"a", 5, true},
		}, 2},
		{"expired keys are dropped as new ones come", 10, []step{
			{"a", 0, true}, {"b", time.Minute, true}, {"c", 2 * time.Hour, true},
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSeenKeys(time.Hour, tt.max)
			for i, st := range tt.steps {
				if got := s.add(key(st.key), t0.Add(st.at)); got != st.isNew {
					t.Fatalf("step %d: add(%q) = %v, want %v", i, st.key, got, st.isNew)
				}
			}
			if got := s.len(); got != tt.len {
				t.Errorf("%d keys remembered, want %d", got, tt.len)
			}
		})
	}
	t.Run("the bound holds under many keys", func(t *testing.T) {
		s := newSeenKeys(time.Hour, maxKeys)
		for i := range 3 * maxKeys {
			s.add(key(string(rune(i))+"-"+time.Duration(i).String()), t0)
		}
		if got := s.len(); got != maxKeys {
			t.Errorf("%d keys remembered, want %d", got, maxKeys)
		}
	})
}

func TestSeenKeysAddOneKeyOnceUnderConcurrency(t *testing.T) {
	s := newSeenKeys(time.Hour, 10)
	var fresh atomic.Int32
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			if s.add(key("k"), time.Unix(0, 0)) {
				fresh.Add(1)
			}
		})
	}
	wg.Wait()
	if n := fresh.Load(); n != 1 {
		t.Errorf("%d adds were new, want 1", n)
	}
}

func TestDeliveryKeys(t *testing.T) {
	body := []byte(`{"ref":"refs/heads/a"}`)
	k := func(idem, uuid, event string, body []byte) deliveryKey {
		t.Helper()
		got, ok := keyOf(idem, uuid, event, body)
		if !ok {
			t.Fatalf("keyOf(%q, %q) has no key", idem, uuid)
		}
		return got
	}
	if _, ok := keyOf("", "", "Push Hook", body); ok {
		t.Error("a delivery with neither header has a key")
	}
	if k("a", "", "Push Hook", body) != k("a", "u", "Note Hook", []byte("other")) {
		t.Error("the key of Idempotency-Key depends on something else")
	}
	if k("a", "", "", nil) == k("", "a", "", nil) {
		t.Error("Idempotency-Key a and X-Gitlab-Event-UUID a share a key")
	}
	if k("", "u", "Push Hook", body) == k("", "u", "Push Hook", []byte(`{"ref":"refs/heads/b"}`)) {
		t.Error("two bodies with one event UUID share a key")
	}
	if k("", "u", "Push Hook", body) == k("", "u", "Merge Request Hook", body) {
		t.Error("two events with one event UUID share a key")
	}
}
