package gitlab_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/gitlab"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/reconciler/webhook"
	"github.com/whalemountain/wm/schema"
)

// Sizes of the webhook flood (TestAWebhookFlood..., BenchmarkWebhookFlood):
// floodDeliveries deliveries sent from floodConns connections at once, as
// fast as they are answered, to a server tracking floodTracked projects of
// which floodPushed got a new commit.
const (
	floodDeliveries = 10_000
	floodConns      = 16
	floodTracked    = 40
	floodPushed     = 20
)

// The kinds of delivery in a flood.
const (
	kindValid      = "valid"           // a push's delivery: the first of its key is 202, the others 200 duplicate
	kindRetry      = "retry"           // GitLab's retry of it, the same Idempotency-Key
	kindOtherHook  = "other hook"      // the same push through a second hook (a system hook), its own key: 202
	kindBadToken   = "bad token"       // 401
	kindBadJSON    = "bad JSON"        // 400
	kindUnknown    = "unknown project" // a push to a project WhaleMountain does not track: 202
	floodKindCount = 6
)

// floodServer is WhaleMountain's GitLab side as wm serve wires it (the
// webhook handler, the service, the loop and the reconciler) against the
// GitLab double, with one fake Docker host; it counts the passes the loop
// runs.
type floodServer struct {
	g        *gitlabtest.GitLab
	fake     *docker.Fake
	svc      *gitlab.Service
	hooks    string // URL of POST /hooks/gitlab
	passes   atomic.Int64
	projects []*gitlabtest.Project
	heads    map[*gitlabtest.Project]string // the commit at main of each project
	logs     *logBuffer
}

// logCounts counts the lines logged by message.
func (s *floodServer) logCounts() map[string]int {
	n := map[string]int{}
	for line := range strings.Lines(s.logs.String()) {
		if _, msg, ok := strings.Cut(line, " msg="); ok {
			if q, err := strconv.QuotedPrefix(msg); err == nil {
				msg = q
			} else {
				msg, _, _ = strings.Cut(msg, " ")
			}
			n[msg]++
		}
	}
	return n
}

