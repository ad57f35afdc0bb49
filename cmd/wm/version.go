package main

import (
	"fmt"
	goruntime "runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// commit is the git commit wm was built from, set at build time with
// -ldflags "-X main.commit=..." (make build and make release do). Without
// it, the commit go build stamps into the binary is used, when there is one.
var commit = ""

// buildInfo is what `wm version` prints: which wm this is and what it
// runs on, so that a student and an admin can tell whether they have the
// same one.
type buildInfo struct {
	Version, Commit, Go, Platform string
}

// currentBuild reads the build's version, commit, Go version and platform.
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Go: goruntime.Version(), Platform: goruntime.GOOS + "/" + goruntime.GOARCH}
	if b.Commit == "" {
		if info, ok := debug.ReadBuildInfo(); ok {
			dirty := false
			for _, s := range info.Settings {
				switch s.Key {
				case "vcs.revision":
					b.Commit = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if dirty && b.Commit != "" {
				b.Commit += "-dirty"
			}
		}
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

// String is the one-line form `wm --version` prints.
func (b buildInfo) String() string {
	return fmt.Sprintf("wm %s (commit %s, %s, %s)", b.Version, b.Commit, b.Go, b.Platform)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print wm's version, the commit it was built from, its Go version and platform",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b := currentBuild()
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "version:  %s\ncommit:   %s\ngo:       %s\nplatform: %s\n", b.Version, b.Commit, b.Go, b.Platform)
			return err
		},
	}
}
