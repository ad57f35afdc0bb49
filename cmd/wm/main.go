package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes of every subcommand.
const (
	exitOK      = 0
	exitInvalid = 1 // the input was read and is wrong, or the work failed
	exitUsage   = 2 // the command line is wrong
)

// exitError carries an exit code out of a subcommand whose output has
// already told the user what went wrong.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes wm with args and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintf(stderr, "wm: %v\nRun 'wm --help' for usage.\n", err)
		return exitUsage
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "wm",
		Short: "WhaleMountain: containers, GPU pods and Singularity images from wm.yaml",
		Long: `WhaleMountain turns the wm.yaml a student commits beside their Dockerfile
into Docker containers, Kubernetes GPU pods and Singularity images, and keeps
them matching what the repo declares.

wm.yaml reference: schema/README.md`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate(currentBuild().String() + "\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.AddCommand(newValidateCmd(), newSchemaCmd(), newReconcileCmd(), newPlanCmd(), newStatusCmd(), newServeCmd(), newImagesCmd(), newKubeconfigCmd(), newSIFCmd(), newVersionCmd())
	return root
}
