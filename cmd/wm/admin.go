package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/schema"
)

// The admin listener serves what has no authentication of its own: every
// student's state and the metrics. It is a unix socket by default, which
// only wm's user (or adminGroup) can connect to, so who may read it is
// decided by the file system and not by where a request seems to come
// from: behind a reverse proxy every request comes from loopback.

// statusPath is where the admin listener answers with every repo's state
// as JSON.
const statusPath = "/api/v1/status"

// adminHandler serves the status API, the metrics and a health check.
func adminHandler(rt *runtime, reg *prometheus.Registry, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET "+statusPath, func(w http.ResponseWriter, _ *http.Request) {
		repos, err := rt.store.Repos()
		if err != nil {
			log.Error("status", "err", err)
			http.Error(w, "cannot read state", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(repos)
	})
	handleHosts(mux, rt, log)
	return mux
}

// handleHosts serves the operations on Docker hosts (wm hosts): GET
// hostsPath lists them; POST hostsPath/{name}/cordon, /uncordon and
// /drain act on one, the drain answering a JSON line per step and one
// with its report (drainLine). A drain goes on when its client goes.
func handleHosts(mux *http.ServeMux, rt *runtime, log *slog.Logger) {
	answer := func(w http.ResponseWriter, v any, err error) {
		if err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, fault.NotFound) {
				code = http.StatusNotFound
			}
			http.Error(w, err.Error(), code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	// A POST must carry adminHeader, which a browser does not send to
	// another origin without asking first (and this listener never says
	// yes): a web page cannot cordon or drain through a TCP admin listener.
	post := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(adminHeader) != "1" {
				http.Error(w, "a change on the admin listener needs the header "+adminHeader+": 1", http.StatusForbidden)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("GET "+hostsPath, func(w http.ResponseWriter, r *http.Request) {
		hosts, err := rt.rec.Hosts(r.Context())
		answer(w, hosts, err)
	})
	mux.HandleFunc("POST "+hostsPath+"/{name}/cordon", post(func(w http.ResponseWriter, r *http.Request) {
		c, err := rt.rec.Cordon(r.PathValue("name"))
		if err == nil {
			log.Info("host cordoned", "host", c.Host)
		}
		answer(w, c, err)
	}))
	mux.HandleFunc("POST "+hostsPath+"/{name}/uncordon", post(func(w http.ResponseWriter, r *http.Request) {
		was, err := rt.rec.Uncordon(r.PathValue("name"))
		if err == nil {
			log.Info("host uncordoned", "host", r.PathValue("name"), "wasCordoned", was)
		}
		answer(w, uncordonAnswer{WasCordoned: was}, err)
	}))
	mux.HandleFunc("POST "+hostsPath+"/{name}/drain", post(func(w http.ResponseWriter, r *http.Request) {
		host := r.PathValue("name")
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Time{})
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		log.Info("drain", "host", host)
		rep, err := rt.rec.Drain(context.WithoutCancel(r.Context()), host, func(s string) {
			log.Info("drain", "host", host, "step", s)
			_ = enc.Encode(drainLine{Progress: s})
			_ = rc.Flush()
		})
		last := drainLine{Report: &rep}
		if err != nil {
			last.Error = err.Error()
			log.Warn("drain stopped", "host", host, "err", err)
		}
		_ = enc.Encode(last)
	}))
}

// listenAdmin opens the admin listener of cfg.
func listenAdmin(cfg *schema.ServerConfig) (net.Listener, error) {
	sock := cfg.AdminSocket()
	if sock == "" {
		return net.Listen("tcp", cfg.AdminListen)
	}
	return listenUnix(sock, cfg.AdminGroup)
}

// maxSocketPath leaves room in sun_path (108 bytes) for the temporary
// name the socket is bound at.
const maxSocketPath = 100

// listenUnix listens on a unix socket at path that only this user, or
// the members of group when it is set, may connect to. The socket is
// bound in a fresh 0700 folder, given its mode, and only then renamed
// into place, so that it is never reachable with looser permissions. A
// stale socket left by a crash is replaced; a live one, or any other
// file, is not.
func listenUnix(path, group string) (net.Listener, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("adminListen: the socket path %s is %d bytes, more than %d: choose a shorter one", path, len(path), maxSocketPath)
	}
	mode, gid := os.FileMode(0o600), -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			if g, err = user.LookupGroupId(group); err != nil {
				return nil, fmt.Errorf("adminGroup: no group %q", group)
			}
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("adminGroup: group %q has gid %q", group, g.Gid)
		}
		mode = 0o660
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("adminListen: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("adminListen: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("adminListen: another wm serve answers at %s", path)
		}
	}
	tmp, err := os.MkdirTemp(dir, ".wm")
	if err != nil {
		return nil, fmt.Errorf("adminListen: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	ln, err := net.Listen("unix", bound)
	if err != nil {
		return nil, fmt.Errorf("adminListen: %w", err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	if err := setUp(bound, path, mode, gid); err != nil {
		ul.Close()
		return nil, fmt.Errorf("adminListen: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("adminListen: %w", err)
	}
	return &unixListener{UnixListener: ul, path: path, file: fi}, nil
}

// setUp gives the socket at bound its group and mode and moves it to path.
func setUp(bound, path string, mode os.FileMode, gid int) error {
	if gid >= 0 {
		if err := os.Chown(bound, -1, gid); err != nil {
			return err
		}
	}
	if err := os.Chmod(bound, mode); err != nil {
		return err
	}
	return os.Rename(bound, path)
}

// unixListener removes its socket when closed, unless another has taken
// its path since.
type unixListener struct {
	*net.UnixListener
	path string
	file os.FileInfo
}

// Addr is the socket's path, not the temporary one it was bound at.
func (l *unixListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	if fi, statErr := os.Lstat(l.path); statErr == nil && os.SameFile(fi, l.file) {
		_ = os.Remove(l.path)
	}
	return err
}

// adminClient is an HTTP client of cfg's admin listener, and the base URL
// to use with it.
func adminClient(cfg *schema.ServerConfig) (*http.Client, string) {
	sock := cfg.AdminSocket()
	if sock == "" {
		return &http.Client{Timeout: 10 * time.Second}, "http://" + cfg.AdminListen
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}, "http://wm-admin"
}

// errNoAdmin wraps a failure to reach the admin listener.
var errNoAdmin = errors.New("the state is held by a running wm, which does not answer on its admin listener")
