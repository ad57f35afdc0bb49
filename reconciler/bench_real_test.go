package reconciler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// Sizes of BenchmarkRealColdConverge: benchRepos students' repos of
// benchPerRepo containers each, converged benchConcurrency passes at a
// time (poll.concurrency's default). WM_BENCH_REPOS changes the number of
// repos; WM_BENCH_CONTAINERS=N asks for N containers instead (N/4 repos,
// rounded up).
const (
	benchRepos       = 10
	benchPerRepo     = 4
	benchConcurrency = 4
)

// BenchmarkRealColdConverge measures a cold converge through the
// reconciler on the two real Docker Engines of this machine (the local
// one and ci/docker2-up's): benchRepos repos of different students,
// benchPerRepo containers each (busybox, 32 MiB, no ports, no volumes),
// passed benchConcurrency at a time by a fresh Reconciler with a fresh
// state store and git cache, from no container at all to every repo
// Ready. Its lower bound, run in the same iteration, is the raw Docker
// API: create and start of as many containers (same image, command,
// memory and hardening, on the same hosts in the same numbers), by
// benchConcurrency workers, through the Docker SDK. ns/op is the
// reconciler's converge alone; reconciler-ms and raw-ms are each phase's
// wall time, and x-raw their ratio. Between phases everything made is
// removed, untimed. Results and the machine: BENCH.md.
//
//	go test ./reconciler -run '^$' -bench RealColdConverge -benchtime 3x
func BenchmarkRealColdConverge(b *testing.B) {
	local, second := dockertest.Local(b), dockertest.Second(b)
	daemons := []*dockertest.Daemon{local, second}
	for _, d := range daemons {
		d.BusyboxImage(b, multiHostImage)
	}
	nRepos := benchRepos
	if s := os.Getenv("WM_BENCH_REPOS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("WM_BENCH_REPOS=%q is not a number of repos", s)
		}
		nRepos = n
	}
	if s := os.Getenv("WM_BENCH_CONTAINERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("WM_BENCH_CONTAINERS=%q is not a number of containers", s)
		}
		nRepos = (n + benchPerRepo - 1) / benchPerRepo
	}
	root := b.TempDir()
	owners := make([]string, nRepos)
	repos := make([]*gittest.Repo, nRepos)
	var yaml strings.Builder
	yaml.WriteString("version: 1\ncontainers:\n")
	for i := range benchPerRepo {
		fmt.Fprintf(&yaml, "  c%d: {image: %s, env: {N: \"%d\"}, memory: 32Mi}\n", i, multiHostImage, i)
	}
	for i := range owners {
		owners[i] = second.Owner(b)
		repos[i] = gittest.NewRepo(b, filepath.Join(root, "git", owners[i], "bench.git"))
		repos[i].Commit(b, "main", map[string]string{"wm.yaml": yaml.String()}, "bench")
	}
	total := nRepos * benchPerRepo

	var recTime, rawTime time.Duration
	spread := map[string]int{}
	b.ResetTimer()
	b.StopTimer()
	for i := range b.N {
		// Alternate which phase goes first, so that neither always finds
		// the engines fresh from the other's clean-up.
		phases := []func(){
			func() { rawTime += benchRaw(b, daemons, owners, total) },
			func() {
				d, hosts := benchReconciler(b, daemons, root, i, owners, repos)
				recTime += d
				for h, n := range hosts {
					spread[h] += n
				}
			},
		}
		if i%2 == 1 {
			phases[0], phases[1] = phases[1], phases[0]
		}
		for _, p := range phases {
			p()
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(recTime.Milliseconds())/n, "reconciler-ms/op")
	b.ReportMetric(float64(rawTime.Milliseconds())/n, "raw-ms/op")
	b.ReportMetric(recTime.Seconds()/rawTime.Seconds(), "x-raw")
	b.ReportMetric(float64(total), "containers")
	b.Logf("%d containers (%d repos × %d) at concurrency %d; reconciler placed them %v over %d converge(s)",
		total, nRepos, benchPerRepo, benchConcurrency, spread, b.N)
}

