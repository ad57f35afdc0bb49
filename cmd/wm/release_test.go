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

// TestMakeReleaseBuildsWmForLinuxMacOSAndWindows checks that the Makefile
// releases for the five platforms students and admins use, then runs
// `make release` as the project's pipeline does, into a temporary folder,
// for two of them (this machine's and Windows, the most unlike it: each
// platform is a whole build from a cold cache in CI, minutes apiece, and
// the release job builds all five anyway): every binary is there,
// SHA256SUMS matches them, and this platform's says its version.
func TestMakeReleaseBuildsWmForLinuxMacOSAndWindows(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles")
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64"} {
		if !strings.Contains(platformsLine(string(makefile)), p) {
			t.Errorf("the Makefile's PLATFORMS does not list %s", p)
		}
	}
	host := goruntime.GOOS + "/" + goruntime.GOARCH
	dist := t.TempDir()
	cmd := exec.Command("make", "-C", "../..", "release", "DIST="+dist, "VERSION=v0.0.0-test", "PLATFORMS="+host+" windows/amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	want := []string{"wm-v0.0.0-test-" + goruntime.GOOS + "-" + goruntime.GOARCH, "wm-v0.0.0-test-windows-amd64.exe"}
	slices.Sort(want)
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

// platformsLine is the Makefile's "PLATFORMS ?= ..." line.
func platformsLine(makefile string) string {
	for _, line := range strings.Split(makefile, "\n") {
		if strings.HasPrefix(line, "PLATFORMS ?= ") {
			return line
		}
	}
	return ""
}
