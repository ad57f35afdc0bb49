package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

func newStatusCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every repo's revision, condition and containers with their addresses",
		Long: `Show, from the state store, each repo's owner, revision, condition, and each
of its containers with the address its ports are reached at (host:port).
It reads the state directory or, while wm serve holds it, asks the running
wm serve on its admin listener (adminListen).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, repos, err := loadState(cmd, g)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "OWNER\tREPO\tREVISION\tCONDITION\tWORKLOAD\tSTATE\tADDRESS")
			for _, r := range repos {
				rows := workloads(cfg, r)
				if len(rows) == 0 {
					rows = [][3]string{{"-", "", ""}}
				}
				for i, row := range rows {
					lead := fmt.Sprintf("%s\t%s\t%s\t%s", r.Owner, r.Key, shortRev(r.AppliedRevision), condition(r))
					if i > 0 {
						lead = "\t\t\t"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", lead, row[0], row[1], row[2])
				}
			}
			return w.Flush()
		},
	}
	return cmd
}

// loadState loads the config and every repo's state, printing what went
// wrong and returning exitError{1} on failure. With -v it says on stderr
// where the state was read.
func loadState(cmd *cobra.Command, g *globals) (*schema.ServerConfig, []core.RepoState, error) {
	cfg, err := loadConfig(g.config)
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), err)
		return nil, nil, exitError{exitInvalid}
	}
	repos, from, err := readStatus(cmd.Context(), cfg)
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "wm:", err)
		return nil, nil, exitError{exitInvalid}
	}
	if g.verbose {
		fmt.Fprintf(cmd.ErrOrStderr(), "wm: %d repo(s), state read from %s\n", len(repos), from)
	}
	return cfg, repos, nil
}

// readStatus reads every repo's state from the store (read-only) or, while
// wm serve holds the store, from the status endpoint of its admin
// listener; from says which.
func readStatus(ctx context.Context, cfg *schema.ServerConfig) (repos []core.RepoState, from string, err error) {
	st, err := store.OpenReadOnly(cfg.StateDir)
	if errors.Is(err, store.ErrLocked) {
		repos, err = fetchStatus(ctx, cfg)
		return repos, "the running wm serve at " + cfg.AdminListen, err
	}
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	repos, err = st.Repos()
	return repos, "the state folder " + cfg.StateDir, err
}

// fetchStatus asks a running wm serve for the repos' state.
func fetchStatus(ctx context.Context, cfg *schema.ServerConfig) ([]core.RepoState, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	client, base := adminClient(cfg)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+statusPath, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", errNoAdmin, cfg.AdminListen, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status from %s: %s", cfg.AdminListen, resp.Status)
	}
	var repos []core.RepoState
	return repos, json.NewDecoder(resp.Body).Decode(&repos)
}

// workloads are the rows of a repo in wm status: its containers with their
// addresses and the GPUs they hold, its Kubernetes pods with their namespace, and its SIFs with
// the path they are downloaded at.
func workloads(cfg *schema.ServerConfig, r core.RepoState) [][3]string {
	var rows [][3]string
	for _, c := range r.Containers {
		where := addresses(cfg, c)
		if len(c.GPUs) > 0 {
			gpus := "GPU " + strings.Join(c.GPUs, ",") + " on " + c.Host
			if len(c.Ports) == 0 {
				where = gpus
			} else {
				where += " " + gpus
			}
		}
		rows = append(rows, [3]string{c.Name, c.Health, where})
	}
	for _, p := range r.Pods {
		where := ""
		if cfg.Kubernetes != nil {
			where = "namespace " + cfg.Kubernetes.NamespacePrefix + r.Owner
		}
		rows = append(rows, [3]string{"pod " + p.Name, p.Phase, where})
	}
	for _, s := range r.SIFs {
		rows = append(rows, [3]string{"sif " + s.Name, "Built", "/artifacts/" + r.Owner + "/" + s.Name + ".sif"})
	}
	return rows
}

// condition summarizes a repo's conditions in one word and a reason.
func condition(r core.RepoState) string {
	if c := r.Condition(core.Stalled); c != nil && c.Status {
		return "Stalled/" + string(c.Reason)
	}
	if c := r.Condition(core.Ready); c != nil {
		if c.Status {
			return "Ready"
		}
		return "NotReady/" + string(c.Reason)
	}
	return "Unknown"
}

// addresses lists "host:port" for each published port, guest port first.
func addresses(cfg *schema.ServerConfig, c core.ContainerStatus) string {
	host := c.Host
	for _, h := range cfg.Docker.Hosts {
		if h.Name == c.Host {
			host = hostAddress(h.Endpoint)
		}
	}
	guests := make([]string, 0, len(c.Ports))
	for g := range c.Ports {
		guests = append(guests, g)
	}
	sort.Strings(guests)
	var out []string
	for _, g := range guests {
		out = append(out, fmt.Sprintf("%s:%d→%s", host, c.Ports[g], g))
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " ")
}

// hostAddress is where a Docker host's published ports are reached.
func hostAddress(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme == "unix" || u.Hostname() == "" {
		return "localhost"
	}
	return u.Hostname()
}
