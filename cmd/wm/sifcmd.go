package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler/sif"
)

func newSIFCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sif",
		Short: "Singularity images: build one outside the loop, or check one",
	}
	cmd.AddCommand(newSIFBuildCmd(g), newSIFVerifyCmd())
	return cmd
}

func newSIFBuildCmd(g *globals) *cobra.Command {
	var out, compression string
	var insecure []string
	var quiet bool
	cmd := &cobra.Command{
		Use:   "build IMAGE -o FILE",
		Short: "Build the SIF of an image (from its registry, or the local Docker Engine)",
		Long: `Build a Singularity (SIF) image of IMAGE into FILE, as the reconciler does
for wm.yaml's singularity entries: the image is read from its registry (or,
when the registry cannot be reached, from the local Docker Engine), its
layers flattened, a squashfs made with tar2sqfs and wrapped in a SIF with
the image's config. FILE.sha256 is written beside it. Rebuilding an
unchanged image does nothing.

Progress goes to stderr: a progress bar when stderr is a terminal, a plain
line per stage otherwise (a pipe, a file, a CI log), nothing with -q.`,
		Example: `  wm sif build 127.0.0.1:5000/alice/tool:latest -o tool.sif --insecure 127.0.0.1:5000`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("-o FILE is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			daemon := localDaemon(newLogger(cmd.ErrOrStderr(), g.verbose))
			if daemon != nil {
				defer daemon.Close()
			}
			b := sif.NewBuilder(sif.Options{Compression: compression, Insecure: insecure, Docker: imageStore(daemon)})
			defer b.Close()
			var progress func(string, int64, int64)
			var bar *stageProgress
			if !quiet {
				bar = newStageProgress(cmd.ErrOrStderr())
				progress = bar.report
			}
			abs, err := filepath.Abs(out)
			if err != nil {
				return fmt.Errorf("-o %s: %w", out, err)
			}
			res, err := b.Build(ctx, args[0], abs, progress)
			if bar != nil {
				bar.finish()
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
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	return cmd
}

func newSIFVerifyCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check that FILE is a SIF with a squashfs system partition, and show it",
		Long: `Check that FILE is a SIF apptainer can run: a primary system partition that
is a squashfs, and an image config that decodes when there is one. Print
what it holds: its ID, architecture, creation time and size, the command
and settings of its image, and every data object.

Exit status: 0 a valid SIF, 1 not one (or not readable), 2 usage error.`,
		Example: `  wm sif verify tool.sif
  wm sif verify --format json tool.sif`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("--format must be text or json, not %q", format)
			}
			info, err := sif.Verify(args[0])
			if format == "json" {
				if werr := writeSIFJSON(cmd.OutOrStdout(), args[0], info, err); werr != nil {
					return werr
				}
			} else if err == nil {
				writeSIFReport(cmd.OutOrStdout(), args[0], info)
			}
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
				return exitError{exitInvalid}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{"text", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// writeSIFReport prints what Verify read, for a person.
func writeSIFReport(w io.Writer, file string, info sif.Info) {
	fmt.Fprintf(w, "%s: a valid SIF\n", file)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  id:\t%s\n", info.ID)
	fmt.Fprintf(tw, "  architecture:\t%s\n", info.Arch)
	fmt.Fprintf(tw, "  created:\t%s\n", info.Created.UTC().Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(tw, "  size:\t%s (%d bytes)\n", humanBytes(info.Size), info.Size)
	fmt.Fprintf(tw, "  system partition:\t%s, %s, %s\n", info.Primary.FS, info.Primary.Arch, humanBytes(info.Primary.Size))
	if info.Config == nil {
		fmt.Fprintf(tw, "  image config:\tnone (not a SIF WhaleMountain built)\n")
	} else {
		c := info.Config.Config
		run := strings.TrimSpace(strings.Join(append(slices.Clone(c.Entrypoint), c.Cmd...), " "))
		fmt.Fprintf(tw, "  runs:\t%s\n", orDash(run))
		fmt.Fprintf(tw, "  working folder:\t%s\n", orDash(c.WorkingDir))
		fmt.Fprintf(tw, "  user:\t%s\n", orDash(c.User))
		fmt.Fprintf(tw, "  environment:\t%d variable(s)\n", len(c.Env))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "  objects:\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    ID\tTYPE\tNAME\tPARTITION\tOFFSET\tSIZE")
	for _, o := range info.Objects {
		part := "-"
		if o.Partition != "" {
			part = strings.Join(slices.DeleteFunc([]string{o.FS, partitionName(o.Partition), o.Arch}, func(s string) bool { return s == "" }), ", ")
		}
		fmt.Fprintf(tw, "    %d\t%s\t%s\t%s\t%d\t%s\n", o.ID, o.Type, orDash(o.Name), part, o.Offset, humanBytes(o.Size))
	}
	_ = tw.Flush()
}

// partitionName says the sif library's partition type in words: its
// "*System" is the primary system partition.
func partitionName(p string) string {
	if name, primary := strings.CutPrefix(p, "*"); primary {
		return "primary " + strings.ToLower(name)
	}
	return strings.ToLower(p)
}

// sifObjectJSON is one data object in wm sif verify --format json.
type sifObjectJSON struct {
	ID        uint32 `json:"id"`
	Type      string `json:"type"`
	Name      string `json:"name,omitempty"`
	Offset    int64  `json:"offset"`
	Size      int64  `json:"size"`
	FS        string `json:"fs,omitempty"`
	Partition string `json:"partition,omitempty"`
	Arch      string `json:"arch,omitempty"`
}

// sifJSON is what wm sif verify --format json prints: valid false and the
// error when FILE is not a valid SIF.
type sifJSON struct {
	File    string          `json:"file"`
	Valid   bool            `json:"valid"`
	Error   string          `json:"error,omitempty"`
	ID      string          `json:"id,omitempty"`
	Arch    string          `json:"arch,omitempty"`
	Created *time.Time      `json:"created,omitempty"`
	Size    int64           `json:"size,omitempty"`
	Objects []sifObjectJSON `json:"objects,omitempty"`
	// Config is the image configuration, as in an OCI image.
	Config *v1.ConfigFile `json:"config,omitempty"`
}

// writeSIFJSON prints Verify's outcome as JSON.
func writeSIFJSON(w io.Writer, file string, info sif.Info, verr error) error {
	out := sifJSON{File: file, Valid: verr == nil}
	if verr != nil {
		out.Error = verr.Error()
	} else {
		created := info.Created.UTC()
		out.ID, out.Arch, out.Created, out.Size, out.Config = info.ID, info.Arch, &created, info.Size, info.Config
		for _, o := range info.Objects {
			out.Objects = append(out.Objects, sifObjectJSON(o))
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// humanBytes is n in B, KiB, MiB or GiB, one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 3; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGT"[exp])
}
