package gitsource

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
)

// BenchmarkNoopPoll measures a poll in which nothing changed, Head on each
// of 1,000 repos served by git http-backend at 8 workers, beside what
// bounds it: raw GETs of info/refs at the same concurrency (the server's
// own limit) and a sequential `git ls-remote` loop (what a naive poller
// does). It also reports a first pass that fills the cache (Head and
// ReadFile of wm.yaml on every repo), the growth of the process's peak RSS
// over that pass and the polls, and the CPU this process spends per repo
// (a bound on Source's own cost, whatever the server's speed). One op is
// one poll of all the repos.
func BenchmarkNoopPoll(b *testing.B) {
	const repos, workers, cliRepos = 1000, 8, 200
	root := b.TempDir()
	base := gittest.Serve(b, root)
	urls := copies(b, root, repos)
	for i := range urls {
		urls[i] = base + "/" + urls[i]
	}
	ctx := b.Context()

	rssBefore := procStatus(b, "VmRSS")
	peakReset := resetPeakRSS()
	src := New(b.TempDir())
	start := time.Now()
	pool(b, urls, workers, func(url string) error {
		head, err := src.Head(ctx, url, "main")
		if err == nil {
			_, err = src.ReadFile(ctx, url, "main", head, "wm.yaml", 64<<10)
		}
		return err
	})
	cold := float64(repos) / time.Since(start).Seconds()

	cpu := selfCPU()
	for b.Loop() {
		pool(b, urls, workers, func(url string) error {
			_, err := src.Head(ctx, url, "main")
			return err
		})
	}
	wm := float64(b.N*repos) / b.Elapsed().Seconds()
	wmCPU := float64(selfCPU()-cpu) / float64(time.Microsecond) / float64(b.N*repos)
	growth := float64(procStatus(b, "VmHWM")-rssBefore) / (1 << 10) // KiB to MiB
	if !peakReset {
		b.Log("could not reset VmHWM: the RSS growth includes the setup")
	}

	client := &http.Client{Transport: keepAlive()}
	start, cpu = time.Now(), selfCPU()
	pool(b, urls, workers, func(url string) error { return getInfoRefs(ctx, client, url) })
	raw := float64(repos) / time.Since(start).Seconds()
	rawCPU := float64(selfCPU()-cpu) / float64(time.Microsecond) / repos

	start = time.Now()
	for _, url := range urls[:cliRepos] {
		gittest.Git(b, "", "ls-remote", url, "refs/heads/main")
	}
	cli := float64(cliRepos) / time.Since(start).Seconds()

	b.ReportMetric(wm, "wm-repos/s")
	b.ReportMetric(raw, "rawget-repos/s")
	b.ReportMetric(cli, "cli-repos/s")
	b.ReportMetric(wm/raw, "wm/rawget")
	b.ReportMetric(wm/cli, "wm/cli")
	b.ReportMetric(wmCPU, "wm-cpu-us/repo")
	b.ReportMetric(rawCPU, "rawget-cpu-us/repo")
	b.ReportMetric(cold, "first-pass-repos/s")
	b.ReportMetric(growth, "peak-rss-growth-MiB")
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

// selfCPU is the CPU time this process has used, user and system, its
// children (the CGI server's git processes) left out. The in-process side
// of the test server (net/http and net/http/cgi) is counted in.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS sets VmHWM back to the current RSS (Linux 4.0 and later),
// so that the peak measured is the peak of what follows.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}