// benchReconciler converges every repo with a fresh Reconciler (its own
// instance, state store and git cache), timed, checks each is Ready,
// counts the containers on each host, and removes them, untimed.
func benchReconciler(b *testing.B, daemons []*dockertest.Daemon, root string, iter int, owners []string, repos []*gittest.Repo) (time.Duration, map[string]int) {
	suffix := make([]byte, 4)
	rand.Read(suffix)
	instance := "bench-" + hex.EncodeToString(suffix)
	dir := filepath.Join(root, fmt.Sprintf("run%d", iter))
	from := dockertest.FreePorts(b, 1)[0]
	var hosts strings.Builder
	for _, d := range daemons {
		fmt.Fprintf(&hosts, "    - {name: %s, endpoint: %q}\n", d.Name(), d.Endpoint())
	}
	cfg, err := schema.ParseServer("bench.yaml", strings.NewReader(fmt.Sprintf(`
instance: %s
policy:
  hostPorts: {from: %d, to: %d}
  allowedRegistries: [docker.io/wm-test]
  quota: {containers: %d}
docker:
  hosts:
%s`, instance, from, from+50, benchPerRepo, hosts.String())), dir)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "state"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var engines []core.Engine
	for _, d := range daemons {
		e, err := docker.New(d.Name(), d.Endpoint(), docker.WithInstance(instance))
		if err != nil {
			b.Fatal(err)
		}
		defer e.Close()
		engines = append(engines, e)
	}
	rec, err := New(cfg, gitsource.New(filepath.Join(dir, "cache")), engines, st)
	if err != nil {
		b.Fatal(err)
	}
	defer benchSweep(b, daemons, "label", docker.LabelInstance+"="+instance)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	errs := make([]error, len(repos))
	b.StartTimer()
	start := time.Now()
	runPool(len(repos), benchConcurrency, func(i int) {
		repo := Repo{Key: owners[i] + "/bench", Owner: owners[i], URL: repos[i].FileURL(), Branch: "main"}
		res, err := rec.Reconcile(ctx, repo)
		if err == nil && !res.Ready {
			err = fmt.Errorf("not Ready: %s", res.Message)
		}
		errs[i] = err
	})
	took := time.Since(start)
	b.StopTimer()
	for i, err := range errs {
		if err != nil {
			b.Fatalf("pass of %s: %v", owners[i], err)
		}
	}
	spread := map[string]int{}
	for _, d := range daemons {
		for _, o := range owners {
			spread[d.Name()] += len(d.ContainerNames(b, o))
		}
	}
	return took, spread
}

// benchRaw creates and starts total containers through the Docker SDK,
// half on each daemon (the first gets the odd one), by benchConcurrency
// workers, and returns the time that took (not on the benchmark's timer);
// then removes them.
func benchRaw(b *testing.B, daemons []*dockertest.Daemon, owners []string, total int) time.Duration {
	suffix := make([]byte, 4)
	rand.Read(suffix)
	run := "raw-" + hex.EncodeToString(suffix)
	defer benchSweep(b, daemons, "label", "wm-bench="+run)
	clients := make([]*client.Client, len(daemons))
	for i, d := range daemons {
		clients[i] = d.Client(b)
	}
	pids := int64(core.DefaultPidsLimit)
	yes := true
	hostConfig := &container.HostConfig{
		Init:          &yes,
		CapDrop:       []string{"ALL"},
		CapAdd:        docker.CapAllowlist(),
		SecurityOpt:   []string{"no-new-privileges:true"},
		IpcMode:       "private",
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
		LogConfig:     container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}},
		Resources:     container.Resources{Memory: 32 << 20, MemorySwap: 32 << 20, PidsLimit: &pids},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	errs := make([]error, total)
	start := time.Now()
	runPool(total, benchConcurrency, func(i int) {
		cli := clients[i%len(clients)]
		owner := owners[(i/benchPerRepo)%len(owners)]
		cfg := &container.Config{
			Image:  multiHostImage,
			Env:    []string{fmt.Sprintf("N=%d", i%benchPerRepo)},
			Labels: map[string]string{"wm-bench": run, docker.LabelOwner: owner},
		}
		created, err := cli.ContainerCreate(ctx, cfg, hostConfig, &network.NetworkingConfig{}, nil, fmt.Sprintf("%s_%s_c%d", run, owner, i))
		if err == nil {
			err = cli.ContainerStart(ctx, created.ID, container.StartOptions{})
		}
		errs[i] = err
	})
	took := time.Since(start)
	for i, err := range errs {
		if err != nil {
			b.Fatalf("raw container %d: %v", i, err)
		}
	}
	return took
}

// runPool runs do(0) to do(n-1), workers at a time.
func runPool(n, workers int, do func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				do(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// benchSweep force-removes the containers, then the networks and volumes,
// that carry the filter key=value on every daemon.
func benchSweep(b *testing.B, daemons []*dockertest.Daemon, key, value string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	f := filters.NewArgs(filters.Arg(key, value))
	for _, d := range daemons {
		cli := d.Client(b)
		cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
		if err != nil {
			b.Fatalf("sweep %s: %v", d.Name(), err)
		}
		runPool(len(cs), benchConcurrency, func(i int) {
			err := cli.ContainerRemove(ctx, cs[i].ID, container.RemoveOptions{Force: true})
			if err != nil && !cerrdefs.IsNotFound(err) {
				b.Errorf("sweep %s: remove %s: %v", d.Name(), cs[i].ID, err)
			}
		})
		ns, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
		if err != nil {
			b.Fatalf("sweep %s: %v", d.Name(), err)
		}
		for _, n := range ns {
			if err := cli.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
				b.Errorf("sweep %s: remove network %s: %v", d.Name(), n.Name, err)
			}
		}
	}
}
