package access_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/schema"
)

// podCounter is what the pods of the node test run: a numbered line a
// quarter of a second, for ever.
var podCounter = []string{"sh", "-c", `i=0; while true; do i=$((i+1)); echo "line $i"; sleep 0.25; done`}

// lineNumber matches one line of podCounter's output.
var lineNumber = regexp.MustCompile(`^line (\d+)$`)

// On the cluster's node, pods the kube backend made really run: their
// owner reads their logs, runs commands in them and copies files in and
// out through the API and with the credential of wm kubeconfig; another
// student is refused each.
func TestAStudentUsesTheirRunningPodAndNoOtherOnTheNode(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Kubernetes node (ci/kube-up)")
	}
	t.Parallel()
	cluster := kubetest.Env(t)
	cluster.Node(t)
	admin := cluster.AdminClient(t)
	prefix := cluster.Namespace(t, "wmn") + "-"
	set := kube.Settings{
		Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
		Quota:      schema.Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 2, Memory: "1Gi"},
		Defaults:   schema.Limits{CPUs: 0.1, Memory: "64Mi"},
	}
	backend := kube.New(admin, set)
	reg := registrytest.Start(t)
	// The image CI would have pushed: busybox, with the commands the pod
	// and the tests run, tar among them (copying needs it).
	links := map[string]string{}
	for _, c := range []string{"tar", "sleep", "stty", "stat", "id"} {
		links["bin/"+c] = registrytest.SymlinkPrefix + "busybox"
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	for _, s := range []string{"alice", "bob"} {
		ns := set.Namespace(s)
		t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
		if _, err := backend.EnsureOwner(ctx, s); err != nil {
			t.Fatal(err)
		}
		cluster.AllowOnNode(t, ns)
		image := reg.Ref(s+"/ml", "abc123")
		reg.Push(t, image, registrytest.BusyboxImage(t, links))
		p := core.PodSpec{Owner: s, Repo: s + "/ml", Name: "train", Image: image, Command: podCounter, CPUs: 0.1, MemoryBytes: 64 << 20, Restart: "Never"}
		if err := applyPod(ctx, backend, p); err != nil {
			t.Fatal(err)
		}
	}
	// And alice's image of another repo, without tar.
	noTar := reg.Ref("alice/web", "abc123")
	reg.Push(t, noTar, registrytest.BusyboxImage(t, map[string]string{"bin/sleep": registrytest.SymlinkPrefix + "busybox"}))
	p := core.PodSpec{Owner: "alice", Repo: "alice/web", Name: "notar", Image: noTar, Command: podCounter, CPUs: 0.1, MemoryBytes: 64 << 20, Restart: "Never"}
	if err := applyPod(ctx, backend, p); err != nil {
		t.Fatal(err)
	}
	for _, pod := range []string{"alice/train", "bob/train", "alice/notar"} {
		owner, name, _ := strings.Cut(pod, "/")
		cluster.WaitRunning(t, set.Namespace(owner), name, 2*time.Minute)
	}

	srv := access.New(access.Config{
		Auth:    access.NewTokens(map[string]string{"alice-token-0123456789": "alice", "bob-token-0123456789x": "bob"}),
		Cluster: &access.Kube{Client: admin, Config: cluster.AdminConfig(), Settings: set, Server: cluster.Server(), CA: cluster.CAData()},
	})
	mux := http.NewServeMux()
	mux.Handle(access.Prefix, srv.Handler())
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	alice := &access.Client{BaseURL: hs.URL, Token: "alice-token-0123456789"}
	bob := &access.Client{BaseURL: hs.URL, Token: "bob-token-0123456789x"}

	t.Run("the owner reads the last lines of the logs", func(t *testing.T) {
		var lines []string
		waitFor(t, func() bool {
			rc, err := alice.PodLogs(ctx, "train", access.LogsRequest{Tail: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			b, _ := io.ReadAll(rc)
			lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			return len(lines) == 2 && numberOf(lines[0]) > 1
		})
		if first, second := numberOf(lines[0]), numberOf(lines[1]); first < 1 || second != first+1 {
			t.Errorf("the last two lines are %q, want two lines in a row", lines)
		}
	})
	t.Run("the owner follows the logs and sees lines written after", func(t *testing.T) {
		fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
		defer fcancel()
		rc, err := alice.PodLogs(fctx, "alice_train", access.LogsRequest{Tail: 1, Follow: true})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		sc := bufio.NewScanner(rc)
		if !sc.Scan() {
			t.Fatalf("no first line: %v", sc.Err())
		}
		first := numberOf(sc.Text())
		for want := first + 1; want <= first+3; want++ {
			if !sc.Scan() {
				t.Fatalf("the stream ended after line %d: %v", want-1, sc.Err())
			}
			if got := numberOf(sc.Text()); got != want {
				t.Fatalf("followed %q, want line %d", sc.Text(), want)
			}
		}
	})
	t.Run("the owner runs a command and gets its output, errors and exit code", func(t *testing.T) {
		var out, errOut bytes.Buffer
		code, err := alice.PodExec(ctx, "train", access.ExecRequest{
			Cmd: []string{"sh", "-c", "read line; echo got $line; id -u; echo oops >&2; exit 7"}, Stdin: strings.NewReader("ping\n"), Stdout: &out, Stderr: &errOut,
		})
		if err != nil || code != 7 || out.String() != "got ping\n1000\n" || errOut.String() != "oops\n" {
			t.Errorf("exec = %d, %v, stdout %q, stderr %q; want 7, got ping and uid 1000, oops", code, err, out.String(), errOut.String())
		}
	})
	t.Run("the owner runs an interactive shell on a terminal and gets its exit code", func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		resize := make(chan access.Resize, 1)
		var out syncBuffer
		done := make(chan struct{})
		var code int
		var err error
		go func() {
			defer close(done)
			code, err = alice.PodExec(ctx, "train", access.ExecRequest{Cmd: []string{"sh"}, TTY: true, Rows: 24, Cols: 80, Stdin: pr, Stdout: &out, Resize: resize})
		}()
		asked := time.Time{}
		ask := func(size string) func() bool {
			return func() bool {
				if time.Since(asked) > 300*time.Millisecond {
					asked = time.Now()
					_, _ = io.WriteString(pw, "stty size\n")
				}
				return strings.Contains(out.String(), size)
			}
		}
		waitFor(t, ask("24 80"))
		resize <- access.Resize{Rows: 40, Cols: 100}
		waitFor(t, ask("40 100"))
		_, _ = io.WriteString(pw, "exit 5\n")
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("the shell did not exit (output %q)", out.String())
		}
		if err != nil || code != 5 {
			t.Errorf("interactive shell = %d, %v; want 5 (output %q)", code, err, out.String())
		}
	})
	t.Run("the owner copies a file in, owned by the pod's user, and back out", func(t *testing.T) {
		// A large file too: more than the streams hold at once.
		if err := alice.PodCopyTo(ctx, "train", "/tmp", tarOf(t, map[string]string{"notes.txt": "my notes", "big.bin": strings.Repeat("x", 8<<20)})); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if code, err := alice.PodExec(ctx, "train", access.ExecRequest{Cmd: []string{"stat", "-c", "%u %a %s", "/tmp/notes.txt", "/tmp/big.bin"}, Stdout: &out}); err != nil || code != 0 || out.String() != "1000 644 8\n1000 644 8388608\n" {
			t.Errorf("the files copied in: %q, %d, %v; want owner 1000, mode 644, 8 and 8388608 bytes", out.String(), code, err)
		}
		rc, err := alice.PodCopyFrom(ctx, "train", "/tmp/notes.txt")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if files := untar(t, rc); len(files) != 1 || files["notes.txt"] != "my notes" {
			t.Errorf("copied out %v, want notes.txt alone", files)
		}
	})
	t.Run("copies from or into what is not in the pod are 404, archives it may not take 400", func(t *testing.T) {
		_, err := alice.PodCopyFrom(ctx, "train", "/no/such/file")
		wantStatus(t, err, http.StatusNotFound)
		// Larger than what the streams hold: tar has ended long before
		// the archive is through.
		big := strings.Repeat("x", 8<<20)
		err = alice.PodCopyTo(ctx, "train", "/no/such/folder", tarOf(t, map[string]string{"a.txt": big}))
		wantStatus(t, err, http.StatusNotFound)
		err = alice.PodCopyTo(ctx, "train", "/tmp", tarOf(t, map[string]string{"../escape.txt": "a"}))
		wantStatus(t, err, http.StatusBadRequest)
	})
	t.Run("a pod whose image has no tar cannot be copied to or from, and says why", func(t *testing.T) {
		_, err := alice.PodCopyFrom(ctx, "notar", "/tmp")
		wantStatus(t, err, http.StatusUnprocessableEntity)
		err = alice.PodCopyTo(ctx, "notar", "/tmp", tarOf(t, map[string]string{"a.txt": "a"}))
		wantStatus(t, err, http.StatusUnprocessableEntity)
		if err == nil || !strings.Contains(err.Error(), "tar") {
			t.Errorf("the refusal %v does not name tar", err)
		}
	})
	t.Run("another student is refused each", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			do   func() error
		}{
			{"logs", func() error { _, err := bob.PodLogs(ctx, "alice_train", access.LogsRequest{Tail: 1}); return err }},
			{"followed logs", func() error {
				_, err := bob.PodLogs(ctx, "alice_train", access.LogsRequest{Follow: true})
				return err
			}},
			{"exec", func() error {
				_, err := bob.PodExec(ctx, "alice_train", access.ExecRequest{Cmd: []string{"id"}})
				return err
			}},
			{"exec on a terminal", func() error {
				_, err := bob.PodExec(ctx, "alice_train", access.ExecRequest{Cmd: []string{"sh"}, TTY: true, Stdin: strings.NewReader("")})
				return err
			}},
			{"copy out", func() error { _, err := bob.PodCopyFrom(ctx, "alice_train", "/tmp"); return err }},
			{"copy in", func() error {
				return bob.PodCopyTo(ctx, "alice_train", "/tmp", tarOf(t, map[string]string{"x.txt": "x"}))
			}},
		} {
			t.Run(tc.name, func(t *testing.T) { wantStatus(t, tc.do(), http.StatusForbidden) })
		}
	})
	t.Run("the student's credential reads logs and execs in their own pod, and not in another's", func(t *testing.T) {
		cred, err := alice.Kubeconfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg := &rest.Config{Host: cred.Server, BearerToken: cred.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cred.CA}}
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		tail := int64(1)
		// The new binding reaches the apiserver's authorizer within moments.
		var logs []byte
		waitFor(t, func() bool {
			logs, err = c.CoreV1().Pods(cred.Namespace).GetLogs("train", &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
			return err == nil
		})
		if numberOf(strings.TrimSpace(string(logs))) < 1 {
			t.Errorf("alice's own logs: %q", logs)
		}
		out, code, err := kubeExec(ctx, cfg, c, cred.Namespace, "train", "echo", "hi")
		if err != nil || code != 0 || out != "hi\n" {
			t.Errorf("alice's exec in her own pod: %q, %d, %v", out, code, err)
		}
		bobNS := set.Namespace("bob")
		if _, err := c.CoreV1().Pods(bobNS).GetLogs("train", &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx); !forbidden(err) {
			t.Errorf("alice's credential reads bob's logs: %v", err)
		}
		if _, _, err := kubeExec(ctx, cfg, c, bobNS, "train", "echo", "hi"); !forbidden(err) {
			t.Errorf("alice's credential execs in bob's pod: %v", err)
		}
	})
}

