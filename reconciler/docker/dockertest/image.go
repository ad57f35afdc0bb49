package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	cerrdefs "github.com/containerd/errdefs"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
)

// DefaultBusybox is the image BusyboxImage makes when given no reference.
const DefaultBusybox = "wm-test/busybox:1"

// HostBusybox is the static busybox copied into the test images; Debian's
// busybox-static package installs it.
const HostBusybox = "/bin/busybox"

// BusyboxCommands are the commands the test image links to busybox.
var BusyboxCommands = []string{
	"sh", "sleep", "httpd", "env", "cat", "echo", "nc", "wget",
	"true", "false", "id", "ls", "grep",
}

// busyboxCmd is the image's default command: something that runs, idle,
// for longer than any test.
var busyboxCmd = []string{"sleep", "3600"}

// images serializes BusyboxImage within the process, one lock per reference.
var images struct {
	sync.Mutex
	locks map[string]*sync.Mutex
}

// BusyboxImage makes sure the image ref ("" is DefaultBusybox) is on the
// local daemon and returns ref. The image is imported from a root file
// system made here: the host's static busybox, symlinks to it for
// BusyboxCommands, /tmp, and an /etc/passwd with root and nobody; its
// command is `sleep 3600`. No network is used. It is idempotent and safe
// from parallel tests and processes.
func BusyboxImage(t testing.TB, ref string) string {
	t.Helper()
	if ref == "" {
		ref = DefaultBusybox
	}
	cmd, _ := json.Marshal(busyboxCmd)
	return BusyboxImageWith(t, ref, "CMD "+string(cmd))
}

// BusyboxImageWith is BusyboxImage with Dockerfile instructions of its own
// for the image's configuration (CMD, ENTRYPOINT, ENV, HEALTHCHECK, USER,
// WORKDIR, ...), e.g. `HEALTHCHECK --interval=1s CMD test -e /tmp/ok`. An
// image already present under ref is kept as it is.
func BusyboxImageWith(t testing.TB, ref string, changes ...string) string {
	t.Helper()
	cli := Client(t)

	images.Lock()
	if images.locks == nil {
		images.locks = map[string]*sync.Mutex{}
	}
	mu := images.locks[ref]
	if mu == nil {
		mu = &sync.Mutex{}
		images.locks[ref] = mu
	}
	images.Unlock()
	mu.Lock()
	defer mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 2*callTimeout)
	defer cancel()
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref
	} else if !cerrdefs.IsNotFound(err) {
		t.Fatalf("dockertest: inspect image %s: %v", ref, err)
	}
	rootfs, err := BusyboxRootfs()
	if err != nil {
		t.Fatalf("dockertest: %v", err)
	}
	body, err := cli.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(rootfs), SourceName: "-"}, ref,
		image.ImportOptions{Changes: changes, Message: "dockertest"})
	if err != nil {
		t.Fatalf("dockertest: import image %s: %v", ref, err)
	}
	defer body.Close()
	if err := streamError(body); err != nil {
		t.Fatalf("dockertest: import image %s: %v", ref, err)
	}
	if _, err := cli.ImageInspect(ctx, ref); err != nil {
		t.Fatalf("dockertest: image %s missing after import: %v", ref, err)
	}
	return ref
}

// rootfsOnce builds the root file system once per process.
var rootfsOnce = sync.OnceValues(buildRootfs)

// BusyboxRootfs returns the test image's root file system as an
// uncompressed tar: always the same bytes for the same host busybox, so
// that every image made from it shares one layer.
func BusyboxRootfs() ([]byte, error) { return rootfsOnce() }

func buildRootfs() ([]byte, error) {
	bb, err := os.ReadFile(HostBusybox)
	if err != nil {
		return nil, fmt.Errorf("read %s (apt-get install -y busybox-static): %w", HostBusybox, err)
	}
	epoch := time.Unix(0, 0).UTC()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var werr error // the first write error
	keep := func(err error) {
		if werr == nil {
			werr = err
		}
	}
	dir := func(name string, mode int64) {
		keep(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch}))
	}
	file := func(name string, mode int64, data []byte) {
		keep(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}))
		_, err := tw.Write(data)
		keep(err)
	}
	dir("bin", 0o755)
	dir("etc", 0o755)
	dir("root", 0o700)
	dir("tmp", 0o1777)
	file("bin/busybox", 0o755, bb)
	for _, cmd := range BusyboxCommands {
		keep(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + cmd, Linkname: "busybox", Mode: 0o777, ModTime: epoch}))
	}
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	keep(tw.Close())
	if werr != nil {
		return nil, fmt.Errorf("build busybox rootfs: %w", werr)
	}
	return buf.Bytes(), nil
}

// streamError drains a JSON progress stream of the daemon and returns the
// error it reports, if any.
func streamError(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error string `json:"error"`
		}
		switch err := dec.Decode(&m); {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		case m.Error != "":
			return errors.New(m.Error)
		}
	}
}
