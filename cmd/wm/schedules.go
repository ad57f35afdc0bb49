package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/schedule"
)

// startSchedules runs the admins' schedules (schedules: in the server
// config) in the background until ctx is done, each run logged and
// counted in wm_schedule_runs_total.
func startSchedules(ctx context.Context, rt *runtime, loop *reconciler.Loop, log *slog.Logger, background *sync.WaitGroup) error {
	var n reconciler.Notifier
	if rt.gitlab != nil {
		n = rt.gitlab
	}
	var x reconciler.Extender
	if rt.gitlab != nil && rt.cfg.Semester != nil && rt.cfg.Semester.ExtensionLabel != "" {
		x = rt.gitlab
	}
	jobs, err := reconciler.Jobs(rt.cfg, rt.rec, loop, n, x)
	if err != nil {
		return fmt.Errorf("schedules: %w", err)
	}
	if len(jobs) == 0 {
		return nil
	}
	s := schedule.New(jobs, rt.cfg.Schedules.Location(), rt.store, log)
	s.OnRun = func(job, outcome string, _ bool) {
		rt.rec.Metrics().ScheduleRun(job, reconciler.ScheduleOutcome(outcome))
	}
	background.Go(func() { s.Run(ctx) })
	log.Info("schedules on", "jobs", len(jobs), "timeZone", rt.cfg.Schedules.Location().String())
	return nil
}

// waker wakes a container idle culling stopped and has its repo passed at
// once.
func (rt *runtime) waker() access.Waker {
	return access.WakerFunc(func(owner, name string) (string, error) {
		key, err := rt.rec.Wake(owner, name)
		if errors.Is(err, reconciler.ErrNotCulled) {
			return "", access.ErrNotCulled
		}
		if err == nil && rt.loop != nil {
			rt.loop.Trigger(key)
		}
		return key, err
	})
}

func newWakeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "wake NAME",
		Short: "Start again a container stopped for being idle",
		Long: `Start again your container NAME that WhaleMountain stopped because it held a
GPU and sat idle (wm ps and the commit status say so). A new commit wakes it
too. A container your wm.yaml stops stays stopped.`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeContainers,
		RunE: withClient(func(ctx context.Context, cmd *cobra.Command, c *access.Client, args []string) error {
			if err := c.Wake(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		}),
	}
}
