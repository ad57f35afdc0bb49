package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/dashboard"
	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/reconciler/webhook"
	"github.com/whalemountain/wm/schema"
)

func newServeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Keep every repo reconciled: poll the sources and serve the API",
		Long: `Poll every repo of the sources every poll.interval (with jitter) and reconcile
it, on poll.concurrency workers. Serve GitLab's webhooks, SIF downloads, the
students' API (/api/v1: wm login, ps, logs, exec, cp, restart, sif get), a
health check and the probes (/livez: the loop is not wedged; /readyz: the
state store, each Docker host, GitLab and the Kubernetes apiserver answer;
?verbose lists each check) on the public listen address, rate-limited per
client, and the status API, the metrics and the probes with their reasons
on adminListen (by default a unix socket in the state
folder that only wm's user may connect to). Each pass has a deadline
(poll.passTimeout). SIGTERM or SIGINT starts no new pass and lets those under
way go on for poll.shutdownGrace, then cancels them and exits. It logs as
the config's log section says (text or json, from info); -v logs at debug
level. With ha in the config, replicas elect a leader on a Kubernetes Lease
first: only the leader opens the state and reconciles; the others answer
/readyz 503 until they lead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// The checks wm validate --server makes too (preflight.go).
			cfg, err := loadCheckedConfig(cmd, g.config)
			if err != nil {
				return err
			}
			if cfg.HA != nil {
				// One replica of several: only the Lease's holder opens
				// the runtime (ha.go).
				return serveHA(ctx, cmd, g, cfg)
			}
			rt, _, err := openRuntime(cmd, g, false, nil)
			if err != nil {
				return err
			}
			defer rt.Close()
			ls, err := listen(rt.cfg)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
				return exitError{exitInvalid}
			}
			return serveLoop(ctx, cmd, rt, ls, g.verbose)
		},
	}
	return cmd
}

// listeners are wm serve's two: public (listen) and admin (adminListen).
type listeners struct{ public, admin net.Listener }

// listen opens both listeners of cfg.
func listen(cfg *schema.ServerConfig) (*listeners, error) {
	public, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, err
	}
	if public, err = withTLS(public, cfg); err != nil {
		return nil, err
	}
	admin, err := listenAdmin(cfg)
	if err != nil {
		public.Close()
		return nil, err
	}
	return &listeners{public: public, admin: admin}, nil
}

// serveLoop runs the poll loop, the GitLab service when configured, and
// the HTTP servers when ls is not nil, until ctx is done; verbose logs at
// debug level.
func serveLoop(ctx context.Context, cmd *cobra.Command, rt *runtime, ls *listeners, verbose bool) error {
	log := configLogger(cmd.ErrOrStderr(), rt.cfg.Log, verbose)
	// A repo whose folder was removed from a folder source is retired;
	// those the state store knows are watched too, for removals made
	// while wm was down.
	var known []reconciler.Repo
	if states, err := rt.store.Repos(); err != nil {
		log.Warn("state not read: repo folders removed while wm was down are not retired", "err", err)
	} else {
		for _, s := range states {
			known = append(known, reconciler.Repo{Key: s.Key, Owner: s.Owner, URL: s.URL, Branch: s.Branch})
		}
	}
	var loop *reconciler.Loop
	folders := reconciler.NewFolderWatch(rt.cfg.Sources.Dirs, known, log)
	discover := folders.Discovering(func() ([]reconciler.Repo, error) { return rt.repos(log) }, func(r reconciler.Repo) { loop.Retire(r) })
	loop = reconciler.NewLoop(rt.rec, discover, rt.cfg.Poll.Interval.Std(), rt.cfg.Poll.MaxJitter(), rt.cfg.Poll.Concurrency, log)
	rt.loop = loop
	loop.PassTimeout, loop.ShutdownGrace = rt.cfg.Poll.PassTimeout.Std(), rt.cfg.Poll.ShutdownGrace.Std()
	// The grace starts with shutdown; the GitLab work under way gets no
	// more than the passes.
	graceOver := make(chan struct{})
	context.AfterFunc(ctx, func() { time.AfterFunc(loop.ShutdownGrace, func() { close(graceOver) }) })
	// The reconciler's metrics (observe.go) count its passes from now on,
	// and the admins' schedules' runs (rt.rec.Metrics().ScheduleRun).
	reg, err := serveMetrics(rt, loop)
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		return exitError{exitInvalid}
	}
	loop.OnResult = func(res reconciler.Result, err error) {
		if err != nil {
			outcome, reason := reconciler.Classify(err)
			log.Info("pass", "repo", res.Repo.Key, "revision", shortRev(res.Revision), "outcome", outcome.String(), "reason", reason)
			return
		}
		log.Info("pass", "repo", res.Repo.Key, "revision", shortRev(res.Revision), "ready", res.Ready, "result", res.Message)
	}
	var dispatcher webhook.Dispatcher = localDispatcher{loop}
	var background sync.WaitGroup
	if rt.gitlab != nil {
		rt.gitlab.Connect(rt.rec, loop)
		dispatcher = rt.gitlab
		background.Go(func() { rt.gitlab.Run(ctx) })
	}
	if err := startSchedules(ctx, rt, loop, log, &background); err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		return exitError{exitInvalid}
	}
	var servers []*http.Server
	if ls != nil {
		pr, err := newProbes(rt, loop, log)
		var public http.Handler
		if err == nil {
			public, err = publicHandler(rt, dispatcher, reg, pr, log)
		}
		if err != nil {
			ls.public.Close()
			ls.admin.Close()
			fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
			return exitError{exitInvalid}
		}
		for _, s := range []struct {
			name string
			ln   net.Listener
			h    http.Handler
		}{{"public", ls.public, public}, {"admin", ls.admin, pr.withProbes(adminHandler(rt, reg, log))}} {
			srv := newHTTPServer(s.h, defaultHTTPLimits, log)
			servers = append(servers, srv)
			go func() {
				if err := srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("http server stopped", "listener", s.name, "err", err)
				}
			}()
			log.Info("serving", "listener", s.name, "address", s.ln.Addr().String())
		}
	}
	backgroundDone := make(chan struct{})
	go func() { background.Wait(); close(backgroundDone) }()
	loop.Run(ctx)
	select {
	case <-backgroundDone:
	case <-graceOver:
		log.Warn("GitLab work still under way after the shutdown grace; exiting without waiting for it")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
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

// publicHandler serves what the world may ask for: GitLab's webhooks,
// SIF downloads (with a bearer token), a health check and the probes
// (their reasons withheld), the web dashboard when configured, each
// client within its rate limit. Nothing else is on the public listener.
func publicHandler(rt *runtime, d webhook.Dispatcher, reg *prometheus.Registry, pr *probes, log *slog.Logger) (http.Handler, error) {
	mux := http.NewServeMux()
	var exempt func(*http.Request) bool
	var deliveries func() []webhook.Delivery
	if path := rt.cfg.Webhook.SecretFile; path != "" {
		secret, err := readSecret("webhook.secretFile", path)
		if err != nil {
			return nil, err
		}
		exempt = webhookSecretHolder(secret)
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
		deliveries = h.Recent
	} else {
		log.Info("no webhook.secretFile: POST /hooks/gitlab is off, repos are polled only")
	}
	acc, err := accessServer(rt, log)
	if err != nil {
		return nil, err
	}
	if acc != nil {
		// The students' API and SIF downloads, with the same identities.
		mux.Handle(access.Prefix, acc.Handler())
		sifs := acc.Artifacts(func(a func(*http.Request, string) bool) http.Handler { return sif.NewHandler(rt.cfg.ArtifactsDir, a) })
		mux.Handle("GET /artifacts/", downloadDeadlines(sifs, defaultHTTPLimits.DownloadStall))
		if rt.cfg.Dashboard != nil {
			// The web dashboard: everything else on the listener, every
			// page a call to the same API with the session's token.
			dash, err := dashboardHandler(rt, acc, downloadDeadlines(sifs, defaultHTTPLimits.DownloadStall), deliveries, log)
			if err != nil {
				return nil, err
			}
			mux.Handle("/", dash)
		}
	} else {
		log.Info("no sources.gitlab and no artifacts.tokensFile: the access API (/api/v1) and SIF downloads are off")
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	pr.register(mux, false)
	handleSchema(mux)
	rl := rt.cfg.RateLimit
	if rl.Rate == 0 {
		log.Info("rateLimit.rate is 0: the public listener is not rate-limited")
		return mux, nil
	}
	var trusted []netip.Prefix
	for _, p := range rt.cfg.TrustedProxies {
		prefix, err := schema.ParseProxy(p)
		if err != nil {
			return nil, fmt.Errorf("trustedProxies: %w", err)
		}
		trusted = append(trusted, prefix)
	}
	limited := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "wm_http_rate_limited_total", Help: "Requests to the public listener refused with 429 Too Many Requests.",
	})
	reg.MustRegister(limited)
	return rateLimit(mux, newClientLimiter(rl.Rate, rl.Burst, maxClients, nil), trusted, exempt, limited), nil
}

// dashboardHandler is the web dashboard of rt's config, over acc and the
// SIF downloads sifs; deliveries, when not nil, lists the webhook's last
// deliveries.
func dashboardHandler(rt *runtime, acc *access.Server, sifs http.Handler, deliveries func() []webhook.Delivery, log *slog.Logger) (http.Handler, error) {
	d := rt.cfg.Dashboard
	secret, err := readSecret("dashboard.secretFile", d.SecretFile)
	if err != nil {
		return nil, err
	}
	key, err := dashboard.SessionKey(d.SessionKeyFile, rt.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	q := rt.cfg.Policy.Quota
	var hosts []dashboard.Host
	for _, h := range rt.cfg.Docker.Hosts {
		hosts = append(hosts, dashboard.Host{Name: h.Name, GPUs: h.Devices()})
	}
	dash, err := dashboard.New(dashboard.Config{
		API: acc.Handler(), Artifacts: sifs, GitLabURL: rt.cfg.Sources.GitLab.URL,
		ClientID: d.ApplicationID, ClientSecret: secret, RedirectURL: d.RedirectURL,
		SessionKey: key, Secure: strings.HasPrefix(d.RedirectURL, "https://"), SessionTTL: d.SessionTTL.Std(),
		Quota: dashboard.Quota{Containers: q.Containers, Pods: q.Pods, GPUs: q.GPUs, CPUs: q.CPUs, MemoryBytes: schema.SizeBytes(q.Memory)},
		Hosts: hosts, MaxUpload: schema.SizeBytes(rt.cfg.Access.MaxCopySize), History: rt.store.History,
		GPUHours: rt.store.GPUHours, Deliveries: deliveries, Log: log,
	})
	if err != nil {
		return nil, err
	}
	return dash.Handler(), nil
}

// accessServer is the access API of rt's config: identities from GitLab
// (sources.gitlab) and from artifacts.tokensFile, either or both; nil when
// there is neither.
func accessServer(rt *runtime, log *slog.Logger) (*access.Server, error) {
	var auth access.Chain
	if path := rt.cfg.Artifacts.TokensFile; path != "" {
		tokens, err := readTokens(path)
		if err != nil {
			return nil, err
		}
		auth = append(auth, access.NewTokens(tokens))
	}
	a := rt.cfg.Access
	if g := rt.cfg.Sources.GitLab; g != nil {
		token, err := readSecret("sources.gitlab.tokenFile", g.TokenFile)
		if err != nil {
			return nil, err
		}
		auth = append(auth, access.NewGitLab(access.GitLabConfig{URL: g.URL, ServiceToken: token, AdminGroup: a.GitLabAdminGroup, Admins: a.Admins, TTL: a.IdentityTTL.Std()}))
	}
	if len(auth) == 0 {
		return nil, nil
	}
	var trusted []netip.Prefix
	for _, p := range rt.cfg.TrustedProxies {
		if prefix, err := schema.ParseProxy(p); err == nil {
			trusted = append(trusted, prefix)
		}
	}
	cfg := access.Config{Auth: auth, State: rt.store, Addresses: map[string]string{}, MaxSessions: a.MaxSessions, IdleTimeout: a.IdleTimeout.Std(),
		MaxCopyBytes: schema.SizeBytes(a.MaxCopySize), AllowedOrigins: a.AllowedOrigins, Log: log,
		ClientAddr: func(r *http.Request) string { return clientAddr(r, trusted).String() }}
	if rt.cfg.Culling != nil {
		cfg.Waker = rt.waker()
	}
	if rt.cfg.Kubernetes != nil {
		k, err := kubeAccess(rt.cfg)
		if err != nil {
			return nil, err
		}
		cfg.Cluster = k
	}
	for i, e := range rt.engines {
		cfg.Hosts = append(cfg.Hosts, e)
		cfg.Addresses[e.Name()] = hostAddress(rt.cfg.Docker.Hosts[i].Endpoint)
	}
	return access.New(cfg), nil
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
