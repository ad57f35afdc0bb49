package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
)

// hostsConfig is server config lines for two Docker hosts: "local", the
// local engine, and "gone", which never answers; under an instance of the
// test's own, so that what the local host holds of it is only the test's.
func hostsConfig(t *testing.T) string {
	t.Helper()
	dockertest.Local(t)
	b := make([]byte, 4)
	rand.Read(b)
	return "instance: hx" + hex.EncodeToString(b) + "\ndocker: {hosts: [{name: local, endpoint: \"" + dockertest.Endpoint() + "\", gpus: 2}, " +
		"{name: gone, endpoint: \"unix:///nonexistent/wm-" + hex.EncodeToString(b) + ".sock\", gpus: 1}]}\n"
}

func TestHostsCommandWithoutServe(t *testing.T) {
	config, _ := stateConfig(t, true)
	extra := hostsConfig(t)
	config = writeFile(t, strings.TrimSuffix(config, "/wm-server.yaml"), "wm-server.yaml", "stateDir: state\nsources: {dirs: [{root: repos}]}\n"+extra)
	steps := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"wm hosts lists the host, reachable, not cordoned, with its GPUs free", []string{"hosts"}, 0, "local  yes        -         0 of 2     2", ""},
		{"wm hosts shows each GPU free", []string{"hosts"}, 0, "GPU 1  free", ""},
		{"wm hosts shows a host that does not answer, and what is not known of it", []string{"hosts"}, 0, "gone   no         -         ? of 1     ?          ?", ""},
		{"wm hosts says why a host does not answer", []string{"hosts"}, 0, "cannot be reached: ", ""},
		{"wm hosts drain of a host that does not answer refuses", []string{"hosts", "drain", "gone"}, 1, "", "cannot be reached, so it is not drained"},
		{"wm hosts cordon cordons it", []string{"hosts", "cordon", "local"}, 0, "local is cordoned", ""},
		{"wm hosts shows the cordon", []string{"hosts"}, 0, "cordoned since", ""},
		{"wm hosts cordon of an unknown host fails and names the hosts", []string{"hosts", "cordon", "nope"}, 1, "", `no Docker host "nope" in the server config (its hosts: local, gone)`},
		{"wm hosts drain of a host with nothing on it says so", []string{"hosts", "drain", "local"}, 0, "", "local is drained: 0 container(s) moved"},
		{"wm hosts uncordon uncordons it", []string{"hosts", "uncordon", "local"}, 0, "local is uncordoned", ""},
		{"a second uncordon says it was not cordoned", []string{"hosts", "uncordon", "local"}, 0, "local was not cordoned", ""},
		{"wm hosts takes no arguments of its own", []string{"hosts", "local"}, 2, "", "unknown command"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			code, out, errOut := wm(t, append(s.args, "--config", config)...)
			if code != s.code || !strings.Contains(out, s.stdout) || !strings.Contains(errOut, s.stderr) {
				t.Errorf("exit %d (want %d)\nstdout (want %q):\n%s\nstderr (want %q):\n%s", code, s.code, s.stdout, out, s.stderr, errOut)
			}
		})
	}
	t.Run("wm hosts --format json is the hosts' JSON", func(t *testing.T) {
		code, out, errOut := wm(t, "hosts", "--format", "json", "--config", config)
		var hosts []reconciler.HostInfo
		if err := json.Unmarshal([]byte(out), &hosts); code != 0 || err != nil || len(hosts) != 2 || !hosts[0].Reachable || len(hosts[0].GPUs) != 2 || hosts[1].Reachable {
			t.Errorf("exit %d, %v: %+v\n%s", code, err, hosts, errOut)
		}
	})
}

func TestHostsCommandAsksTheRunningServe(t *testing.T) {
	s := startServe(t, hostsConfig(t))
	steps := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"wm hosts cordon goes through the admin socket", []string{"hosts", "cordon", "local", "-v"}, 0, "local is cordoned", "asking it at"},
		{"wm hosts shows the cordon wm serve keeps", []string{"hosts"}, 0, "cordoned since", ""},
		{"wm hosts drain streams its steps from wm serve", []string{"hosts", "drain", "local"}, 0, "", "cordoned local: it takes no new containers"},
		{"an unknown host is refused by wm serve with the reason", []string{"hosts", "drain", "nope"}, 1, "", `no Docker host "nope"`},
		{"wm hosts uncordon goes through the admin socket", []string{"hosts", "uncordon", "local"}, 0, "local is uncordoned", ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			code, out, errOut := wm(t, append(st.args, "--config", s.config)...)
			if code != st.code || !strings.Contains(out, st.stdout) || !strings.Contains(errOut, st.stderr) {
				t.Errorf("exit %d (want %d)\nstdout (want %q):\n%s\nstderr (want %q):\n%s", code, st.code, st.stdout, out, st.stderr, errOut)
			}
		})
	}
	t.Run("a change without the admin header is refused, as a web page's would be", func(t *testing.T) {
		resp, err := s.admin.Post("http://wm"+hostsPath+"/local/cordon", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("status %s, want 403", resp.Status)
		}
		code, out, _ := wm(t, "hosts", "--config", s.config)
		if code != 0 || strings.Contains(out, "cordoned since") {
			t.Errorf("the host was cordoned:\n%s", out)
		}
	})
}
