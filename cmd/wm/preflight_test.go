package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serveOnce runs `wm serve --config path` in-process and returns its exit
// code and stderr; a serve still running after a few seconds has accepted
// the config, and is stopped.
func serveOnce(t *testing.T, path string) (code int, stderr string, started bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"serve", "--config", path})
		root.SetOut(&out)
		root.SetErr(&errb)
		done <- root.ExecuteContext(ctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			code = 1
		}
		return code, errb.String(), false
	case <-time.After(5 * time.Second):
		cancel()
		<-done
		return 0, errb.String(), true
	}
}

func TestServeAndValidateRefuseTheSameConfigsWithTheSameMessages(t *testing.T) {
	// Not t.TempDir: a unix socket path must stay under ~100 bytes.
	dir, err := os.MkdirTemp("", "wm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	writeFile(t, dir, "empty", "\n")
	writeFile(t, dir, "secret", "s3cret\n")
	writeFile(t, dir, "signing", "whsec_not base64!\n")
	writeFile(t, dir, "tokens", "short alice\n")
	writeFile(t, dir, "not-a-socket", "x")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct{ name, config, want string }{
		{"a missing webhook secret file", "webhook: {secretFile: nothing-here}\n",
			"webhook.secretFile: cannot read " + filepath.Join(dir, "nothing-here") + ": no such file or directory"},
		{"an empty webhook secret file", "webhook: {secretFile: empty}\n",
			"webhook.secretFile: " + filepath.Join(dir, "empty") + " is empty"},
		{"a signing token that is not one", "webhook: {secretFile: secret, signingTokenFile: signing}\n",
			"webhook.signingTokenFile: "},
		{"a missing GitLab token file", "sources: {gitlab: {url: \"https://gitlab.example.edu\", tokenFile: gone, groups: [students]}}\n",
			"sources.gitlab.tokenFile: cannot read " + filepath.Join(dir, "gone") + ": no such file or directory"},
		{"a missing registry password file", "registry: {host: r.example.edu, username: u, passwordFile: gone}\n",
			"registry.passwordFile: cannot read "},
		{"a malformed download tokens file", "artifacts: {tokensFile: tokens}\n",
			"artifacts.tokensFile: " + filepath.Join(dir, "tokens") + ":1: want \"TOKEN OWNER\""},
		{"a missing TLS key", "tls: {certFile: secret, keyFile: gone}\n",
			"tls.keyFile: cannot read " + filepath.Join(dir, "gone") + ": no such file or directory"},
		{"a TLS certificate that is not one", "tls: {certFile: secret, keyFile: secret}\n",
			"tls: tls: failed to find any PEM data in certificate input"},
		{"a missing kubeconfig", "kubernetes: {kubeconfig: gone}\n",
			"kubernetes.kubeconfig: cannot read "},
		{"an admin group that does not exist", "adminGroup: no-such-group-wm\n",
			"adminGroup: no group \"no-such-group-wm\""},
		{"an admin socket path that is a file", "adminListen: unix://not-a-socket\n",
			"adminListen: " + filepath.Join(dir, "not-a-socket") + " exists and is not a socket"},
		{"a listen address another program holds", "listen: " + busy.Addr().String() + "\n",
			"listen: cannot listen on " + busy.Addr().String() + ": address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := tc.config
			if !strings.HasPrefix(config, "listen:") {
				config = "listen: " + freeAddr(t) + "\n" + config
			}
			if !strings.Contains(config, "sources:") {
				config += "sources: {dirs: [{root: repos}]}\n"
			}
			path := writeFile(t, dir, "s.yaml", "stateDir: wm-state\n"+config)
			code, serveErr, started := serveOnce(t, path)
			if started || code != exitInvalid {
				t.Fatalf("wm serve started (%v) or exited %d:\n%s", started, code, serveErr)
			}
			vcode, vout, _ := wm(t, "validate", "--server", path)
			if vcode != exitInvalid {
				t.Errorf("wm validate --server exits %d on what wm serve refuses:\n%s", vcode, vout)
			}
			if serveErr != vout {
				t.Errorf("different messages\nwm serve:    %swm validate: %s", serveErr, vout)
			}
			if !strings.Contains(vout, tc.want) || !strings.HasPrefix(vout, path+":") {
				t.Errorf("got %q, want a placed error with %q", vout, tc.want)
			}
		})
	}
}

// TestTheExampleServerConfigStartsAsWritten runs `wm serve` on a copy of
// examples/server/wm-server.yaml in which only listen is changed, to a
// free port (the copy keeps wm-state out of the source tree), and asks its
// health check.
func TestTheExampleServerConfigStartsAsWritten(t *testing.T) {
	example, err := os.ReadFile("../../examples/server/wm-server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const written = "\nlisten: 127.0.0.1:8080\n"
	if !bytes.Contains(example, []byte(written)) {
		t.Fatalf("the example no longer listens on 127.0.0.1:8080: update this test")
	}
	dir, err := os.MkdirTemp("", "wm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := freeAddr(t)
	path := writeFile(t, dir, "wm-server.yaml", strings.Replace(string(example), written, "\nlisten: "+addr+"\n", 1))
	if code, out, _ := wm(t, "validate", "--server", path); code != 0 {
		t.Fatalf("wm validate --server: %d\n%s", code, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var errb syncBuffer
	done := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetArgs([]string{"serve", "--config", path})
		root.SetOut(io.Discard)
		root.SetErr(&errb)
		done <- root.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("wm serve did not stop")
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("wm serve on the example stopped: %v\n%s", err, errb.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
				t.Fatalf("GET /healthz: %d %q", resp.StatusCode, body)
			}
			// Its schedules run too (logged before the listeners serve).
			if !strings.Contains(errb.String(), "schedules on") || !strings.Contains(errb.String(), "jobs=4") {
				t.Errorf("the example's four schedules are not on:\n%s", errb.String())
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("wm serve on the example does not answer: %v\n%s", err, errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
