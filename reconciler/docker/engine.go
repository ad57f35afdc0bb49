package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/schema"
)

// capAdd is the capability allowlist; see the package documentation for
// why these.
var capAdd = []string{
	"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL",
	"SETGID", "SETUID", "NET_BIND_SERVICE",
}

// CapAllowlist returns the capabilities every container gets back after all
// are dropped, without the "CAP_" prefix.
func CapAllowlist() []string { return slices.Clone(capAdd) }

// Log rotation of every container: json-file, at most 3 files of 10 MB.
const (
	logMaxSize  = "10m"
	logMaxFiles = "3"
)

// inspectParallelism bounds how many containers ListManaged inspects at once.
const inspectParallelism = 8

// Engine is a Docker host, reached through its API. It is safe for
// concurrent use.
type Engine struct {
	name string
	// instance is the WhaleMountain instance whose objects this engine
	// lists and changes; core.DefaultInstance unless WithInstance says.
	instance string
	// tls is the endpoint's TLS (WithTLS).
	tls *schema.DockerTLS
	cli *client.Client
	// ensureMu serializes making networks and volumes, so that two
	// concurrent Creates for one owner do not race to make the same network.
	ensureMu sync.Mutex
}

// Option configures an Engine made by New.
type Option func(*Engine)

// WithInstance makes the engine instance's: every container, volume and
// network it makes carries LabelInstance=instance, and it lists, changes
// and removes only those (and, for core.DefaultInstance, those labelled before
// instances existed). To it, another instance's objects are not there,
// except that their names are taken (ErrConflict). instance is a DNS
// label; "" is core.DefaultInstance.
func WithInstance(instance string) Option {
	return func(e *Engine) {
		if instance != "" {
			e.instance = instance
		}
	}
}

// WithTLS makes the engine reach its tcp:// endpoint over TLS with t's CA,
// client certificate and key (the server config's docker.hosts[].tls).
// nil is no TLS, which New refuses for a tcp:// endpoint that is not on a
// loopback address.
func WithTLS(t *schema.DockerTLS) Option {
	return func(e *Engine) { e.tls = t }
}

// New returns an Engine for the Docker daemon at endpoint, parsed by
// schema.ParseDockerEndpoint (the parser of the server config's rules, so
// New accepts exactly the endpoints the config does): "unix:///path", or
// "tcp://host:port" with WithTLS (without, only on a loopback address).
// "" is the docker CLI's daemon, schema.DockerFromEnv: DOCKER_HOST, with
// TLS from DOCKER_CERT_PATH when it or DOCKER_TLS_VERIFY is set. name is
// the host's name, used by callers to tell hosts apart. New reads the TLS
// files (an error then is a *schema.EndpointError naming the file's field)
// and does no network I/O: the API version is negotiated on the first
// call.
//
// A daemon that refuses the client certificate (one its --tlscacert did
// not sign), or whose own certificate the CA did not sign, fails every
// call with ErrUnreachable (fault.Unreachable) and the TLS error in the
// message: to WhaleMountain such a host cannot be reached, as when it is
// down, and the repos with containers there wait (HostUnreachable) until
// an admin fixes the certificates.
func New(name, endpoint string, opts ...Option) (*Engine, error) {
	e := &Engine{name: name, instance: core.DefaultInstance}
	for _, o := range opts {
		o(e)
	}
	if !validInstance(e.instance) {
		return nil, fmt.Errorf("docker host %s: instance %q is not a DNS label (at most 63 lower-case letters, digits and '-')", name, e.instance)
	}
	return e.connect(endpoint)
}

