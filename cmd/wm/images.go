package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/registry"
)

func newImagesCmd(g *globals) *cobra.Command {
	var shared bool
	cmd := &cobra.Command{
		Use:   "images",
		Short: "The image catalogue: each repo's image, description, sharing, last built commit and time",
		Long: `List the image of every repo WhaleMountain rolled out: owner, repo, the
description from wm.yaml's image block, whether other students may use it
(image: shared/<owner>/<repo>), and the last rolled-out commit with the time
its image was built (asked from the registry).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, repos, err := loadState(cmd, g)
			if err != nil {
				return err
			}
			auth, err := registryAuth(cfg)
			if err != nil {
				return err
			}
			reg := registry.New(cfg.Registry.Host, cfg.Registry.Insecure, auth.Username, auth.Password)
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "OWNER\tREPO\tSHARED\tCOMMIT\tBUILT\tDESCRIPTION")
			for _, r := range repos {
				if shared && !r.ImageShared {
					continue
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Owner, r.Key, yesNo(r.ImageShared),
					shortRev(r.AppliedRevision), built(cmd.Context(), reg, cfg.Registry.Host, r), orDash(r.ImageDescription))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&shared, "shared", false, "only images other students may use")
	return cmd
}

// built says when the image of the repo's rolled-out commit was built,
// or "-" when the registry cannot tell.
func built(ctx context.Context, reg *registry.Client, host string, r core.RepoState) string {
	if host == "" || r.AppliedRevision == "" {
		return "-"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t, err := reg.Created(ctx, host+"/"+strings.ToLower(r.Key)+":"+r.AppliedRevision)
	if err != nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
