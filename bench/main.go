// Command bench runs WhaleMountain's benchmarks, each where it lives, and
// prints one table of every figure beside its baseline (run side by side
// in the same benchmark) and the ratio, under a line describing the
// machine. With -write FILE it also puts the table into FILE between the
// markers <!-- bench:begin --> and <!-- bench:end -->.
//
//	go run ./bench                  # every benchmark, ~15 minutes here
//	go run ./bench -write BENCH.md  # what make bench does
//	go run ./bench -only 'webhook'  # the runs whose name matches
//
// Each benchmark is run once (-benchtime as in runs below) with go test
// and its standard output parsed: a line "BenchmarkName-P  N  v unit  v
// unit ..." gives the metrics of one benchmark.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// run is one go test invocation.
type run struct {
	name      string // what -only matches
	pkg       string
	bench     string // the -bench pattern
	benchtime string
	env       []string
	timeout   time.Duration
}

// runs are the benchmarks the table is made of, in the order they run.
var runs = []run{
	{"no-op poll", "./reconciler/gitsource", "^BenchmarkNoopPoll$", "1x", nil, 10 * time.Minute},
	{"no-op pass", "./reconciler", "^BenchmarkNoOpPass$/^(baseline=git-head-check|repos=2000)$", "2000x", nil, 5 * time.Minute},
	{"webhook flood", "./reconciler/gitlab", "^BenchmarkWebhookFlood$", "1x", nil, 5 * time.Minute},
	{"webhook to running", "./reconciler/gitlab", "^BenchmarkWebhookToRunning$", "3x", nil, 5 * time.Minute},
	{"cold converge", "./reconciler", "^BenchmarkRealColdConverge$", "1x", nil, 10 * time.Minute},
	{"tracked memory", "./reconciler", "^BenchmarkTrackedMemory$", "1x", nil, 10 * time.Minute},
	{"sif build", "./reconciler/sif", "^BenchmarkBuild$", "1x", nil, 10 * time.Minute},
	{"kubernetes resync", "./reconciler/kube", "^BenchmarkOwners$", "1x", nil, 10 * time.Minute},
}

// row is one line of the table: a figure, its baseline and their ratio,
// each read from a benchmark's metrics.
type row struct {
	figure   string
	bench    string // benchmark name, without the -P suffix
	value    metric
	baseline string // what the baseline is
	base     metric // zero name: no baseline metric
	ratio    metric // zero name: value / base
	better   string // how to read the ratio
}

// metric names a benchmark's metric and how to show it.
type metric struct {
	unit   string // as reported: "ns/op", "wm-repos/s", ...
	show   string // unit shown in the table
	scale  float64
	digits int
}

func m(unit, show string, scale float64, digits int) metric {
	return metric{unit, show, scale, digits}
}