// connect makes e's client for endpoint and e.tls.
func (e *Engine) connect(endpoint string) (*Engine, error) {
	if endpoint == "" && e.tls == nil {
		endpoint, e.tls = schema.DockerFromEnv()
	}
	ep, err := schema.ParseDockerEndpoint(endpoint, e.tls)
	if err != nil {
		return nil, fmt.Errorf("docker host %s: %w", e.name, err)
	}
	tlsConfig, err := ep.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("docker host %s: %w", e.name, err)
	}
	opts := []client.Opt{client.WithAPIVersionNegotiation()}
	if tlsConfig != nil {
		// The client's own transport, as its default one is made (a few
		// idle connections, dropped after 30 s), with the TLS of the
		// endpoint; WithHost then sets its dialer, and the client speaks
		// HTTPS because the transport has a TLS configuration.
		opts = append(opts, client.WithHTTPClient(&http.Client{
			Transport: &http.Transport{
				TLSClientConfig: tlsConfig,
				MaxIdleConns:    6,
				IdleConnTimeout: 30 * time.Second,
			},
			CheckRedirect: client.CheckRedirect,
		}))
	}
	opts = append(opts, client.WithHost(ep.URL()))
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker host %s: connect: %w", e.name, err)
	}
	e.cli = cli
	return e, nil
}

