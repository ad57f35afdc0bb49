package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler"
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

// serveLoop runs the poll loop, and the HTTP API when ln is not nil,
// until ctx is done.
func serveLoop(ctx context.Context, cmd *cobra.Command, rt *runtime, ln net.Listener) error {
	log := newLogger(cmd.ErrOrStderr(), false)
	discover := func() ([]reconciler.Repo, error) { return rt.repos(log) }
	loop := reconciler.NewLoop(rt.rec, discover, rt.cfg.Poll.Interval.Std(), rt.cfg.Poll.MaxJitter(), rt.cfg.Poll.Concurrency, log)
	loop.OnResult = func(res reconciler.Result, err error) {
		if err != nil {
			outcome, reason := reconciler.Classify(err)
			log.Info("pass", "repo", res.Repo.Key, "revision", shortRev(res.Revision), "outcome", outcome.String(), "reason", reason)
			return
		}
		log.Info("pass", "repo", res.Repo.Key, "revision", shortRev(res.Revision), "ready", res.Ready, "result", res.Message)
	}
	var srv *http.Server
	if ln != nil {
		srv = &http.Server{Handler: apiHandler(rt), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server stopped", "err", err)
			}
		}()
		log.Info("serving", "address", ln.Addr().String())
	}
	loop.Run(ctx)
	if srv != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}
	log.Info("stopped")
	return nil
}

// apiHandler serves the health and status endpoints.
func apiHandler(rt *runtime) http.Handler {
	mux := http.NewServeMux()
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
			slog.Error("status", "err", err)
			http.Error(w, "cannot read state", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(repos)
	})
	return mux
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
