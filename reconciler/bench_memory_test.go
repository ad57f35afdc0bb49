package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// benchTracked is how many repos BenchmarkTrackedMemory tracks;
// WM_BENCH_TRACKED changes it.
const benchTracked = 2000

// BenchmarkTrackedMemory measures what tracking benchTracked repos costs
// in memory: a Loop over a Reconciler on the local Docker Engine (real
// git through go-git, a real state store) discovers them (file:// copies
// of one bare repo whose wm.yaml declares no container, each of its own
// student), passes each once (a clone, a parse, the owner's containers
// listed on the engine, the state written), then once more with nothing
// changed. Its baseline is the same process before the loop started
// (reconciler, engine and store open, nothing tracked). It reports the
// heap in use after a collection and the resident set (VmRSS) at each
// point, their growth per repo, and the ratio of the heap after to the
// heap before.
//
//	go test ./reconciler -run '^$' -bench TrackedMemory -benchtime 1x
func BenchmarkTrackedMemory(b *testing.B) {
	n := benchTracked
	if s := os.Getenv("WM_BENCH_TRACKED"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("WM_BENCH_TRACKED=%q is not a number of repos", s)
		}
		n = v
	}
	local := dockertest.Local(b)
	root := b.TempDir()
	tmpl := gittest.NewRepo(b, filepath.Join(root, "template.git"))
	tmpl.Commit(b, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")
	repos := make([]Repo, n)
	for i := range repos {
		owner := fmt.Sprintf("m%05d", i)
		dir := filepath.Join(root, "git", owner, "web.git")
		if err := os.CopyFS(dir, os.DirFS(tmpl.Path())); err != nil {
			b.Fatal(err)
		}
		repos[i] = Repo{Key: owner + "/web", Owner: owner, URL: "file://" + dir, Branch: "main"}
	}
	for b.Loop() {
		cfg, err := schema.ParseServer("bench.yaml", strings.NewReader(fmt.Sprintf(
			"docker:\n  hosts: [{name: %s, endpoint: %q}]\n", local.Name(), local.Endpoint())), root)
		if err != nil {
			b.Fatal(err)
		}
		st, err := store.Open(filepath.Join(b.TempDir(), "state"))
		if err != nil {
			b.Fatal(err)
		}
		rec, err := New(cfg, gitsource.New(filepath.Join(b.TempDir(), "cache")), []core.Engine{local.Engine(b)}, st)
		if err != nil {
			b.Fatal(err)
		}
		heap0, rss0 := heapInUse(), vmRSS(b)
		loop := NewLoop(rec, func() ([]Repo, error) { return repos, nil }, time.Hour, 0, 4, slog.New(slog.DiscardHandler))
		var passes, failed atomic.Int64
		loop.OnResult = func(_ Result, err error) {
			if err != nil {
				failed.Add(1)
			}
			passes.Add(1)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { loop.Run(ctx); close(done) }()
		wait := func(want int64) {
			deadline := time.Now().Add(15 * time.Minute)
			for passes.Load() < want {
				if time.Now().After(deadline) {
					b.Fatalf("%d passes of %d after 15 minutes", passes.Load(), want)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		start := time.Now()
		wait(int64(n))
		first := time.Since(start)
		heap1, rss1 := heapInUse(), vmRSS(b)
		for _, r := range repos {
			loop.Trigger(r.Key)
		}
		wait(int64(2 * n))
		heap2, rss2 := heapInUse(), vmRSS(b)
		cancel()
		<-done
		st.Close()
		if f := failed.Load(); f > 0 {
			b.Fatalf("%d passes failed", f)
		}
		mib := func(v uint64) float64 { return float64(v) / (1 << 20) }
		b.ReportMetric(mib(heap0), "heap-before-MiB")
		b.ReportMetric(mib(heap1), "heap-discovered-MiB")
		b.ReportMetric(mib(heap2), "heap-after-noop-MiB")
		b.ReportMetric(float64(rss0)/1024, "rss-before-MiB")
		b.ReportMetric(float64(rss2)/1024, "rss-after-noop-MiB")
		b.ReportMetric((float64(heap2)-float64(heap0))/1024/float64(n), "heap-KiB/repo")
		b.ReportMetric(float64(heap2)/float64(heap0), "x-before")
		b.ReportMetric(float64(n), "repos")
		b.Logf("%d repos: first round %s; heap %.1f → %.1f → %.1f MiB, RSS %.1f → %.1f → %.1f MiB",
			n, first.Round(time.Second), mib(heap0), mib(heap1), mib(heap2),
			float64(rss0)/1024, float64(rss1)/1024, float64(rss2)/1024)
	}
}

// heapInUse is the heap in use after a collection, in bytes.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// vmRSS is the process's resident set, in KiB.
func vmRSS(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kib
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