// validInstance reports whether instance is a DNS label.
func validInstance(instance string) bool {
	if len(instance) == 0 || len(instance) > 63 || instance[0] == '-' || instance[len(instance)-1] == '-' {
		return false
	}
	for _, r := range instance {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}

// Name returns the host's name.
func (e *Engine) Name() string { return e.name }

// Instance returns the WhaleMountain instance whose objects the engine
// manages (WithInstance).
func (e *Engine) Instance() string { return e.instance }

// NetworkName is core.NetworkName(e.Instance(), owner): the network Create
// wants in a core.ContainerSpec of owner's.
func (e *Engine) NetworkName(owner string) string { return core.NetworkName(e.instance, owner) }

// mine reports whether an object with labels is this instance's.
func (e *Engine) mine(labels map[string]string) bool { return InstanceOf(labels) == e.instance }

// Close releases the client's connections.
func (e *Engine) Close() error { return e.cli.Close() }

// Ping asks the daemon whether it answers (GET /_ping), the cheapest
// call there is: readiness checks make it every few seconds. A daemon
// that cannot be reached is ErrUnreachable (fault.Unreachable).
func (e *Engine) Ping(ctx context.Context) error {
	if _, err := e.cli.Ping(ctx); err != nil {
		return fmt.Errorf("ping docker host %s: %w", e.name, classify(err, ErrNotFound, nil))
	}
	return nil
}

// managedFilter selects WhaleMountain's objects: the instance's when it
// is not the default one (whose own include those without an instance
// label, which a filter cannot select: mine sorts them out).
func (e *Engine) managedFilter() filters.Args {
	f := filters.NewArgs(filters.Arg("label", LabelManagedBy+"="+ManagedByValue))
	if e.instance != core.DefaultInstance {
		f.Add("label", LabelInstance+"="+e.instance)
	}
	return f
}

// ListManaged returns every container of the engine's instance on the
// host, in any state, sorted by name. It inspects each one, so it costs
// one call per container.
func (e *Engine) ListManaged(ctx context.Context) ([]core.Container, error) {
	return e.list(ctx, e.managedFilter())
}

// ListOwned is ListManaged for one owner's containers: the engine filters
// by the owner label, so it costs one call per container of theirs.
func (e *Engine) ListOwned(ctx context.Context, owner string) ([]core.Container, error) {
	f := e.managedFilter()
	f.Add("label", LabelOwner+"="+owner)
	return e.list(ctx, f)
}

func (e *Engine) list(ctx context.Context, f filters.Args) ([]core.Container, error) {
	list, err := e.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers on %s: %w", e.name, classify(err, ErrNotFound, nil))
	}
	out := make([]core.Container, len(list))
	found := make([]bool, len(list))
	errs := make([]error, len(list))
	sem := make(chan struct{}, inspectParallelism)
	var wg sync.WaitGroup
	for i, s := range list {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := e.inspectID(ctx, s.ID)
			switch {
			case errors.Is(err, ErrNotFound):
				// Removed between the list and the inspect.
			case err != nil:
				errs[i] = err
			case e.mine(c.Labels):
				out[i], found[i] = c, true
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("list containers on %s: %w", e.name, err)
	}
	var cs []core.Container
	for i := range out {
		if found[i] {
			cs = append(cs, out[i])
		}
	}
	slices.SortFunc(cs, func(a, b core.Container) int { return strings.Compare(a.Name, b.Name) })
	return cs, nil
}

// Inspect returns the managed container called name; ErrNotFound when there
// is none or when the container of that name is not managed by the
// engine's instance.
func (e *Engine) Inspect(ctx context.Context, name string) (core.Container, error) {
	c, err := e.lookup(ctx, name)
	if err != nil {
		return core.Container{}, fmt.Errorf("inspect container %s on %s: %w", name, e.name, err)
	}
	return c, nil
}

// lookup finds the managed container whose name is exactly name. The daemon
// also resolves IDs and ID prefixes; lookup does not.
func (e *Engine) lookup(ctx context.Context, name string) (core.Container, error) {
	c, err := e.inspectID(ctx, name)
	if err != nil {
		return core.Container{}, err
	}
	if c.Name != name {
		return core.Container{}, fmt.Errorf("no container named %s: %w", name, ErrNotFound)
	}
	if !managed(c.Labels) {
		return core.Container{}, fmt.Errorf("container %s is not managed by whalemountain: %w", name, ErrNotFound)
	}
	if !e.mine(c.Labels) {
		return core.Container{}, fmt.Errorf("container %s is whalemountain instance %s's, not %s's: %w", name, InstanceOf(c.Labels), e.instance, ErrNotFound)
	}
	return c, nil
}

// inspectID inspects by name or ID, managed or not.
func (e *Engine) inspectID(ctx context.Context, ref string) (core.Container, error) {
	raw, err := e.cli.ContainerInspect(ctx, ref)
	if err != nil {
		return core.Container{}, classify(err, ErrNotFound, nil)
	}
	return fromInspect(raw), nil
}

// fromInspect converts the daemon's view of a container.
func fromInspect(raw container.InspectResponse) core.Container {
	c := core.Container{ID: raw.ID, Name: trimSlash(raw.Name), RestartCount: raw.RestartCount}
	if raw.Config != nil {
		c.Labels = maps.Clone(raw.Config.Labels)
		c.Image = raw.Config.Image
	}
	if s := raw.State; s != nil {
		c.Running = s.Running
		c.State = string(s.Status)
		c.ExitCode = s.ExitCode
		c.StartedAt = parseTime(s.StartedAt)
		c.FinishedAt = parseTime(s.FinishedAt)
		if s.Health != nil {
			c.Health = string(s.Health.Status)
		}
	}
	if raw.HostConfig != nil {
		for port, bindings := range raw.HostConfig.PortBindings {
			if port.Proto() != "tcp" {
				continue
			}
			for _, b := range bindings {
				host, err := strconv.Atoi(b.HostPort)
				if err == nil {
					c.Ports = append(c.Ports, core.PortBinding{Guest: port.Int(), Host: host})
				}
			}
		}
		c.Ports = core.SortedPorts(c.Ports)
	}
	for _, m := range raw.Mounts {
		if m.Type == mount.TypeVolume {
			c.Volumes = append(c.Volumes, m.Name)
		}
	}
	slices.Sort(c.Volumes)
	decode(&c)
	return c
}

// Create makes the container s describes, hardened, and starts it when
// s.Running. It first checks that the image is on the host
// (ErrImageNotFound) and that no container of any kind has the name
// (ErrConflict), then makes the owner's network and volumes when missing
// (ErrConflict when a network or volume of that name is not the owner's).
// When the start fails the container is left created and the error is
// returned (ErrPortInUse when a host port is taken).
func (e *Engine) Create(ctx context.Context, s core.ContainerSpec) (core.Container, error) {
	fail := func(err error) (core.Container, error) {
		return core.Container{}, fmt.Errorf("create container %s on %s: %w", s.Name, e.name, err)
	}
	if err := s.Validate(); err != nil {
		return fail(err)
	}
	if want := e.NetworkName(s.Owner); s.Network != want {
		return fail(fmt.Errorf("%w: %s: network must be %q, the owner's under instance %s", core.ErrInvalidSpec, s.Name, want, e.instance))
	}
	if ok, err := e.ImageExists(ctx, s.Image); err != nil {
		return fail(err)
	} else if !ok {
		return fail(fmt.Errorf("image %s is not on the host: %w", s.Image, ErrImageNotFound))
	}
	if _, err := e.inspectID(ctx, s.Name); err == nil {
		return fail(fmt.Errorf("a container named %s exists: %w", s.Name, ErrConflict))
	} else if !errors.Is(err, ErrNotFound) {
		return fail(err)
	}
	if err := e.ensureOwned(ctx, s); err != nil {
		return fail(err)
	}
	config, hostConfig, netConfig := containerConfig(s)
	config.Labels[LabelInstance] = e.instance
	created, err := e.cli.ContainerCreate(ctx, config, hostConfig, netConfig, nil, s.Name)
	if err != nil {
		// The image or the network can have gone since they were checked.
		notFound := ErrNotFound
		if containsAny(err.Error(), "no such image") {
			notFound = ErrImageNotFound
		}
		return fail(classify(err, notFound, nil))
	}
	if s.Running {
		if err := e.cli.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
			return fail(fmt.Errorf("start (the container stays created): %w", classify(err, ErrNotFound, startMessage)))
		}
	}
	c, err := e.inspectID(ctx, created.ID)
	if err != nil {
		return fail(err)
	}
	return c, nil
}