var rows = []row{
	{"no-op poll, 1,000 repos, 8 workers (git http-backend)", "BenchmarkNoopPoll",
		m("wm-repos/s", "repos/s", 1, 1), "raw GET info/refs, same workers", m("rawget-repos/s", "repos/s", 1, 1), m("wm/rawget", "", 1, 2), "≈1: at the server's limit"},
	{"no-op poll against `git ls-remote` loop", "BenchmarkNoopPoll",
		m("wm-repos/s", "repos/s", 1, 1), "git ls-remote CLI, sequential", m("cli-repos/s", "repos/s", 1, 1), m("wm/cli", "", 1, 1), "higher is better"},
	{"no-op poll, server without fork (replay)", "BenchmarkNoopPoll",
		m("replay-wm-repos/s", "repos/s", 1, 0), "raw GET info/refs (replay)", m("replay-rawget-repos/s", "repos/s", 1, 0), metric{}, "≤1"},
	{"no-op pass, 2,000 repos rolled out", "BenchmarkNoOpPass/repos=2000",
		m("ns/op", "µs", 1e-3, 0), "git head check (go-git ls-remote)", metric{}, m("x-git-head", "", 1, 3), "lower is better"},
	{"webhook ack p50, 10,000 deliveries, 16 conns", "BenchmarkWebhookFlood",
		m("ack-p50-µs", "µs", 1, 0), "bare net/http handler, same flood", m("bare-p50-µs", "µs", 1, 0), m("p50/bare", "", 1, 2), "lower is better"},
	{"webhook ack p99, same flood", "BenchmarkWebhookFlood",
		m("ack-p99-µs", "µs", 1, 0), "bare net/http handler, same flood", m("bare-p99-µs", "µs", 1, 0), m("p99/bare", "", 1, 2), "lower is better"},
	{"webhook flood rate", "BenchmarkWebhookFlood",
		m("deliveries/s", "/s", 1, 0), "bare net/http handler", m("bare-deliveries/s", "/s", 1, 0), m("bare/rate", "", 1, 2), "bare ÷ wm; ≈1 is best"},
	{"passes per repo pushed in the flood", "BenchmarkWebhookFlood",
		m("passes/pushed", "", 1, 2), "one pass per repo pushed", metric{}, m("passes/pushed", "", 1, 2), "must be ≤ 1 (tested)"},
	{"webhook → container running", "BenchmarkWebhookToRunning",
		m("webhook-to-running-ms", "ms", 1, 0), "raw create+start (Docker SDK)", m("raw-create-start-ms", "ms", 1, 0), m("x-raw", "", 1, 2), "lower is better"},
	{"cold converge, 40 containers, 2 engines, 4 at a time", "BenchmarkRealColdConverge",
		m("reconciler-ms/op", "ms", 1, 0), "raw create+start, 4 workers", m("raw-ms/op", "ms", 1, 0), m("x-raw", "", 1, 2), "lower is better"},
	{"SIF build, 48 MB image", "BenchmarkBuild/fresh",
		m("sif-ms/op", "ms", 1, 0), "mksquashfs of the unpacked tree", m("mksquashfs-ms/op", "ms", 1, 0), m("sif/mksquashfs", "", 1, 2), "target ≤ 1.15"},
	{"SIF cache hit", "BenchmarkBuild/cached",
		m("ns/op", "ms", 1e-6, 2), "SIF build, fresh", metric{unit: "sif-ms/op", show: "ms", scale: 1, digits: 0}, metric{}, "lower is better"},
	{"Kubernetes no-op resync, 500 students", "BenchmarkOwners",
		m("noop-s", "s", 1, 2), "raw server-side apply of the same objects", m("raw-ssa-s", "s", 1, 2), m("noop/raw-ssa", "", 1, 2), "lower is better"},
	{"Kubernetes no-op resync: mutating requests", "BenchmarkOwners",
		m("noop-mutations", "", 1, 0), "raw server-side apply", m("raw-ssa-mutations", "", 1, 0), metric{}, "target 0"},
	{"heap in use, 2,000 repos tracked, after a no-op round", "BenchmarkTrackedMemory",
		m("heap-after-noop-MiB", "MiB", 1, 1), "same process, nothing tracked", m("heap-before-MiB", "MiB", 1, 1), m("x-before", "", 1, 2), "see KiB/repo below"},
	{"heap per tracked repo", "BenchmarkTrackedMemory",
		m("heap-KiB/repo", "KiB", 1, 1), "–", metric{}, metric{}, ""},
	{"RSS, 2,000 repos tracked, after a no-op round", "BenchmarkTrackedMemory",
		m("rss-after-noop-MiB", "MiB", 1, 1), "same process, nothing tracked", m("rss-before-MiB", "MiB", 1, 1), metric{}, "lower is better"},
	{"heap growth over the webhook flood", "BenchmarkWebhookFlood",
		m("heap-growth-MiB", "MiB", 1, 1), "delivery keys remembered: ≤ 2 MiB", metric{}, metric{}, "bounded (tested ≤ 16 MiB)"},
	{"peak RSS growth, no-op poll of 1,000 repos", "BenchmarkNoopPoll",
		m("peak-rss-growth-MiB", "MiB", 1, 1), "–", metric{}, metric{}, ""},
}

