package reconciler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/health"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// GitSource is the git backend as a pass uses it.
type GitSource interface {
	Head(ctx context.Context, url, branch string) (string, error)
	ReadFile(ctx context.Context, url, branch, rev, path string, maxSize int64) ([]byte, error)
}

// Registry answers whether the configured registry has an image, without
// pulling it; *registry.Client is one.
type Registry interface {
	Exists(ctx context.Context, ref string) (bool, error)
}

var _ GitSource = (*gitsource.Source)(nil)

// WmFile is the name of the file a repo declares itself in.
const WmFile = "wm.yaml"

// StopTimeout is how long a container gets to stop before it is killed.
const StopTimeout = 10 * time.Second

// Reconciler makes the Docker hosts match what repos declare, one repo
// per call of Reconcile. It is safe for concurrent use: passes of one
// owner are serialized (their quota, names and ports interact), passes of
// different owners run in parallel.
type Reconciler struct {
	cfg     *schema.ServerConfig
	git     GitSource
	engines []core.Engine // in the config's host order
	hosts   map[string]schema.DockerHost
	store   *store.Store
	images  imageResolver
	auth    *core.RegistryAuth
	now     func() time.Time
	log     *slog.Logger
	// Progress, when set, is told the stage of a pass before each slow one.
	progress func(repo, stage string)
	reporter Reporter
	registry Registry
	cluster  core.Cluster
	sif      core.SIFBuilder
	// metrics, when set (SetMetrics), records passes (metrics.go).
	metrics *Metrics

	ownerLocks sync.Map // owner → *sync.Mutex
	// gpuMu makes choosing GPU devices and creating the container that
	// holds them one step across every pass, so that two passes never
	// give out one device twice.
	gpuMu sync.Mutex
}

// Option configures a Reconciler.
type Option func(*Reconciler)

// WithClock replaces time.Now (for expiry tests).
func WithClock(now func() time.Time) Option { return func(r *Reconciler) { r.now = now } }

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(r *Reconciler) { r.log = l } }

// WithProgress reports each slow stage of a pass as it starts.
func WithProgress(f func(repo, stage string)) Option { return func(r *Reconciler) { r.progress = f } }

// Reporter is told about passes where students look (GitLab commit
// statuses). Its methods are called synchronously and must not fail the
// pass: a reporter logs its own errors.
type Reporter interface {
	// PassStarted is called once a pass knows the revision it works on.
	PassStarted(ctx context.Context, repo Repo, rev string)
	// PassFinished is called after the pass's outcome was recorded.
	PassFinished(ctx context.Context, repo Repo, res Result, err error)
}

// WithReporter sets the reporter of passes (not of plans).
func WithReporter(rep Reporter) Option { return func(r *Reconciler) { r.reporter = rep } }

// WithSIFBuilder builds wm.yaml's Singularity images into the artifacts
// folder of the server config.
func WithSIFBuilder(b core.SIFBuilder) Option { return func(r *Reconciler) { r.sif = b } }

// WithCluster runs wm.yaml's pods on a Kubernetes cluster.
func WithCluster(c core.Cluster) Option { return func(r *Reconciler) { r.cluster = c } }

// WithRegistry gates rollouts on the registry: an image of the configured
// registry that is not on a host is first looked up there, and a commit
// whose image CI has not pushed yet waits, without the engine ever trying
// (and failing) to pull it.
func WithRegistry(reg Registry) Option { return func(r *Reconciler) { r.registry = reg } }

// WithRegistryAuth sets the credentials used to pull from the configured
// registry (and only from it).
func WithRegistryAuth(a *core.RegistryAuth) Option { return func(r *Reconciler) { r.auth = a } }

