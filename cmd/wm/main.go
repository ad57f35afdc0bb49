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

// globals are the flags every command takes, before or after its name:
// persistent flags of the root.
type globals struct {
	// config is the server config file; "" means the embedded defaults.
	config string
	// verbose asks a command to say more on stderr.
	verbose bool
}

// Help texts of the persistent flags, shown by every command's --help;
// the root's long help says which commands use them.
const (
	configUsage  = "server config `FILE` (default: the built-in local defaults, relative to the current folder)"
	verboseUsage = "say more on stderr: each stage of a pass, debug logs"
)

func newRootCmd() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "wm",
		Short: "WhaleMountain: containers, GPU pods and Singularity images from wm.yaml",
		Long: `WhaleMountain turns the wm.yaml a student commits beside their Dockerfile
into Docker containers, Kubernetes GPU pods and Singularity images, and keeps
them matching what the repo declares.

Every command takes these, before or after its name:
  -c, --config FILE  the server config, for reconcile, plan, status, hosts,
                     images, kubeconfig and serve (validate checks it as
                     --server); without it, the built-in local defaults
  -v, --verbose      more on stderr: each stage of each pass (reconcile,
                     plan), debug logs (reconcile, plan, serve, sif build),
                     where the state was read (status, images, hosts)
The version is wm --version (one line) or wm version (in full).

wm.yaml reference: schema/README.md`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&g.config, "config", "c", "", configUsage)
	_ = root.MarkPersistentFlagFilename("config", "yaml", "yml")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, verboseUsage)
	// Declared here so that it has no shorthand: -v is --verbose.
	root.Flags().Bool("version", false, "print wm's version in one line (wm version prints it in full)")
	root.SetVersionTemplate(currentBuild().String() + "\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	sifCmd := newSIFCmd(g)
	sifCmd.AddCommand(newSIFGetCmd())
	root.AddCommand(newValidateCmd(g), newSchemaCmd(), newReconcileCmd(g), newPlanCmd(g), newStatusCmd(g), newServeCmd(g), newImagesCmd(g), newKubeconfigCmd(g), sifCmd, newVersionCmd())
	// wm as a client of a running wm serve (client.go).
	root.AddCommand(newLoginCmd(), newPsCmd(), newLogsCmd(), newExecCmd(), newCpCmd(), newRestartCmd(), newWakeCmd())
	// Operations on the Docker hosts (hosts.go).
	root.AddCommand(newHostsCmd(g))
	return root
}
