package docker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"

	"github.com/whalemountain/wm/reconciler/core"
)

// Fake is an in-memory Docker host with the Engine's methods and semantics,
// checked by the same contract tests. Tests of callers set it up with
// AddImage, AddRemoteImage, AddForeign and AddForeignVolume, simulate what
// happens on a host with Alter, and assert on what the caller did with
// Calls, Mutations and core.ContainerSpec. It is safe for concurrent use.
type Fake struct {
	mu sync.Mutex
	// name is the host's name.
	name string

	// What is on the host.

	containers map[string]*fakeContainer // by name
	// owned indexes the names of containers made by Create by owner, so
	// that ListOwned costs what the owner has, as on a real engine.
	owned    map[string]map[string]bool
	volumes  map[string]core.Volume // by name
	networks map[string]map[string]string
	images   map[string]bool // normalized references

	// What registries hold.

	remote      map[string]bool              // normalized references
	auth        map[string]core.RegistryAuth // registry host → the credential it wants
	unreachable map[string]bool              // registry hosts

	// What callers did.

	calls    []Call
	failures map[string]error
	// cpu is the CPU time each container has used, set by SetCPUTime.
	cpu map[string]time.Duration
	// dangling counts the dangling images PruneDanglingImages removes.
	dangling int
}

// fakeContainer is a container and the core.ContainerSpec it was made from.
type fakeContainer struct {
	c    core.Container
	spec core.ContainerSpec
}

// Call is one method call on a Fake.
type Call struct {
	// Method is the method's name, e.g. "Create".
	Method string
	// Arg is the container, volume or image it was about; "" for lists.
	Arg string
}

// mutating are the methods that change a host.
var mutating = map[string]bool{
	"Create": true, "Start": true, "Stop": true, "Remove": true, "Rename": true,
	"RemoveVolume": true, "Pull": true, "PruneDanglingImages": true,
}

// NewFake returns an empty Fake host called name.
func NewFake(name string) *Fake {
	return &Fake{
		name:        name,
		containers:  map[string]*fakeContainer{},
		owned:       map[string]map[string]bool{},
		volumes:     map[string]core.Volume{},
		networks:    map[string]map[string]string{},
		images:      map[string]bool{},
		remote:      map[string]bool{},
		auth:        map[string]core.RegistryAuth{},
		unreachable: map[string]bool{},
		failures:    map[string]error{},
		cpu:         map[string]time.Duration{},
	}
}

// AddImage puts the image ref on the host.
func (f *Fake) AddImage(ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[normalizeRef(ref)] = true
}

// AddRemoteImage puts the image ref in its registry, for Pull.
func (f *Fake) AddRemoteImage(ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remote[normalizeRef(ref)] = true
}

// RequireAuth makes the registry at host (e.g. "registry.example:5000")
// refuse pulls without exactly a.
func (f *Fake) RequireAuth(host string, a core.RegistryAuth) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.auth[host] = a
}

// SetUnreachable makes the registry at host unreachable.
func (f *Fake) SetUnreachable(host string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.unreachable[host] = true
}

// AddForeign puts a running container called name on the host without any
// of WhaleMountain's labels, as a person with docker access would.
func (f *Fake) AddForeign(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	f.containers[name] = &fakeContainer{c: core.Container{
		ID: newID(), Name: name, Labels: map[string]string{}, Image: "foreign",
		Running: true, State: "running", StartedAt: now,
	}}
}

// AddForeignVolume puts a volume called name on the host without any of
// WhaleMountain's labels.
func (f *Fake) AddForeignVolume(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.volumes[name] = core.Volume{Name: name, Labels: map[string]string{}}
}

// Alter changes the live state of the container called name, managed or
// not, as the host would: a crash, a restart, a health check. It is not
// recorded as a call.
func (f *Fake) Alter(name string, change func(c *core.Container)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc, ok := f.containers[name]
	if !ok {
		return fmt.Errorf("alter container %s: %w", name, ErrNotFound)
	}
	change(&fc.c)
	return nil
}

// Spec returns the core.ContainerSpec the managed container called name was created from.
func (f *Fake) Spec(name string) (core.ContainerSpec, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc, ok := f.containers[name]
	if !ok || !managed(fc.c.Labels) {
		return core.ContainerSpec{}, false
	}
	return cloneSpec(fc.spec), true
}

// FailOn makes every later call of method (e.g. "Remove") fail with err,
// before it changes anything; a nil err heals it.
func (f *Fake) FailOn(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.failures, method)
		return
	}
	f.failures[method] = err
}

