package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/core"
)

func newPlanCmd(g *globals) *cobra.Command {
	var only []string
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Show what a pass would create, recreate, start, stop and remove, changing nothing",
		Long: `Show, per owner and repo, what one pass would do to the containers, without
doing it: no container is touched, no host port is allocated, no status is
written. A new container's host port shows as "new".

The state is opened read-only and the state folder is neither created nor
written to: each repo is fetched into a temporary folder removed on exit,
and a state folder that does not exist yet plans as an empty state. While
wm serve (or wm reconcile) holds the state, plan cannot read it and says so.
With -v, each stage of each repo's plan is shown on stderr.

Exit status: 0 when every repo could be planned, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			rt, repos, err := openRuntime(cmd, g, true, only)
			if err != nil {
				return err
			}
			defer rt.Close()
			return printPlans(cmd.OutOrStdout(), reconcileAll(ctx, rt.rec.Plan, repos, rt.cfg.Poll.Concurrency))
		},
	}
	cmd.Flags().StringSliceVar(&only, "repo", nil, "only these repos (`KEY`, such as alice/web); repeatable")
	return cmd
}

var planSigns = map[reconciler.ActionKind]string{
	reconciler.ActionCreate: "+", reconciler.ActionRecreate: "~", reconciler.ActionStart: ">",
	reconciler.ActionStop: "=", reconciler.ActionRemove: "-",
}

// printPlans prints the plans grouped by owner.
func printPlans(w io.Writer, outs []outcome) error {
	byOwner := map[string][]outcome{}
	for _, o := range outs {
		byOwner[o.res.Repo.Owner] = append(byOwner[o.res.Repo.Owner], o)
	}
	owners := make([]string, 0, len(byOwner))
	for o := range byOwner {
		owners = append(owners, o)
	}
	sort.Strings(owners)
	failed := false
	for _, owner := range owners {
		fmt.Fprintf(w, "%s\n", owner)
		for _, o := range byOwner[owner] {
			fmt.Fprintf(w, "  %s @ %s\n", o.res.Repo.Key, shortRev(o.res.Revision))
			if o.err != nil {
				failed = true
				for _, line := range strings.Split(o.err.Error(), "\n") {
					fmt.Fprintf(w, "    ! %s\n", line)
				}
				continue
			}
			for _, a := range o.res.Plan.Actions {
				fmt.Fprintf(w, "    %s %-8s %-9s %s on %s%s\n", planSigns[a.Kind], a.Kind, a.Resource, a.Name, a.Where(), actionDetail(a))
			}
			if o.res.HeldRemovals > 0 {
				fmt.Fprintf(w, "    ! %d removal(s) would be held by the prune limit (policy.maxPrunePercent)\n", o.res.HeldRemovals)
			}
			if len(o.res.Plan.Actions) == 0 {
				fmt.Fprintf(w, "    no changes (%d container(s), pod(s) and SIF(s) up to date)\n", o.res.Plan.Unchanged)
			}
		}
	}
	if failed {
		return exitError{exitInvalid}
	}
	return nil
}

// actionDetail says what a create or recreate will run and publish.
func actionDetail(a reconciler.Action) string {
	if a.Kind != reconciler.ActionCreate && a.Kind != reconciler.ActionRecreate {
		return ""
	}
	switch {
	case a.Pod != nil:
		return fmt.Sprintf(" (%s, %d GPU(s), %g CPU(s))", a.Pod.Image, a.Pod.GPUs, a.Pod.CPUs)
	case a.Spec == nil:
		return " (" + a.Image + ")"
	}
	parts := []string{a.Spec.Image}
	for _, p := range a.Spec.Ports {
		parts = append(parts, fmt.Sprintf("%d→%s", p.Guest, hostPortText(p)))
	}
	if !a.Spec.Running {
		parts = append(parts, "stopped")
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func hostPortText(p core.PortBinding) string {
	if p.Host == 0 {
		return "new"
	}
	return fmt.Sprint(p.Host)
}
