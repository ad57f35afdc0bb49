package kube

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/schema"
)

type countingTransport struct {
	rt        http.RoundTripper
	mutations atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet {
		c.mutations.Add(1)
	}
	return c.rt.RoundTrip(r)
}

// BenchmarkOwners applies the namespace, RBAC, quota, limit range and
// network policy of 500 students cold, resyncs them with nothing changed,
// and, side by side, sends the same objects with raw server-side apply:
//
//	go test -run '^$' -bench Owners -benchtime 1x ./reconciler/kube/
//
// It reports the mutating requests of the no-op resync (target 0) and the
// resync's time as a ratio of the raw apply's.
func BenchmarkOwners(b *testing.B) {
	const students = 500
	cluster := kubetest.Env(b)
	for b.Loop() {
		prefix := cluster.Namespace(b, "wmb") + "-"
		ct := &countingTransport{}
		cfg := rest.CopyConfig(cluster.AdminConfig())
		cfg.QPS, cfg.Burst = 5000, 5000
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { ct.rt = rt; return ct })
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			b.Fatal(err)
		}
		be := New(client, Settings{
			Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
			Quota:      schema.Quota{Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi"},
			Defaults:   schema.Limits{CPUs: 1, Memory: "2Gi"},
		})
		owners := make([]string, students)
		for i := range owners {
			owners[i] = fmt.Sprintf("s%03d", i)
		}
		b.Cleanup(func() {
			for _, o := range owners {
				_ = client.CoreV1().Namespaces().Delete(context.Background(), be.set.Namespace(o), metav1.DeleteOptions{})
			}
		})
		ctx := context.Background()
		each := func(f func(owner string) error) time.Duration {
			start := time.Now()
			var wg sync.WaitGroup
			sem := make(chan struct{}, 16)
			for _, o := range owners {
				wg.Go(func() {
					sem <- struct{}{}
					defer func() { <-sem }()
					if err := f(o); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			return time.Since(start)
		}
		cold := each(func(o string) error { _, err := be.EnsureOwner(ctx, o); return err })
		coldMut := ct.mutations.Swap(0)
		noop := each(func(o string) error { _, err := be.EnsureOwner(ctx, o); return err })
		noopMut := ct.mutations.Swap(0)
		raw := each(func(o string) error {
			ns := be.set.Namespace(o)
			for _, obj := range be.set.ownerObjects(o) {
				if err := be.send(ctx, ns, obj); err != nil {
					return err
				}
			}
			return nil
		})
		rawMut := ct.mutations.Swap(0)
		b.ReportMetric(cold.Seconds(), "cold-s")
		b.ReportMetric(float64(coldMut), "cold-mutations")
		b.ReportMetric(noop.Seconds(), "noop-s")
		b.ReportMetric(float64(noopMut), "noop-mutations")
		b.ReportMetric(raw.Seconds(), "raw-ssa-s")
		b.ReportMetric(float64(rawMut), "raw-ssa-mutations")
		b.ReportMetric(noop.Seconds()/raw.Seconds(), "noop/raw-ssa")
	}
}
