package sif_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

// Size of the benchmark image, on top of busybox: text files that
// compress about 3:1, as sources, scripts and libraries do, and a few
// incompressible ones, as compressed data and some binaries are.
const (
	benchTextFiles = 2000
	benchTextSize  = 20 << 10 // average bytes per text file
	benchBlobFiles = 4
	benchBlobSize  = 2 << 20
)

// benchImage is a three-layer image of about 48 MB, the same bytes on
// every run (a seeded generator).
func benchImage(b *testing.B) v1.Image {
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields(`the of and to in is was for on that with as by at from it an be are this
		which or had not but have were they his her she all one their there been has more if will would
		who so no other out about some into than its time only new could them these two may then do
		first any my now such like our over man me even most made after also did many before must
		through back years where much your way well down should because each just those people how too
		import return func package struct string error int64 context value data file path name module`)
	lower := map[string]string{}
	for i := range benchTextFiles {
		var sb strings.Builder
		size := benchTextSize/2 + rng.IntN(benchTextSize)
		for sb.Len() < size {
			sb.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(12) == 0 {
				sb.WriteString(fmt.Sprintf(" %d\n", rng.Uint32()))
			} else {
				sb.WriteByte(' ')
			}
		}
		lower[fmt.Sprintf("/usr/lib/app/pkg%02d/file%04d.txt", i%40, i)] = sb.String()
	}
	upper := map[string]string{}
	for i := range benchBlobFiles {
		blob := make([]byte, benchBlobSize)
		for j := 0; j < len(blob); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8 && j+k < len(blob); k++ {
				blob[j+k] = byte(v >> (8 * k))
			}
		}
		upper[fmt.Sprintf("/opt/data/blob%d.bin", i)] = string(blob)
	}
	return registrytest.BusyboxImage(b, lower, upper)
}

// rawArgs are mksquashfs's arguments for the baseline: the builder's
// compression (gzip) on every core, reproducible, no xattrs, every file
// root's when not root (as the builder then makes them).
func rawArgs(dir, out string) []string {
	args := []string{dir, out, "-noappend", "-comp", "gzip", "-processors", strconv.Itoa(runtime.NumCPU()),
		"-no-xattrs", "-mkfs-time", "0", "-no-progress", "-quiet"}
	if os.Geteuid() != 0 {
		args = append(args, "-all-root")
	}
	return args
}

// BenchmarkBuild measures a SIF build from a registry on loopback against
// a raw mksquashfs of the same root file system, unpacked and in the page
// cache, run side by side in each iteration, and a cache hit. Results in
// BENCH.md.
// WM_SIF_BENCH_TMPDIR sets the builder's TempDir (default: the test's
// temporary folder), e.g. /dev/shm to unpack into memory.
func BenchmarkBuild(b *testing.B) {
	reg := registrytest.Start(b)
	ref := reg.Ref("bench/app", "1")
	reg.Push(b, ref, benchImage(b))
	builder := newBuilder(b, reg, sif.Options{Source: sif.SourceRegistry, TempDir: os.Getenv("WM_SIF_BENCH_TMPDIR")})
	dir := b.TempDir()

	// The root file system the builder squashes, unpacked from a first
	// build (which also warms the registry's and the kernel's caches).
	first := filepath.Join(dir, "first.sif")
	res, err := builder.Build(b.Context(), ref, first, nil)
	if err != nil {
		b.Fatal(err)
	}
	rootfs := extractAll(b, first)
	b.Logf("image %s: SIF of %.1f MB, TempDir %q", res.ImageID, float64(res.Size)/1e6, os.Getenv("WM_SIF_BENCH_TMPDIR"))

	b.Run("fresh", func(b *testing.B) {
		var sifTime, rawTime time.Duration
		i := 0
		for b.Loop() {
			dst := filepath.Join(dir, fmt.Sprintf("fresh-%d.sif", i))
			start := time.Now()
			r, err := builder.Build(b.Context(), ref, dst, nil)
			if err != nil {
				b.Fatal(err)
			}
			if r.Cached {
				b.Fatal("cached")
			}
			sifTime += time.Since(start)

			out := filepath.Join(dir, fmt.Sprintf("raw-%d.squashfs", i))
			start = time.Now()
			cmd := exec.CommandContext(b.Context(), "mksquashfs", rawArgs(rootfs, out)...)
			if msg, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("mksquashfs: %v\n%s", err, msg)
			}
			rawTime += time.Since(start)
			os.Remove(dst)
			os.Remove(out)
			i++
		}
		b.ReportMetric(float64(sifTime.Milliseconds())/float64(i), "sif-ms/op")
		b.ReportMetric(float64(rawTime.Milliseconds())/float64(i), "mksquashfs-ms/op")
		b.ReportMetric(float64(sifTime)/float64(rawTime), "sif/mksquashfs")
	})

	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			r, err := builder.Build(b.Context(), ref, first, nil)
			if err != nil {
				b.Fatal(err)
			}
			if !r.Cached {
				b.Fatal("not cached")
			}
		}
	})
}
