package access_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/kube/kubetest"
	"github.com/whalemountain/wm/schema"
)

// On the real control plane, with pods that stay Pending (their
// namespaces are not let on the node), a student gets a working
// credential for their own namespace and no other, and another student's
// pods are refused.
func TestPodsAndKubernetesCredentialsOnTheRealControlPlane(t *testing.T) {
	t.Parallel()
	cluster := kubetest.Env(t)
	prefix := cluster.Namespace(t, "wma") + "-"
	admin := cluster.AdminClient(t)
	set := kube.Settings{
		Kubernetes: schema.Kubernetes{NamespacePrefix: prefix, GPUResource: "nvidia.com/gpu"},
		Quota:      schema.Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi"},
		Defaults:   schema.Limits{CPUs: 1, Memory: "2Gi"},
	}
	backend := kube.New(admin, set)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	students := []string{"alice", "bob", "carol"}
	for _, s := range students {
		ns := set.Namespace(s)
		t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
		if _, err := backend.EnsureOwner(ctx, s); err != nil {
			t.Fatal(err)
		}
		p := core.PodSpec{Owner: s, Repo: s + "/ml", Name: "train", Image: "registry.test/" + s + "/ml:abc", Command: []string{"sleep", "1"}, CPUs: 1, MemoryBytes: 1 << 30, Restart: "Never"}
		if err := backend.ApplyPod(ctx, p, false); err != nil {
			t.Fatal(err)
		}
	}
	tokens := map[string]string{"alice-token-0123456789": "alice", "bob-token-0123456789x": "bob", "admin-token-0123456789": "*"}
	srv := access.New(access.Config{
		Auth:    access.NewTokens(tokens),
		Cluster: &access.Kube{Client: admin, Config: cluster.AdminConfig(), Settings: set, Server: cluster.Server(), CA: cluster.CAData()},
	})
	mux := http.NewServeMux()
	mux.Handle(access.Prefix, srv.Handler())
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	alice := &access.Client{BaseURL: hs.URL, Token: "alice-token-0123456789"}

	t.Run("another student's pod is refused", func(t *testing.T) {
		bob := &access.Client{BaseURL: hs.URL, Token: "bob-token-0123456789x"}
		_, err := bob.PodLogs(ctx, "alice_train", access.LogsRequest{})
		wantStatus(t, err, http.StatusForbidden)
	})
	t.Run("a pod that is not running yet is 409, one that does not exist 404", func(t *testing.T) {
		_, err := alice.PodLogs(ctx, "train", access.LogsRequest{})
		wantStatus(t, err, http.StatusConflict)
		_, err = alice.PodLogs(ctx, "nothing", access.LogsRequest{})
		wantStatus(t, err, http.StatusNotFound)
		_, err = alice.PodExec(ctx, "train", access.ExecRequest{Cmd: []string{"sh"}})
		wantStatus(t, err, http.StatusConflict)
		_, err = alice.PodExec(ctx, "nothing", access.ExecRequest{Cmd: []string{"sh"}})
		wantStatus(t, err, http.StatusNotFound)
		_, err = alice.PodCopyFrom(ctx, "train", "/tmp")
		wantStatus(t, err, http.StatusConflict)
		_, err = alice.PodCopyFrom(ctx, "nothing", "/tmp")
		wantStatus(t, err, http.StatusNotFound)
		err = alice.PodCopyTo(ctx, "train", "/tmp", tarOf(t, map[string]string{"a.txt": "a"}))
		wantStatus(t, err, http.StatusConflict)
		err = alice.PodCopyTo(ctx, "nothing", "/tmp", tarOf(t, map[string]string{"a.txt": "a"}))
		wantStatus(t, err, http.StatusNotFound)
	})
	t.Run("exec in and copies to and from another student's pod are refused", func(t *testing.T) {
		bob := &access.Client{BaseURL: hs.URL, Token: "bob-token-0123456789x"}
		_, err := bob.PodExec(ctx, "alice_train", access.ExecRequest{Cmd: []string{"sh"}})
		wantStatus(t, err, http.StatusForbidden)
		_, err = bob.PodCopyFrom(ctx, "alice_train", "/tmp")
		wantStatus(t, err, http.StatusForbidden)
		err = bob.PodCopyTo(ctx, "alice_train", "/tmp", tarOf(t, map[string]string{"a.txt": "a"}))
		wantStatus(t, err, http.StatusForbidden)
	})
	t.Run("the credential reads the student's own pods and nothing else", func(t *testing.T) {
		cred, err := alice.Kubeconfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cred.Namespace != set.Namespace("alice") || cred.Token == "" || time.Until(cred.Expires) > 2*time.Hour || time.Until(cred.Expires) < 30*time.Minute {
			t.Fatalf("credential %+v", cred)
		}
		cfg := &rest.Config{Host: cred.Server, BearerToken: cred.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cred.CA}}
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		// The new binding reaches the apiserver's authorizer within moments.
		var pods *corev1.PodList
		waitFor(t, func() bool {
			pods, err = c.CoreV1().Pods(cred.Namespace).List(ctx, metav1.ListOptions{})
			return err == nil
		})
		if len(pods.Items) != 1 || pods.Items[0].Name != "train" {
			t.Errorf("alice lists her pods: %v", pods.Items)
		}
		if _, err := c.CoreV1().Pods(set.Namespace("bob")).List(ctx, metav1.ListOptions{}); err == nil {
			t.Error("alice's credential lists bob's pods")
		}
		if _, err := c.CoreV1().Secrets(cred.Namespace).List(ctx, metav1.ListOptions{}); err == nil {
			t.Error("alice's credential lists the secrets of her namespace")
		}
		if err := c.CoreV1().Pods(cred.Namespace).Delete(ctx, "train", metav1.DeleteOptions{}); err == nil {
			t.Error("alice's credential deletes a pod: declared state is WhaleMountain's")
		}
	})
	t.Run("a service account of that name WhaleMountain did not make is never used", func(t *testing.T) {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: access.ServiceAccountName, Namespace: set.Namespace("carol")}}
		if _, err := admin.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		adminClient := &access.Client{BaseURL: hs.URL, Token: "admin-token-0123456789"}
		_, err := adminClient.Do(ctx, http.MethodPost, access.Prefix+"kubeconfig", map[string][]string{"owner": {"carol"}}, nil)
		wantStatus(t, err, http.StatusBadGateway)
	})
	t.Run("an admin without an account names whose credential; a student cannot", func(t *testing.T) {
		adminClient := &access.Client{BaseURL: hs.URL, Token: "admin-token-0123456789"}
		if _, err := adminClient.Do(ctx, http.MethodPost, access.Prefix+"kubeconfig", map[string][]string{"owner": {"bob"}}, nil); err != nil {
			t.Errorf("admin's credential for bob: %v", err)
		}
		_, err := alice.Do(ctx, http.MethodPost, access.Prefix+"kubeconfig", map[string][]string{"owner": {"bob"}}, nil)
		wantStatus(t, err, http.StatusForbidden)
	})
}