// containerConfig is the whole hardened configuration of s; see the package
// documentation.
func containerConfig(s core.ContainerSpec) (*container.Config, *container.HostConfig, *network.NetworkingConfig) {
	exposed := nat.PortSet{}
	bindings := nat.PortMap{}
	for _, p := range s.Ports {
		port := nat.Port(strconv.Itoa(p.Guest) + "/tcp")
		exposed[port] = struct{}{}
		bindings[port] = []nat.PortBinding{{HostIP: "0.0.0.0", HostPort: strconv.Itoa(p.Host)}}
	}
	var env []string
	for _, k := range slices.Sorted(maps.Keys(s.Env)) {
		env = append(env, k+"="+s.Env[k])
	}
	if s.GPUs == 0 {
		// An image's own ENV may ask the NVIDIA runtime (where it is the
		// default) for every GPU; wm.yaml cannot (schema.RuntimeEnv), and
		// this makes sure the image cannot either.
		env = append(env, "NVIDIA_VISIBLE_DEVICES=void")
	}
	config := &container.Config{
		Image:        s.Image,
		Entrypoint:   nilIfEmpty(s.Entrypoint),
		Cmd:          nilIfEmpty(s.Command),
		Env:          env,
		WorkingDir:   s.Workdir,
		User:         s.User,
		Labels:       Labels(s),
		ExposedPorts: exposed,
	}
	var mounts []mount.Mount
	for _, m := range s.Mounts {
		mounts = append(mounts, mount.Mount{Type: mount.TypeVolume, Source: m.Volume, Target: m.Target})
	}
	pids := s.EffectivePidsLimit()
	init := true
	hostConfig := &container.HostConfig{
		NetworkMode:   container.NetworkMode(s.Network),
		PortBindings:  bindings,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
		LogConfig: container.LogConfig{
			Type:   "json-file",
			Config: map[string]string{"max-size": logMaxSize, "max-file": logMaxFiles},
		},
		Privileged:  false,
		CapDrop:     []string{"ALL"},
		CapAdd:      CapAllowlist(),
		SecurityOpt: []string{"no-new-privileges:true"},
		IpcMode:     container.IPCModePrivate,
		Init:        &init,
		Mounts:      mounts,
		Resources: container.Resources{
			NanoCPUs:  s.NanoCPUs,
			Memory:    s.MemoryBytes,
			PidsLimit: &pids,
		},
	}
	if s.MemoryBytes > 0 {
		// No swap on top of the memory limit.
		hostConfig.MemorySwap = s.MemoryBytes
	}
	if s.ShmBytes > 0 {
		hostConfig.ShmSize = s.ShmBytes
	}
	switch {
	case len(s.GPUDevices) > 0:
		// The very GPUs WhaleMountain allocated: Count would give every
		// container the host's first ones.
		hostConfig.DeviceRequests = []container.DeviceRequest{{
			Driver: "nvidia", DeviceIDs: slices.Clone(s.GPUDevices), Capabilities: [][]string{{"gpu"}},
		}}
	case s.GPUs > 0:
		hostConfig.DeviceRequests = []container.DeviceRequest{{
			Driver: "nvidia", Count: s.GPUs, Capabilities: [][]string{{"gpu"}},
		}}
	}
	netConfig := &network.NetworkingConfig{
		EndpointsConfig: map[string]*network.EndpointSettings{s.Network: {}},
	}
	return config, hostConfig, netConfig
}