// results maps a benchmark's name (without the -P suffix) to its
// metrics by unit.
type results map[string]map[string]float64

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.*)$`)

// parse reads go test -bench output and returns the metrics of every
// benchmark line in it. A benchmark that logs may have its result line
// split after the name; the name is then joined to the next line.
func parse(r io.Reader) (results, error) {
	out := results{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	pending := ""
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t")
		if pending != "" {
			line, pending = pending+"\t"+strings.TrimSpace(line), ""
		}
		if strings.HasPrefix(line, "Benchmark") && !strings.ContainsAny(strings.TrimSpace(strings.TrimPrefix(line, strings.Fields(line)[0])), "0123456789") {
			pending = line
			continue
		}
		mt := benchLine.FindStringSubmatch(line)
		if mt == nil {
			continue
		}
		fields := strings.Fields(mt[3])
		if len(fields)%2 != 0 {
			return nil, fmt.Errorf("benchmark line with an odd number of fields: %q", line)
		}
		metrics := map[string]float64{}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return nil, fmt.Errorf("benchmark line %q: %v", line, err)
			}
			metrics[fields[i+1]] = v
		}
		out[mt[1]] = metrics
	}
	return out, sc.Err()
}

// format shows v of metric mt.
func format(v float64, mt metric) string {
	s := strconv.FormatFloat(v*mt.scale, 'f', mt.digits, 64)
	if mt.show != "" {
		s += " " + mt.show
	}
	return s
}

// table renders the rows from res; a row whose benchmark did not run, or
// failed, says so (why, from failed, by benchmark name prefix).
func table(res results, failed map[string]string) string {
	var b strings.Builder
	b.WriteString("| figure | WhaleMountain | baseline | baseline figure | ratio | reading |\n|---|---:|---|---:|---:|---|\n")
	for _, r := range rows {
		got, ok := res[r.bench]
		if !ok {
			why := "not run"
			for prefix, w := range failed {
				if strings.HasPrefix(r.bench, prefix) {
					why = w
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s | | | |\n", r.figure, why, r.baseline)
			continue
		}
		val, base, ratio := "–", "–", "–"
		if v, ok := got[r.value.unit]; ok {
			val = format(v, r.value)
		}
		baseVals := got
		if r.bench == "BenchmarkBuild/cached" {
			baseVals = res["BenchmarkBuild/fresh"]
		}
		if r.bench == "BenchmarkNoOpPass/repos=2000" {
			if bl, ok := res["BenchmarkNoOpPass/baseline=git-head-check"]; ok {
				base = format(bl["ns/op"], r.value)
			}
		}
		if r.base.unit != "" {
			if v, ok := baseVals[r.base.unit]; ok {
				base = format(v, r.base)
			}
		}
		switch {
		case r.ratio.unit != "":
			if v, ok := got[r.ratio.unit]; ok {
				ratio = format(v, r.ratio)
			}
		case r.base.unit != "":
			v, okv := got[r.value.unit]
			bv, okb := baseVals[r.base.unit]
			if okv && okb && bv != 0 {
				ratio = strconv.FormatFloat(v*r.value.scale/(bv*r.base.scale), 'f', 3, 64)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.figure, val, r.baseline, base, ratio, r.better)
	}
	return b.String()
}

// machine describes this machine: CPU, cores, memory, kernel, Go and
// Docker versions, and the load average.
func machine(ctx context.Context) string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := "?"
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(data)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				mem = fmt.Sprintf("%.1f GiB", kib/(1<<20))
			}
		}
	}
	kernel := strings.TrimSpace(readFile("/proc/sys/kernel/osrelease"))
	goVersion := strings.TrimSpace(output(ctx, "go", "env", "GOVERSION"))
	dockerVersion := strings.TrimSpace(output(ctx, "docker", "version", "--format", "{{.Server.Version}}"))
	if dockerVersion == "" {
		dockerVersion = "not answering"
	}
	return fmt.Sprintf("%s, %d cores, %s, Linux %s, %s, Docker Engine %s", cpu, runtime.NumCPU(), mem, kernel, goVersion, dockerVersion)
}

func loadavg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func readFile(path string) string {
	data, _ := os.ReadFile(path)
	return string(data)
}

func output(ctx context.Context, name string, args ...string) string {
	out, _ := exec.CommandContext(ctx, name, args...).Output()
	return string(out)
}

// runBench runs one benchmark and returns its output; err is set when go
// test failed.
func runBench(ctx context.Context, r run, log io.Writer) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", "^$", "-bench", r.bench, "-benchtime", r.benchtime,
		"-timeout", r.timeout.String(), r.pkg)
	cmd.Env = append(os.Environ(), r.env...)
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, log)
	cmd.Stderr = log
	err := cmd.Run()
	return out.Bytes(), err
}

// failure is the last line of a failed run worth showing.
func failure(out []byte, err error) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l != "" && !strings.HasPrefix(l, "FAIL") && !strings.HasPrefix(l, "exit status") && !strings.HasPrefix(l, "ok") {
			return "failed: " + strings.ReplaceAll(l, "|", "/")
		}
	}
	return "failed: " + err.Error()
}

// writeSection replaces what lies between the markers in path with text.
func writeSection(path, text string) error {
	const begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(data)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s ... %s section", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + text + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

func main() {
	only := flag.String("only", "", "run only the benchmarks whose name matches this regular expression")
	write := flag.String("write", "", "also write the table into this Markdown file, between its bench markers")
	logPath := flag.String("log", "", "write go test's whole output here (default: discarded)")
	flag.Parse()
	ctx := context.Background()
	var re *regexp.Regexp
	if *only != "" {
		re = regexp.MustCompile(*only)
	}
	log := io.Discard
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		defer f.Close()
		log = f
	}
	desc := machine(ctx)
	loadBefore := loadavg()
	start := time.Now()
	all := results{}
	failed := map[string]string{}
	ok := true
	for _, r := range runs {
		if re != nil && !re.MatchString(r.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s (%s %s) ...\n", r.name, r.pkg, r.bench)
		t0 := time.Now()
		out, err := runBench(ctx, r, log)
		res, perr := parse(bytes.NewReader(out))
		if err == nil && perr != nil {
			err = perr
		}
		for name, ms := range res {
			all[name] = ms
		}
		if err != nil {
			ok = false
			name := strings.Trim(strings.SplitN(r.bench, "$", 2)[0], "^")
			failed[name] = failure(out, err)
			fmt.Fprintf(os.Stderr, "bench: %s %s\n", r.name, failed[name])
		}
		fmt.Fprintf(os.Stderr, "bench: %s took %s\n", r.name, time.Since(t0).Round(time.Second))
	}
	text := fmt.Sprintf("Machine: %s. Load average %s before, %s after; the %d cores are shared with other engineers' test suites, so absolute figures vary from run to run: compare the ratios. Run %s, %s in all.\n\n%s",
		desc, loadBefore, loadavg(), runtime.NumCPU(), time.Now().Format("2 Jan 2006"), time.Since(start).Round(time.Second), table(all, failed))
	fmt.Print(text)
	if *write != "" {
		if err := writeSection(*write, text); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			ok = false
		}
	}
	if !ok {
		os.Exit(1)
	}
}