// applyPod applies p, waiting for a new namespace's quota to have a status
// (until then admission refuses the pods it constrains).
func applyPod(ctx context.Context, b *kube.Backend, p core.PodSpec) error {
	for {
		err := b.ApplyPod(ctx, p, false)
		if err == nil || !errors.Is(err, kube.ErrQuotaNotReady) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// numberOf is the number of a podCounter line, 0 for another line.
func numberOf(line string) int {
	m := lineNumber.FindStringSubmatch(line)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// kubeExec runs cmd in a pod as kubectl exec does, with cfg's
// credential, and returns its output and exit code.
func kubeExec(ctx context.Context, cfg *rest.Config, c kubernetes.Interface, ns, pod string, cmd ...string) (string, int, error) {
	u := c.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Command: cmd, Stdout: true, Stderr: true}, scheme.ParameterCodec).URL()
	ex, err := remotecommand.NewSPDYExecutor(cfg, http.MethodPost, u)
	if err != nil {
		return "", -1, err
	}
	var out, errOut bytes.Buffer
	err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if err != nil {
		return out.String(), -1, err
	}
	return out.String(), 0, nil
}

// forbidden reports whether err is the apiserver's 403, as an API error
// or as the refused upgrade of an exec stream.
func forbidden(err error) bool {
	return apierrors.IsForbidden(err) || err != nil && strings.Contains(err.Error(), "is forbidden")
}