// ensureOwned makes the owner's network and the spec's volumes when missing,
// and refuses ones of those names that belong to someone else.
func (e *Engine) ensureOwned(ctx context.Context, s core.ContainerSpec) error {
	e.ensureMu.Lock()
	defer e.ensureMu.Unlock()
	if err := e.ensureNetwork(ctx, s.Network, s.Owner); err != nil {
		return err
	}
	for _, m := range s.Mounts {
		if err := e.ensureVolume(ctx, m.Volume, s.Owner); err != nil {
			return err
		}
	}
	return nil
}

// ensureNetwork makes the owner's bridge network when there is none.
func (e *Engine) ensureNetwork(ctx context.Context, name, owner string) error {
	find := func() (*network.Summary, error) {
		list, err := e.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
		if err != nil {
			return nil, fmt.Errorf("list networks: %w", classify(err, ErrNotFound, nil))
		}
		for _, n := range list {
			if n.Name == name {
				return &n, nil
			}
		}
		return nil, nil
	}
	n, err := find()
	if err != nil {
		return err
	}
	if n == nil {
		_, err := e.cli.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge", Labels: ownedLabels(e.instance, owner)})
		if err := classify(err, ErrNotFound, nil); err != nil && !errors.Is(err, ErrConflict) {
			return fmt.Errorf("create network %s: %w", name, err)
		}
		// Made here, or by another process just now: check whose it is.
		if n, err = find(); err != nil {
			return err
		} else if n == nil {
			return fmt.Errorf("network %s vanished after it was created: %w", name, ErrNotFound)
		}
	}
	if !e.ownedBy(n.Labels, owner) {
		return fmt.Errorf("network %s exists and is not %s's under instance %s: %w", name, owner, e.instance, ErrConflict)
	}
	return nil
}

// ensureVolume makes one of the owner's volumes when there is none.
func (e *Engine) ensureVolume(ctx context.Context, name, owner string) error {
	v, err := e.cli.VolumeInspect(ctx, name)
	if err != nil {
		if cerr := classify(err, ErrNotFound, nil); !errors.Is(cerr, ErrNotFound) {
			return fmt.Errorf("inspect volume %s: %w", name, cerr)
		}
		v, err = e.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Driver: "local", Labels: ownedLabels(e.instance, owner)})
		if err != nil {
			return fmt.Errorf("create volume %s: %w", name, classify(err, ErrNotFound, nil))
		}
	}
	if !e.ownedBy(v.Labels, owner) {
		return fmt.Errorf("volume %s exists and is not %s's under instance %s: %w", name, owner, e.instance, ErrConflict)
	}
	return nil
}

// ownedBy reports whether labels mark an object as owner's under e's
// instance.
func (e *Engine) ownedBy(labels map[string]string, owner string) bool {
	return ownedBy(labels, e.instance, owner)
}

// ownedBy reports whether labels mark an object as owner's under instance.
func ownedBy(labels map[string]string, instance, owner string) bool {
	return InstanceOf(labels) == instance && labels[LabelOwner] == owner
}

