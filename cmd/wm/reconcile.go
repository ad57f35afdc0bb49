package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler"
)

func newReconcileCmd(g *globals) *cobra.Command {
	var once bool
	var only []string
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Make the containers match every repo's wm.yaml, once",
		Long: `Run one pass over every repo of the sources: read the branch head's wm.yaml
and make the repo's containers match it. Prints a line per repo.

With -v, each stage of each pass is shown on stderr, with debug logs.

Exit status: 0 when every repo converged (Ready), 1 otherwise.`,
		Example: `  wm reconcile --once
  wm reconcile --once --config /etc/wm/wm-server.yaml --repo alice/web -v`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rt, repos, err := openRuntime(cmd, g, false, only)
			if err != nil {
				return err
			}
			defer rt.Close()
			if !once {
				return serveLoop(ctx, cmd, rt, nil, g.verbose)
			}
			return printResults(cmd.OutOrStdout(), reconcileAll(ctx, rt.rec.Reconcile, repos, rt.cfg.Poll.Concurrency))
		},
	}
	cmd.Flags().BoolVar(&once, "once", true, "one pass over every repo, then exit (--once=false keeps polling, like serve)")
	cmd.Flags().StringSliceVar(&only, "repo", nil, "only these repos (`KEY`, such as alice/web); repeatable")
	return cmd
}

// openRuntime loads the config, connects everything and lists the repos,
// keeping only those named in only when it is not empty. readOnly opens
// the state read-only, creating nothing (openState).
func openRuntime(cmd *cobra.Command, g *globals, readOnly bool, only []string) (*runtime, []reconciler.Repo, error) {
	verbose := g.verbose
	cfg, err := loadConfig(g.config)
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), err)
		return nil, nil, exitError{exitInvalid}
	}
	var progress io.Writer
	if verbose {
		progress = cmd.ErrOrStderr()
	}
	log := configLogger(cmd.ErrOrStderr(), cfg.Log, verbose)
	rt, err := newRuntime(cfg, log, progress, readOnly)
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		return nil, nil, exitError{exitInvalid}
	}
	repos, err := rt.repos(log)
	if err != nil {
		rt.Close()
		fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		return nil, nil, exitError{exitInvalid}
	}
	if len(only) > 0 {
		repos = slices.DeleteFunc(repos, func(r reconciler.Repo) bool { return !slices.Contains(only, r.Key) })
		if len(repos) != len(only) {
			rt.Close()
			fmt.Fprintf(cmd.ErrOrStderr(), "wm: --repo names a repo the sources do not list: %s\n", strings.Join(only, ", "))
			return nil, nil, exitError{exitUsage}
		}
	}
	return rt, repos, nil
}

// outcome is one repo's pass result.
type outcome struct {
	res reconciler.Result
	err error
}

// reconcileAll runs pass on every repo, at most concurrency at once, and
// returns the outcomes in the repos' order.
func reconcileAll(ctx context.Context, pass func(context.Context, reconciler.Repo) (reconciler.Result, error), repos []reconciler.Repo, concurrency int) []outcome {
	out := make([]outcome, len(repos))
	sem := make(chan struct{}, max(1, concurrency))
	var wg sync.WaitGroup
	for i, repo := range repos {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			res, err := pass(ctx, repo)
			res.Repo = repo
			out[i] = outcome{res, err}
		})
	}
	wg.Wait()
	return out
}

// printResults prints a line per repo and returns exitError{1} unless all
// are Ready.
func printResults(w io.Writer, outs []outcome) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	allReady := true
	for _, o := range outs {
		status, msg := "Ready", o.res.Message
		switch {
		case o.err != nil:
			outcome, reason := reconciler.Classify(o.err)
			status = outcome.String() + "/" + string(reason)
			msg = o.err.Error()
			allReady = false
		case !o.res.Ready || o.res.HeldRemovals > 0:
			status = "NotReady"
			allReady = false
		}
		first, rest, _ := strings.Cut(msg, "\n")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", o.res.Repo.Key, shortRev(o.res.Revision), status, first)
		for _, line := range strings.Split(rest, "\n") {
			if line != "" {
				fmt.Fprintf(tw, "\t\t\t  %s\n", line)
			}
		}
	}
	tw.Flush()
	if !allReady {
		return exitError{exitInvalid}
	}
	return nil
}

func shortRev(rev string) string {
	if rev == "" {
		return "-"
	}
	return rev[:min(len(rev), 12)]
}