// newFloodServer starts the server over tracked student projects, each
// with a first commit and its image, and waits until every one is Ready.
func newFloodServer(tb testing.TB, tracked int) *floodServer {
	tb.Helper()
	g := gitlabtest.New(tb, token)
	s := &floodServer{g: g, fake: docker.NewFake("h1"), heads: map[*gitlabtest.Project]string{}}
	for i := range tracked {
		owner := fmt.Sprintf("s%04d", i)
		p := g.AddProject(tb, "students/"+owner+"/web")
		g.AddMember(tb, "students/"+owner, owner, gitlabtest.Owner)
		s.heads[p] = p.Commit(tb, "main", wmYAML("v1"), "init")
		s.addImage(p, s.heads[p])
		s.projects = append(s.projects, p)
	}
	root := tb.TempDir()
	cfg, err := schema.ParseServer("wm.yaml", strings.NewReader(fmt.Sprintf(`
registry: {host: %q}
sources:
  gitlab: {url: %q, tokenFile: token, groups: [students], discoverInterval: 1h}
docker:
  hosts: [{name: h1, endpoint: "unix:///x.sock"}]
`, registry, g.URL())), root)
	if err != nil {
		tb.Fatal(err)
	}
	s.logs = &logBuffer{}
	log := slog.New(slog.NewTextHandler(s.logs, nil))
	fast := gl.WithCustomBackoff(func(time.Duration, time.Duration, int, *http.Response) time.Duration { return time.Millisecond })
	client, err := gitlab.New(*cfg.Sources.GitLab, token, log, fast)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := store.Open(filepath.Join(root, "state"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	s.svc = gitlab.NewService(client, *cfg.Sources.GitLab, cfg.Policy.Quota, log)
	git := gitsource.New(filepath.Join(root, "git"), gitsource.WithBasicAuth("oauth2", token), gitsource.WithTimeout(10*time.Second))
	rec, err := reconciler.New(cfg, git, []core.Engine{s.fake}, st, reconciler.WithReporter(s.svc.Reporter()))
	if err != nil {
		tb.Fatal(err)
	}
	loop := reconciler.NewLoop(rec, s.svc.Repos, time.Hour, 0, 4, log)
	loop.OnResult = func(reconciler.Result, error) { s.passes.Add(1) }
	s.svc.Connect(rec, loop)
	h, err := webhook.NewHandler(webhook.Config{Secret: []byte(secret)}, s.svc, nil)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(h)
	s.hooks = srv.URL + "/hooks/gitlab"
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { loop.Run(ctx) })
	wg.Go(func() { s.svc.Run(ctx) })
	tb.Cleanup(func() { cancel(); wg.Wait(); srv.Close() })
	s.waitGreen(tb, s.projects, 2*time.Minute)
	return s
}

// addImage makes the image CI would push for a commit available.
func (s *floodServer) addImage(p *gitlabtest.Project, sha string) {
	s.fake.AddRemoteImage(fmt.Sprintf("%s/%s:%s", registry, strings.ToLower(p.Path()), sha))
}

// green reports whether p's head commit has its whalemountain status at
// success.
func (s *floodServer) green(p *gitlabtest.Project, sha string) bool {
	for _, st := range s.g.Statuses(p.Path(), sha) {
		if st.Name == gitlab.StatusName && st.Status == "success" {
			return true
		}
	}
	return false
}

// waitGreen waits until the head of main of every project is green.
func (s *floodServer) waitGreen(tb testing.TB, ps []*gitlabtest.Project, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for _, p := range ps {
		for !s.green(p, s.heads[p]) {
			if time.Now().After(deadline) {
				tb.Fatalf("%s: its head is not green after %s; logged: %v", p.Path(), within, s.logCounts())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// listings counts the requests that list the students group: one per
// discovery.
func (s *floodServer) listings() int {
	n := 0
	for _, r := range s.g.Requests() {
		if strings.HasPrefix(r, "GET /api/v4/groups/students/projects") {
			n++
		}
	}
	return n
}

// delivery is one webhook request of a flood.
type delivery struct {
	kind   string
	event  string
	body   []byte
	header http.Header
	want   int // the status it must be answered
}

// floodPlan pushes a new commit (and its image) to each of the first
// pushed projects and returns n deliveries of every kind in a seeded
// random order: every push's valid delivery, its retries and its copies
// through a second hook, and bogus ones.
func (s *floodServer) floodPlan(tb testing.TB, pushed, n int) []delivery {
	tb.Helper()
	type push struct {
		body []byte
		key  string
	}
	pushes := make([]push, pushed)
	for i, p := range s.projects[:pushed] {
		before := s.heads[p]
		after := p.Commit(tb, "main", wmYAML("v2"), "second")
		s.heads[p] = after
		s.addImage(p, after)
		pushes[i] = push{gitlabtest.PushHook(p, "main", before, after), fmt.Sprintf("valid-%d", i)}
	}
	ghost := s.g.AddProject(tb, "students/ghost/web")
	ghostSHA := ghost.Commit(tb, "main", wmYAML("v1"), "init")
	ghostBody := gitlabtest.PushHook(ghost, "main", "0000000000000000000000000000000000000000", ghostSHA)
	s.g.Delete(tb, "students/ghost/web") // the body names a project GitLab no longer has
	hdr := func(token, key string) http.Header {
		return http.Header{"X-Gitlab-Token": {token}, "Idempotency-Key": {key}}
	}
	out := make([]delivery, 0, n)
	for _, p := range pushes {
		out = append(out, delivery{kindValid, "Push Hook", p.body, hdr(secret, p.key), 0})
	}
	for i := len(out); i < n; i++ {
		p := pushes[i%len(pushes)]
		d := delivery{event: "Push Hook", body: p.body}
		switch i % (floodKindCount - 1) {
		case 0:
			d.kind, d.header = kindRetry, hdr(secret, p.key) // 202 when it comes first
		case 1:
			d.kind, d.header, d.want = kindOtherHook, hdr(secret, fmt.Sprintf("other-%d", i)), http.StatusAccepted
		case 2:
			d.kind, d.header, d.want = kindBadToken, hdr("not-the-secret", fmt.Sprintf("bad-token-%d", i)), http.StatusUnauthorized
		case 3:
			d.kind, d.header, d.want = kindBadJSON, hdr(secret, fmt.Sprintf("bad-json-%d", i)), http.StatusBadRequest
			d.body = p.body[:len(p.body)/2]
		case 4:
			d.kind, d.header, d.want = kindUnknown, hdr(secret, fmt.Sprintf("unknown-%d", i)), http.StatusAccepted
			d.body = ghostBody
		}
		out = append(out, d)
	}
	rng := rand.New(rand.NewPCG(16, 2))
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// floodResult is what a flood measured.
type floodResult struct {
	acks     []time.Duration // of every delivery, sorted
	took     time.Duration   // from the first request to the last answer
	statuses map[string]map[int]int
}

// quantile returns the q-quantile of the ack times.
func (r floodResult) quantile(q float64) time.Duration {
	return r.acks[min(len(r.acks)-1, int(q*float64(len(r.acks))))]
}

// flood sends the deliveries to url from conns connections at once, each
// sending its next as soon as the last is answered, and returns the time
// each took to be answered and the statuses by kind.
func flood(tb testing.TB, url string, ds []delivery, conns int) floodResult {
	tb.Helper()
	transport := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	acks := make([]time.Duration, len(ds))
	codes := make([]int, len(ds))
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ds) {
					return
				}
				d := ds[i]
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(d.body))
				if err != nil {
					errs <- err
					return
				}
				req.Header = d.header.Clone()
				req.Header.Set("X-Gitlab-Event", d.event)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				acks[i], codes[i] = time.Since(t0), resp.StatusCode
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		tb.Fatalf("flood: %v", err)
	}
	res := floodResult{took: took, statuses: map[string]map[int]int{}}
	for i, d := range ds {
		if res.statuses[d.kind] == nil {
			res.statuses[d.kind] = map[int]int{}
		}
		res.statuses[d.kind][codes[i]]++
		if codes[i] != d.want && d.want != 0 {
			tb.Errorf("a %s delivery was answered %d, want %d", d.kind, codes[i], d.want)
		}
	}
	res.acks = slices.Clone(acks)
	slices.Sort(res.acks)
	return res
}

// heapInUse is the heap in use after a collection, in bytes.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// settle waits until the pass count has not moved for quiet (longer than
// the loop's ExpectDelay, so that a pass repeated for a commit not yet
// visible would have started), at most within.
func (s *floodServer) settle(tb testing.TB, quiet, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	last, since := s.passes.Load(), time.Now()
	for time.Since(since) < quiet {
		if time.Now().After(deadline) {
			tb.Fatalf("passes still running after %s", within)
		}
		time.Sleep(50 * time.Millisecond)
		if n := s.passes.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}

// floodBounds are what a flood may cost at most.
const (
	// floodMaxListings: the listings of GitLab a flood may cause, however
	// many of its deliveries name projects WhaleMountain does not track.
	floodMaxListings = 2
	// floodMaxHeapGrowth: the growth of the heap in use over a flood of
	// floodDeliveries, the delivery keys remembered (about 2 MiB) and the
	// double's record of the requests it served included.
	floodMaxHeapGrowth = 16 << 20
)

func TestAWebhookFloodPassesEachPushedRepoOnceListsGitLabOnceAndKeepsMemoryBounded(t *testing.T) {
	n := floodDeliveries
	if testing.Short() {
		n /= 5 // the fast set runs under the race detector
	}
	s := newFloodServer(t, floodTracked)
	plan := s.floodPlan(t, floodPushed, n)
	passes, listings := s.passes.Load(), s.listings()
	heap := heapInUse()

	res := flood(t, s.hooks, plan, floodConns)
	if n := res.statuses[kindValid][http.StatusAccepted] + res.statuses[kindRetry][http.StatusAccepted]; n != floodPushed {
		t.Errorf("%d pushes were accepted once their retries are told apart, want %d", n, floodPushed)
	}
	s.waitGreen(t, s.projects[:floodPushed], 30*time.Second)
	s.settle(t, 3*reconciler.ExpectDelay, time.Minute)

	grown := int64(heapInUse()) - int64(heap)
	t.Logf("%d deliveries in %s (%.0f/s) over %d connections: ack p50 %s, p99 %s, max %s; statuses %v; heap %+.1f MiB",
		len(plan), res.took, float64(len(plan))/res.took.Seconds(), floodConns,
		res.quantile(.5), res.quantile(.99), res.acks[len(res.acks)-1], res.statuses, float64(grown)/(1<<20))
	if n := s.passes.Load() - passes; n > floodPushed {
		t.Errorf("the flood ran %d passes for %d repos pushed", n, floodPushed)
	}
	if n := s.listings() - listings; n > floodMaxListings {
		t.Errorf("the flood listed GitLab %d times, want at most %d", n, floodMaxListings)
	}
	if grown > floodMaxHeapGrowth {
		t.Errorf("the heap in use grew by %.1f MiB over the flood, want at most %d MiB", float64(grown)/(1<<20), floodMaxHeapGrowth>>20)
	}
}
