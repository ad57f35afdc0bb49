package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// configFlag adds --config to a command, its value going to path.
func configFlag(cmd *cobra.Command, path *string) {
	cmd.Flags().StringVarP(path, "config", "c", "", "server config `FILE` (default: the built-in local defaults, relative to the current folder)")
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
}

// loadConfig reads the server config, or the embedded defaults.
func loadConfig(path string) (*schema.ServerConfig, error) {
	if path == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		return schema.DefaultServerConfig(wd)
	}
	return schema.LoadServer(path)
}

// runtime is everything a reconciling command needs, wired from a config.
type runtime struct {
	cfg     *schema.ServerConfig
	store   *store.Store
	engines []*docker.Engine
	rec     *reconciler.Reconciler
}

// newRuntime connects to the Docker hosts, opens the state store and
// builds the reconciler. progress, when not nil, receives pass stages.
func newRuntime(cfg *schema.ServerConfig, log *slog.Logger, progress io.Writer) (*runtime, error) {
	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	rt := &runtime{cfg: cfg, store: st}
	var engines []reconciler.Engine
	for _, h := range cfg.Docker.Hosts {
		e, err := docker.New(h.Name, h.Endpoint)
		if err != nil {
			rt.Close()
			return nil, fmt.Errorf("docker host %s: %w", h.Name, err)
		}
		rt.engines = append(rt.engines, e)
		engines = append(engines, e)
	}
	opts := []reconciler.Option{reconciler.WithLogger(log)}
	if progress != nil {
		opts = append(opts, reconciler.WithProgress(func(repo, stage string) {
			fmt.Fprintf(progress, "  %s: %s\n", repo, stage)
		}))
	}
	if cfg.Registry.PasswordFile != "" {
		pw, err := os.ReadFile(cfg.Registry.PasswordFile)
		if err != nil {
			rt.Close()
			return nil, fmt.Errorf("read registry.passwordFile: %w", err)
		}
		opts = append(opts, reconciler.WithRegistryAuth(&docker.Auth{Username: cfg.Registry.Username, Password: strings.TrimSpace(string(pw))}))
	}
	git := gitsource.New(filepath.Join(cfg.StateDir, "git"))
	rt.rec, err = reconciler.New(cfg, git, engines, st, opts...)
	if err != nil {
		rt.Close()
		return nil, err
	}
	return rt, nil
}

// repos lists the repos of the config's sources, warning about skipped
// ones on log.
func (rt *runtime) repos(log *slog.Logger) ([]reconciler.Repo, error) {
	repos, skipped, err := reconciler.Repos(rt.cfg)
	for _, s := range skipped {
		log.Warn("repo skipped", "why", s)
	}
	return repos, err
}

// Close releases the store and the engine connections.
func (rt *runtime) Close() {
	for _, e := range rt.engines {
		e.Close()
	}
	rt.store.Close()
}

// newLogger logs text to w at info level, or debug with verbose.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