// Start starts the managed container called name; starting a running one
// does nothing.
func (e *Engine) Start(ctx context.Context, name string) error {
	c, err := e.lookup(ctx, name)
	if err == nil {
		err = classify(e.cli.ContainerStart(ctx, c.ID, container.StartOptions{}), ErrNotFound, startMessage)
	}
	if err != nil {
		return fmt.Errorf("start container %s on %s: %w", name, e.name, err)
	}
	return nil
}

// Rename gives the managed container called name the name to, keeping
// everything else; ErrConflict when to is taken. A recreation renames the
// old container aside so that it can be put back if the new one fails.
func (e *Engine) Rename(ctx context.Context, name, to string) error {
	c, err := e.lookup(ctx, name)
	if err == nil {
		err = classify(e.cli.ContainerRename(ctx, c.ID, to), ErrNotFound, nil)
	}
	if err != nil {
		return fmt.Errorf("rename container %s to %s on %s: %w", name, to, e.name, err)
	}
	return nil
}

// Stop stops the managed container called name, killing it when it has not
// exited after timeout (rounded up to whole seconds); stopping a stopped one
// does nothing. A stopped container stays stopped across daemon restarts.
func (e *Engine) Stop(ctx context.Context, name string, timeout time.Duration) error {
	c, err := e.lookup(ctx, name)
	if err == nil {
		seconds := int(math.Ceil(max(timeout, 0).Seconds()))
		err = classify(e.cli.ContainerStop(ctx, c.ID, container.StopOptions{Timeout: &seconds}), ErrNotFound, nil)
	}
	if err != nil {
		return fmt.Errorf("stop container %s on %s: %w", name, e.name, err)
	}
	return nil
}

// Remove force-removes the managed container called name, running or not.
// Its named volumes are kept; anonymous volumes the image declared are
// removed with it, as nothing could ever mount them again.
func (e *Engine) Remove(ctx context.Context, name string) error {
	c, err := e.lookup(ctx, name)
	if err == nil {
		err = classify(e.cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}), ErrNotFound, nil)
	}
	if err != nil {
		return fmt.Errorf("remove container %s on %s: %w", name, e.name, err)
	}
	return nil
}

// ListVolumes returns the volumes of the engine's instance, sorted by name.
func (e *Engine) ListVolumes(ctx context.Context) ([]core.Volume, error) {
	resp, err := e.cli.VolumeList(ctx, volume.ListOptions{Filters: e.managedFilter()})
	if err != nil {
		return nil, fmt.Errorf("list volumes on %s: %w", e.name, classify(err, ErrNotFound, nil))
	}
	var out []core.Volume
	for _, v := range resp.Volumes {
		if e.mine(v.Labels) {
			out = append(out, core.Volume{Name: v.Name, Labels: maps.Clone(v.Labels)})
		}
	}
	slices.SortFunc(out, func(a, b core.Volume) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// RemoveVolume removes the managed volume called name: ErrNotFound when
// there is none or it is not the engine's instance's, ErrConflict while a
// container (in any state) mounts it.
func (e *Engine) RemoveVolume(ctx context.Context, name string) error {
	fail := func(err error) error { return fmt.Errorf("remove volume %s on %s: %w", name, e.name, err) }
	v, err := e.cli.VolumeInspect(ctx, name)
	if err != nil {
		return fail(classify(err, ErrNotFound, nil))
	}
	if v.Labels[LabelManagedBy] != ManagedByValue {
		return fail(fmt.Errorf("volume %s is not managed by whalemountain: %w", name, ErrNotFound))
	}
	if !e.mine(v.Labels) {
		return fail(fmt.Errorf("volume %s is whalemountain instance %s's, not %s's: %w", name, InstanceOf(v.Labels), e.instance, ErrNotFound))
	}
	if err := e.cli.VolumeRemove(ctx, name, false); err != nil {
		return fail(classify(err, ErrNotFound, nil))
	}
	return nil
}

// ImageExists reports whether the image ref is on the host.
func (e *Engine) ImageExists(ctx context.Context, ref string) (bool, error) {
	_, err := e.cli.ImageInspect(ctx, ref)
	switch err := classify(err, ErrNotFound, nil); {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("inspect image %s on %s: %w", ref, e.name, err)
	}
}

// ImageID returns the ID of the image ref on the host (the digest of its
// configuration): ErrImageNotFound when it is not there.
func (e *Engine) ImageID(ctx context.Context, ref string) (string, error) {
	img, err := e.cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("inspect image %s on %s: %w", ref, e.name, classify(err, ErrImageNotFound, nil))
	}
	return img.ID, nil
}

// ImageSave streams the image ref from the host as `docker save` writes it
// (a tarball with a manifest.json): ErrImageNotFound when it is not there.
// The caller closes the stream.
func (e *Engine) ImageSave(ctx context.Context, ref string) (io.ReadCloser, error) {
	rc, err := e.cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return nil, fmt.Errorf("save image %s on %s: %w", ref, e.name, classify(err, ErrImageNotFound, nil))
	}
	return rc, nil
}