// Calls returns every call made so far, in order.
func (f *Fake) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Mutations returns the calls made so far that could change the host
// (Create, Start, Stop, Remove, RemoveVolume, Pull), failed ones included.
func (f *Fake) Mutations() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Call
	for _, c := range f.calls {
		if mutating[c.Method] {
			out = append(out, c)
		}
	}
	return out
}

// ResetCalls forgets the calls made so far.
func (f *Fake) ResetCalls() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = nil
}

// record logs a call and returns the failure injected for it, if any. The
// caller holds f.mu.
func (f *Fake) record(method, arg string) error {
	f.calls = append(f.calls, Call{Method: method, Arg: arg})
	return f.failures[method]
}

// Name returns the host's name.
func (f *Fake) Name() string { return f.name }

// Instance is DefaultInstance: a Fake is the default instance's host.
func (f *Fake) Instance() string { return core.DefaultInstance }

// NetworkName is core.NetworkName(core.DefaultInstance, owner).
func (f *Fake) NetworkName(owner string) string { return core.NetworkName(core.DefaultInstance, owner) }

// Close does nothing; it is recorded.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.record("Close", "")
}

// ListManaged returns every managed container, sorted by name.
func (f *Fake) ListManaged(ctx context.Context) ([]core.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ListManaged", ""); err != nil {
		return nil, fmt.Errorf("list containers on %s: %w", f.name, err)
	}
	var out []core.Container
	for _, fc := range f.containers {
		if managed(fc.c.Labels) {
			out = append(out, cloneContainer(fc.c))
		}
	}
	slices.SortFunc(out, func(a, b core.Container) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ListOwned is ListManaged for owner's containers only.
func (f *Fake) ListOwned(ctx context.Context, owner string) ([]core.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ListOwned", owner); err != nil {
		return nil, fmt.Errorf("list containers on %s: %w", f.name, err)
	}
	var out []core.Container
	for name := range f.owned[owner] {
		if fc := f.containers[name]; fc != nil && managed(fc.c.Labels) && fc.c.Labels[LabelOwner] == owner {
			out = append(out, cloneContainer(fc.c))
		}
	}
	slices.SortFunc(out, func(a, b core.Container) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Inspect returns the managed container called name, or ErrNotFound.
func (f *Fake) Inspect(ctx context.Context, name string) (core.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc, err := f.lookup(ctx, "Inspect", name)
	if err != nil {
		return core.Container{}, fmt.Errorf("inspect container %s on %s: %w", name, f.name, err)
	}
	return cloneContainer(fc.c), nil
}

// begin records a call and checks the context and injected failures. The
// caller holds f.mu.
func (f *Fake) begin(ctx context.Context, method, arg string) error {
	if err := f.record(method, arg); err != nil {
		return err
	}
	return ctx.Err()
}

// lookup begins a call about the managed container called name. The caller
// holds f.mu.
func (f *Fake) lookup(ctx context.Context, method, name string) (*fakeContainer, error) {
	if err := f.begin(ctx, method, name); err != nil {
		return nil, err
	}
	fc, ok := f.containers[name]
	switch {
	case !ok:
		return nil, fmt.Errorf("no container named %s: %w", name, ErrNotFound)
	case !managed(fc.c.Labels):
		return nil, fmt.Errorf("container %s is not managed by whalemountain: %w", name, ErrNotFound)
	}
	return fc, nil
}

// Create makes the container s describes and starts it when s.Running,
// with the Engine's checks in the Engine's order.
func (f *Fake) Create(ctx context.Context, s core.ContainerSpec) (core.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(err error) (core.Container, error) {
		return core.Container{}, fmt.Errorf("create container %s on %s: %w", s.Name, f.name, err)
	}
	if err := f.begin(ctx, "Create", s.Name); err != nil {
		return fail(err)
	}
	if err := s.Validate(); err != nil {
		return fail(err)
	}
	if !f.images[normalizeRef(s.Image)] {
		return fail(fmt.Errorf("image %s is not on the host: %w", s.Image, ErrImageNotFound))
	}
	if _, ok := f.containers[s.Name]; ok {
		return fail(fmt.Errorf("a container named %s exists: %w", s.Name, ErrConflict))
	}
	if want := f.NetworkName(s.Owner); s.Network != want {
		return fail(fmt.Errorf("%w: %s: network must be %q, the owner's under instance %s", core.ErrInvalidSpec, s.Name, want, core.DefaultInstance))
	}
	if labels, ok := f.networks[s.Network]; ok && !ownedBy(labels, core.DefaultInstance, s.Owner) {
		return fail(fmt.Errorf("network %s exists and is not %s's: %w", s.Network, s.Owner, ErrConflict))
	}
	f.networks[s.Network] = ownedLabels(core.DefaultInstance, s.Owner)
	for _, m := range s.Mounts {
		v, ok := f.volumes[m.Volume]
		if !ok {
			v = core.Volume{Name: m.Volume, Labels: ownedLabels(core.DefaultInstance, s.Owner)}
			f.volumes[m.Volume] = v
		}
		if !ownedBy(v.Labels, core.DefaultInstance, s.Owner) {
			return fail(fmt.Errorf("volume %s exists and is not %s's: %w", m.Volume, s.Owner, ErrConflict))
		}
	}
	labels := Labels(s)
	labels[LabelInstance] = core.DefaultInstance
	fc := &fakeContainer{spec: cloneSpec(s), c: core.Container{
		ID:      newID(),
		Name:    s.Name,
		Labels:  labels,
		Image:   s.Image,
		State:   "created",
		Ports:   core.SortedPorts(s.Ports),
		Volumes: mountedVolumes(s.Mounts),
	}}
	f.containers[s.Name] = fc
	if f.owned[s.Owner] == nil {
		f.owned[s.Owner] = map[string]bool{}
	}
	f.owned[s.Owner][s.Name] = true
	if s.Running {
		if err := f.start(fc); err != nil {
			return fail(fmt.Errorf("start (the container stays created): %w", err))
		}
	}
	return cloneContainer(fc.c), nil
}

// start runs fc unless another running container holds one of its host
// ports. The caller holds f.mu.
func (f *Fake) start(fc *fakeContainer) error {
	if fc.c.Running {
		return nil
	}
	for _, other := range f.containers {
		if other == fc || !other.c.Running {
			continue
		}
		for _, p := range fc.c.Ports {
			for _, q := range other.c.Ports {
				if p.Host == q.Host {
					return fmt.Errorf("bind for 0.0.0.0:%d failed: port is already allocated: %w", p.Host, ErrPortInUse)
				}
			}
		}
	}
	fc.c.Running, fc.c.State, fc.c.StartedAt = true, "running", time.Now()
	return nil
}

// Start starts the managed container called name; starting a running one
// does nothing.
func (f *Fake) Start(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc, err := f.lookup(ctx, "Start", name)
	if err == nil {
		err = f.start(fc)
	}
	if err != nil {
		return fmt.Errorf("start container %s on %s: %w", name, f.name, err)
	}
	return nil
}

// Rename gives the managed container called name the name to;
// ErrConflict when any container has that name.
func (f *Fake) Rename(ctx context.Context, name, to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc, err := f.lookup(ctx, "Rename", name)
	if err == nil {
		if _, taken := f.containers[to]; taken {
			err = fmt.Errorf("name %s is taken: %w", to, ErrConflict)
		}
	}
	if err != nil {
		return fmt.Errorf("rename container %s to %s on %s: %w", name, to, f.name, err)
	}
	delete(f.containers, name)
	fc.c.Name = to
	f.containers[to] = fc
	if names := f.owned[fc.c.Labels[LabelOwner]]; names != nil {
		delete(names, name)
		names[to] = true
	}
	return nil
}

// Stop stops the managed container called name at once; stopping a stopped
// one does nothing.
func (f *Fake) Stop(ctx context.Context, name string, timeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc, err := f.lookup(ctx, "Stop", name)
	if err != nil {
		return fmt.Errorf("stop container %s on %s: %w", name, f.name, err)
	}
	if fc.c.Running {
		fc.c.Running, fc.c.State, fc.c.FinishedAt = false, "exited", time.Now()
	}
	return nil
}

// Remove removes the managed container called name, keeping its volumes.
func (f *Fake) Remove(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.lookup(ctx, "Remove", name); err != nil {
		return fmt.Errorf("remove container %s on %s: %w", name, f.name, err)
	}
	if fc := f.containers[name]; fc != nil {
		delete(f.owned[fc.c.Labels[LabelOwner]], name)
	}
	delete(f.containers, name)
	return nil
}

// ListVolumes returns the managed volumes, sorted by name.
func (f *Fake) ListVolumes(ctx context.Context) ([]core.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ListVolumes", ""); err != nil {
		return nil, fmt.Errorf("list volumes on %s: %w", f.name, err)
	}
	var out []core.Volume
	for _, v := range f.volumes {
		if v.Labels[LabelManagedBy] == ManagedByValue {
			out = append(out, core.Volume{Name: v.Name, Labels: maps.Clone(v.Labels)})
		}
	}
	slices.SortFunc(out, func(a, b core.Volume) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RemoveVolume removes the managed volume called name; ErrConflict while a
// container mounts it.
func (f *Fake) RemoveVolume(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(err error) error { return fmt.Errorf("remove volume %s on %s: %w", name, f.name, err) }
	if err := f.begin(ctx, "RemoveVolume", name); err != nil {
		return fail(err)
	}
	v, ok := f.volumes[name]
	switch {
	case !ok:
		return fail(fmt.Errorf("no volume named %s: %w", name, ErrNotFound))
	case v.Labels[LabelManagedBy] != ManagedByValue:
		return fail(fmt.Errorf("volume %s is not managed by whalemountain: %w", name, ErrNotFound))
	}
	for _, fc := range f.containers {
		for _, m := range fc.spec.Mounts {
			if m.Volume == name {
				return fail(fmt.Errorf("volume %s is in use by %s: %w", name, fc.c.Name, ErrConflict))
			}
		}
	}
	delete(f.volumes, name)
	return nil
}

// ImageExists reports whether ref was added with AddImage or pulled.
func (f *Fake) ImageExists(ctx context.Context, ref string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "ImageExists", ref); err != nil {
		return false, fmt.Errorf("inspect image %s on %s: %w", ref, f.name, err)
	}
	return f.images[normalizeRef(ref)], nil
}

// Pull copies ref from its registry onto the host: ErrUnreachable for a
// host set with SetUnreachable, ErrUnauthorized when the credential is not
// the one RequireAuth set, ErrImageNotFound unless AddRemoteImage added it.
func (f *Fake) Pull(ctx context.Context, ref string, auth *core.RegistryAuth) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(err error) error { return fmt.Errorf("pull %s on %s: %w", ref, f.name, err) }
	if err := f.begin(ctx, "Pull", ref); err != nil {
		return fail(err)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrImageNotFound, err))
	}
	host := reference.Domain(named)
	if f.unreachable[host] {
		return fail(fmt.Errorf("registry %s: connection refused: %w", host, ErrUnreachable))
	}
	if want, ok := f.auth[host]; ok && (auth == nil || *auth != want) {
		return fail(fmt.Errorf("registry %s: authentication required: %w", host, ErrUnauthorized))
	}
	key := normalizeRef(ref)
	if !f.remote[key] {
		return fail(fmt.Errorf("manifest for %s not found: manifest unknown: %w", ref, ErrImageNotFound))
	}
	f.images[key] = true
	return nil
}

