package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/whalemountain/wm/reconciler/webhook"
	"github.com/whalemountain/wm/schema"
)

// loadCheckedConfig loads the server config at path (the embedded defaults
// when path is "") and makes serverChecks on it. `wm serve` calls it before
// it opens anything and `wm validate --server` calls it too, so both refuse
// the same configs with the same messages. Problems are printed one a line
// on the command's stderr and returned as exitError{exitInvalid}.
func loadCheckedConfig(cmd *cobra.Command, path string) (*schema.ServerConfig, error) {
	cfg, err := schema.LoadServerChecked(path, serverChecks)
	if err != nil {
		var list schema.Errors
		if errors.As(err, &list) {
			for _, e := range list {
				fmt.Fprintln(cmd.ErrOrStderr(), e.Error())
			}
		} else {
			fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		}
		return nil, exitError{exitInvalid}
	}
	return cfg, nil
}

// serverChecks is every check `wm serve` makes at start-up on what its
// config names outside itself: the secret files are readable and not
// empty (and the signing token and the download tokens well formed), the
// TLS certificate loads, the kubeconfig loads, each Docker endpoint makes a client, the admin group
// exists, the admin socket can be made, and both addresses are free.
// Reaching GitLab, the engines and the registry is not checked: wm serve
// starts without them and reports on each pass.
func serverChecks(c *schema.ServerConfig, report func(path, format string, args ...any)) {
	secret := func(field, file string) (string, bool) {
		if file == "" {
			return "", false
		}
		b, err := os.ReadFile(file)
		if err != nil {
			report(field, "cannot read %s: %s", file, reason(err))
			return "", false
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			report(field, "%s is empty", file)
			return "", false
		}
		return s, true
	}
	secret("webhook.secretFile", c.Webhook.SecretFile)
	if raw, ok := secret("webhook.signingTokenFile", c.Webhook.SigningTokenFile); ok {
		if _, err := webhook.ParseSigningSecret(raw); err != nil {
			report("webhook.signingTokenFile", "%v", err)
		}
	}
	if g := c.Sources.GitLab; g != nil {
		secret("sources.gitlab.tokenFile", g.TokenFile)
	}
	secret("registry.passwordFile", c.Registry.PasswordFile)
	if d := c.Dashboard; d != nil {
		secret("dashboard.secretFile", d.SecretFile)
		secret("dashboard.sessionKeyFile", d.SessionKeyFile)
	}
	if f := c.Artifacts.TokensFile; f != "" {
		if _, err := os.Stat(f); err != nil {
			report("artifacts.tokensFile", "cannot read %s: %s", f, reason(err))
		} else if _, err := readTokens(f); err != nil {
			report("artifacts.tokensFile", "%v", err)
		}
	}
	if k := c.Kubernetes; k != nil {
		if _, err := os.Stat(k.Kubeconfig); err != nil {
			report("kubernetes.kubeconfig", "cannot read %s: %s", k.Kubeconfig, reason(err))
		} else if _, err := clientcmd.BuildConfigFromFlags("", k.Kubeconfig); err != nil {
			report("kubernetes.kubeconfig", "%v", err)
		}
	}
	// What docker.New does before it connects: parse the endpoint, load
	// its TLS files.
	schema.CheckDockerHosts(c, report)
	if fi, err := os.Stat(c.StateDir); err == nil && !fi.IsDir() {
		report("stateDir", "%s exists and is not a folder", c.StateDir)
	}
	if t := c.TLS; t != nil {
		certOK, keyOK := readable("tls.certFile", t.CertFile, report), readable("tls.keyFile", t.KeyFile, report)
		if certOK && keyOK {
			if _, err := publicTLS(c); err != nil {
				report("tls", "%v", err)
			}
		}
	}
	if sock := c.AdminSocket(); sock != "" {
		checkAdminSocket(sock, c.AdminGroup, report)
	} else {
		checkFree("adminListen", c.AdminListen, report)
	}
	checkFree("listen", c.Listen, report)
}

// readable reports when file cannot be read.
func readable(field, file string, report func(path, format string, args ...any)) bool {
	f, err := os.Open(file)
	if err != nil {
		report(field, "cannot read %s: %s", file, reason(err))
		return false
	}
	f.Close()
	return true
}

// checkAdminSocket makes the checks listenUnix makes before it binds.
func checkAdminSocket(sock, group string, report func(path, format string, args ...any)) {
	if len(sock) > maxSocketPath {
		report("adminListen", "the socket path %s is %d bytes, more than %d: choose a shorter one", sock, len(sock), maxSocketPath)
	}
	if group != "" {
		if _, err := user.LookupGroup(group); err != nil {
			if _, err := user.LookupGroupId(group); err != nil {
				report("adminGroup", "no group %q", group)
			}
		}
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		return
	}
	if fi.Mode()&os.ModeSocket == 0 {
		report("adminListen", "%s exists and is not a socket", sock)
		return
	}
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		report("adminListen", "another wm serve answers at %s", sock)
	}
}

// checkFree reports when nothing can listen on addr now, such as when
// another program (or another wm serve) holds it.
func checkFree(field, addr string, report func(path, format string, args ...any)) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		report(field, "cannot listen on %s: %s", addr, reason(err))
		return
	}
	ln.Close()
}

// reason is the last part of an error from the os or net packages, the
// part that says why ("no such file or directory", "address already in
// use"); the file or address is said by the message around it.
func reason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err.Error()
		}
		return oe.Err.Error()
	}
	return err.Error()
}
