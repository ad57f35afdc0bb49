package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// hostsPath is where the admin listener answers about the Docker hosts:
// GET lists them, POST .../{name}/cordon, /uncordon and /drain act on one.
const hostsPath = "/api/v1/hosts"

// adminHeader must be set to "1" on every change asked of the admin
// listener (see handleHosts).
const adminHeader = "X-Wm-Admin"

func newHostsCmd(g *globals) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "Show the Docker hosts: GPUs used and free, containers, reachability, cordons",
		Long: `Show each Docker host of the server config: whether it answers, whether it is
cordoned, each GPU with the container (and owner) it serves or "free", and
the containers on it. Like wm status, it works whether or not wm serve runs:
it asks the Docker hosts itself and reads the state folder, or, while wm serve
holds the state, asks the running wm serve on its admin listener.

  wm hosts cordon NAME     keep new containers off NAME (what runs there stays)
  wm hosts uncordon NAME   let NAME take new containers again
  wm hosts drain NAME      cordon NAME and move every container on it to
                           another host, with its volumes' data`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				fmt.Fprintf(cmd.ErrOrStderr(), "wm: --format must be text or json, not %q\n", format)
				return exitError{exitUsage}
			}
			return withHosts(cmd, g, true, func(ctx context.Context, h hostOps) error {
				hosts, err := h.Hosts(ctx)
				if err != nil {
					return err
				}
				if format == "json" {
					enc := json.NewEncoder(cmd.OutOrStdout())
					enc.SetIndent("", "  ")
					return enc.Encode(hosts)
				}
				return printHosts(cmd.OutOrStdout(), hosts)
			})
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output `FORMAT`: text or json")
	cmd.AddCommand(&cobra.Command{
		Use:   "cordon NAME",
		Short: "Keep new containers off a Docker host; what runs there stays",
		Long: `Cordon the Docker host NAME: no pass places a container on it that is not
there already (a container on it stays, through changes too). The cordon is
kept in the state folder until wm hosts uncordon. While wm serve runs, it is
asked to do it on its admin listener.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withHosts(cmd, g, false, func(ctx context.Context, h hostOps) error {
				c, err := h.Cordon(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s is cordoned (since %s): it takes no new containers\n", c.Host, c.Since.Format(time.RFC3339))
				return nil
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "uncordon NAME",
		Short: "Let a cordoned Docker host take new containers again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withHosts(cmd, g, false, func(ctx context.Context, h hostOps) error {
				was, err := h.Uncordon(ctx, args[0])
				if err != nil {
					return err
				}
				if was {
					fmt.Fprintf(cmd.OutOrStdout(), "%s is uncordoned: it takes new containers again\n", args[0])
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s was not cordoned\n", args[0])
				}
				return nil
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "drain NAME",
		Short: "Cordon a Docker host and move every container on it, with its volumes' data, to another",
		Long: `Cordon the Docker host NAME and move each container on it to another host,
chosen by the placement rules of a pass (free GPUs, load, no cordoned host).
Its named volumes move with their data, copied through the two Docker
Engines' APIs. Each container keeps its name, and its host ports when they are
free on the new host (else it gets new ones, shown). Its old container and
volumes are removed only once the new container is in place.

When a container cannot be moved (no host can take it, its image cannot be
pulled there, a copy fails), what was made for it is removed, it is started
again where it was, and the drain stops with the reason; what moved before
stays moved. A host that does not answer is not drained: its volumes cannot
be copied, and nothing is recreated elsewhere.

Each step is shown as it happens. Exit status: 0 when the host is drained,
1 otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cmd.SetContext(ctx)
			return withHosts(cmd, g, false, func(ctx context.Context, h hostOps) error {
				progress := func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), "  "+s) }
				rep, err := h.Drain(ctx, args[0], progress)
				printDrain(cmd.OutOrStdout(), rep)
				return err
			})
		},
	})
	return cmd
}

// hostOps are the operations on hosts, done here or by a running wm
// serve.
type hostOps interface {
	Hosts(ctx context.Context) ([]reconciler.HostInfo, error)
	Cordon(ctx context.Context, host string) (store.Cordon, error)
	Uncordon(ctx context.Context, host string) (bool, error)
	Drain(ctx context.Context, host string, progress func(string)) (reconciler.DrainReport, error)
}

