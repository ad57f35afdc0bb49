package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/reconciler/webhook"
)

// statusPath is where wm serve answers with every repo's state as JSON.
const statusPath = "/api/v1/status"

func newServeCmd() *cobra.Command {
	var cfgPath string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Keep every repo reconciled: poll the sources and serve the API",
		Long: `Poll every repo of the sources every poll.interval (with jitter) and reconcile
it, on poll.concurrency workers; serve the status API on the listen address.
SIGTERM or SIGINT lets the passes under way finish, then exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rt, _, err := openRuntime(cmd, cfgPath, verbose, nil)
			if err != nil {
				return err
			}
			defer rt.Close()
			ln, err := net.Listen("tcp", rt.cfg.Listen)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
				return exitError{exitInvalid}
			}
			return serveLoop(ctx, cmd, rt, ln)
		},
	}
	configFlag(cmd, &cfgPath)
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}

// serveLoop runs the poll loop, the GitLab service when configured, and
// the HTTP API when ln is not nil, until ctx is done.
func serveLoop(ctx context.Context, cmd *cobra.Command, rt *runtime, ln net.Listener) error {
	log := newLogger(cmd.ErrOrStderr(), false)
	discover := func() ([]reconciler.Repo, error) { return rt.repos(log) }
	loop := reconciler.NewLoop(rt.rec, discover, rt.cfg.Poll.Interval.Std(), rt.cfg.Poll.MaxJitter(), rt.cfg.Poll.Concurrency, log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	passes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wm_passes_total", Help: "Reconcile passes by outcome (Ready, NotReady, Waiting, Stalled, Transient).",
	}, []string{"outcome"})
	reg.MustRegister(passes)
	loop.OnResult = func(res reconciler.Result, err error) {
		if err != nil {
			outcome, reason := reconciler.Classify(err)
			passes.WithLabelValues(outcome.String()).Inc()
			log.Info("pass", "repo", res.Repo.Key, "revision", shortRev(res.Revision), "outcome", outcome.String(), "reason", reason)
			return
		}
		passes.WithLabelValues(map[bool]string{true: "Ready", false: "NotReady"}[res.Ready]).Inc()
		log.Info("pass", "repo", res.Repo.Key, "revision", shortRev(res.Revision), "ready", res.Ready, "result", res.Message)
	}
	var dispatcher webhook.Dispatcher = localDispatcher{loop}
	var background sync.WaitGroup
	if rt.gitlab != nil {
		rt.gitlab.Connect(rt.rec, loop)
		dispatcher = rt.gitlab
		background.Go(func() { rt.gitlab.Run(ctx) })
	}
	var srv *http.Server
	if ln != nil {
		mux, err := apiHandler(rt, dispatcher, reg, log)
		if err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
			return exitError{exitInvalid}
		}
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server stopped", "err", err)
			}
		}()
		log.Info("serving", "address", ln.Addr().String())
	}
	loop.Run(ctx)
	background.Wait()
	if srv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}
	log.Info("stopped")
	return nil
}

// localDispatcher triggers passes for pushes when repos do not come from
// GitLab discovery (a static list or folders) but GitLab still sends
// project hooks: the project path is the repo key.
type localDispatcher struct{ loop *reconciler.Loop }

func (d localDispatcher) Dispatch(_ context.Context, e any) {
	if p, ok := e.(webhook.Push); ok && p.OnDefaultBranch() && !p.Deleted() {
		d.loop.TriggerRevision(strings.ToLower(p.Project), p.After)
	}
}

// apiHandler serves the webhook, health, metrics and status endpoints.
func apiHandler(rt *runtime, d webhook.Dispatcher, reg *prometheus.Registry, log *slog.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	if path := rt.cfg.Webhook.SecretFile; path != "" {
		secret, err := readSecret("webhook.secretFile", path)
		if err != nil {
			return nil, err
		}
		cfg := webhook.Config{Secret: []byte(secret)}
		if sp := rt.cfg.Webhook.SigningTokenFile; sp != "" {
			raw, err := readSecret("webhook.signingTokenFile", sp)
			if err != nil {
				return nil, err
			}
			if cfg.SigningSecret, err = webhook.ParseSigningSecret(raw); err != nil {
				return nil, fmt.Errorf("webhook.signingTokenFile: %w", err)
			}
		}
		h, err := webhook.NewHandler(cfg, d, reg)
		if err != nil {
			return nil, err
		}
		mux.Handle("/hooks/gitlab", h)
	} else {
		log.Info("no webhook.secretFile: POST /hooks/gitlab is off, repos are polled only")
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if path := rt.cfg.Artifacts.TokensFile; path != "" {
		tokens, err := readTokens(path)
		if err != nil {
			return nil, err
		}
		mux.Handle("GET /artifacts/", sif.NewHandler(rt.cfg.ArtifactsDir, tokens.authorize))
	} else {
		log.Info("no artifacts.tokensFile: SIF downloads are off")
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// Every student's state is in there: only the machine itself (an admin
	// running wm status) may read it.
	mux.HandleFunc("GET "+statusPath, func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			http.Error(w, "the status API answers local requests only", http.StatusForbidden)
			return
		}
		repos, err := rt.store.Repos()
		if err != nil {
			log.Error("status", "err", err)
			http.Error(w, "cannot read state", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(repos)
	})
	return mux, nil
}

// tokens maps bearer tokens to the owner they speak for; "*" is an admin.
type tokens map[string]string

// readTokens reads "TOKEN OWNER" lines; blank lines and # comments are
// skipped.
func readTokens(path string) (tokens, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read artifacts.tokensFile: %w", err)
	}
	out := tokens{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 || len(fields[0]) < 16 {
			return nil, fmt.Errorf("%s:%d: want \"TOKEN OWNER\" with a token of at least 16 characters", path, i+1)
		}
		out[fields[0]] = fields[1]
	}
	return out, nil
}

// authorize lets a request through for owner's artifacts when its bearer
// token speaks for that owner or for an admin. Tokens are compared in
// constant time.
func (t tokens) authorize(r *http.Request, owner string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	allowed := false
	for tok, who := range t {
		if subtle.ConstantTimeCompare([]byte(got), []byte(tok)) == 1 && (who == owner || who == "*") {
			allowed = true
		}
	}
	return allowed
}

// fromLoopback reports whether a request comes from this machine.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
