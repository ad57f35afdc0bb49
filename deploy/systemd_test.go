package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/whalemountain/wm/deploy"
)

// unitLines reads a systemd file of deploy/systemd as key=value pairs in
// order, "[Section]" lines included as keys with no value.
func unitLines(t *testing.T, name string) [][2]string {
	t.Helper()
	raw, err := fs.ReadFile(deploy.Files, "systemd/"+name)
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		out = append(out, [2]string{k, v})
	}
	return out
}

// serviceSettings are the [Service] settings of wm.service: each key with
// its values, in order.
func serviceSettings(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	section := ""
	for _, kv := range unitLines(t, "wm.service") {
		if strings.HasPrefix(kv[0], "[") {
			section = kv[0]
			continue
		}
		if section == "[Service]" {
			out[kv[0]] = append(out[kv[0]], kv[1])
		}
	}
	return out
}

func TestTheSystemdUnitSandboxesWmServe(t *testing.T) {
	s := serviceSettings(t)
	tests := []struct {
		name, key string
		want      []string
	}{
		{"it runs wm serve on the README's config", "ExecStart", []string{"/usr/local/bin/wm serve --config /etc/wm/wm-server.yaml"}},
		{"it runs as the system user wm", "User", []string{"wm"}},
		{"it runs in the wm group", "Group", []string{"wm"}},
		{"it reaches the local Docker socket through the docker group", "SupplementaryGroups", []string{"docker"}},
		{"it is restarted when it fails", "Restart", []string{"on-failure"}},
		{"stateDir /var/lib/wm is made for it", "StateDirectory", []string{"wm"}},
		{"stateDir, and artifactsDir within it, are the writable paths", "ReadWritePaths", []string{"/var/lib/wm"}},
		{"the admin socket's folder /run/wm is made for it", "RuntimeDirectory", []string{"wm"}},
		{"it can never gain privileges", "NoNewPrivileges", []string{"yes"}},
		{"it holds no capability at all", "CapabilityBoundingSet", []string{""}},
		{"it is given no ambient capability", "AmbientCapabilities", []string{""}},
		{"the whole file system is read-only to it", "ProtectSystem", []string{"strict"}},
		{"home folders are hidden", "ProtectHome", []string{"yes"}},
		{"its /tmp is its own", "PrivateTmp", []string{"yes"}},
		{"it sees no devices", "PrivateDevices", []string{"yes"}},
		{"kernel tunables are read-only", "ProtectKernelTunables", []string{"yes"}},
		{"kernel modules cannot be loaded", "ProtectKernelModules", []string{"yes"}},
		{"the kernel log is closed", "ProtectKernelLogs", []string{"yes"}},
		{"control groups are read-only", "ProtectControlGroups", []string{"yes"}},
		{"it cannot make namespaces", "RestrictNamespaces", []string{"yes"}},
		{"it opens unix and IP sockets only", "RestrictAddressFamilies", []string{"AF_UNIX AF_INET AF_INET6"}},
		{"its system calls are a service's", "SystemCallFilter", []string{"@system-service"}},
		{"it has no writable and executable memory", "MemoryDenyWriteExecute", []string{"yes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s[tt.key]; !slices.Equal(got, tt.want) {
				t.Errorf("%s= is set to %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

// binDir holds wm once built; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var wmBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "wm-deploy-test-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "wm")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/whalemountain/wm/cmd/wm").CombinedOutput()
	if err != nil {
		return "", errors.New("go build ./cmd/wm: " + err.Error() + "\n" + string(out))
	}
	return bin, nil
})

// built returns wm built from this tree (once per test binary).
func built(t *testing.T) string {
	t.Helper()
	bin, err := wmBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// systemdTool returns the path of one of systemd's tools, failing the test
// when it is not installed (ci/setup installs Debian's systemd).
func systemdTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed (Debian's systemd package; bash ci/setup installs it): %v", name, err)
	}
	return p
}

func TestTheSystemdFilesPassSystemdsOwnChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds wm")
	}
	wm := built(t)
	unit, err := fs.ReadFile(deploy.Files, "systemd/wm.service")
	if err != nil {
		t.Fatal(err)
	}
	// The unit as installed, but for wm's path: systemd-analyze checks that
	// ExecStart's program exists.
	dir := t.TempDir()
	local := filepath.Join(dir, "wm.service")
	if err := os.WriteFile(local, bytes.ReplaceAll(unit, []byte("ExecStart=/usr/local/bin/wm "), []byte("ExecStart="+wm+" ")), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("systemd-analyze verify has nothing to say about the unit", func(t *testing.T) {
		out, err := exec.Command(systemdTool(t, "systemd-analyze"), "verify", local).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})

	t.Run("systemd-analyze security rates the sandbox's exposure 2.0 or less", func(t *testing.T) {
		out, err := exec.Command(systemdTool(t, "systemd-analyze"), "security", "--offline=yes", "--threshold=20", local).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security: %v\n%s", err, out)
		}
	})

	t.Run("ExecStart's command line is one wm serve accepts", func(t *testing.T) {
		s := serviceSettings(t)
		args := strings.Fields(s["ExecStart"][0])[1:]
		help, err := exec.Command(wm, append(slices.Clone(args[:1]), "--help")...).CombinedOutput()
		if err != nil {
			t.Fatalf("wm %s --help: %v\n%s", args[0], err, help)
		}
		for _, a := range args[1:] {
			if strings.HasPrefix(a, "-") && !strings.Contains(string(help), a+" ") {
				t.Errorf("wm %s --help does not list %s:\n%s", args[0], a, help)
			}
		}
		// With the config missing, wm gets as far as reading it: the flags
		// parsed.
		missing := filepath.Join(dir, "no-such-config.yaml")
		run := slices.Clone(args)
		run[len(run)-1] = missing
		out, err := exec.Command(wm, run...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), missing) || strings.Contains(string(out), "unknown") {
			t.Errorf("wm %s: %v\n%s\nwant a refusal of the missing config, not of the command line", strings.Join(run, " "), err, out)
		}
	})

	t.Run("systemd-sysusers and systemd-tmpfiles make the user wm and /etc/wm, readable by wm only", func(t *testing.T) {
		root := t.TempDir()
		for src, dst := range map[string]string{"wm.sysusers.conf": "etc/sysusers.d/wm.conf", "wm.tmpfiles.conf": "etc/tmpfiles.d/wm.conf"} {
			raw, err := fs.ReadFile(deploy.Files, "systemd/"+src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(root, filepath.Dir(dst)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, dst), raw, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if out, err := exec.Command(systemdTool(t, "systemd-sysusers"), "--root="+root).CombinedOutput(); err != nil {
			t.Fatalf("systemd-sysusers: %v\n%s", err, out)
		}
		passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
		if err != nil {
			t.Fatal(err)
		}
		var uid, gid string
		for _, line := range strings.Split(string(passwd), "\n") {
			f := strings.Split(line, ":")
			if len(f) == 7 && f[0] == "wm" {
				uid, gid = f[2], f[3]
				if f[5] != "/var/lib/wm" || !strings.HasSuffix(f[6], "nologin") {
					t.Errorf("the user wm: %q, want home /var/lib/wm and no login shell", line)
				}
			}
		}
		if uid == "" || uid == "0" {
			t.Fatalf("systemd-sysusers made no system user wm:\n%s", passwd)
		}
		if out, err := exec.Command(systemdTool(t, "systemd-tmpfiles"), "--root="+root, "--create").CombinedOutput(); err != nil {
			t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
		}
		fi, err := os.Stat(filepath.Join(root, "etc/wm"))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got, want := fmt.Sprintf("%o %d %d", fi.Mode().Perm(), st.Uid, st.Gid), "750 0 "+gid; got != want {
			t.Errorf("/etc/wm has mode, owner and group %q, want %q", got, want)
		}
	})
}
