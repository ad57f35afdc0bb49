package main

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/whalemountain/wm/reconciler/access"
)

// The client commands: wm as a student's (or an admin's) client of a
// running wm serve's access API, with the server and token wm login
// stored.

// credentials are what wm login stores.
type credentials struct {
	Server string `json:"server"`
	Token  string `json:"token"`
}

// credentialsPath is where wm login stores the credentials:
// <user config dir>/whalemountain/credentials.json.
func credentialsPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no config folder to keep the login in: %w", err)
	}
	return filepath.Join(dir, "whalemountain", "credentials.json"), nil
}

// loadClient is the API client of the stored login; WM_SERVER and
// WM_TOKEN, when set, override it.
func loadClient() (*access.Client, error) {
	var c credentials
	p, err := credentialsPath()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &c); err != nil {
			return nil, fmt.Errorf("%s: %w (run wm login again)", p, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if s := os.Getenv("WM_SERVER"); s != "" {
		c.Server = s
	}
	if t := os.Getenv("WM_TOKEN"); t != "" {
		c.Token = t
	}
	if c.Server == "" || c.Token == "" {
		return nil, errors.New("not logged in: run wm login SERVER first")
	}
	return &access.Client{BaseURL: c.Server, Token: c.Token}, nil
}

// clientFailed prints err as the client commands do and returns the exit
// error.
func clientFailed(cmd *cobra.Command, err error) error {
	msg := err.Error()
	switch access.StatusOf(err) {
	case http.StatusUnauthorized:
		msg += "\n  your token was refused: run wm login again with a valid GitLab token"
	case http.StatusForbidden:
		msg += "\n  that is not yours"
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "wm:", msg)
	return exitError{exitInvalid}
}

// withClient runs f with the stored login's client and a context ended
// by SIGINT or SIGTERM.
func withClient(f func(ctx context.Context, cmd *cobra.Command, c *access.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := loadClient()
		if err != nil {
			return clientFailed(cmd, err)
		}
		ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		if err := f(ctx, cmd, c, args); err != nil {
			var ee exitError
			if errors.As(err, &ee) {
				return err
			}
			return clientFailed(cmd, err)
		}
		return nil
	}
}

// completeContainers completes a container's name from the server.
func completeContainers(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, err := loadClient()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := c.Containers(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, x := range list {
		out = append(out, x.LocalName)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func newLoginCmd() *cobra.Command {
	var tokenFile string
	cmd := &cobra.Command{
		Use:   "login SERVER",
		Short: "Log in to a WhaleMountain server with a GitLab token",
		Long: `Check a GitLab personal access token (scope read_user is enough) with the
WhaleMountain server at SERVER and keep both in the user's config folder
(credentials.json, readable by the user only) for the other client commands:
ps, logs, exec, cp, restart and sif get. The token is read from --token-file,
or from standard input (asked for, without echo, on a terminal). WM_SERVER
and WM_TOKEN override what is kept.`,
		Example: `  wm login https://wm.example.edu
  wm login https://wm.example.edu --token-file ~/.gitlab-token`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server := strings.TrimRight(args[0], "/")
			if u, err := url.Parse(server); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return fmt.Errorf("SERVER %q is not a URL such as https://wm.example.edu", args[0])
			}
			token, err := readToken(cmd, tokenFile)
			if err != nil {
				return clientFailed(cmd, err)
			}
			c := &access.Client{BaseURL: server, Token: token}
			id, err := c.WhoAmI(cmd.Context())
			if err != nil {
				return clientFailed(cmd, err)
			}
			if err := saveCredentials(credentials{Server: server, Token: token}); err != nil {
				return clientFailed(cmd, err)
			}
			who := id.Account
			if id.Admin {
				who += " (admin)"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s as %s\n", server, strings.TrimSpace(who))
			return nil
		},
	}
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the token from `FILE`")
	return cmd
}

// readToken reads the token from file, or stdin (without echo on a
// terminal).
func readToken(cmd *cobra.Command, file string) (string, error) {
	if file != "" {
		return readSecret("--token-file", file)
	}
	in := cmd.InOrStdin()
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), "GitLab token: ")
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	line, err := bufio.NewReader(io.LimitReader(in, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if line = strings.TrimSpace(line); line == "" {
		return "", errors.New("no token on standard input")
	}
	return line, nil
}

// saveCredentials writes c, mode 0600, in a folder of mode 0700.
func saveCredentials(c credentials) error {
	p, err := credentialsPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".credentials-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

func newPsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List your containers with their state and addresses",
		Long: `List your containers on the server you logged in to: name (as in wm.yaml),
state, health, the address each published port is reached at (host:port),
the repo, and its last pass with the reason of its outcome. --json prints
the API's answer.`,
		Args: cobra.NoArgs,
		RunE: withClient(func(ctx context.Context, cmd *cobra.Command, c *access.Client, _ []string) error {
			list, err := c.Containers(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			me, err := c.WhoAmI(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tHEALTH\tADDRESS\tREPO\tLAST PASS")
			for _, x := range list {
				var addrs []string
				for _, g := range slices.Sorted(maps.Keys(x.Addresses)) {
					addrs = append(addrs, x.Addresses[g]+"->"+g)
				}
				name := x.LocalName
				if me.Account != x.Owner {
					name = x.Name
				}
				pass := "-"
				if !x.LastPass.IsZero() {
					pass = x.LastPass.Local().Format("2006-01-02 15:04") + " " + string(x.Reason)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", name, x.State, orDash(x.Health), orDash(strings.Join(addrs, " ")), x.Repo, pass)
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newLogsCmd() *cobra.Command {
	var o access.LogsRequest
	var pod bool
	cmd := &cobra.Command{
		Use:               "logs NAME",
		Short:             "Print a container's logs",
		Long:              `Print the logs of your container NAME (its name in wm.yaml), or of your pod NAME with --pod; -f follows them until the container stops or Ctrl-C.`,
		Example:           "  wm logs web -f --tail 20",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeContainers,
		RunE: withClient(func(ctx context.Context, cmd *cobra.Command, c *access.Client, args []string) error {
			logs := c.Logs
			if pod {
				logs = c.PodLogs
			}
			rc, err := logs(ctx, args[0], o)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(cmd.OutOrStdout(), rc)
			if ctx.Err() != nil {
				return nil
			}
			return err
		}),
	}
	cmd.Flags().BoolVarP(&o.Follow, "follow", "f", false, "follow the logs")
	cmd.Flags().IntVar(&o.Tail, "tail", 0, "only the last `N` lines")
	cmd.Flags().StringVar(&o.Since, "since", "", "only lines since a duration ago (10m) or an RFC 3339 time")
	cmd.Flags().BoolVar(&pod, "pod", false, "NAME is a Kubernetes pod of yours, not a container")
	return cmd
}

func newRestartCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "restart NAME",
		Short:             "Restart a container",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeContainers,
		RunE: withClient(func(ctx context.Context, cmd *cobra.Command, c *access.Client, args []string) error {
			if err := c.Restart(ctx, args[0]); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		}),
	}
}

func newExecCmd() *cobra.Command {
	var interactive, tty, pod bool
	cmd := &cobra.Command{
		Use:   "exec NAME [-i] [-t] -- CMD [ARG...]",
		Short: "Run a command in a container",
		Long: `Run CMD in your running container NAME (or pod NAME, with --pod), as the container's user. -i sends
standard input to it; -t gives it a terminal (the local one is put in raw
mode, and its size follows the window's). wm exits with the command's exit
code.`,
		Example:           "  wm exec -it web -- sh\n  wm exec web -- ls /data",
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeContainers,
		RunE: withClient(func(ctx context.Context, cmd *cobra.Command, c *access.Client, args []string) error {
			x := access.ExecRequest{Cmd: args[1:], TTY: tty, Stdout: cmd.OutOrStdout(), Stderr: cmd.ErrOrStderr()}
			if interactive {
				x.Stdin = cmd.InOrStdin()
			}
			if tty {
				restore, resize, rows, cols := rawTerminal(ctx, cmd)
				defer restore()
				x.Rows, x.Cols, x.Resize = rows, cols, resize
			}
			exec := c.Exec
			if pod {
				exec = c.PodExec
			}
			code, err := exec(ctx, args[0], x)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code}
			}
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "send standard input to the command")
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "give the command a terminal")
	cmd.Flags().BoolVar(&pod, "pod", false, "NAME is a Kubernetes pod of yours, not a container")
	return cmd
}

// rawTerminal puts stdin in raw mode when it is a terminal, and watches
// the window's size; restore puts it back.
func rawTerminal(ctx context.Context, cmd *cobra.Command) (restore func(), resize <-chan access.Resize, rows, cols uint) {
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}, nil, 0, 0
	}
	state, err := term.MakeRaw(int(f.Fd()))
	if err != nil {
		return func() {}, nil, 0, 0
	}
	if w, h, err := term.GetSize(int(f.Fd())); err == nil {
		rows, cols = uint(h), uint(w)
	}
	return func() { _ = term.Restore(int(f.Fd()), state) }, watchResize(ctx, int(f.Fd())), rows, cols
}

func newCpCmd() *cobra.Command {
	var pod bool
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files into or out of a container",
		Long: `Copy a file or folder between this machine and your container (or pod, with
--pod): one of SRC and DST is NAME:PATH. Into a container, PATH is the
folder the file or folder goes in; out of one, as with docker cp, it goes
in DST when DST is a folder, and is named DST when DST does not exist yet.
A pod's image needs tar for it.`,
		Example: "  wm cp notes.txt web:/data\n  wm cp web:/data/results ./\n  wm cp --pod train:/tmp/model.pt ./",
		Args:    cobra.ExactArgs(2),
		RunE: withClient(func(ctx context.Context, cmd *cobra.Command, c *access.Client, args []string) error {
			copyTo, copyFrom := c.CopyTo, c.CopyFrom
			if pod {
				copyTo, copyFrom = c.PodCopyTo, c.PodCopyFrom
			}
			srcName, srcPath, srcRemote := remotePath(args[0])
			dstName, dstPath, dstRemote := remotePath(args[1])
			switch {
			case srcRemote == dstRemote:
				return errors.New("one of SRC and DST must be NAME:PATH, the other a local path")
			case dstRemote:
				pr, pw := io.Pipe()
				go func() { pw.CloseWithError(tarPath(pw, args[0])) }()
				return copyTo(ctx, dstName, dstPath, pr)
			default:
				rc, err := copyFrom(ctx, srcName, srcPath)
				if err != nil {
					return err
				}
				defer rc.Close()
				// As docker cp: into DST when it is a folder; named DST
				// when it does not exist yet.
				dst, as := args[1], ""
				if _, err := os.Stat(dst); errors.Is(err, fs.ErrNotExist) {
					dst, as = filepath.Dir(dst), filepath.Base(dst)
				}
				return untarInto(rc, dst, as)
			}
		}),
	}
	cmd.Flags().BoolVar(&pod, "pod", false, "NAME is a Kubernetes pod of yours, not a container")
	return cmd
}

// remotePath splits NAME:PATH (PATH absolute).
func remotePath(s string) (name, p string, ok bool) {
	name, p, ok = strings.Cut(s, ":")
	if !ok || name == "" || !strings.HasPrefix(p, "/") || strings.ContainsAny(name, `/\`) {
		return "", "", false
	}
	return name, p, true
}

// tarPath writes a tar archive of the file or folder at src, named from
// its base name; links are kept as links.
func tarPath(w io.Writer, src string) error {
	tw := tar.NewWriter(w)
	base := filepath.Dir(filepath.Clean(src))
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// untarInto unpacks the regular files and folders of a tar archive into
// the folder dst (made when missing). A name that would land outside dst
// is refused; links and anything else are skipped.
func untarInto(r io.Reader, dst, as string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the archive: %w", err)
		}
		name := path.Clean(h.Name)
		if as != "" {
			// The archive holds one file or folder, named as its source:
			// it is named as after all.
			_, rest, _ := strings.Cut(name, "/")
			name = path.Join(as, rest)
		}
		if !filepath.IsLocal(name) {
			return fmt.Errorf("the archive names %q, outside the folder", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if dir := path.Dir(name); dir != "." {
				if err := root.MkdirAll(dir, 0o755); err != nil {
					return err
				}
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fs.FileMode(h.Mode)&0o755|0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
}

// newSIFGetCmd is wm sif get NAME: download one of your SIFs.
func newSIFGetCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "get NAME [-o FILE]",
		Short: "Download one of your SIFs from the server",
		Long: `Download your SIF NAME (its name in wm.yaml's singularity entries) from the
server you logged in to, into FILE (default NAME.sif), and check it against
the server's sha256.`,
		Args: cobra.ExactArgs(1),
		RunE: withClient(func(ctx context.Context, cmd *cobra.Command, c *access.Client, args []string) error {
			list, err := c.SIFs(ctx)
			if err != nil {
				return err
			}
			i := slices.IndexFunc(list, func(s access.SIF) bool { return s.Name == args[0] })
			if i < 0 {
				return fmt.Errorf("you have no SIF %s", args[0])
			}
			if out == "" {
				out = args[0] + ".sif"
			}
			resp, err := c.Download(ctx, list[i].URL, nil)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			f, err := os.CreateTemp(filepath.Dir(out), ".wm-sif-*")
			if err != nil {
				return err
			}
			defer os.Remove(f.Name())
			h := sha256.New()
			n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("download %s: %w", args[0], err)
			}
			if want := strings.Trim(resp.Header.Get("ETag"), `"`); want != "" && want != hex.EncodeToString(h.Sum(nil)) {
				return fmt.Errorf("download %s: the file does not match the server's sha256 %s", args[0], want)
			}
			if err := os.Rename(f.Name(), out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%d bytes)\n", out, n)
			return nil
		}),
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to `FILE`")
	return cmd
}

// clientKubeconfig prints a kubeconfig with a credential of the caller's
// own namespace, from the server they logged in to.
func clientKubeconfig(cmd *cobra.Command) error {
	return withClient(func(ctx context.Context, cmd *cobra.Command, c *access.Client, _ []string) error {
		cred, err := c.Kubeconfig(ctx)
		if err != nil {
			return err
		}
		out := clientcmdapi.NewConfig()
		out.Clusters["whalemountain"] = &clientcmdapi.Cluster{Server: cred.Server, CertificateAuthorityData: cred.CA}
		out.AuthInfos[cred.Namespace] = &clientcmdapi.AuthInfo{Token: cred.Token}
		out.Contexts[cred.Namespace] = &clientcmdapi.Context{Cluster: "whalemountain", AuthInfo: cred.Namespace, Namespace: cred.Namespace}
		out.CurrentContext = cred.Namespace
		b, err := clientcmd.Write(*out)
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "wm: valid until %s\n", cred.Expires.Local().Format("15:04 MST"))
		_, err = cmd.OutOrStdout().Write(b)
		return err
	})(cmd, nil)
}
