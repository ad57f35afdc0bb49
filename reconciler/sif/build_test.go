package sif_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/reconciler/sif"
)

// twoLayers is an image whose upper layer deletes a file of the lower one,
// hides a folder's lower content and adds files.
func twoLayers(t testing.TB) v1.Image {
	img := registrytest.BusyboxImage(t,
		map[string]string{
			"/data/old.txt":  "old\n",
			"/data/keep.txt": "keep\n",
			"/cache/a":       "a",
			"/cache/b":       "b",
		},
		map[string]string{
			"/data/old.txt": registrytest.Whiteout,
			"/data/new.txt": "new\n",
			"/cache/":       registrytest.Opaque,
			"/cache/c":      "c",
			"/app/run.sh":   "#!/bin/sh\necho run\n",
		},
	)
	cfg := registrytest.DefaultConfig
	cfg.Entrypoint = []string{"/app/run.sh", "--flag"}
	cfg.Cmd = []string{"it's", "$HOME"}
	cfg.Env = append(slices.Clone(cfg.Env), "GREETING=hello world", "QUOTE=it's")
	cfg.WorkingDir = "/app"
	cfg.Labels = map[string]string{"course": "hpc-101"}
	return registrytest.WithConfig(t, img, cfg)
}

func TestBuildMakesASIFApptainerCanRun(t *testing.T) {
	reg := registrytest.Start(t)
	ref := reg.Ref("students/alice/app", "v1")
	digest := reg.Push(t, ref, twoLayers(t))
	b := newBuilder(t, reg, sif.Options{})
	dst := filepath.Join(t.TempDir(), "app.sif")

	var stages []string
	res, err := b.Build(t.Context(), ref, dst, func(stage string, done, total int64) {
		if len(stages) == 0 || stages[len(stages)-1] != stage {
			stages = append(stages, stage)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Cached || res.Digest != digest.String() || res.Arch != "amd64" || res.Size <= 0 {
		t.Errorf("result %+v: want a fresh amd64 build of %s", res, digest)
	}
	if want := []string{sif.StageResolve, sif.StagePull, sif.StageSquash, sif.StageWrite}; !slices.Equal(stages, want) {
		t.Errorf("stages %v, want %v", stages, want)
	}

	t.Run("the sidecars describe the file", func(t *testing.T) {
		sum := sumOf(t, dst)
		if res.SHA256 != sum {
			t.Errorf("result sha256 %s, file's %s", res.SHA256, sum)
		}
		if got, want := readFile(t, dst+".sha256"), sum+"  app.sif\n"; got != want {
			t.Errorf(".sha256 = %q, want %q", got, want)
		}
		// sha256sum -c checks the sidecar as it is.
		cmd := exec.Command("sha256sum", "-c", "app.sif.sha256")
		cmd.Dir = filepath.Dir(dst)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
		if !strings.Contains(readFile(t, dst+".json"), res.ImageID) {
			t.Errorf(".json does not name image %s", res.ImageID)
		}
	})

	t.Run("siftool lists a squashfs primary partition and the config", func(t *testing.T) {
		out := run(t, "siftool", "list", dst)
		if !strings.Contains(out, "FS (Squashfs/*System/amd64)") {
			t.Errorf("siftool list shows no primary squashfs partition:\n%s", out)
		}
		if !strings.Contains(out, "JSON.Generic") {
			t.Errorf("siftool list shows no JSON object:\n%s", out)
		}
		info, err := sif.Verify(dst)
		if err != nil {
			t.Fatal(err)
		}
		if info.Arch != "amd64" || info.Config == nil || !slices.Equal(info.Config.Config.Entrypoint, []string{"/app/run.sh", "--flag"}) {
			t.Errorf("verify: arch %q, config %+v", info.Arch, info.Config)
		}
	})

	t.Run("the partition has the flattened image and the apptainer layout", func(t *testing.T) {
		files := listing(t, dst)
		for _, p := range []string{
			"/bin/busybox", "/bin/sh", "/data/keep.txt", "/data/new.txt", "/cache/c", "/app/run.sh",
			"/.singularity.d/runscript", "/.singularity.d/env/10-docker2singularity.sh",
			"/.singularity.d/labels.json", "/.singularity.d/actions/run", "/.singularity.d/actions/exec",
			"/.singularity.d/actions/shell", "/.singularity.d/actions/start", "/.singularity.d/actions/test",
			"/.singularity.d/libs", "/proc", "/sys", "/dev", "/tmp", "/home", "/etc/hosts", "/etc/resolv.conf",
		} {
			if _, ok := files[p]; !ok {
				t.Errorf("%s missing from the squashfs", p)
			}
		}
		for _, p := range []string{"/data/old.txt", "/cache/a", "/cache/b", "/data/.wh.old.txt", "/cache/.wh..wh..opq"} {
			if _, ok := files[p]; ok {
				t.Errorf("%s is in the squashfs: a whiteout should have removed it", p)
			}
		}
		if e := files["/bin/sh"]; !strings.HasPrefix(e.Mode, "l") || e.Target != "busybox" {
			t.Errorf("/bin/sh = %+v, want a symlink to busybox", e)
		}
		if e := files["/app/run.sh"]; e.Mode != "-rwxr-xr-x" {
			t.Errorf("/app/run.sh mode %s, want -rwxr-xr-x", e.Mode)
		}
		if e := files["/.singularity.d/runscript"]; e.Mode != "-rwxr-xr-x" || e.Owner != "0/0" {
			t.Errorf("runscript %+v, want -rwxr-xr-x root", e)
		}
		if e := files["/tmp"]; e.Mode != "drwxrwxrwt" {
			t.Errorf("/tmp mode %s, want drwxrwxrwt", e.Mode)
		}
		if got := catFile(t, dst, "data/new.txt"); got != "new\n" {
			t.Errorf("data/new.txt = %q", got)
		}
	})

	t.Run("the runscript runs the entrypoint with cmd or the arguments", func(t *testing.T) {
		script := catFile(t, dst, ".singularity.d/runscript")
		if want := sif.Runscript([]string{"/app/run.sh", "--flag"}, []string{"it's", "$HOME"}); script != want {
			t.Errorf("runscript:\n%s\nwant:\n%s", script, want)
		}
		labels := catFile(t, dst, ".singularity.d/labels.json")
		if !strings.Contains(labels, `"course": "hpc-101"`) || !strings.Contains(labels, res.ImageID) {
			t.Errorf("labels.json:\n%s", labels)
		}
		env := catFile(t, dst, ".singularity.d/env/10-docker2singularity.sh")
		if !strings.Contains(env, `export GREETING='hello world'`) {
			t.Errorf("env script:\n%s", env)
		}
	})
}

func TestBuildOfTheSameImageIsCached(t *testing.T) {
	reg := registrytest.Start(t)
	ref := reg.Ref("students/bob/app", "latest")
	reg.Push(t, ref, twoLayers(t))
	b := newBuilder(t, reg, sif.Options{})
	dst := filepath.Join(t.TempDir(), "app.sif")

	first, err := b.Build(t.Context(), ref, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	second, err := b.Build(t.Context(), ref, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Cached || second.SHA256 != first.SHA256 || second.Digest != first.Digest || second.Size != first.Size {
		t.Errorf("second build %+v, want the first's, cached: %+v", second, first)
	}
	after, _ := os.Stat(dst)
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Error("a cached build rewrote the SIF")
	}

	t.Run("a new builder version rebuilds", func(t *testing.T) {
		other := newBuilder(t, reg, sif.Options{Compression: "zstd"})
		if other.Version() == b.Version() {
			t.Fatalf("zstd and gzip builders share version %q", b.Version())
		}
		r, err := other.Build(t.Context(), ref, dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Cached || r.SHA256 == first.SHA256 {
			t.Errorf("zstd build %+v: want a new SIF", r)
		}
	})

	t.Run("the same image gives the same bytes", func(t *testing.T) {
		dst2 := filepath.Join(t.TempDir(), "again.sif")
		r, err := b.Build(t.Context(), ref, dst2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Cached || r.SHA256 != first.SHA256 {
			t.Errorf("second SIF of the same image: sha256 %s, first %s", r.SHA256, first.SHA256)
		}
	})

	t.Run("a broken sidecar rebuilds", func(t *testing.T) {
		fresh := newBuilder(t, reg, sif.Options{})
		if _, err := fresh.Build(t.Context(), ref, dst, nil); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst+".sha256", []byte("garbage\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := fresh.Build(t.Context(), ref, dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Cached {
			t.Error("a SIF whose .sha256 is garbage counted as cached")
		}
		if sum, err := sif.ReadSum(dst); err != nil || sum != r.SHA256 {
			t.Errorf("after the rebuild .sha256 = %q, %v; want %s", sum, err, r.SHA256)
		}
	})
}

func TestChangedImageReplacesTheSIFAtomically(t *testing.T) {
	reg := registrytest.Start(t)
	ref := reg.Ref("students/carol/app", "main")
	reg.Push(t, ref, registrytest.BusyboxImage(t, map[string]string{"/v": "1"}))
	b := newBuilder(t, reg, sif.Options{})
	dir := t.TempDir()
	dst := filepath.Join(dir, "app.sif")
	first, err := b.Build(t.Context(), ref, dst, nil)
	if err != nil {
		t.Fatal(err)
	}

	// A bigger image, so that the rebuild takes a while to watch.
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i*7 + i/4093)
	}
	changed := registrytest.BusyboxImage(t, map[string]string{"/v": "2", "/big": string(big)})
	reg.Push(t, ref, changed)

	// Watch the folder while the rebuild runs: app.sif must always be a
	// whole SIF, the old one or the new one, and nothing but the SIF, its
	// sidecars and hidden temporary files may appear.
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		seen     = map[string]bool{}
		problems []string
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			entries, err := os.ReadDir(dir)
			if err != nil {
				problems = append(problems, err.Error())
				return
			}
			for _, e := range entries {
				switch n := e.Name(); {
				case n == "app.sif" || n == "app.sif.sha256" || n == "app.sif.json":
				case strings.HasPrefix(n, ".app.sif") && strings.Contains(n, ".tmp-"):
				default:
					problems = append(problems, "unexpected file "+n)
				}
			}
			if info, err := sif.Verify(dst); err != nil {
				problems = append(problems, "app.sif not a whole SIF: "+err.Error())
			} else {
				seen[info.ID] = true
			}
			time.Sleep(time.Millisecond)
		}
	}()
	second, err := b.Build(t.Context(), ref, dst, nil)
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems[:min(len(problems), 5)] {
		t.Error(p)
	}
	if second.Cached || second.ImageID == first.ImageID || second.SHA256 == first.SHA256 {
		t.Errorf("rebuild %+v: want a new image and SIF (first %+v)", second, first)
	}
	if sumOf(t, dst) != second.SHA256 {
		t.Error("app.sif is not the new SIF")
	}
	if got := catFile(t, dst, "v"); got != "2" {
		t.Errorf("/v in the new SIF = %q, want 2", got)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"app.sif", "app.sif.json", "app.sif.sha256"}; !slices.Equal(names, want) {
		t.Errorf("folder holds %v after the rebuild, want %v", names, want)
	}
	if len(seen) == 0 {
		t.Error("the watcher never saw a SIF")
	}
}

func TestBuildFailuresAreClassified(t *testing.T) {
	reg := registrytest.Start(t)
	ref := reg.Ref("students/dave/app", "v1")
	reg.Push(t, ref, registrytest.BusyboxImage(t))

	down := registrytest.Start(t)
	downRef := down.Ref("students/dave/app", "v1")
	down.Stop()

	slow := filepath.Join(t.TempDir(), "slow-tar2sqfs")
	if err := os.WriteFile(slow, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	failing := filepath.Join(t.TempDir(), "failing-tar2sqfs")
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'FATAL ERROR: no space left' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		ref  string
		opts sif.Options
		want error
	}{
		{"an image missing in the registry is ErrImageNotFound", reg.Ref("students/dave/app", "nope"), sif.Options{}, sif.ErrImageNotFound},
		{"a repository missing in the registry is ErrImageNotFound", reg.Ref("students/nobody/app", "v1"), sif.Options{}, sif.ErrImageNotFound},
		{"a registry that is down is ErrUnreachable", downRef, sif.Options{Source: sif.SourceRegistry}, sif.ErrUnreachable},
		{"a registry that is down is ErrUnreachable when the daemon has no such image either", downRef, sif.Options{Source: sif.SourceAuto, Docker: dockertest.Engine(t)}, sif.ErrUnreachable},
		{"a reference that does not parse is ErrInvalidRef", "Students/UPPER CASE", sif.Options{}, sif.ErrInvalidRef},
		{"a missing tar2sqfs is ErrToolMissing", ref, sif.Options{Tar2sqfs: "/nonexistent/tar2sqfs"}, sif.ErrToolMissing},
		{"a failing tar2sqfs is ErrSquashFailed", ref, sif.Options{Tar2sqfs: failing}, sif.ErrSquashFailed},
		{"a tar2sqfs slower than the timeout is a deadline error", ref, sif.Options{Tar2sqfs: slow, Timeout: 500 * time.Millisecond}, context.DeadlineExceeded},
		{"an unknown compression fails every build", ref, sif.Options{Compression: "brotli"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(t, reg, tc.opts)
			dst := filepath.Join(t.TempDir(), "app.sif")
			start := time.Now()
			_, err := b.Build(t.Context(), tc.ref, dst, nil)
			if err == nil {
				t.Fatal("built")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want one that is %v", err, tc.want)
			}
			if kind := fault.Of(tc.want); kind != nil && !errors.Is(err, kind) {
				t.Errorf("error %v, want it of the kind fault.%v", err, kind)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %s to fail", time.Since(start))
			}
			if _, serr := os.Stat(dst); serr == nil {
				t.Error("a failed build left a SIF")
			}
			leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*"))
			if len(leftovers) > 0 {
				t.Errorf("a failed build left %v", leftovers)
			}
			t.Log(err)
		})
	}
}

func TestALayerThatFailsToDownloadFailsTheBuildAndKeepsTheOldSIF(t *testing.T) {
	reg := registrytest.Start(t)
	base, err := registrytest.BusyboxImage(t).Layers()
	if err != nil {
		t.Fatal(err)
	}
	baseDigest, err := base[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	// A proxy in front of the registry that, once failing is set, answers
	// 500 for the base layer: the lowest one, which mutate.Extract reads
	// last, between two entries of its output.
	var failing atomic.Bool
	target, _ := url.Parse("http://" + reg.Host())
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() && strings.HasSuffix(r.URL.Path, "/blobs/"+baseDigest.String()) {
			http.Error(w, "storage backend down", http.StatusInternalServerError)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	host := strings.TrimPrefix(front.URL, "http://")

	reg.Push(t, reg.Ref("students/erin/app", "1"), registrytest.BusyboxImage(t, map[string]string{"/v": "1"}))
	b := newBuilder(t, nil, sif.Options{Insecure: []string{host}, Source: sif.SourceRegistry})
	dst := filepath.Join(t.TempDir(), "app.sif")
	ref := host + "/students/erin/app:1"
	first, err := b.Build(t.Context(), ref, dst, nil)
	if err != nil {
		t.Fatal(err)
	}

	reg.Push(t, reg.Ref("students/erin/app", "1"), registrytest.BusyboxImage(t, map[string]string{"/v": "2"}))
	failing.Store(true)
	_, err = b.Build(t.Context(), ref, dst, nil)
	if !errors.Is(err, sif.ErrUnreachable) {
		t.Fatalf("error %v, want ErrUnreachable", err)
	}
	if sumOf(t, dst) != first.SHA256 {
		t.Error("a failed build changed the SIF")
	}
	if sum, err := sif.ReadSum(dst); err != nil || sum != first.SHA256 {
		t.Errorf("a failed build changed the .sha256: %q, %v", sum, err)
	}
}

func TestRegistryThatNeverAnswersHitsTheTimeout(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	t.Cleanup(hang.Close)
	host := strings.TrimPrefix(hang.URL, "http://")
	b := newBuilder(t, nil, sif.Options{Insecure: []string{host}, Source: sif.SourceRegistry, Timeout: 300 * time.Millisecond})
	start := time.Now()
	_, err := b.Build(t.Context(), host+"/students/frank/app:1", filepath.Join(t.TempDir(), "app.sif"), nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s to time out after 300ms", d)
	}
}

func TestCredentialsGoToTheirRegistry(t *testing.T) {
	reg := registrytest.StartWithAuth(t, "ci", "pa55 word")
	ref := reg.Ref("students/gina/app", "1")
	reg.Push(t, ref, registrytest.BusyboxImage(t))

	t.Run("with them the build works", func(t *testing.T) {
		b := newBuilder(t, reg, sif.Options{Source: sif.SourceRegistry})
		if _, err := b.Build(t.Context(), ref, filepath.Join(t.TempDir(), "app.sif"), nil); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name string
		auth map[string]sif.Auth
	}{
		{"without them it is ErrAccessDenied", nil},
		{"a wrong password is ErrAccessDenied", map[string]sif.Auth{reg.Host(): {Username: "ci", Password: "wrong"}}},
		{"credentials for another host are not sent", map[string]sif.Auth{"127.0.0.1:1": {Username: "ci", Password: "pa55 word"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(t, nil, sif.Options{Source: sif.SourceRegistry, Insecure: []string{reg.Host()}, Auth: tc.auth})
			_, err := b.Build(t.Context(), ref, filepath.Join(t.TempDir(), "app.sif"), nil)
			if !errors.Is(err, sif.ErrAccessDenied) {
				t.Errorf("error %v, want ErrAccessDenied", err)
			}
		})
	}
}

func TestBuildsOfOneFileRunOneAtATime(t *testing.T) {
	reg := registrytest.Start(t)
	ref := reg.Ref("students/hal/app", "1")
	reg.Push(t, ref, twoLayers(t))
	b := newBuilder(t, reg, sif.Options{})
	dst := filepath.Join(t.TempDir(), "app.sif")
	results := make([]core.SIFBuild, 4)
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			r, err := b.Build(t.Context(), ref, dst, nil)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	wg.Wait()
	fresh := 0
	for _, r := range results {
		if !r.Cached {
			fresh++
		}
		if r.SHA256 != results[0].SHA256 {
			t.Errorf("results differ: %s and %s", r.SHA256, results[0].SHA256)
		}
	}
	if fresh != 1 {
		t.Errorf("%d of 4 concurrent builds of one file built it, want 1", fresh)
	}
}
