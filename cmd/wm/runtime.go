package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/gitlab"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/kube"
	"github.com/whalemountain/wm/reconciler/registry"
	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// loadConfig reads the server config, or the embedded defaults.
func loadConfig(path string) (*schema.ServerConfig, error) {
	if path == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		return schema.DefaultServerConfig(wd)
	}
	return schema.LoadServer(path)
}

// runtime is everything a reconciling command needs, wired from a config.
type runtime struct {
	cfg     *schema.ServerConfig
	store   *store.Store
	engines []*docker.Engine
	rec     *reconciler.Reconciler
	// gitlab is set when the config has a GitLab source.
	gitlab *gitlab.Service
	sif    *sif.Builder
	// loop is the poll loop of wm serve, once it runs.
	loop *reconciler.Loop
	// daemon is the local Docker daemon the SIF builder reads images
	// from when their registry cannot be reached.
	daemon *docker.Engine
	// scratch, when not "", is a temporary folder a read-only runtime
	// keeps its git cache (and, without a state file, an empty store)
	// in; Close removes it.
	scratch string
}

// sifOptions are the SIF builder's options from the server config: the
// configured registry's credentials go to it only; daemon, when not nil,
// is the local Docker daemon for images no registry has.
func sifOptions(cfg *schema.ServerConfig, auth core.RegistryAuth, daemon sif.ImageStore) sif.Options {
	o := sif.Options{Docker: daemon, Compression: cfg.SIF.Compression, Timeout: cfg.SIF.Timeout.Std(), Concurrency: cfg.SIF.Concurrency, TempDir: cfg.SIF.TempDir,
		MaxUnpackedBytes: schema.SizeBytes(cfg.SIF.MaxUnpackedSize), MaxFiles: cfg.SIF.MaxFiles, MaxCompressedBytes: schema.SizeBytes(cfg.SIF.MaxCompressedSize)}
	if h := cfg.Registry.Host; h != "" {
		host, _, _ := strings.Cut(h, "/")
		if cfg.Registry.Insecure {
			o.Insecure = []string{host}
		}
		if auth.Username != "" {
			o.Auth = map[string]sif.Auth{host: {Username: auth.Username, Password: auth.Password}}
		}
	}
	return o
}

// registryAuth is the configured registry's credentials, empty unless
// registry.passwordFile is set (the schema then requires a username).
func registryAuth(cfg *schema.ServerConfig) (core.RegistryAuth, error) {
	if cfg.Registry.PasswordFile == "" {
		return core.RegistryAuth{}, nil
	}
	pw, err := readSecret("registry.passwordFile", cfg.Registry.PasswordFile)
	if err != nil {
		return core.RegistryAuth{}, err
	}
	return core.RegistryAuth{Username: cfg.Registry.Username, Password: pw}, nil
}

// readSecret reads a secret from a file, without surrounding space.
func readSecret(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return s, nil
}

