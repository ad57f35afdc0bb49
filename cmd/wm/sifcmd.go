package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler/sif"
)

func newSIFCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sif",
		Short: "Singularity images: build one outside the loop, or check one",
	}
	cmd.AddCommand(newSIFBuildCmd(), newSIFVerifyCmd())
	return cmd
}

func newSIFBuildCmd() *cobra.Command {
	var out, compression string
	var insecure []string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "build IMAGE -o FILE",
		Short: "Build the SIF of an image (from its registry, or the local Docker Engine)",
		Long: `Build a Singularity (SIF) image of IMAGE into FILE, as the reconciler does
for wm.yaml's singularity entries: the image is read from its registry (or,
when the registry cannot be reached, from the local Docker Engine), its
layers flattened, a squashfs made with mksquashfs and wrapped in a SIF with
the image's config. FILE.sha256 is written beside it. Rebuilding an
unchanged image does nothing.`,
		Example: `  wm sif build 127.0.0.1:5000/alice/tool:latest -o tool.sif --insecure 127.0.0.1:5000`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("-o FILE is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			daemon := localDaemon(newLogger(cmd.ErrOrStderr(), false))
			if daemon != nil {
				defer daemon.Close()
			}
			b := sif.NewBuilder(sif.Options{Compression: compression, Insecure: insecure, Docker: imageStore(daemon)})
			defer b.Close()
			var bar *progressbar.ProgressBar
			progress := func(stage string, done, total int64) {
				if quiet {
					return
				}
				if bar == nil || bar.GetMax64() != total {
					bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(cmd.ErrOrStderr()),
						progressbar.OptionSetDescription(fmt.Sprintf("%-10s", stage)), progressbar.OptionShowBytes(total > 1),
						progressbar.OptionClearOnFinish())
				}
				bar.Describe(fmt.Sprintf("%-10s", stage))
				_ = bar.Set64(done)
			}
			abs, err := filepath.Abs(out)
			if err != nil {
				return err
			}
			res, err := b.Build(ctx, args[0], abs, progress)
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
				return exitError{exitInvalid}
			}
			state := "built"
			if res.Cached {
				state = "up to date"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s (%d bytes, sha256 %s, %s)\n", out, state, res.Size, res.SHA256, res.Arch)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the SIF `FILE` to write")
	cmd.Flags().StringVar(&compression, "compression", "gzip", "squashfs compression: gzip, lz4, zstd or xz")
	cmd.Flags().StringSliceVar(&insecure, "insecure", nil, "registry `HOST:PORT` reached over plain HTTP; repeatable")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}

func newSIFVerifyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "verify FILE",
		Short: "Check that FILE is a SIF with a squashfs system partition, and show it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := sif.Verify(args[0])
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
				return exitError{exitInvalid}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %+v\n", args[0], info)
			return nil
		},
	}
}