// withHosts runs do with the host operations: a runtime of its own (the
// state read-only when readOnly), or, while wm serve holds the state,
// the running wm serve's admin listener. An error do returns is printed
// and exits 1.
func withHosts(cmd *cobra.Command, g *globals, readOnly bool, do func(ctx context.Context, h hostOps) error) error {
	cfg, err := loadConfig(g.config)
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), err)
		return exitError{exitInvalid}
	}
	fail := func(err error) error {
		fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		return exitError{exitInvalid}
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	held, err := stateHeld(cfg.StateDir)
	if err != nil {
		return fail(err)
	}
	if held {
		if g.verbose {
			fmt.Fprintf(cmd.ErrOrStderr(), "wm: the state is held by a running wm: asking it at %s\n", cfg.AdminListen)
		}
		if err := do(ctx, adminHosts{cfg: cfg}); err != nil {
			return fail(err)
		}
		return nil
	}
	rt, err := newRuntime(cfg, configLogger(cmd.ErrOrStderr(), cfg.Log, g.verbose), nil, readOnly)
	if err != nil {
		return fail(err)
	}
	defer rt.Close()
	if g.verbose {
		fmt.Fprintf(cmd.ErrOrStderr(), "wm: asking the Docker hosts, state in %s\n", cfg.StateDir)
	}
	if err := do(ctx, localHosts{rt.rec}); err != nil {
		return fail(err)
	}
	return nil
}

// stateHeld reports whether a running wm holds the state in dir.
func stateHeld(dir string) (bool, error) {
	st, err := store.OpenReadOnly(dir)
	switch {
	case errors.Is(err, store.ErrLocked):
		return true, nil
	case err == nil:
		return false, st.Close()
	}
	if _, serr := os.Stat(filepath.Join(dir, "wm.db")); errors.Is(serr, fs.ErrNotExist) {
		return false, nil // nothing reconciled yet
	}
	return false, err
}

// localHosts does the operations here.
type localHosts struct{ rec *reconciler.Reconciler }

func (l localHosts) Hosts(ctx context.Context) ([]reconciler.HostInfo, error) {
	return l.rec.Hosts(ctx)
}

func (l localHosts) Cordon(_ context.Context, host string) (store.Cordon, error) {
	return l.rec.Cordon(host)
}

func (l localHosts) Uncordon(_ context.Context, host string) (bool, error) {
	return l.rec.Uncordon(host)
}

func (l localHosts) Drain(ctx context.Context, host string, progress func(string)) (reconciler.DrainReport, error) {
	return l.rec.Drain(ctx, host, progress)
}

// adminHosts asks a running wm serve on its admin listener.
type adminHosts struct{ cfg *schema.ServerConfig }

// call sends method to path of the admin listener and returns the
// response when it is 200 OK; any other status is an error with the
// answer's text.
func (a adminHosts) call(ctx context.Context, method, path string, timeout time.Duration) (*http.Response, error) {
	client, base := adminClient(a.cfg)
	client.Timeout = timeout
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(adminHeader, "1")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", errNoAdmin, a.cfg.AdminListen, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("wm serve at %s: %s: %s", a.cfg.AdminListen, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp, nil
}

func (a adminHosts) Hosts(ctx context.Context) ([]reconciler.HostInfo, error) {
	resp, err := a.call(ctx, http.MethodGet, hostsPath, time.Minute)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var hosts []reconciler.HostInfo
	if err := json.NewDecoder(resp.Body).Decode(&hosts); err != nil {
		return nil, fmt.Errorf("wm serve's answer: %w", err)
	}
	return hosts, nil
}

func (a adminHosts) Cordon(ctx context.Context, host string) (store.Cordon, error) {
	resp, err := a.call(ctx, http.MethodPost, hostsPath+"/"+url.PathEscape(host)+"/cordon", 30*time.Second)
	if err != nil {
		return store.Cordon{}, err
	}
	defer resp.Body.Close()
	var c store.Cordon
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return store.Cordon{}, fmt.Errorf("wm serve's answer: %w", err)
	}
	return c, nil
}

func (a adminHosts) Uncordon(ctx context.Context, host string) (bool, error) {
	resp, err := a.call(ctx, http.MethodPost, hostsPath+"/"+url.PathEscape(host)+"/uncordon", 30*time.Second)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var out uncordonAnswer
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return false, fmt.Errorf("wm serve's answer: %w", err)
	}
	return out.WasCordoned, nil
}

