package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"testing"
)

// TestMakeReleaseBuildsWmForLinuxMacOSAndWindows runs `make release` as
// the project's pipeline does, into a temporary folder: every platform's
// binary is there, SHA256SUMS matches them, and this platform's says its
// version.
func TestMakeReleaseBuildsWmForLinuxMacOSAndWindows(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles five binaries")
	}
	dist := t.TempDir()
	cmd := exec.Command("make", "-C", "../..", "release", "DIST="+dist, "VERSION=v0.0.0-test")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	want := []string{"wm-v0.0.0-test-darwin-amd64", "wm-v0.0.0-test-darwin-arm64", "wm-v0.0.0-test-linux-amd64", "wm-v0.0.0-test-linux-arm64", "wm-v0.0.0-test-windows-amd64.exe"}
	sums, err := os.ReadFile(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		sum, name, ok := strings.Cut(line, "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", line)
		}
		data, err := os.ReadFile(filepath.Join(dist, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s: SHA256SUMS does not match", name)
		}
		listed = append(listed, name)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, want) {
		t.Errorf("released %v, want %v", listed, want)
	}
	if goruntime.GOOS == "linux" {
		out, err := exec.Command(filepath.Join(dist, "wm-v0.0.0-test-linux-"+goruntime.GOARCH), "version").Output()
		if err != nil || !strings.Contains(string(out), "version:  v0.0.0-test\n") || strings.Contains(string(out), "commit:   unknown") {
			t.Errorf("wm version: %v\n%s", err, out)
		}
	}
}
