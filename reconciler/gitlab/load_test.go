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

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
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

// newFloodServer starts the server over tracked student projects on a
// fake Docker host, each with a first commit and its image, and waits
// until every one is Ready.
func newFloodServer(tb testing.TB, tracked int) *floodServer {
	tb.Helper()
	owners := make([]string, tracked)
	for i := range owners {
		owners[i] = fmt.Sprintf("s%04d", i)
	}
	return newServer(tb, docker.NewFake("h1"), owners, wmYAML("v1"), "")
}

// newServer starts the server over a project students/<owner>/web of each
// owner on engine, with first as its first commit (and its image, on a
// fake engine), and waits until every one is Ready. policy is the
// server config's policy section, if any.
func newServer(tb testing.TB, engine core.Engine, owners []string, first map[string]string, policy string) *floodServer {
	tb.Helper()
	g := gitlabtest.New(tb, token)
	s := &floodServer{g: g, heads: map[*gitlabtest.Project]string{}}
	s.fake, _ = engine.(*docker.Fake)
	for _, owner := range owners {
		p := g.AddProject(tb, "students/"+owner+"/web")
		g.AddMember(tb, "students/"+owner, owner, gitlabtest.Owner)
		s.heads[p] = p.Commit(tb, "main", first, "init")
		s.addImage(p, s.heads[p])
		s.projects = append(s.projects, p)
	}
	root := tb.TempDir()
	cfg, err := schema.ParseServer("wm.yaml", strings.NewReader(fmt.Sprintf(`
registry: {host: %q}
sources:
  gitlab: {url: %q, tokenFile: token, groups: [students], discoverInterval: 1h}
docker:
  hosts: [{name: %s, endpoint: "unix:///x.sock"}]
%s
`, registry, g.URL(), engine.Name(), policy)), root)
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
	rec, err := reconciler.New(cfg, git, []core.Engine{engine}, st, reconciler.WithReporter(s.svc.Reporter()))
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

// addImage makes the image CI would push for a commit available on the
// fake engine.
func (s *floodServer) addImage(p *gitlabtest.Project, sha string) {
	if s.fake == nil {
		return
	}
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

// BenchmarkWebhookFlood sends floodDeliveries deliveries (as the test
// above: valid, retried, through a second hook, bad token, bad JSON,
// unknown project) from floodConns connections to the webhook handler,
// the GitLab service and the loop wired as wm serve wires them, over the
// GitLab double and a fake Docker host, and beside it, as the baseline,
// the same deliveries to a bare net/http handler that reads the body and
// answers 202: what the client, the loopback and net/http cost on this
// machine. It reports the answer times (p50, p99, in µs) and rates of
// both and their ratios, the passes the flood ran per repo pushed, and
// the growth of the heap in use.
//
//	go test ./reconciler/gitlab -run '^$' -bench WebhookFlood -benchtime 1x
func BenchmarkWebhookFlood(b *testing.B) {
	bare := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"status":"accepted"}` + "\n"))
	}))
	b.Cleanup(bare.Close)
	var wm, base []floodResult
	var passes, grown float64
	for b.Loop() {
		b.StopTimer()
		s := newFloodServer(b, floodTracked)
		plan := s.floodPlan(b, floodPushed, floodDeliveries)
		before, heap := s.passes.Load(), heapInUse()
		b.StartTimer()
		wm = append(wm, flood(b, s.hooks, plan, floodConns))
		b.StopTimer()
		s.waitGreen(b, s.projects[:floodPushed], 2*time.Minute)
		s.settle(b, 3*reconciler.ExpectDelay, time.Minute)
		passes += float64(s.passes.Load()-before) / floodPushed
		grown += float64(int64(heapInUse())-int64(heap)) / (1 << 20)
		for i := range plan {
			plan[i].want = 0 // the bare handler accepts everything
		}
		base = append(base, flood(b, bare.URL, plan, floodConns))
		b.StartTimer()
	}
	n := float64(len(wm))
	var p50, p99, rate, bp50, bp99, brate float64
	for i := range wm {
		p50 += float64(wm[i].quantile(.5).Microseconds()) / n
		p99 += float64(wm[i].quantile(.99).Microseconds()) / n
		rate += float64(len(wm[i].acks)) / wm[i].took.Seconds() / n
		bp50 += float64(base[i].quantile(.5).Microseconds()) / n
		bp99 += float64(base[i].quantile(.99).Microseconds()) / n
		brate += float64(len(base[i].acks)) / base[i].took.Seconds() / n
	}
	b.ReportMetric(p50, "ack-p50-µs")
	b.ReportMetric(p99, "ack-p99-µs")
	b.ReportMetric(rate, "deliveries/s")
	b.ReportMetric(bp50, "bare-p50-µs")
	b.ReportMetric(bp99, "bare-p99-µs")
	b.ReportMetric(brate, "bare-deliveries/s")
	b.ReportMetric(p50/bp50, "p50/bare")
	b.ReportMetric(p99/bp99, "p99/bare")
	b.ReportMetric(brate/rate, "bare/rate")
	b.ReportMetric(passes/n, "passes/pushed")
	b.ReportMetric(grown/n, "heap-growth-MiB")
}

// webhookRuns is how many iterations BenchmarkWebhookToRunning can run:
// one student project each, made before the server starts.
const webhookRuns = 5

// BenchmarkWebhookToRunning measures, on the local Docker Engine, the
// time from the POST of a push webhook to the start of the container the
// pushed wm.yaml declares (Docker's start event): the GitLab double's
// webhook through the handler, the service and the loop, a fetch of the
// repo over smart HTTP, the pass's reads, the owner's network and the
// container's create and start. The project was tracked and Ready, with
// no container, before. Its baseline, run in the same iteration, is the
// raw Docker API: ContainerCreate and ContainerStart of a container of
// the same image, command, memory and hardening, timed to the start
// event too. At most webhookRuns iterations (-benchtime 3x).
//
//	go test ./reconciler/gitlab -run '^$' -bench WebhookToRunning -benchtime 3x
func BenchmarkWebhookToRunning(b *testing.B) {
	if testing.Short() {
		b.Skip("needs the local Docker Engine")
	}
	local := dockertest.Local(b)
	image := local.BusyboxImage(b, "")
	owners := make([]string, webhookRuns)
	for i := range owners {
		owners[i] = local.Owner(b)
	}
	s := newServer(b, local.Engine(b), owners, map[string]string{"wm.yaml": "version: 1\n"}, "policy: {allowedRegistries: [docker.io/wm-test]}")
	cli := local.Client(b)
	var wm, raw time.Duration
	i := 0
	for b.Loop() {
		b.StopTimer()
		if i == webhookRuns {
			b.Fatalf("at most %d iterations", webhookRuns)
		}
		p, owner := s.projects[i], owners[i]
		before := s.heads[p]
		after := p.Commit(b, "main", map[string]string{"wm.yaml": fmt.Sprintf(
			"version: 1\ncontainers:\n  web: {image: %s, command: [sleep, \"3600\"], memory: 32Mi}\n", image)}, "a container")
		s.heads[p] = after
		body := gitlabtest.PushHook(p, "main", before, after)
		b.StartTimer()
		wm += untilStarted(b, cli, owner, func() {
			gitlabtest.PostHook(b, s.hooks, "Push Hook", body, http.Header{"X-Gitlab-Token": {secret}})
		})
		b.StopTimer()
		raw += untilStarted(b, cli, owner+"-raw", func() { rawCreateStart(b, cli, image, owner+"-raw") })
		i++
		b.StartTimer()
	}
	b.ReportMetric(float64(wm.Milliseconds())/float64(i), "webhook-to-running-ms")
	b.ReportMetric(float64(raw.Milliseconds())/float64(i), "raw-create-start-ms")
	b.ReportMetric(wm.Seconds()/raw.Seconds(), "x-raw")
}

// untilStarted runs do and returns the time from its call to Docker's
// start event of a container labelled with owner.
func untilStarted(b *testing.B, cli *client.Client, owner string, do func()) time.Duration {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 5*time.Minute)
	defer cancel()
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("event", "start"),
		filters.Arg("label", docker.LabelOwner+"="+owner))})
	start := time.Now()
	do()
	select {
	case m := <-msgs:
		return time.Unix(0, m.TimeNano).Sub(start)
	case err := <-errs:
		b.Fatalf("waiting for %s's container to start: %v", owner, err)
	}
	return 0
}

// rawCreateStart creates and starts a container of owner through the
// Docker SDK with the hardening the reconciler gives one.
func rawCreateStart(b *testing.B, cli *client.Client, image, owner string) {
	b.Helper()
	pids := int64(core.DefaultPidsLimit)
	yes := true
	ctx := b.Context()
	created, err := cli.ContainerCreate(ctx, &container.Config{
		Image: image, Cmd: []string{"sleep", "3600"}, Labels: map[string]string{docker.LabelOwner: owner},
	}, &container.HostConfig{
		Init:          &yes,
		CapDrop:       []string{"ALL"},
		CapAdd:        docker.CapAllowlist(),
		SecurityOpt:   []string{"no-new-privileges:true"},
		IpcMode:       "private",
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
		LogConfig:     container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}},
		Resources:     container.Resources{Memory: 32 << 20, MemorySwap: 32 << 20, PidsLimit: &pids},
	}, nil, nil, "")
	if err == nil {
		b.Cleanup(func() {
			_ = cli.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true})
		})
		err = cli.ContainerStart(ctx, created.ID, container.StartOptions{})
	}
	if err != nil {
		b.Fatalf("raw create and start: %v", err)
	}
}