// Pull pulls ref onto the host, with auth when it is not nil. The registry's
// answer is classified: ErrImageNotFound, ErrUnauthorized, ErrUnreachable.
func (e *Engine) Pull(ctx context.Context, ref string, auth *core.RegistryAuth) error {
	fail := func(err error) error { return fmt.Errorf("pull %s on %s: %w", ref, e.name, err) }
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrImageNotFound, err))
	}
	var opts image.PullOptions
	if auth != nil {
		opts.RegistryAuth, err = registry.EncodeAuthConfig(registry.AuthConfig{
			Username:      auth.Username,
			Password:      auth.Password,
			ServerAddress: reference.Domain(named),
		})
		if err != nil {
			return fail(err)
		}
	}
	body, err := e.cli.ImagePull(ctx, ref, opts)
	if err != nil {
		return fail(classify(err, ErrImageNotFound, registryMessage))
	}
	defer body.Close()
	if err := readProgress(body); err != nil {
		return fail(classify(err, ErrImageNotFound, registryMessage))
	}
	return nil
}

// progressError is an error reported inside a pull's progress stream.
type progressError struct{ msg string }

func (e *progressError) Error() string { return e.msg }

// readProgress drains a pull's JSON progress stream and returns the error it
// reports, if any: the daemon has already answered 200 by then.
func readProgress(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		switch err := dec.Decode(&m); {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return fmt.Errorf("read pull progress: %w", err)
		case m.ErrorDetail != nil && m.ErrorDetail.Message != "":
			return &progressError{msg: m.ErrorDetail.Message}
		case m.Error != "":
			return &progressError{msg: m.Error}
		}
	}
}

func trimSlash(name string) string {
	if len(name) > 0 && name[0] == '/' {
		return name[1:]
	}
	return name
}

// parseTime parses the daemon's timestamps; the zero time stays zero.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}

// CPUTime returns the CPU time the managed container called name has used
// since it last started, read from one sample of the engine's stats.
func (e *Engine) CPUTime(ctx context.Context, name string) (time.Duration, error) {
	c, err := e.lookup(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("measure container %s on %s: %w", name, e.name, err)
	}
	resp, err := e.cli.ContainerStatsOneShot(ctx, c.ID)
	if err != nil {
		return 0, fmt.Errorf("measure container %s on %s: %w", name, e.name, classify(err, ErrNotFound, nil))
	}
	defer resp.Body.Close()
	var st container.StatsResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return 0, fmt.Errorf("measure container %s on %s: %w", name, e.name, err)
	}
	return time.Duration(st.CPUStats.CPUUsage.TotalUsage), nil
}

// PruneDanglingImages removes the host's dangling images: untagged, and
// used by no container (the engine refuses to remove one in use).
func (e *Engine) PruneDanglingImages(ctx context.Context) (int, uint64, error) {
	rep, err := e.cli.ImagesPrune(ctx, filters.NewArgs(filters.Arg("dangling", "true")))
	if err != nil {
		return 0, 0, fmt.Errorf("prune dangling images on %s: %w", e.name, classify(err, ErrNotFound, nil))
	}
	return len(rep.ImagesDeleted), rep.SpaceReclaimed, nil
}
