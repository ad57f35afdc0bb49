package main

import (
	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/schema"
)

func newSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of wm.yaml, for editors",
		Long: `Print wm.schema.json, the JSON Schema (draft 2020-12) of wm.yaml.
Point an editor at it with a modeline on the first line of wm.yaml:

  # yaml-language-server: $schema=<path or URL of wm.schema.json>`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(schema.JSONSchema)
			return err
		},
	}
}
