package dashboard_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The terminal in static/ is made by ci/xterm-bundle from Debian's
// node-xterm package: made again, it must be the same bytes, so what is
// served is what the script makes from the package (and no one edited it
// by hand).
func TestTheVendoredXtermIsWhatCiXtermBundleMakesFromNodeXterm(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: bundling builds esbuild")
	}
	if _, err := os.Stat("/usr/share/nodejs/xterm/package.json"); err != nil {
		t.Fatal("no node-xterm: ci/setup installs Debian's node-xterm package")
	}
	out := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "bash", filepath.Join("..", "..", "ci", "xterm-bundle"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ci/xterm-bundle: %v\n%s", err, b)
	}
	for _, name := range []string{"xterm.js", "xterm.css", "xterm.LICENSE"} {
		t.Run(name+" is the same", func(t *testing.T) {
			made, err := os.ReadFile(filepath.Join(out, name))
			if err != nil {
				t.Fatal(err)
			}
			kept, err := os.ReadFile(filepath.Join("static", name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(made, kept) {
				t.Errorf("static/%s (%d bytes) differs from what ci/xterm-bundle makes (%d bytes): run ci/xterm-bundle and commit", name, len(kept), len(made))
			}
		})
	}
}