// normalizeRef spells a reference as the daemon resolves it:
// "busybox" is "docker.io/library/busybox:latest".
func normalizeRef(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ref
	}
	return reference.TagNameOnly(named).String()
}

func newID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func cloneContainer(c core.Container) core.Container {
	c.Labels = maps.Clone(c.Labels)
	c.Ports = slices.Clone(c.Ports)
	c.Volumes = slices.Clone(c.Volumes)
	decode(&c)
	return c
}

// mountedVolumes lists the volume names of mounts, sorted, as the engine
// reports them.
func mountedVolumes(ms []core.Mount) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Volume)
	}
	slices.Sort(out)
	return out
}

func cloneSpec(s core.ContainerSpec) core.ContainerSpec {
	s.Entrypoint = slices.Clone(s.Entrypoint)
	s.Command = slices.Clone(s.Command)
	s.Env = maps.Clone(s.Env)
	s.Ports = slices.Clone(s.Ports)
	s.Mounts = slices.Clone(s.Mounts)
	return s
}

// SetCPUTime says container name has used d of CPU time since it started.
func (f *Fake) SetCPUTime(name string, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cpu[name] = d
}

// CPUTime returns what SetCPUTime said of the managed container name, 0
// when nothing was.
func (f *Fake) CPUTime(ctx context.Context, name string) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.lookup(ctx, "CPUTime", name); err != nil {
		return 0, fmt.Errorf("measure container %s on %s: %w", name, f.name, err)
	}
	return f.cpu[name], nil
}

// AddDanglingImages puts n dangling images on the host.
func (f *Fake) AddDanglingImages(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dangling += n
}

// PruneDanglingImages removes the dangling images AddDanglingImages put
// there, 1 MB each.
func (f *Fake) PruneDanglingImages(ctx context.Context) (int, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.begin(ctx, "PruneDanglingImages", ""); err != nil {
		return 0, 0, fmt.Errorf("prune dangling images on %s: %w", f.name, err)
	}
	n := f.dangling
	f.dangling = 0
	return n, uint64(n) << 20, nil
}
