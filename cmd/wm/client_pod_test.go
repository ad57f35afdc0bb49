package main

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
	"github.com/whalemountain/wm/schema"
)

// With --pod, wm logs, exec and cp reach a student's running pod on the
// cluster's node as they reach a container, and another student's pod
// answers 403.
func TestClientAStudentUsesTheirPodWithTheCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Kubernetes node (ci/kube-up)")
	}
	cluster := kubetest.Env(t)
	cluster.Node(t)
	admin := cluster.AdminClient(t)
	prefix := cluster.Namespace(t, "wmcp") + "-"
	set := kube.Settings{Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
		Quota: schema.Quota{Pods: 5, CPUs: 2, Memory: "1Gi"}, Defaults: schema.Limits{CPUs: 0.1, Memory: "64Mi"}}
	backend := kube.New(admin, set)
	reg := registrytest.Start(t)
	image := reg.Ref("alice/ml", "abc123")
	links := map[string]string{}
	for _, c := range []string{"tar", "sleep"} {
		links["bin/"+c] = registrytest.SymlinkPrefix + "busybox"
	}
	reg.Push(t, image, registrytest.BusyboxImage(t, links))
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ns := set.Namespace("alice")
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := backend.EnsureOwner(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	cluster.AllowOnNode(t, ns)
	pod := core.PodSpec{Owner: "alice", Repo: "alice/ml", Name: "train", Image: image, CPUs: 0.1, MemoryBytes: 64 << 20, Restart: "Never",
		Command: []string{"sh", "-c", "echo started; exec sleep 3600"}}
	for {
		err := backend.ApplyPod(ctx, pod, false)
		if err == nil {
			break
		}
		if !errors.Is(err, kube.ErrQuotaNotReady) || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cluster.WaitRunning(t, ns, "train", 2*time.Minute)

	srv := access.New(access.Config{
		Auth:    access.NewTokens(map[string]string{"alice-token-0123456789": "alice", "bob-token-0123456789x": "bob"}),
		Cluster: &access.Kube{Client: admin, Config: cluster.AdminConfig(), Settings: set, Server: cluster.Server(), CA: cluster.CAData()},
	})
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("WM_SERVER", hs.URL)
	t.Setenv("WM_TOKEN", "alice-token-0123456789")
	work := t.TempDir()

	t.Run("logs --pod prints the pod's output", func(t *testing.T) {
		// The output reaches the pod's log file a moment after it starts.
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, errOut, code := cli(t, "", "logs", "--pod", "train", "--tail", "5")
			if code == 0 && out == "started\n" {
				break
			}
			if code != 0 || out != "" || time.Now().After(deadline) {
				t.Fatalf("logs --pod: %d, %q, %q; want started", code, out, errOut)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("exec --pod runs a command and exits with its code", func(t *testing.T) {
		out, errOut, code := cli(t, "ping\n", "exec", "--pod", "-i", "train", "--", "sh", "-c", "read l; echo got $l; exit 4")
		if code != 4 || out != "got ping\n" {
			t.Errorf("exec --pod: %d, %q, %q; want 4, got ping", code, out, errOut)
		}
	})
	t.Run("cp --pod copies a folder in and back out", func(t *testing.T) {
		src := filepath.Join(work, "data")
		writeFile(t, filepath.Join(src, "sub"), "notes.txt", "my notes")
		if _, errOut, code := cli(t, "", "cp", "--pod", src, "train:/tmp"); code != 0 {
			t.Fatalf("cp --pod in: %d, %q", code, errOut)
		}
		// Out as docker cp does: named back, as back does not exist yet.
		back := filepath.Join(work, "back")
		if _, errOut, code := cli(t, "", "cp", "--pod", "train:/tmp/data", back); code != 0 {
			t.Fatalf("cp --pod out: %d, %q", code, errOut)
		}
		if b, err := os.ReadFile(filepath.Join(back, "sub", "notes.txt")); err != nil || string(b) != "my notes" {
			t.Errorf("copied back: %q, %v", b, err)
		}
	})
	t.Run("another student is refused every one of them", func(t *testing.T) {
		t.Setenv("WM_TOKEN", "bob-token-0123456789x")
		for _, args := range [][]string{
			{"logs", "--pod", "alice_train"}, {"exec", "--pod", "alice_train", "--", "id"},
			{"cp", "--pod", "alice_train:/tmp", work}, {"cp", "--pod", work, "alice_train:/tmp"},
		} {
			_, errOut, code := cli(t, "", args...)
			if code != exitInvalid || !regexp.MustCompile(`\b403\b`).MatchString(errOut) {
				t.Errorf("bob's %v: %d, %q; want 403", args, code, errOut)
			}
		}
	})
	t.Run("without --pod the name is a container's, and alice has none", func(t *testing.T) {
		_, errOut, code := cli(t, "", "cp", "train:/tmp/data", work)
		if code != exitInvalid || !strings.Contains(errOut, "404") {
			t.Errorf("cp without --pod: %d, %q; want 404", code, errOut)
		}
	})
}
