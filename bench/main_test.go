package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

func TestParseReadsTheMetricsOfEveryBenchmarkLine(t *testing.T) {
	tests := []struct {
		name   string
		output string
		bench  string
		want   map[string]float64
	}{
		{"a line with custom metrics keeps each under its unit",
			"goos: linux\nBenchmarkWebhookToRunning-2   \t       2\t 637119372 ns/op\t       327.5 raw-create-start-ms\t       636.0 webhook-to-running-ms\t         1.940 x-raw\nPASS\n",
			"BenchmarkWebhookToRunning",
			map[string]float64{"ns/op": 637119372, "raw-create-start-ms": 327.5, "webhook-to-running-ms": 636, "x-raw": 1.94}},
		{"a sub-benchmark is named with its path and without the processors",
			"BenchmarkNoOpPass/repos=2000-2         \t    2000\t    211951 ns/op\t         0 writes/op\t 14.71 x-git-head\t   37662 B/op\t     409 allocs/op\n",
			"BenchmarkNoOpPass/repos=2000",
			map[string]float64{"ns/op": 211951, "writes/op": 0, "x-git-head": 14.71, "B/op": 37662, "allocs/op": 409}},
		{"a result split from its name by a log line is joined",
			"BenchmarkTrackedMemory-2   \t\n       1\t1900142799 ns/op\t         6.080 heap-KiB/repo\n--- BENCH: BenchmarkTrackedMemory-2\n    bench_memory_test.go:123: 100 repos\n",
			"BenchmarkTrackedMemory",
			map[string]float64{"ns/op": 1900142799, "heap-KiB/repo": 6.08}},
		{"a benchmark's log lines are not results",
			"--- BENCH: BenchmarkRealColdConverge-2\n    bench_real_test.go:117: 40 containers (10 repos × 4) at concurrency 4\n",
			"", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := parse(strings.NewReader(tt.output))
			if err != nil {
				t.Fatal(err)
			}
			if tt.bench == "" {
				if len(res) != 0 {
					t.Errorf("parsed %v, want nothing", res)
				}
				return
			}
			got := res[tt.bench]
			if len(got) != len(tt.want) {
				t.Errorf("%s: %v, want %v", tt.bench, got, tt.want)
			}
			for unit, v := range tt.want {
				if got[unit] != v {
					t.Errorf("%s %s = %v, want %v", tt.bench, unit, got[unit], v)
				}
			}
		})
	}
}

func TestTheTableShowsEachFigureWithItsBaselineAndRatio(t *testing.T) {
	res := results{
		"BenchmarkWebhookToRunning": {"webhook-to-running-ms": 636, "raw-create-start-ms": 327.5, "x-raw": 1.94},
		"BenchmarkBuild/fresh":      {"sif-ms/op": 2000},
		"BenchmarkBuild/cached":     {"ns/op": 1.5e6},
	}
	got := table(res, map[string]string{"BenchmarkOwners": "failed: no cluster"})
	for _, want := range []string{
		"| webhook → container running | 636 ms | raw create+start (Docker SDK) | 328 ms | 1.94 | lower is better |",
		"| SIF cache hit | 1.50 ms | SIF build, fresh | 2000 ms | 0.001 | lower is better |",
		"| Kubernetes no-op resync, 500 students | failed: no cluster |",
		"| cold converge, 40 containers, 2 engines, 4 at a time | not run |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("the table lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != len(rows)+2 {
		t.Errorf("%d lines, want a header, a rule and %d rows", n, len(rows))
	}
}

// A real benchmark's output, the fastest there is, parses into its row:
// the smoke test of make test (-short) that the format read is go test's.
func TestARealBenchmarksOutputParses(t *testing.T) {
	out, err := exec.CommandContext(context.Background(), "go", "test", "-count=1", "-run", "^$",
		"-bench", "^BenchmarkPushHook$", "-benchtime", "100x", "../reconciler/webhook").CombinedOutput()
	if err != nil {
		t.Fatalf("go test: %v\n%s", err, out)
	}
	res, err := parse(strings.NewReader(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	got := res["BenchmarkPushHook"]
	for _, unit := range []string{"ns/op", "MB/s", "B/op", "allocs/op"} {
		if got[unit] <= 0 {
			t.Errorf("BenchmarkPushHook %s = %v in:\n%s", unit, got[unit], out)
		}
	}
}
