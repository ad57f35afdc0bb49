package sif_test

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

// toolTimeout bounds each run of siftool or unsquashfs in the tests.
const toolTimeout = 30 * time.Second

// newBuilder returns a Builder reading from reg (plain HTTP, its
// credentials if it has any), with its files in the test's temporary
// folder. The default source, SourceAuto, only asks the local daemon when
// a registry is down.
func newBuilder(t testing.TB, reg *registrytest.Registry, opts sif.Options) *sif.Builder {
	t.Helper()
	if reg != nil {
		opts.Insecure = append(opts.Insecure, reg.Host())
		if a := reg.Auth(); a != nil {
			opts.Auth = map[string]sif.Auth{reg.Host(): {Username: a.Username, Password: a.Password}}
		}
	}
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	b := sif.NewBuilder(opts)
	t.Cleanup(func() { b.Close() })
	return b
}

// run runs a tool with an argument list and returns its output, failing t
// when it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// entry is one line of `unsquashfs -lln`.
type entry struct {
	Mode   string // "-rwxr-xr-x"
	Owner  string // "0/0"
	Size   string
	Target string // of a symlink
}

// lln is a line of `unsquashfs -lln -UTC`: mode, uid/gid, size (or
// major,minor), date, time, path, and a symlink's target.
var lln = regexp.MustCompile(`^(\S+) (\d+/\d+)\s+(\S+) \S+ \S+ squashfs-root(/.*?)?(?: -> (.*))?$`)

// listing lists the SIF's primary partition with unsquashfs, reading the
// SIF itself at the partition's offset (unsquashfs -o), by path ("/" for
// the root).
func listing(t testing.TB, path string) map[string]entry {
	t.Helper()
	info, err := sif.Verify(path)
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	out := run(t, "unsquashfs", "-lln", "-UTC", "-o", strconv.FormatInt(info.Primary.Offset, 10), path)
	files := map[string]entry{}
	for _, line := range strings.Split(out, "\n") {
		m := lln.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		p := m[4]
		if p == "" {
			p = "/"
		}
		files[p] = entry{Mode: m[1], Owner: m[2], Size: m[3], Target: m[5]}
	}
	if len(files) == 0 {
		t.Fatalf("unsquashfs -lln listed nothing:\n%s", out)
	}
	return files
}

// catFile returns the content of a file of the SIF's primary partition,
// extracted with unsquashfs -cat.
func catFile(t testing.TB, path, file string) string {
	t.Helper()
	info, err := sif.Verify(path)
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	return run(t, "unsquashfs", "-cat", "-o", strconv.FormatInt(info.Primary.Offset, 10), path, file)
}

// extractAll unpacks the SIF's primary partition into a new folder and
// returns it.
func extractAll(t testing.TB, path string) string {
	t.Helper()
	info, err := sif.Verify(path)
	if err != nil {
		t.Fatalf("verify %s: %v", path, err)
	}
	dir := filepath.Join(t.TempDir(), "root")
	// Not root, unsquashfs makes read-only folders as the image has them,
	// which the temporary folder's removal (a later cleanup) cannot empty.
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	run(t, "unsquashfs", "-q", "-n", "-no-xattrs", "-d", dir, "-o", strconv.FormatInt(info.Primary.Offset, 10), path)
	return dir
}

// sumOf returns the hex sha256 of a file, with sha256sum.
func sumOf(t testing.TB, path string) string {
	t.Helper()
	out := run(t, "sha256sum", path)
	sum, _, _ := strings.Cut(out, " ")
	return sum
}

// readFile reads a file or fails t.
func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