// New returns a Reconciler over the given git source, engines (one per
// configured Docker host, in any order) and store.
func New(cfg *schema.ServerConfig, git GitSource, engines []core.Engine, st *store.Store, opts ...Option) (*Reconciler, error) {
	r := &Reconciler{
		cfg:   cfg,
		git:   git,
		hosts: map[string]schema.DockerHost{},
		store: st,
		images: imageResolver{
			registry:   cfg.Registry.Host,
			allowed:    cfg.Policy.AllowedRegistries,
			public:     cfg.Registry.PublicPaths,
			repo:       st.Repo,
			ownerRepos: st.OwnerRepos,
		},
		now: time.Now,
		log: slog.New(slog.DiscardHandler),
	}
	byName := map[string]core.Engine{}
	for _, e := range engines {
		byName[e.Name()] = e
	}
	for _, h := range cfg.Docker.Hosts {
		e, ok := byName[h.Name]
		if !ok {
			return nil, fmt.Errorf("no engine for docker host %q", h.Name)
		}
		r.engines = append(r.engines, e)
		r.hosts[h.Name] = h
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Result is what one pass found and did.
type Result struct {
	Repo     Repo
	Revision string
	// Plan is what the pass applied (or, for Plan, would apply).
	Plan Plan
	// HeldRemovals counts removals the prune limit held back.
	HeldRemovals int
	// Containers is the state of the repo's containers after the pass.
	Containers []core.ContainerStatus
	// Ready is true when every container is as wm.yaml asks.
	Ready bool
	// Usage is what the repo's wm.yaml counts against the quota, and
	// OwnerUsage what all the owner's repos would count with it.
	Usage, OwnerUsage core.Usage
	// Pods is the state of the repo's Kubernetes pods after the pass.
	Pods []core.PodStatus
	// SIFs are the repo's Singularity images after the pass.
	SIFs []core.SIFStatus
	// Message says in a line what happened or why not.
	Message string
}

// pass carries one pass of one repo from step to step.
type pass struct {
	repo   Repo
	dryRun bool
	state  core.RepoState
	rev    string
	file   *schema.File
	// ownerLive are the owner's containers on every host, live the
	// repo's. allLive, every managed container on every host, is listed
	// only when a decision needs it (everyone): placing a new container,
	// a new host port, the prune limit.
	ownerLive []Live
	allLive   []Live
	allListed bool
	live      []Live
	// toPull are the (host, image) pairs gateImages found missing.
	toPull [][2]string
	// down are the Docker hosts that could not be reached this pass.
	down    map[string]error
	desired []Desired
	// livePods are the owner's pods in the cluster (all their repos),
	// pods those this repo declares.
	livePods []core.Pod
	pods     []core.PodSpec
	// clusterDown marks a pass of a repo without pods that went on while
	// the cluster could not be reached.
	clusterDown bool
	sifRefs     map[string]string // SIF name → resolved image reference
	usage       core.Usage
	expired     bool
	// expiry is when the repo's containers stop; cleanedUp marks a repo
	// expired past semester.cleanupAfter, whose containers and pods go.
	expiry    expiry
	cleanedUp bool
	// culled are the containers idle culling stopped, by wm.yaml name.
	culled map[string]store.Cull
	res    Result
	// loaded is the repo's state as the pass found it, encoded: a pass
	// that leaves it so writes nothing.
	loaded []byte
	// resolved marks a pass that knows what the repo declares.
	resolved bool
	// statusRead marks a failed pass whose containers and pods were read
	// back, so that its status shows them as they are.
	statusRead bool
	// unchanged marks a pass that found the revision already stalled for
	// a reason only a new commit can fix: nothing is redone or recorded.
	unchanged bool
	// retiring marks the pass of Retire: what goes, goes because the
	// repo is gone (the log says so).
	retiring bool
}

// step is one stage of a pass; a pass runs its steps in order and stops
// at the first error.
type step struct {
	name string
	run  func(ctx context.Context, p *pass) error
}

func (r *Reconciler) steps(dryRun bool) []step {
	steps := []step{
		{"fetch source", r.fetch},
		{"parse wm.yaml", r.parse},
		{"list containers", r.listLive},
		{"list pods", r.observePods},
		{"resolve", r.resolve},
		{"check quota", r.checkQuota},
		{"plan", r.plan},
		{"check images", r.gateImages},
	}
	if dryRun {
		return steps
	}
	return append(steps,
		step{"check state", r.stateWritable},
		step{"check admission", r.checkAdmission},
		step{"pull images", r.pullImages},
		step{"apply containers", r.apply},
		step{"apply pods", r.applyPods},
		step{"build SIFs", r.buildSIFs},
		step{"check health", r.checkHealth},
	)
}

// Reconcile runs one pass for repo: it reads the branch head's wm.yaml and
// makes the repo's containers match it. The repo's status and history are
// written whatever happens, in one deferred block. The error, when not
// nil, is classified by Classify.
func (r *Reconciler) Reconcile(ctx context.Context, repo Repo) (res Result, err error) {
	return r.run(ctx, repo, false)
}

// Plan runs a pass up to the plan and returns it, changing nothing: no
// container, no port allocation, no status.
func (r *Reconciler) Plan(ctx context.Context, repo Repo) (Result, error) {
	return r.run(ctx, repo, true)
}

func (r *Reconciler) run(ctx context.Context, repo Repo, dryRun bool) (res Result, err error) {
	lock := r.ownerLock(repo.Owner)
	lock.Lock()
	defer lock.Unlock()

	start := r.now()
	p := &pass{repo: repo, dryRun: dryRun, res: Result{Repo: repo}}
	state, ok, err := r.store.Repo(repo.Key)
	if err != nil {
		return p.res, err
	}
	p.state = state
	p.loaded = []byte("{}")
	if ok {
		p.loaded, _ = json.Marshal(state)
	}
	// Credentials in a configured URL are for fetching only: state is
	// printed and served, so it never holds them.
	p.state.Key, p.state.Owner, p.state.URL, p.state.Branch = repo.Key, repo.Owner, gitsource.ScrubURL(repo.URL), repo.Branch

	if !dryRun {
		defer func() {
			if err != nil && p.resolved && !p.unchanged {
				// What runs now, whatever the pass got to: best effort,
				// the pass's own error is what is reported.
				if _, serr := r.readStatus(ctx, p); serr != nil {
					r.log.Debug("status not read back", "repo", repo.Key, "err", serr)
				}
				p.statusRead = true
			}
			if werr := r.record(p, start, err); werr != nil && err == nil {
				err = werr
			}
			res = p.res
			r.metrics.pass(p, err)
			if r.reporter != nil && !p.unchanged && p.rev != "" {
				r.reporter.PassFinished(ctx, repo, res, err)
			}
		}()
	}
	for _, s := range r.steps(dryRun) {
		if r.progress != nil {
			r.progress(repo.Key, s.name)
		}
		began := time.Now()
		err := s.run(ctx, p)
		r.metrics.step(dryRun, s.name, began)
		if err != nil {
			r.log.Debug("pass stopped", "repo", repo.Key, "step", s.name, "err", err)
			p.res.Message = err.Error()
			return p.res, err
		}
	}
	return p.res, nil
}

// stateWritable stops a pass that would change something while the state
// cannot be written (its disk read-only, or gone): the ports it hands out,
// what it applies and its status would go unrecorded, and each pass would
// make one change more before its first write failed. A full disk may
// take this write and fail a later one: then what the pass changed stands
// (the engines' labels are the truth, SECURITY.md's known limits) and
// record says the state cannot be written.
func (r *Reconciler) stateWritable(_ context.Context, p *pass) error {
	if len(p.res.Plan.Actions) == 0 {
		return nil // a no-op writes nothing
	}
	if err := r.store.CheckWritable(); err != nil {
		return fmt.Errorf("the state cannot be written, so nothing is changed until it can be: %w", err)
	}
	return nil
}

// Retire removes everything a repo that no longer exists (deleted, or
// moved to another path or owner in GitLab) has applied, and forgets it.
// Only an authoritative word that the repo is gone should lead here, never
// a failure to read it. The prune limit still applies: held removals keep
// the repo's state, so a later Retire finishes the job.
func (r *Reconciler) Retire(ctx context.Context, repo Repo) (Result, error) {
	lock := r.ownerLock(repo.Owner)
	lock.Lock()
	defer lock.Unlock()
	state, _, err := r.store.Repo(repo.Key)
	if err != nil {
		return Result{Repo: repo}, err
	}
	p := &pass{repo: repo, state: state, file: &schema.File{Version: schema.Version}, res: Result{Repo: repo}, retiring: true}
	for _, s := range []step{{"list containers", r.listLive}, {"list pods", r.observePods}, {"plan", r.plan}, {"apply containers", r.apply}, {"apply pods", r.applyPods}} {
		if err := s.run(ctx, p); err != nil {
			return p.res, err
		}
	}
	if p.res.HeldRemovals > 0 {
		return p.res, stalled(core.PruneHeld, "%d removal(s) of the retired repo %s held by the prune limit", p.res.HeldRemovals, repo.Key)
	}
	for _, s := range state.SIFs {
		if r.sif == nil {
			break // this server builds no SIFs any more, and removes none
		}
		r.log.Info("removing SIF", "repo", repo.Key, "sif", s.Name, "path", s.Path, "cause", "its repo is gone (deleted, or moved to another path or owner)")
		if err := r.sif.Remove(s.Path); err != nil {
			return p.res, fmt.Errorf("remove a SIF of the retired repo %s: %w", repo.Key, err)
		}
	}
	p.res.Message = summary(p.res)
	if err := r.store.DeleteRepo(repo.Key); err != nil {
		return p.res, err
	}
	r.metrics.forget(repo.Key)
	return p.res, nil
}

func (r *Reconciler) ownerLock(owner string) *sync.Mutex {
	l, _ := r.ownerLocks.LoadOrStore(owner, &sync.Mutex{})
	return l.(*sync.Mutex)
}

// fetch learns the branch head (or takes the pinned revision).
func (r *Reconciler) fetch(ctx context.Context, p *pass) error {
	if p.repo.Revision != "" {
		p.rev, p.res.Revision = p.repo.Revision, p.repo.Revision
		return nil
	}
	rev, err := r.git.Head(ctx, p.repo.URL, p.repo.Branch)
	switch {
	case errors.Is(err, gitsource.ErrBranchNotFound):
		return stalled(core.BranchNotFound, "branch %s not found in %s", p.repo.Branch, gitsource.ScrubURL(p.repo.URL))
	case errors.Is(err, gitsource.ErrUnreachable):
		return waiting(core.SourceUnreachable, "cannot reach the repo; everything stays as it is: %v", err)
	case errors.Is(err, gitsource.ErrRepoNotFound), errors.Is(err, gitsource.ErrAccessDenied):
		return stalled(core.RepoNotAccessible, "WhaleMountain cannot read the repo (ask the admins); everything stays as it is: %v", err)
	case err != nil:
		return fmt.Errorf("read branch head: %w", err)
	}
	p.rev = rev
	p.res.Revision = rev
	if c := p.state.Condition(core.Stalled); !p.dryRun && c != nil && c.Status && studentFixes[c.Reason] && p.state.ObservedRevision == rev {
		p.unchanged = true
		return &PassError{Outcome: Stalled, Reason: c.Reason, Err: errors.New(c.Message)}
	}
	p.state.ObservedRevision = rev
	if r.reporter != nil && !p.dryRun {
		r.reporter.PassStarted(ctx, p.repo, rev)
	}
	return nil
}

// studentFixes are the stalled reasons only a new commit can clear: a pass
// of the same revision is not worth redoing (quota, names and admin config
// can change under an unchanged commit, so they are retried).
var studentFixes = map[core.Reason]bool{core.ValidationFailed: true, core.NoWmYaml: true}

// parse reads and validates wm.yaml at the head.
func (r *Reconciler) parse(ctx context.Context, p *pass) error {
	data, err := r.git.ReadFile(ctx, p.repo.URL, p.repo.Branch, p.rev, WmFile, schema.MaxFileSize+1)
	switch {
	case errors.Is(err, gitsource.ErrFileNotFound):
		return stalled(core.NoWmYaml, "no %s at %s: nothing was changed (to remove everything, commit a %s with only \"version: 1\")", WmFile, short(p.rev), WmFile)
	case errors.Is(err, gitsource.ErrTooLarge):
		// Parse reports the size with its usual message.
	case errors.Is(err, gitsource.ErrRevisionNotFound):
		// Force-pushed away, or announced before it could be fetched.
		return waiting(core.RevisionNotVisible, "commit %s cannot be fetched (yet); everything stays as it is", short(p.rev))
	case errors.Is(err, gitsource.ErrUnreachable):
		return waiting(core.SourceUnreachable, "cannot reach the repo; everything stays as it is: %v", err)
	case errors.Is(err, gitsource.ErrRepoNotFound), errors.Is(err, gitsource.ErrAccessDenied):
		return stalled(core.RepoNotAccessible, "WhaleMountain cannot read the repo (ask the admins); everything stays as it is: %v", err)
	case err != nil:
		return fmt.Errorf("read %s: %w", WmFile, err)
	}
	f, err := schema.Parse(WmFile, bytes.NewReader(data))
	if err != nil {
		return stalled(core.ValidationFailed, "%s is invalid at %s; nothing was changed:\n%v", WmFile, short(p.rev), err)
	}
	p.file = f
	return r.decideExpiry(p)
}

// listLive lists the owner's containers on every host, and adopts the
// host ports they bind into the store, which rebuilds a lost store. A pass
// reads only the owner's: its cost does not grow with everyone else's.
func (r *Reconciler) listLive(ctx context.Context, p *pass) error {
	mine, down, err := r.listOwned(ctx, p.repo.Owner)
	if err != nil {
		return err
	}
	p.ownerLive, p.down = mine, down
	for _, l := range mine {
		if p.repo.owns(l.Container) {
			p.live = append(p.live, l)
		}
	}
	if p.dryRun {
		return nil
	}
	for _, l := range mine {
		for _, b := range l.Ports {
			key := store.PortKey(l.Name, b.Guest)
			known, err := r.store.Port(key)
			if err != nil {
				return err
			}
			if known != b.Host {
				if err := r.store.AdoptPort(key, b.Host); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// everyone returns every managed container on every host, listing them
// once per pass and only when asked.
func (r *Reconciler) everyone(ctx context.Context, p *pass) ([]Live, error) {
	if p.allListed {
		return p.allLive, nil
	}
	all, _, err := r.listEach(ctx, func(e core.Engine) ([]core.Container, error) { return e.ListManaged(ctx) })
	if err != nil {
		return nil, err
	}
	p.allLive, p.allListed = all, true
	return all, nil
}

// listOwned lists owner's containers on every host that answers; those
// that cannot be reached are named in down.
func (r *Reconciler) listOwned(ctx context.Context, owner string) ([]Live, map[string]error, error) {
	return r.listEach(ctx, func(e core.Engine) ([]core.Container, error) { return e.ListOwned(ctx, owner) })
}

// listEach lists the containers of every host. A host that cannot be
// reached (fault.Unreachable) is left out and named in down, so that it
// fails only what lives there; any other error fails the listing.
func (r *Reconciler) listEach(ctx context.Context, list func(core.Engine) ([]core.Container, error)) (all []Live, down map[string]error, err error) {
	for _, e := range r.engines {
		cs, err := list(e)
		if errors.Is(err, fault.Unreachable) && ctx.Err() == nil {
			if down == nil {
				down = map[string]error{}
			}
			down[e.Name()] = err
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("list containers on %s: %w", e.Name(), err)
		}
		for _, c := range cs {
			all = append(all, Live{Host: e.Name(), Container: c})
		}
	}
	return all, down, nil
}

// owns reports whether a live container carries the repo's labels: the
// only containers a pass of the repo may change.
func (repo Repo) owns(c core.Container) bool {
	return c.Owner == repo.Owner && c.Repo == repo.Key
}

// resolve turns every container of wm.yaml into a placed core.ContainerSpec with
// its image reference, limits and the host ports it already holds (a port
// it does not hold yet stays 0 until the container is really created), and
// every pod and SIF into its image reference. Nothing is reserved here: a
// file refused later (quota, image) takes nothing from anyone.
func (r *Reconciler) resolve(ctx context.Context, p *pass) error {
	mine := map[string]*Live{} // this repo's containers by wm.yaml name
	for i := range p.live {
		if local, ok := identity(p.live[i].Container); ok {
			mine[local] = &p.live[i]
		}
	}
	if err := p.hostsNeeded(mine); err != nil {
		return err
	}
	culled, err := r.cullsOf(p)
	if err != nil {
		return err
	}
	p.culled = culled
	// What every host holds is read only when a container must be
	// placed or given a port it does not hold yet.
	taken := map[int]string{} // host port → container holding it
	load := map[string]int{}
	gpusUsed := map[string]int{}
	for _, name := range sortedKeys(p.file.Containers) {
		if !holds(mine[name], p.file.Containers[name]) {
			all, err := r.everyone(ctx, p)
			if err != nil {
				return err
			}
			for _, l := range all {
				for _, b := range l.Ports {
					taken[b.Host] = l.Name
				}
				load[l.Host]++
				if l.Running && !p.repo.owns(l.Container) {
					gpusUsed[l.Host] += l.GPUs
				}
			}
			break
		}
	}
	for _, name := range sortedKeys(p.file.Containers) {
		c := p.file.Containers[name]
		field := "containers." + name
		full := core.ObjectName(p.repo.Owner, name)
		for _, l := range p.ownerLive {
			if local, ok := identity(l.Container); ok && local == name && l.Owner == p.repo.Owner && !p.repo.owns(l.Container) {
				return stalled(core.NameTaken, "%s: the container name %s is already used by your repo %s; rename it in one of them", field, full, l.Repo)
			}
		}
		image, err := r.images.resolve(p.repo, p.rev, field+".image", c.Image)
		if err != nil {
			return err
		}
		_, culled := p.culled[name]
		running := c.State == schema.StateRunning && !p.expired && !culled
		current := mine[name]
		host := hostOf(current)
		if !holds(current, c) {
			was := host
			if host, err = r.place(full, c.GPUs, host, gpusUsed, load, p.down); err != nil {
				return err
			}
			if host != was {
				// The next container of this pass sees it placed: a
				// new repo spreads over the hosts, not onto one.
				load[host]++
				if current != nil {
					load[was]--
				}
			}
		}
		if running {
			gpusUsed[host] += c.GPUs
		}
		ports, err := r.heldPorts(full, current, c.Ports, taken)
		if err != nil {
			return err
		}
		spec := r.containerSpec(p.repo, name, c, image, ports, running, r.volumeNames(p, name, c))
		if spec.NanoCPUs <= 0 || spec.MemoryBytes <= 0 {
			// 0 means "no limit" to Docker: never let a rounding get there.
			return stalled(core.InvalidLimits, "%s: cpus and memory must be more than 0", field)
		}
		if spec.ShmBytes > spec.MemoryBytes {
			return stalled(core.InvalidLimits, "%s.shmSize: %s is more than the container's memory, %s (the admins' default): /dev/shm counts against it; set memory too", field, c.ShmSize, core.FormatBytes(spec.MemoryBytes))
		}
		if running && c.GPUs > 0 && holds(current, c) && host == current.Host {
			// It keeps the GPUs it has; a new or moved container is
			// given its own when it is created (allocateGPUs).
			spec.GPUDevices = slices.Clone(current.GPUDevices)
		}
		p.desired = append(p.desired, Desired{Host: host, Spec: spec})
		p.usage.Containers++
		p.usage.Ports += len(ports)
		if running {
			p.usage.GPUs += c.GPUs
			p.usage.CPUs += float64(spec.NanoCPUs) / 1e9
			p.usage.MemoryBytes += spec.MemoryBytes
		}
	}
	p.sifRefs = map[string]string{}
	for _, name := range sortedKeys(p.file.Singularity) {
		ref, err := r.images.resolve(p.repo, p.rev, "singularity."+name+".image", p.file.Singularity[name].Image)
		if err != nil {
			return err
		}
		p.sifRefs[name] = ref
	}
	for _, name := range sortedKeys(p.file.Pods) {
		pod := p.file.Pods[name]
		for _, l := range p.livePods {
			if l.Name == name && l.Repo != p.repo.Key {
				return stalled(core.NameTaken, "pods.%s: the pod name %s is already used by your repo %s; rename it in one of them", name, name, l.Repo)
			}
		}
		image, err := r.images.resolve(p.repo, p.rev, "pods."+name+".image", pod.Image)
		if err != nil {
			return err
		}
		if p.expired {
			continue // a pod cannot be stopped: after expiry it is not run
		}
		cpus, memory := r.limits(pod.CPUs, pod.Memory)
		kp := core.PodSpec{Owner: p.repo.Owner, Repo: p.repo.Key, Name: name, Image: image,
			Entrypoint: pod.Entrypoint, Command: pod.Command, Env: pod.Env, Workdir: pod.Workdir,
			GPUs: pod.GPUs, CPUs: cpus, MemoryBytes: quantityBytes(memory), Restart: pod.Restart}
		if math.Round(kp.CPUs*1000) <= 0 || kp.MemoryBytes <= 0 {
			return stalled(core.InvalidLimits, "pods.%s: cpus and memory must be more than 0", name)
		}
		p.pods = append(p.pods, kp)
		p.usage.Pods++
		p.usage.GPUs += kp.GPUs
		p.usage.CPUs += kp.CPUs
		p.usage.MemoryBytes += kp.MemoryBytes
	}
	if len(p.file.Singularity) > 0 && r.sif == nil {
		return stalled(core.NoSIFBuilder, "singularity: this WhaleMountain does not build Singularity images (ask the admins)")
	}
	if len(p.file.Pods) > 0 && r.cluster == nil {
		return stalled(core.NoKubernetes, "pods: this WhaleMountain has no Kubernetes cluster configured, so pods cannot run (ask the admins)")
	}
	p.resolved = true
	return nil
}

// identity returns the wm.yaml name of a managed container that carries its
// own name, new or legacy, and false for anything else (a container set
// aside during a recreation, which pairs with nothing and is removed).
func identity(c core.Container) (string, bool) {
	owner, local := c.Owner, c.LocalName
	if owner == "" || local == "" {
		return "", false
	}
	return local, c.Name == core.ObjectName(owner, local) || c.Name == core.LegacyObjectName(owner, local)
}

// hostsNeeded fails the pass, waiting, when a Docker host that could not be
// reached may hold what it changes: a container the repo had there, or a
// declared container not found on the hosts that answered (it may be on
// the one that did not, and must not be made twice). A repo with nothing
// on an unreachable host goes on.
func (p *pass) hostsNeeded(mine map[string]*Live) error {
	if len(p.down) == 0 {
		return nil
	}
	var hosts []string
	for h := range p.down {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	wait := func(what string) error {
		return waiting(core.HostUnreachable, "Docker host %s cannot be reached and %s; what runs stays as it is: %v", strings.Join(hosts, ", "), what, p.down[hosts[0]])
	}
	for _, o := range p.state.Inventory {
		if _, isDown := p.down[o.Host]; isDown && o.Kind == "container" {
			return wait(fmt.Sprintf("holds your container %s", o.Name))
		}
	}
	for _, name := range sortedKeys(p.file.Containers) {
		if mine[name] == nil {
			return wait(fmt.Sprintf("may hold containers.%s", name))
		}
	}
	return nil
}

// holds reports whether a live container already has what a wm.yaml
// container needs of its host, so that it stays where it is without a
// look at everyone else's: it runs on a configured host with at least the
// GPUs asked for (none asked for: it fits anywhere), and binds every
// guest port it publishes.
func holds(l *Live, c schema.Container) bool {
	if l == nil {
		return false
	}
	if c.GPUs > 0 && (!l.Running || l.GPUs != c.GPUs || len(l.GPUDevices) != c.GPUs) {
		// A GPU container holds its GPUs only while it runs, and only
		// those it was given by device (one made before devices were
		// allocated has the host's first GPUs, like every other).
		return false
	}
	for _, guest := range c.Ports {
		if !slices.ContainsFunc(l.Ports, func(b core.PortBinding) bool { return b.Guest == guest }) {
			return false
		}
	}
	return true
}

func hostOf(l *Live) string {
	if l == nil {
		return ""
	}
	return l.Host
}

// heldPorts returns the host port of each guest port that the container
// already holds: bound on its live container, or allocated to its name and
// free. A guest port that holds none gets 0; apply allocates it when the
// container is created, so nothing is reserved for a file that is refused.
func (r *Reconciler) heldPorts(full string, current *Live, guests []int, taken map[int]string) ([]core.PortBinding, error) {
	var ports []core.PortBinding
	for _, guest := range guests {
		host := 0
		if current != nil {
			for _, b := range current.Ports {
				if b.Guest == guest {
					host = b.Host
				}
			}
		}
		if host == 0 {
			held, err := r.store.Port(store.PortKey(full, guest))
			if err != nil {
				return nil, err
			}
			if holder, busy := taken[held]; held != 0 && (!busy || holder == full) {
				host = held
			}
		}
		ports = append(ports, core.PortBinding{Guest: guest, Host: host})
	}
	return ports, nil
}

// volumeNames maps each volume of a wm.yaml container to its engine name,
// ObjectName(owner, volume), except where the owner's containers already
// mount the volume under its legacy name: that data stays where it is.
func (r *Reconciler) volumeNames(p *pass, name string, c schema.Container) map[string]string {
	mounted := map[string]bool{}
	for _, l := range p.ownerLive {
		if l.Owner == p.repo.Owner {
			for _, v := range l.Volumes {
				mounted[v] = true
			}
		}
	}
	out := map[string]string{}
	for vol := range c.Volumes {
		out[vol] = core.ObjectName(p.repo.Owner, vol)
		if legacy := core.LegacyObjectName(p.repo.Owner, vol); mounted[legacy] && !mounted[out[vol]] {
			out[vol] = legacy
		}
	}
	return out
}

// limits returns a workload's CPUs and memory, or the policy's defaults.
func (r *Reconciler) limits(cpus *float64, memory string) (float64, string) {
	c := r.cfg.Policy.Defaults.CPUs
	if cpus != nil {
		c = *cpus
	}
	if memory == "" {
		memory = r.cfg.Policy.Defaults.Memory
	}
	return c, memory
}

// containerSpec builds the engine spec of one wm.yaml container.
func (r *Reconciler) containerSpec(repo Repo, name string, c schema.Container, image string, ports []core.PortBinding, running bool, volumes map[string]string) core.ContainerSpec {
	cpus, memory := r.limits(c.CPUs, c.Memory)
	var mounts []core.Mount
	for _, vol := range sortedKeys(c.Volumes) {
		mounts = append(mounts, core.Mount{Volume: volumes[vol], Target: c.Volumes[vol]})
	}
	return core.ContainerSpec{
		Name:        core.ObjectName(repo.Owner, name),
		Owner:       repo.Owner,
		Repo:        repo.Key,
		LocalName:   name,
		Image:       image,
		Entrypoint:  c.Entrypoint,
		Command:     c.Command,
		Env:         c.Env,
		Workdir:     c.Workdir,
		User:        c.User,
		Ports:       ports,
		Mounts:      mounts,
		Network:     core.NetworkName(r.cfg.Instance, repo.Owner),
		GPUs:        c.GPUs,
		ShmBytes:    shmBytes(c.ShmSize),
		NanoCPUs:    int64(math.Round(cpus * 1e9)),
		MemoryBytes: quantityBytes(memory),
		Running:     running,
	}
}

// place chooses the Docker host of a container: where it already runs
// when that host can still hold it (cordoned or not), else the least
// loaded host with enough free GPUs that is not cordoned (hosts.go).
func (r *Reconciler) place(name string, gpus int, current string, gpusUsed, load map[string]int, down map[string]error) (string, error) {
	fits := func(h string) bool {
		n := len(r.hosts[h].Devices())
		return gpus == 0 || n-gpusUsed[h] >= gpus || (r.hosts[h].GPUSharing && n >= gpus)
	}
	if _, ok := r.hosts[current]; ok && fits(current) {
		return current, nil
	}
	cordoned, err := r.store.Cordons()
	if err != nil {
		return "", err
	}
	best := ""
	for _, e := range r.engines {
		h := e.Name()
		if _, isDown := down[h]; isDown {
			continue
		}
		if _, off := cordoned[h]; off {
			continue
		}
		if fits(h) && (best == "" || load[h] < load[best]) {
			best = h
		}
	}
	if best == "" {
		return "", waiting(core.NoCapacity, "no Docker host has %d free GPU(s) for %s%s", gpus, name, cordonedNote(cordoned))
	}
	return best, nil
}

// checkQuota adds what this repo asks for to what the owner's other repos
// hold on the engines right now: their containers on every Docker host (by
// the labels WhaleMountain put on them) and their pods in the cluster. It
// never trusts a usage written down by an earlier pass, which a pass that
// failed half-way would have left wrong.
func (r *Reconciler) checkQuota(_ context.Context, p *pass) error {
	total := p.usage
	for _, l := range p.ownerLive {
		if l.Owner == p.repo.Owner && l.Repo != p.repo.Key {
			total = total.Add(r.liveUsage(l))
		}
	}
	for _, pod := range p.livePods {
		if pod.Repo == p.repo.Key || pod.Phase == "Succeeded" || pod.Phase == "Failed" {
			continue
		}
		total = total.Add(core.Usage{Pods: 1, GPUs: pod.GPUs, CPUs: pod.CPUs, MemoryBytes: pod.MemoryBytes})
	}
	p.res.Usage, p.res.OwnerUsage = p.usage, total
	if over := overQuota(total, r.cfg.Policy.Quota); len(over) > 0 {
		return stalled(core.QuotaExceeded, "over your quota with all your repos together: %s; nothing was changed", strings.Join(over, ", "))
	}
	return nil
}

// liveUsage is what one live container counts against its owner's quota,
// read from its labels. A container set aside during a recreation is on
// its way out and counts nothing; one made before the limits were
// labelled counts the policy's defaults.
func (r *Reconciler) liveUsage(l Live) core.Usage {
	if _, ok := identity(l.Container); !ok {
		return core.Usage{}
	}
	u := core.Usage{Containers: 1, Ports: len(l.Ports)}
	if !l.Running {
		return u
	}
	u.GPUs = l.GPUs
	nano, mem := l.NanoCPUs, l.MemoryBytes
	if !l.LimitsKnown {
		cpus, memory := r.limits(nil, "")
		nano, mem = int64(math.Round(cpus*1e9)), quantityBytes(memory)
	}
	u.CPUs, u.MemoryBytes = float64(nano)/1e9, mem
	return u
}

// overQuota lists, in words, every part of total that q does not allow.
func overQuota(total core.Usage, q schema.Quota) []string {
	var over []string
	for _, n := range []struct {
		what       string
		used, most int
	}{{"containers", total.Containers, q.Containers}, {"pods", total.Pods, q.Pods}, {"GPUs", total.GPUs, q.GPUs}, {"host ports", total.Ports, q.Ports}} {
		if n.used > n.most {
			over = append(over, fmt.Sprintf("%d %s (quota %d)", n.used, n.what, n.most))
		}
	}
	if !(total.CPUs <= q.CPUs+1e-9) {
		over = append(over, fmt.Sprintf("%g CPUs (quota %g)", total.CPUs, q.CPUs))
	}
	if qMem := quantityBytes(q.Memory); total.MemoryBytes > qMem {
		over = append(over, fmt.Sprintf("%s of memory (quota %s)", resource.NewQuantity(total.MemoryBytes, resource.BinarySI), q.Memory))
	}
	return over
}

// plan pairs what the repo declares with what it has, for every kind of
// resource alike (Diff, DiffPods, DiffSIFs), and applies the prune limit
// to the removals of containers and pods: a pass that would remove more
// than policy.maxPrunePercent of all the managed containers it sees and
// the owner's pods holds them. SIF removals have a grace period of their
// own (sif.gracePeriod) instead.
func (r *Reconciler) plan(ctx context.Context, p *pass) error {
	plan := Diff(p.desired, p.live)
	if r.cluster != nil {
		plan = plan.Merge(DiffPods(p.pods, r.cluster.PodHash, p.repoPods()))
	}
	plan = plan.Merge(DiffSIFs(p.sifRefs, p.state.SIFs))
	p.res.Plan = plan
	prunable := func(a Action) bool { return a.Kind == ActionRemove && a.Resource != SIF }
	removals := 0
	for _, a := range plan.Actions {
		if prunable(a) {
			removals++
		}
	}
	if removals == 0 {
		return nil
	}
	all, err := r.everyone(ctx, p)
	if err != nil {
		return err
	}
	if removals*100 > r.cfg.Policy.MaxPrunePercent*(len(all)+len(p.livePods)) {
		p.res.HeldRemovals = removals
		p.res.Plan.Actions = slices.DeleteFunc(slices.Clone(plan.Actions), prunable)
	}
	return nil
}

// gateImages makes sure, in plans and passes alike, that the image of
// every container and pod to (re)create exists, on its host or in the
// registry: a commit whose image CI has not pushed yet waits, and what
// runs stays as it is. It reads only; pullImages then pulls.
func (r *Reconciler) gateImages(ctx context.Context, p *pass) error {
	seen := map[[2]string]bool{}
	for _, a := range p.res.Plan.Actions {
		if a.Kind != ActionCreate && a.Kind != ActionRecreate {
			continue
		}
		var image, host string
		switch a.Resource {
		case Container:
			image, host = a.Spec.Image, a.Host
		case Pod:
			image = a.Pod.Image
		default:
			continue // SIF builds read their image themselves
		}
		if seen[[2]string{host, image}] {
			continue
		}
		seen[[2]string{host, image}] = true
		if host != "" {
			ok, err := r.engine(host).ImageExists(ctx, image)
			if err != nil {
				return fmt.Errorf("look for image %s on %s: %w", image, host, err)
			}
			if ok {
				continue
			}
			p.toPull = append(p.toPull, [2]string{host, image})
		}
		if !r.ownImage(image) || r.registry == nil {
			continue // pulled by the engine, or the cluster, as it is
		}
		exists, err := r.registry.Exists(ctx, image)
		switch {
		case err != nil:
			return waiting(core.RegistryUnreachable, "cannot ask the registry for %s; what runs stays as it is: %v", image, err)
		case !exists && strings.HasSuffix(image, ":"+p.rev):
			return waiting(core.WaitingForImage, "waiting for CI to push %s; what runs stays as it is", image)
		case !exists:
			return waiting(core.ImageNotFound, "image %s not found; what runs stays as it is", image)
		}
	}
	return nil
}

// ownImage reports whether image lives in the configured registry, whose
// credentials WhaleMountain holds.
func (r *Reconciler) ownImage(image string) bool {
	return r.cfg.Registry.Host != "" && strings.HasPrefix(image, r.cfg.Registry.Host+"/")
}

// pullImages pulls the images gateImages found missing on their hosts,
// before anything is stopped.
func (r *Reconciler) pullImages(ctx context.Context, p *pass) error {
	for _, hi := range p.toPull {
		host, image := hi[0], hi[1]
		var auth *core.RegistryAuth
		if r.ownImage(image) {
			auth = r.auth
		}
		if r.progress != nil {
			r.progress(p.repo.Key, "pull "+image)
		}
		err := r.engine(host).Pull(ctx, image, auth)
		switch {
		case errors.Is(err, core.ErrImageNotFound) && strings.HasSuffix(image, ":"+p.rev):
			return waiting(core.WaitingForImage, "waiting for CI to push %s; what runs stays as it is", image)
		case errors.Is(err, core.ErrImageNotFound):
			return waiting(core.ImageNotFound, "image %s not found; what runs stays as it is", image)
		case err != nil:
			return waiting(core.ImagePullFailed, "cannot pull %s; what runs stays as it is: %v", image, err)
		}
	}
	return nil
}

// checkHealth reads back the repo's containers and pods and judges each.
func (r *Reconciler) checkHealth(ctx context.Context, p *pass) error {
	problems, err := r.readStatus(ctx, p)
	if err != nil {
		return err
	}
	p.res.Ready = len(problems) == 0
	switch {
	case p.expired:
		p.res.Message = r.expiryMessage(p)
	case len(problems) > 0:
		p.res.Message = strings.Join(problems, "; ")
	default:
		p.res.Message = summary(p.res)
	}
	if !p.expired {
		for _, name := range sortedKeys(p.culled) {
			c := p.culled[name]
			p.res.Message += fmt.Sprintf("; %s was stopped on %s: %s (push a commit or run `wm wake %s` to start it again)", name, c.At.UTC().Format(time.DateTime), c.Reason, name)
		}
		if m := r.expiryMessage(p); m != "" {
			p.res.Message += "; " + m
		}
	}
	return nil
}

// readStatus reads back the state of the repo's containers and pods into
// the result, as students see it, and lists what is not as wm.yaml asks.
// It runs after every pass that got as far as reading wm.yaml, whatever
// its outcome, so that the status never shows what was before.
func (r *Reconciler) readStatus(ctx context.Context, p *pass) ([]string, error) {
	all, down, err := r.listOwned(ctx, p.repo.Owner)
	if err != nil {
		return nil, err
	}
	var problems []string
	byName := map[string]*Live{}
	for i := range all {
		if p.repo.owns(all[i].Container) {
			byName[all[i].Name] = &all[i]
		}
	}
	p.res.Containers = nil
	for _, d := range p.desired {
		l := byName[d.Spec.Name]
		var c *core.Container
		st := core.ContainerStatus{Name: d.Spec.LocalName, Host: d.Host}
		if l != nil {
			c = &l.Container
			st.Host = l.Host
			st.State = l.State
			if l.Running {
				st.GPUs = slices.Clone(l.GPUDevices)
			}
			st.Ports = map[string]int{}
			for _, b := range l.Ports {
				st.Ports[strconv.Itoa(b.Guest)] = b.Host
			}
		}
		h, msg := health.Container(c, d.Spec.Running)
		if herr, isDown := down[st.Host]; isDown && l == nil {
			// Its host did not answer: what it runs is not known, and
			// the repos on the other hosts are no worse for it.
			h, msg = health.Unknown, fmt.Sprintf("Docker host %s cannot be reached: %v", st.Host, herr)
			st.State = "unknown"
		}
		st.Health = string(h)
		if h != health.Healthy && h != health.Suspended {
			problems = append(problems, d.Spec.LocalName+": "+msg)
		}
		p.res.Containers = append(p.res.Containers, st)
	}
	if p.res.Pods, err = r.podStatuses(ctx, p); err != nil {
		return nil, fmt.Errorf("read back the pods: %w", err)
	}
	for _, pod := range p.res.Pods {
		switch pod.Phase {
		case "Running", "Succeeded":
		case "Failed":
			problems = append(problems, "pod "+pod.Name+": failed: "+pod.Message)
		default:
			problems = append(problems, "pod "+pod.Name+": "+strings.ToLower(pod.Phase)+": "+pod.Message)
		}
	}
	return problems, nil
}

// summary says in one line what a successful pass did.
func summary(res Result) string {
	var parts []string
	for _, k := range []ActionKind{ActionCreate, ActionRecreate, ActionStart, ActionStop, ActionRemove} {
		if n := res.Plan.Count(k); n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, pastTense[k]))
		}
	}
	if res.HeldRemovals > 0 {
		parts = append(parts, fmt.Sprintf("%d removal(s) held by the prune limit", res.HeldRemovals))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("%d container(s), pod(s) and SIF(s) up to date", res.Plan.Unchanged)
	}
	return strings.Join(parts, ", ")
}

var pastTense = map[ActionKind]string{ActionCreate: "created", ActionRecreate: "recreated", ActionStart: "started", ActionStop: "stopped", ActionRemove: "removed"}

// record writes the pass's outcome into the repo's state and history.
func (r *Reconciler) record(p *pass, start time.Time, err error) error {
	if p.unchanged {
		return nil
	}
	now := r.now()
	st := &p.state
	result := core.Applied
	if err == nil {
		st.AppliedRevision = p.rev
		st.Usage = p.usage
		st.Containers = p.res.Containers
		st.Pods = p.res.Pods
		st.SIFs = p.res.SIFs
		st.Inventory = inventory(p)
		if p.file.Image != nil {
			st.ImageDescription, st.ImageShared = p.file.Image.Description, p.file.Image.Share
		} else {
			st.ImageDescription, st.ImageShared = "", false
		}
		reason := core.Applied
		switch {
		case p.expired:
			reason = core.Expired
		case len(p.culled) > 0:
			reason = core.Culled
		case p.res.HeldRemovals > 0:
			reason = core.PruneHeld
		case !p.res.Ready:
			reason = core.NotHealthy
		}
		result = reason
		st.SetCondition(core.Condition{Type: core.Ready, Status: p.res.Ready && p.res.HeldRemovals == 0, Reason: reason, Message: p.res.Message}, now)
		st.SetCondition(core.Condition{Type: core.Reconciling, Status: false, Reason: core.Done}, now)
		st.SetCondition(core.Condition{Type: core.Stalled, Status: false, Reason: core.Done}, now)
	} else {
		if p.statusRead {
			st.Containers, st.Pods = p.res.Containers, p.res.Pods
		}
		outcome, reason := Classify(err)
		result = reason
		st.SetCondition(core.Condition{Type: core.Ready, Status: false, Reason: reason, Message: err.Error()}, now)
		st.SetCondition(core.Condition{Type: core.Reconciling, Status: outcome != Stalled, Reason: outcome.Reason()}, now)
		st.SetCondition(core.Condition{Type: core.Stalled, Status: outcome == Stalled, Reason: reason, Message: err.Error()}, now)
	}
	if len(p.res.Plan.Actions) == 0 && equalJSON(*st, p.loaded) {
		// Nothing changed and nothing was done: a no-op pass writes
		// nothing, and LastPass stays the last pass that did something.
		return nil
	}
	st.LastPass = now
	werr := r.store.PutRepo(*st)
	if werr == nil {
		werr = r.store.AddPass(p.repo.Key, core.Pass{
			Start: start, Duration: now.Sub(start), Revision: p.rev, Result: result,
			Message: firstLine(p.res.Message), Changes: len(p.res.Plan.Actions),
		})
	}
	if werr != nil {
		// The status shown is the last one written: only the log can say
		// why. What the pass changed stands (the engines' labels are the
		// truth, SECURITY.md's known limits), and the next pass that can
		// write records it.
		return fmt.Errorf("record the pass: the state cannot be written, the status shown is older than what runs until it can be: %w", werr)
	}
	return nil
}

// equalJSON reports whether v encodes to the JSON in want, the time of
// the last pass set aside.
func equalJSON(v core.RepoState, want []byte) bool {
	var prev core.RepoState
	if json.Unmarshal(want, &prev) != nil {
		return false
	}
	v.LastPass = prev.LastPass
	got, err := json.Marshal(v)
	return err == nil && bytes.Equal(got, want)
}

// inventory lists what the repo has applied after a successful pass: its
// desired containers, and any removal the prune limit held back.
func inventory(p *pass) []core.Object {
	var inv []core.Object
	for _, d := range p.desired {
		inv = append(inv, core.Object{Kind: "container", Host: d.Host, Name: d.Spec.Name, SpecHash: d.Spec.Hash()})
	}
	if p.res.HeldRemovals > 0 {
		declared := map[string]bool{}
		for _, d := range p.desired {
			declared[d.Spec.Name] = true
		}
		for _, l := range p.live {
			if !declared[l.Name] {
				inv = append(inv, core.Object{Kind: "container", Host: l.Host, Name: l.Name, SpecHash: l.SpecHash})
			}
		}
	}
	return inv
}

func (r *Reconciler) engine(host string) core.Engine {
	for _, e := range r.engines {
		if e.Name() == host {
			return e
		}
	}
	panic("reconciler: no engine for host " + host) // hosts come from the engines list
}

// quantityBytes reads a memory size the schema has already validated.
func quantityBytes(s string) int64 {
	q := resource.MustParse(s)
	return q.Value()
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// sortedKeys returns a map's keys in order, so passes are deterministic.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// shmBytes is a validated shmSize in bytes; 0 when unset.
func shmBytes(s string) int64 {
	if s == "" {
		return 0
	}
	return quantityBytes(s)
}