// uncordonAnswer is the admin listener's answer to an uncordon.
type uncordonAnswer struct {
	WasCordoned bool `json:"wasCordoned"`
}

// drainLine is one line of the admin listener's answer to a drain: a step
// as it happens, then the report with the error that stopped it, if any.
type drainLine struct {
	Progress string                  `json:"progress,omitempty"`
	Report   *reconciler.DrainReport `json:"report,omitempty"`
	Error    string                  `json:"error,omitempty"`
}

func (a adminHosts) Drain(ctx context.Context, host string, progress func(string)) (reconciler.DrainReport, error) {
	resp, err := a.call(ctx, http.MethodPost, hostsPath+"/"+url.PathEscape(host)+"/drain", 0)
	if err != nil {
		return reconciler.DrainReport{Host: host}, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l drainLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return reconciler.DrainReport{Host: host}, fmt.Errorf("wm serve's answer: %w", err)
		}
		if l.Progress != "" && progress != nil {
			progress(l.Progress)
		}
		if l.Report != nil {
			if l.Error != "" {
				return *l.Report, errors.New(l.Error)
			}
			return *l.Report, nil
		}
	}
	return reconciler.DrainReport{Host: host}, fmt.Errorf("wm serve's answer ended before the drain did (it goes on there; see wm hosts): %w", errors.Join(sc.Err(), io.ErrUnexpectedEOF))
}

// printHosts prints a line per host, then each host's GPUs and
// containers.
func printHosts(w io.Writer, hosts []reconciler.HostInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tREACHABLE\tCORDONED\tGPUS USED\tGPUS FREE\tCONTAINERS")
	for _, h := range hosts {
		reach := "yes"
		if !h.Reachable {
			reach = "no"
		}
		cordon := "-"
		if h.Cordon != nil {
			cordon = fmt.Sprintf("%s since %s", h.Cordon.Reason, h.Cordon.Since.Format(time.RFC3339))
		}
		gpus := len(h.GPUs)
		used, free, containers := fmt.Sprintf("%d of %d", gpus-h.FreeGPUs(), gpus), fmt.Sprint(h.FreeGPUs()), fmt.Sprint(len(h.Containers))
		if !h.Reachable {
			// Not known: what it runs could not be read.
			used, free, containers = fmt.Sprintf("? of %d", gpus), "?", "?"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, reach, cordon, used, free, containers)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, h := range hosts {
		fmt.Fprintf(w, "\n%s (%s):\n", h.Name, h.Endpoint)
		if !h.Reachable {
			fmt.Fprintf(w, "  cannot be reached: %s\n", h.Error)
		}
		if !h.Reachable {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, g := range h.GPUs {
			var holders []string
			for _, x := range g.Holders {
				holders = append(holders, fmt.Sprintf("%s (%s)", x.Container, x.Owner))
			}
			if len(holders) == 0 {
				holders = []string{"free"}
			}
			fmt.Fprintf(tw, "  GPU %s\t%s\n", g.Device, strings.Join(holders, ", "))
		}
		for _, c := range h.Containers {
			var extra []string
			if len(c.GPUs) > 0 {
				extra = append(extra, "GPU "+strings.Join(c.GPUs, ","))
			}
			for _, p := range c.Ports {
				extra = append(extra, fmt.Sprintf("port %d→%d", p.Host, p.Guest))
			}
			if len(c.Volumes) > 0 {
				extra = append(extra, "volumes "+strings.Join(c.Volumes, ","))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Name, c.State, c.Repo, strings.Join(extra, "  "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// printDrain prints what a drain did.
func printDrain(w io.Writer, rep reconciler.DrainReport) {
	for _, m := range rep.Moved {
		line := fmt.Sprintf("moved %s (%s) from %s to %s", m.Container, m.Repo, m.From, m.To)
		for _, p := range m.Ports {
			line += fmt.Sprintf("; host port %d was taken there: port %d is now on %d", p.From, p.Guest, p.To)
		}
		if m.Recreate {
			line += "; the next pass of its repo recreates it there (it was made by another version)"
		}
		fmt.Fprintln(w, line)
	}
	for _, v := range rep.Volumes {
		fmt.Fprintf(w, "copied volume %s from %s to %s (%s)\n", v.Name, v.From, v.To, core.FormatBytes(v.Bytes))
	}
	for _, l := range rep.Left {
		fmt.Fprintln(w, "left on "+rep.Host+": "+l)
	}
}