// newRuntime connects to the Docker hosts, opens the state store and
// builds the reconciler. progress, when not nil, receives pass stages.
// A readOnly runtime (wm plan) writes nothing in the state folder and
// does not create it: see openState.
func newRuntime(cfg *schema.ServerConfig, log *slog.Logger, progress io.Writer, readOnly bool) (*runtime, error) {
	st, scratch, err := openState(cfg.StateDir, readOnly)
	if err != nil {
		return nil, err
	}
	warnSetAside(log, st)
	rt := &runtime{cfg: cfg, store: st, scratch: scratch}
	var engines []core.Engine
	for _, h := range cfg.Docker.Hosts {
		e, err := docker.New(h.Name, h.Endpoint, docker.WithTLS(h.TLS), docker.WithInstance(cfg.Instance))
		if err != nil {
			rt.Close()
			return nil, fmt.Errorf("docker host %s: %w", h.Name, err)
		}
		rt.engines = append(rt.engines, e)
		engines = append(engines, e)
	}
	opts := []reconciler.Option{reconciler.WithLogger(log)}
	if progress != nil {
		opts = append(opts, reconciler.WithProgress(func(repo, stage string) {
			fmt.Fprintf(progress, "  %s: %s\n", repo, stage)
		}))
	}
	auth, err := registryAuth(cfg)
	if err != nil {
		rt.Close()
		return nil, err
	}
	if auth.Username != "" {
		opts = append(opts, reconciler.WithRegistryAuth(&auth))
	}
	if cfg.Registry.Host != "" {
		opts = append(opts, reconciler.WithRegistry(registry.New(cfg.Registry.Host, cfg.Registry.Insecure, auth.Username, auth.Password)))
	}
	rt.daemon = localDaemon(log)
	rt.sif = sif.NewBuilder(sifOptions(cfg, auth, imageStore(rt.daemon)))
	opts = append(opts, reconciler.WithSIFBuilder(rt.sif))
	if k := cfg.Kubernetes; k != nil {
		backend, err := kubeBackend(cfg, auth)
		if err != nil {
			rt.Close()
			return nil, err
		}
		opts = append(opts, reconciler.WithCluster(backend))
	}
	cache := filepath.Join(cfg.StateDir, "git")
	if rt.scratch != "" {
		cache = filepath.Join(rt.scratch, "git")
	}
	// One Source per cache folder: each keeps its own per-repo locks.
	var git reconciler.GitSource = gitsource.New(filepath.Join(cache, "plain"))
	if g := cfg.Sources.GitLab; g != nil {
		token, err := readSecret("sources.gitlab.tokenFile", g.TokenFile)
		if err != nil {
			rt.Close()
			return nil, err
		}
		client, err := gitlab.New(*g, token, log)
		if err != nil {
			rt.Close()
			return nil, err
		}
		svcOpts := []gitlab.ServiceOption{gitlab.WithJobTimeout(cfg.Poll.PassTimeout.Std()), gitlab.WithShutdownGrace(cfg.Poll.ShutdownGrace.Std())}
		if s := cfg.Semester; s != nil && s.ExtensionLabel != "" {
			svcOpts = append(svcOpts, gitlab.WithExtensions(s.ExtensionLabel, cfg.Access.GitLabAdminGroup, cfg.Access.Admins))
		}
		rt.gitlab = gitlab.NewService(client, *g, cfg.Policy.Quota, log, svcOpts...)
		opts = append(opts, reconciler.WithReporter(rt.gitlab.Reporter()))
		// The token goes to GitLab's own URLs only.
		git = reconciler.GitRouter{
			Routes:  []reconciler.GitRoute{{Prefix: g.URL + "/", Source: gitsource.New(filepath.Join(cache, "gitlab"), gitsource.WithBasicAuth("oauth2", token))}},
			Default: git,
		}
	}
	rt.rec, err = reconciler.New(cfg, git, engines, st, opts...)
	if err != nil {
		rt.Close()
		return nil, err
	}
	return rt, nil
}

// repos lists the repos of every source of the config: the static list,
// the folders and GitLab. Any source failing fails the listing, so that a
// caller never takes a partial list for the whole.
func (rt *runtime) repos(log *slog.Logger) ([]reconciler.Repo, error) {
	repos, skipped, err := reconciler.Repos(rt.cfg)
	for _, s := range skipped {
		log.Warn("repo skipped", "why", s)
	}
	if err != nil || rt.gitlab == nil {
		return repos, err
	}
	more, err := rt.gitlab.Repos()
	if err != nil {
		return nil, err
	}
	repos = append(repos, more...)
	slices.SortFunc(repos, func(a, b reconciler.Repo) int { return strings.Compare(a.Key, b.Key) })
	return repos, nil
}

