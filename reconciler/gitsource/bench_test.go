package gitsource

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
)

// BenchmarkNoopPoll measures a poll in which nothing changed: Head on each
// of 1,000 repos at 8 workers, one op being one poll of all of them.
//
// The repos are served by git http-backend through net/http/cgi, which
// forks processes for every request and so bounds any client; beside wm
// stand raw GETs of info/refs at the same concurrency (that bound) and a
// sequential `git ls-remote` loop (the naive poller). The same three run
// again against a replaying front that answers a ref listing it has seen
// from memory, as a server with no process per request would (GitLab's
// Gitaly is long-running), to show wm's own ceiling.
//
// It also reports a first pass that fills the cache (Head and ReadFile of
// wm.yaml on every repo) and the growth of the process's peak RSS over that
// pass and the polls.
func BenchmarkNoopPoll(b *testing.B) {
	const repos, workers, cliRepos = 1000, 8, 200
	root := b.TempDir()
	names := copies(b, root, repos)
	backend := gittest.Handler(b, root)
	urls := urlsOf(serve(b, backend), names)
	replayed := urlsOf(serve(b, replay(backend)), names)
	ctx := b.Context()
	head := func(src *Source) func(string) error {
		return func(url string) error { _, err := src.Head(ctx, url, "main"); return err }
	}
	client := &http.Client{Transport: keepAlive()}
	rawGet := func(url string) error { return getInfoRefs(ctx, client, url) }
	cliLsRemote := func(urls []string) float64 {
		start := time.Now()
		for _, url := range urls[:cliRepos] {
			gittest.Git(b, "", "ls-remote", url, "refs/heads/main")
		}
		return float64(cliRepos) / time.Since(start).Seconds()
	}

	rssBefore := procStatus(b, "VmRSS")
	if !resetPeakRSS() {
		b.Log("could not reset VmHWM: the RSS growth includes the setup")
	}
	src := New(b.TempDir())
	cold := rate(b, urls, workers, func(url string) error {
		rev, err := src.Head(ctx, url, "main")
		if err == nil {
			_, err = src.ReadFile(ctx, url, "main", rev, "wm.yaml", 64<<10)
		}
		return err
	})
	for b.Loop() {
		pool(b, urls, workers, head(src))
	}
	wm := float64(b.N*repos) / b.Elapsed().Seconds()
	growth := float64(procStatus(b, "VmHWM")-rssBefore) / (1 << 10) // KiB to MiB
	raw := rate(b, urls, workers, rawGet)
	cli := cliLsRemote(urls)

	pool(b, replayed, workers, rawGet) // let the front see every listing once
	replayWM := rate(b, replayed, workers, head(New(b.TempDir())))
	replayRaw := rate(b, replayed, workers, rawGet)
	replayCLI := cliLsRemote(replayed)

	b.ReportMetric(wm, "wm-repos/s")
	b.ReportMetric(raw, "rawget-repos/s")
	b.ReportMetric(cli, "cli-repos/s")
	b.ReportMetric(wm/raw, "wm/rawget")
	b.ReportMetric(wm/cli, "wm/cli")
	b.ReportMetric(replayWM, "replay-wm-repos/s")
	b.ReportMetric(replayRaw, "replay-rawget-repos/s")
	b.ReportMetric(replayCLI, "replay-cli-repos/s")
	b.ReportMetric(replayWM/replayCLI, "replay-wm/cli")
	b.ReportMetric(cold, "first-pass-repos/s")
	b.ReportMetric(growth, "peak-rss-growth-MiB")
}

// replay answers a ref listing (GET info/refs) from memory once it has
// read it through h, and passes every other request to h.
func replay(h http.Handler) http.Handler {
	var (
		mu   sync.Mutex
		seen = make(map[string][]byte)
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/info/refs") {
			h.ServeHTTP(w, r)
			return
		}
		key := r.URL.RequestURI()
		mu.Lock()
		body, ok := seen[key]
		mu.Unlock()
		if !ok {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			if rec.Code != http.StatusOK {
				http.Error(w, rec.Body.String(), rec.Code)
				return
			}
			body = rec.Body.Bytes()
			mu.Lock()
			seen[key] = body
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(body)
	})
}

func serve(b *testing.B, h http.Handler) string {
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	return srv.URL
}

func urlsOf(base string, names []string) []string {
	urls := make([]string, len(names))
	for i, name := range names {
		urls[i] = base + "/" + name
	}
	return urls
}

// rate runs fn on every url as pool does and returns the urls done per
// second.
func rate(b *testing.B, urls []string, workers int, fn func(url string) error) float64 {
	b.Helper()
	start := time.Now()
	pool(b, urls, workers, fn)
	return float64(len(urls)) / time.Since(start).Seconds()
}

// copies makes n bare repos under root, each with one small commit, by
// copying one, and returns their paths under root.
func copies(b *testing.B, root string, n int) []string {
	b.Helper()
	tmpl := gittest.NewRepo(b, filepath.Join(b.TempDir(), "template.git"))
	tmpl.Commit(b, "main", tree("v1"), "first")
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("students/r%04d.git", i)
		if err := os.CopyFS(filepath.Join(root, names[i]), os.DirFS(tmpl.Path())); err != nil {
			b.Fatal(err)
		}
	}
	return names
}

// pool runs fn on every url with the given number of workers, failing the
// benchmark on the first error.
func pool(b *testing.B, urls []string, workers int, fn func(url string) error) {
	b.Helper()
	work := make(chan string)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for range workers {
		wg.Go(func() {
			for url := range work {
				if err := fn(url); err != nil {
					once.Do(func() { first = err })
				}
			}
		})
	}
	for _, url := range urls {
		work <- url
	}
	close(work)
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// keepAlive is an HTTP transport set up as Source's is.
func keepAlive() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return t
}

// getInfoRefs is the request Head makes, without git around it.
func getInfoRefs(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/info/refs?service=git-upload-pack", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	return nil
}

// procStatus returns a size field of /proc/self/status, in KiB.
func procStatus(b *testing.B, field string) int64 {
	b.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		b.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if value, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("parse %s: %v", field, err)
			}
			return kib
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// resetPeakRSS sets VmHWM back to the current RSS (Linux 4.0 and later),
// so that the peak measured is the peak of what follows.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}
