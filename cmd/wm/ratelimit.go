package main

import (
	"container/list"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// maxClients bounds the table of per-client buckets: at about 200 bytes
// an entry, 10,000 clients take 2 MiB.
const maxClients = 10000

// clientLimiter keeps a token bucket per client. An entry left alone
// until its bucket is full again is the same as no entry, so it is
// dropped; when the table is full anyway, the client seen least recently
// goes first.
type clientLimiter struct {
	rate  rate.Limit
	burst int
	// fill is how long an empty bucket takes to be full again.
	fill time.Duration
	max  int
	now  func() time.Time

	mu      sync.Mutex
	clients map[netip.Prefix]*list.Element // of *clientEntry
	lru     *list.List                     // most recently seen first
}

type clientEntry struct {
	key  netip.Prefix
	lim  *rate.Limiter
	seen time.Time
}

// newClientLimiter lets each client make perSecond requests a second on
// average and burst at once, remembering at most max clients.
func newClientLimiter(perSecond float64, burst, max int, now func() time.Time) *clientLimiter {
	if now == nil {
		now = time.Now
	}
	return &clientLimiter{
		rate: rate.Limit(perSecond), burst: burst, max: max, now: now,
		fill:    time.Duration(math.Ceil(float64(burst) / perSecond * float64(time.Second))),
		clients: map[netip.Prefix]*list.Element{},
		lru:     list.New(),
	}
}

// allow takes a token from key's bucket, or says how long until one is
// there.
func (l *clientLimiter) allow(key netip.Prefix) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	for back := l.lru.Back(); back != nil && !now.Before(back.Value.(*clientEntry).seen.Add(l.fill)); back = l.lru.Back() {
		l.remove(back)
	}
	el, ok := l.clients[key]
	if ok {
		l.lru.MoveToFront(el)
	} else {
		if l.lru.Len() >= l.max {
			l.remove(l.lru.Back())
		}
		el = l.lru.PushFront(&clientEntry{key: key, lim: rate.NewLimiter(l.rate, l.burst)})
		l.clients[key] = el
	}
	e := el.Value.(*clientEntry)
	e.seen = now
	res := e.lim.ReserveN(now, 1)
	if !res.OK() {
		return false, l.fill
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (l *clientLimiter) remove(el *list.Element) {
	delete(l.clients, el.Value.(*clientEntry).key)
	l.lru.Remove(el)
}

// len is how many clients are remembered.
func (l *clientLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lru.Len()
}

// clientKey is the bucket of an address: the address itself for IPv4,
// its /64 for IPv6, since one host is routinely given a whole /64.
func clientKey(a netip.Addr) netip.Prefix {
	bits := a.BitLen()
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// clientAddr is who made r: the peer, unless the peer is a trusted proxy,
// in which case X-Forwarded-For is walked from the right (the entries its
// proxies appended) past every trusted proxy. What a client wrote into
// the header itself sits further left and is never reached.
func clientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer := parseAddr(r.RemoteAddr)
	if !peer.IsValid() || !isTrusted(peer, trusted) {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a := parseAddr(strings.TrimSpace(hops[i]))
		if !a.IsValid() {
			break
		}
		client = a
		if !isTrusted(a, trusted) {
			break
		}
	}
	return client
}

// parseAddr reads "ip", "ip:port" or "[ipv6]:port"; the zero Addr when
// it is none of them.
func parseAddr(s string) netip.Addr {
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// rateLimit answers 429 with Retry-After to a client past its bucket.
// Requests for which exempt says true are not counted; limited, when not
// nil, counts the refusals.
func rateLimit(next http.Handler, l *clientLimiter, trusted []netip.Prefix, exempt func(*http.Request) bool, limited prometheus.Counter) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if exempt != nil && exempt(r) {
			next.ServeHTTP(w, r)
			return
		}
		a := clientAddr(r, trusted)
		if !a.IsValid() {
			// Not an IP peer; nothing on the public TCP listener.
			next.ServeHTTP(w, r)
			return
		}
		if ok, wait := l.allow(clientKey(a)); !ok {
			if limited != nil {
				limited.Inc()
			}
			secs := max(1, int(math.Ceil(wait.Seconds())))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			http.Error(w, fmt.Sprintf("too many requests from %s: retry in %d s", a, secs), http.StatusTooManyRequests)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// webhookSecretHolder says whether a request is a GitLab delivery with
// the webhook secret: GitLab sends every hook of the department from a
// few addresses and must not be refused (it turns off hooks that fail),
// while a student without the secret is limited like anyone.
func webhookSecretHolder(secret string) func(*http.Request) bool {
	want := sha256.Sum256([]byte(secret))
	return func(r *http.Request) bool {
		if r.Method != http.MethodPost || r.URL.Path != "/hooks/gitlab" {
			return false
		}
		got := sha256.Sum256([]byte(r.Header.Get("X-Gitlab-Token")))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1
	}
}
