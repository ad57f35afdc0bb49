package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/health/probe"
	"github.com/whalemountain/wm/schema"
)

// What wm serve tells those who watch it: its metrics (on the admin
// listener), its liveness and readiness probes (on both listeners: the
// public one withholds the reasons, which name hosts and files), and its
// log, as the server config's log section says.

// configLogger logs to w as the server config's log section says: text
// or JSON lines, from its level; verbose logs from debug whatever it
// says. An empty section (a config built in code) is text from info.
func configLogger(w io.Writer, lc schema.Log, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if lc.Level != "" {
		// The schema allows slog's own names only.
		_ = level.UnmarshalText([]byte(lc.Level))
	}
	if verbose {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serveMetrics is wm serve's registry: the Go runtime's and the process's
// metrics, and the reconciler's (reconciler.Metrics), which it records
// into from now on, starting from what the store holds.
func serveMetrics(rt *runtime, loop *reconciler.Loop) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := reconciler.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	if err := metrics.WatchLoop(loop); err != nil {
		return nil, err
	}
	states, err := rt.store.Repos()
	if err != nil {
		return nil, fmt.Errorf("read the state for the metrics: %w", err)
	}
	metrics.Seed(states)
	rt.rec.SetMetrics(metrics)
	return reg, nil
}

// How often each readiness check runs at most, and how long it may take.
// A probe answers within the longest timeout (probe.Run), well within a
// Kubernetes probe's timeoutSeconds of 5 (deploy/kubernetes).
const (
	readyEvery    = 5 * time.Second
	gitlabEvery   = 15 * time.Second // each is a call on GitLab's API
	readyTimeout  = 2 * time.Second
	gitlabTimeout = 3 * time.Second
)

// probes are wm serve's /livez and /readyz.
type probes struct{ live, ready *probe.Probe }

// newProbes makes wm serve's probes: livez checks that the loop is not
// wedged (reconciler.Loop.Alive); readyz that the state store reads, that
// each Docker host answers a ping, and GitLab and the Kubernetes
// apiserver when they are configured, each by name (store, docker/<host>,
// gitlab, kubernetes). Every check is required: a failing one makes
// /readyz answer 503 (?exclude=NAME leaves one out).
func newProbes(rt *runtime, loop *reconciler.Loop, log *slog.Logger) (*probes, error) {
	live := probe.New("livez", log, probe.Check{Name: "loop", Timeout: time.Second,
		Run: func(context.Context) error { return loop.Alive(time.Now()) }})
	checks := []probe.Check{{Name: "store", Every: readyEvery, Timeout: readyTimeout, Run: func(context.Context) error {
		if _, err := rt.store.Cordons(); err != nil {
			return fmt.Errorf("read the state store: %w", err)
		}
		return nil
	}}}
	for _, e := range rt.engines {
		checks = append(checks, probe.Check{Name: "docker/" + e.Name(), Every: readyEvery, Timeout: readyTimeout, Run: e.Ping})
	}
	if g := rt.cfg.Sources.GitLab; g != nil {
		token, err := readSecret("sources.gitlab.tokenFile", g.TokenFile)
		if err != nil {
			return nil, err
		}
		checks = append(checks, probe.Check{Name: "gitlab", Every: gitlabEvery, Timeout: gitlabTimeout, Run: gitlabCheck(g.URL, token)})
	}
	if k := rt.cfg.Kubernetes; k != nil {
		run, err := kubeCheck(k.Kubeconfig)
		if err != nil {
			return nil, err
		}
		checks = append(checks, probe.Check{Name: "kubernetes", Every: readyEvery, Timeout: readyTimeout, Run: run})
	}
	return &probes{live: live, ready: probe.New("readyz", log, checks...)}, nil
}

// kubeCheck asks the apiserver of kubeconfig whether it is ready (its
// own /readyz), as WhaleMountain's account: it answers, and still takes
// the credentials the passes use.
func kubeCheck(kubeconfig string) (func(context.Context) error, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return func(ctx context.Context) error {
		if err := client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error(); err != nil {
			return fmt.Errorf("ask the Kubernetes apiserver's /readyz: %w", err)
		}
		return nil
	}, nil
}

// register serves both probes on mux; reveal answers why a check failed.
func (p *probes) register(mux *http.ServeMux, reveal bool) {
	p.live.Register(mux, reveal)
	p.ready.Register(mux, reveal)
}

// withProbes is h with the probes in front of it, reasons revealed: the
// admin listener's.
func (p *probes) withProbes(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", h)
	p.register(mux, true)
	return mux
}

// gitlabCheck asks GitLab for its version (GET /api/v4/version) with the
// service token: GitLab answers, and still takes the token discovery
// and status reports use.
func gitlabCheck(baseURL, token string) func(context.Context) error {
	client := &http.Client{}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/api/v4/version", nil)
		if err != nil {
			return fmt.Errorf("ask GitLab: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("ask GitLab: %w", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		switch {
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return fmt.Errorf("GitLab refuses the token of sources.gitlab.tokenFile: %s", resp.Status)
		case resp.StatusCode != http.StatusOK:
			return fmt.Errorf("GitLab answered %s to GET /api/v4/version", resp.Status)
		}
		return nil
	}
}
