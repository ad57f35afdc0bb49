package sif_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

func BenchmarkStages(b *testing.B) {
	reg := registrytest.Start(b)
	ref := reg.Ref("bench/app", "1")
	reg.Push(b, ref, benchImage(b))
	builder := newBuilder(b, reg, sif.Options{Source: sif.SourceRegistry, TempDir: os.Getenv("WM_BENCH_TMP")})
	dir := b.TempDir()
	for i := range 3 {
		last := time.Now()
		stage := ""
		_, err := builder.Build(b.Context(), ref, filepath.Join(dir, "x"+string(rune('a'+i))+".sif"), func(s string, d, t int64) {
			if s != stage {
				b.Logf("%s took %s", stage, time.Since(last))
				stage, last = s, time.Now()
			}
		})
		b.Logf("%s took %s", stage, time.Since(last))
		if err != nil {
			b.Fatal(err)
		}
	}
}