// localDaemon is the local Docker daemon (DOCKER_HOST, else the local
// socket), from which a SIF build reads an image its registry cannot
// serve; nil, logged, when DOCKER_HOST does not name one: SIF builds then
// read registries only. It only reads images, so it needs no instance.
func localDaemon(log *slog.Logger) *docker.Engine {
	e, err := docker.New("local", "")
	if err != nil {
		log.Warn("SIF builds read registries only", "err", err)
		return nil
	}
	return e
}

// The local daemon's engine is what SIF builds read images from.
var _ sif.ImageStore = (*docker.Engine)(nil)

// imageStore is e as a SIF image store; nil (not a nil *docker.Engine)
// when there is none.
func imageStore(e *docker.Engine) sif.ImageStore {
	if e == nil {
		return nil
	}
	return e
}

// Close releases the store, the builder and the engine connections.
func (rt *runtime) Close() {
	if rt.sif != nil {
		rt.sif.Close()
	}
	if rt.daemon != nil {
		rt.daemon.Close()
	}
	for _, e := range rt.engines {
		e.Close()
	}
	rt.store.Close()
	if rt.scratch != "" {
		os.RemoveAll(rt.scratch)
	}
}

// openState opens the state store in dir. For writing, the folder and the
// file are created when missing. readOnly opens the state file read-only
// (a write fails), creates nothing in dir and gives a scratch folder for
// the git cache; without a state file in dir yet, the store is an empty
// one in the scratch folder. A running wm holding the state is ErrLocked.
func openState(dir string, readOnly bool) (st *store.Store, scratch string, err error) {
	if !readOnly {
		st, err = store.Open(dir)
		return st, "", err
	}
	if scratch, err = os.MkdirTemp("", "wm-readonly-"); err != nil {
		return nil, "", fmt.Errorf("scratch folder: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(scratch)
		}
	}()
	if _, err := os.Stat(filepath.Join(dir, "wm.db")); errors.Is(err, fs.ErrNotExist) {
		// Nothing reconciled yet: plan from an empty state.
		empty, err := store.Open(filepath.Join(scratch, "state"))
		if err != nil {
			return nil, "", err
		}
		if err := empty.Close(); err != nil {
			return nil, "", fmt.Errorf("empty state: %w", err)
		}
		dir = filepath.Join(scratch, "state")
	}
	st, err = store.OpenReadOnly(dir)
	if errors.Is(err, store.ErrLocked) {
		return nil, "", fmt.Errorf("%w (%s): a read-only command reads it only while no wm serve or wm reconcile runs on it", err, dir)
	}
	if err != nil {
		return nil, "", err
	}
	return st, scratch, nil
}

// warnSetAside says so when opening the store set an unreadable state
// file aside.
func warnSetAside(log *slog.Logger, st *store.Store) {
	if aside := st.SetAside(); aside != "" {
		log.Warn("the state file could not be read: it was set aside and an empty one made; passes rebuild it from the engines' labels, "+
			"but the cordons, idle culls, pass history and audit log it held are only in the file set aside", "setAside", aside)
	}
}

// newLogger logs text to w at info level, or debug with verbose.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// kubeBackend connects to the configured cluster. With registry
// credentials, every student namespace gets a pull secret for them.
func kubeBackend(cfg *schema.ServerConfig, auth core.RegistryAuth) (*kube.Backend, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubernetes.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes.kubeconfig: %w", err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	set := kube.Settings{Kubernetes: *cfg.Kubernetes, Quota: cfg.Policy.Quota, Defaults: cfg.Policy.Defaults, Instance: cfg.Instance}
	if auth.Username != "" && cfg.Registry.Host != "" {
		creds := base64.StdEncoding.EncodeToString([]byte(auth.Username + ":" + auth.Password))
		set.PullSecret, err = json.Marshal(map[string]any{"auths": map[string]any{
			cfg.Registry.Host: map[string]string{"username": auth.Username, "password": auth.Password, "auth": creds},
		}})
		if err != nil {
			return nil, err
		}
	}
	return kube.New(client, set), nil
}
