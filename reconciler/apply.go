package reconciler

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// apply carries out the plan's container actions in order.
func (r *Reconciler) apply(ctx context.Context, p *pass) error {
	for _, a := range p.res.Plan.Of(Container) {
		if r.progress != nil {
			r.progress(p.repo.Key, fmt.Sprintf("%s %s", a.Kind, a.Name))
		}
		if err := r.applyOne(ctx, p, a); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reconciler) applyOne(ctx context.Context, p *pass, a Action) error {
	switch a.Kind {
	case ActionCreate:
		return r.create(ctx, p, a.Host, a.Spec)
	case ActionRecreate:
		return r.recreate(ctx, p, a)
	case ActionStart:
		err := r.engine(a.Host).Start(ctx, a.Name)
		if errors.Is(err, core.ErrPortInUse) && a.Live != nil {
			return r.startTaken(ctx, p, a, err)
		}
		if err != nil {
			return fmt.Errorf("start %s: %w", a.Name, err)
		}
	case ActionStop:
		r.log.Info("stopping container", "repo", p.repo.Key, "container", a.Name, "host", a.Host, "cause", stopCause(p, a))
		if err := r.engine(a.Host).Stop(ctx, a.Name, StopTimeout); err != nil {
			return fmt.Errorf("stop %s: %w", a.Name, err)
		}
	case ActionRemove:
		return r.remove(ctx, p, a)
	}
	return nil
}

// startTaken handles a stopped container that cannot start because a host
// port it holds is taken: by something WhaleMountain does not manage, or
// by the engine itself, which after a restart can keep counting the ports
// of containers that were killed while it was down ("port is already
// allocated" until the engine restarts again). Left so, the container
// would never start and every pass would fail at it. It is removed (its
// volumes are kept), its ports are set aside for good and given up, and
// the next pass makes it anew on other host ports.
func (r *Reconciler) startTaken(ctx context.Context, p *pass, a Action, err error) error {
	r.log.Info("removing a container that could not start", "repo", p.repo.Key, "container", a.Name, "host", a.Host,
		"cause", "a host port it holds is bound by something else, or still counted by its engine after a restart; the next pass makes it anew on other ports, its volumes kept")
	if rerr := r.engine(a.Host).Remove(ctx, a.Name); rerr != nil && !errors.Is(rerr, fault.NotFound) {
		return errors.Join(fmt.Errorf("start %s: %w", a.Name, err), rerr)
	}
	for _, b := range a.Live.Ports {
		if aerr := r.store.AdoptPort(store.PortKey(outsideHolder, b.Host), b.Host); aerr != nil {
			return errors.Join(err, aerr)
		}
	}
	if rerr := r.store.ReleasePorts(a.Name); rerr != nil {
		return errors.Join(err, rerr)
	}
	return fmt.Errorf("start %s on %s: a host port it holds is taken; it is made anew on other ports on the next pass: %w", a.Name, a.Host, err)
}

// asideSuffix names a container set aside while its replacement starts.
const asideSuffix = "-wm-old"

// recreate replaces a container without ever losing it: the old one is
// stopped and renamed aside, the new one created under the name; if that
// fails, the new one goes and the old one is put back as it was. A pass
// interrupted half-way leaves the aside container labelled as the repo's,
// so the next pass removes it. The old container may have another name
// (made under the legacy naming scheme): its port allocations go with it.
func (r *Reconciler) recreate(ctx context.Context, p *pass, a Action) error {
	old := r.engine(a.Live.Host)
	aside := a.Live.Name + asideSuffix
	r.log.Info("recreating container: the old one is stopped, and removed once the new one is made", "repo", p.repo.Key,
		"container", a.Live.Name, "host", a.Live.Host, "newHost", a.Host, "cause", recreateCause(p, a))
	if err := old.Remove(ctx, aside); err != nil && !errors.Is(err, fault.NotFound) {
		return fmt.Errorf("clear %s: %w", aside, err)
	}
	if err := old.Stop(ctx, a.Live.Name, StopTimeout); err != nil {
		return fmt.Errorf("stop %s to recreate it: %w", a.Live.Name, err)
	}
	if err := old.Rename(ctx, a.Live.Name, aside); err != nil {
		return fmt.Errorf("set %s aside to recreate it: %w", a.Live.Name, err)
	}
	if err := r.create(ctx, p, a.Host, a.Spec); err != nil {
		r.log.Info("removing the new container that could not be made, and putting the old one back", "repo", p.repo.Key,
			"container", a.Name, "host", a.Host, "cause", err.Error())
		if rerr := r.putBack(ctx, a, aside); rerr != nil {
			return errors.Join(err, rerr)
		}
		return err
	}
	if err := old.Remove(ctx, aside); err != nil && !errors.Is(err, fault.NotFound) {
		return fmt.Errorf("remove the old %s: %w", a.Live.Name, err)
	}
	if a.Live.Name != a.Name {
		return r.store.ReleasePorts(a.Live.Name)
	}
	return nil
}

// putBack undoes a failed recreation.
func (r *Reconciler) putBack(ctx context.Context, a Action, aside string) error {
	if err := r.engine(a.Host).Remove(ctx, a.Name); err != nil && !errors.Is(err, fault.NotFound) {
		return fmt.Errorf("remove the failed new %s: %w", a.Name, err)
	}
	old := r.engine(a.Live.Host)
	if err := old.Rename(ctx, aside, a.Live.Name); err != nil {
		return fmt.Errorf("put the old %s back: %w", a.Live.Name, err)
	}
	if a.Live.Running {
		if err := old.Start(ctx, a.Live.Name); err != nil {
			return fmt.Errorf("restart the old %s: %w", a.Live.Name, err)
		}
	}
	return nil
}

// create makes a container, allocating first the host ports it does not
// hold yet (spec is updated in place, so the pass reports them). The
// allocations of a container that could not be created are given back,
// and those of guest ports it no longer publishes too.
func (r *Reconciler) create(ctx context.Context, p *pass, host string, spec *core.ContainerSpec) error {
	allocated, err := r.allocatePorts(ctx, p, spec)
	if err == nil && spec.Running && spec.GPUs > 0 && len(spec.GPUDevices) == 0 {
		r.gpuMu.Lock()
		err = r.allocateGPUs(ctx, host, spec)
		if err == nil {
			_, err = r.engine(host).Create(ctx, *spec)
		}
		r.gpuMu.Unlock()
	} else if err == nil {
		_, err = r.engine(host).Create(ctx, *spec)
	}
	if err != nil {
		for _, key := range allocated {
			if rerr := r.store.ReleasePort(key); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
	}
	if errors.Is(err, core.ErrPortInUse) {
		// Something WhaleMountain does not see (another instance, a
		// person) binds a port just allocated: the container that could
		// not start goes, those ports are set aside for good, and the
		// next pass allocates others.
		r.log.Info("removing a container that could not start", "repo", p.repo.Key, "container", spec.Name, "host", host,
			"cause", "a host port just allocated to it is bound by something WhaleMountain does not manage")
		if rerr := r.engine(host).Remove(ctx, spec.Name); rerr != nil && !errors.Is(rerr, fault.NotFound) {
			return errors.Join(err, rerr)
		}
		for _, key := range allocated {
			for _, b := range spec.Ports {
				if store.PortKey(spec.Name, b.Guest) == key {
					if aerr := r.store.AdoptPort(store.PortKey(outsideHolder, b.Host), b.Host); aerr != nil {
						return errors.Join(err, aerr)
					}
				}
			}
		}
		return fmt.Errorf("create %s on %s: a new host port is bound by something else; another is chosen on the next pass: %w", spec.Name, host, err)
	}
	if errors.Is(err, fault.Conflict) {
		return stalled(core.NameConflict, "a container or volume named %s (or one of its volumes) exists on %s that WhaleMountain does not manage for you; it was left alone: ask the admins to remove or rename it", spec.Name, host)
	}
	var pe *PassError
	if err != nil && !errors.As(err, &pe) {
		return fmt.Errorf("create %s on %s: %w", spec.Name, host, err)
	}
	if err != nil {
		return err
	}
	guests := make([]int, len(spec.Ports))
	for i, b := range spec.Ports {
		guests[i] = b.Guest
	}
	return r.store.RetainPorts(spec.Name, guests)
}

// outsideHolder holds, in the store, host ports found bound by something
// WhaleMountain does not manage, so that they are never allocated again.
// No container name starts with '-'.
const outsideHolder = "-outside"

// allocatePorts gives each port of spec that has no host port yet the
// lowest free one of the policy's range, skipping what any live container
// binds and what this pass's other containers hold. It returns the keys it
// allocated.
func (r *Reconciler) allocatePorts(ctx context.Context, p *pass, spec *core.ContainerSpec) ([]string, error) {
	all, err := r.everyone(ctx, p)
	if err != nil {
		return nil, err
	}
	busy := map[int]bool{}
	for _, l := range all {
		if _, ok := identity(l.Container); !ok && !l.Running {
			// Set aside by a recreation cut short (a process killed, a
			// replica that lost its Lease): stopped, it binds nothing, a
			// pass of its repo removes it, and the store keeps its
			// ports for its successor, which must not lose them.
			continue
		}
		for _, b := range l.Ports {
			busy[b.Host] = true
		}
	}
	for _, d := range p.desired {
		for _, b := range d.Spec.Ports {
			busy[b.Host] = true
		}
	}
	var allocated []string
	for i := range spec.Ports {
		if spec.Ports[i].Host != 0 {
			continue
		}
		key := store.PortKey(spec.Name, spec.Ports[i].Guest)
		// An allocation left from before whose port something else now
		// binds is worthless: start afresh.
		if held, err := r.store.Port(key); err != nil {
			return allocated, err
		} else if held != 0 && busy[held] {
			if err := r.store.ReleasePort(key); err != nil {
				return allocated, err
			}
		}
		port, err := r.store.AllocatePort(key, r.cfg.Policy.HostPorts.From, r.cfg.Policy.HostPorts.To, busy)
		if errors.Is(err, store.ErrNoFreePort) {
			return allocated, waiting(core.NoFreePort, "no free host port for %s port %d: ask the admins to widen policy.hostPorts", spec.Name, spec.Ports[i].Guest)
		}
		if err != nil {
			return allocated, err
		}
		spec.Ports[i].Host = port
		busy[port] = true
		allocated = append(allocated, key)
	}
	return allocated, nil
}

// remove deletes a container nothing declares any more, frees its ports
// and, only when the policy says so, its volumes no other container of
// the owner mounts.
func (r *Reconciler) remove(ctx context.Context, p *pass, a Action) error {
	e := r.engine(a.Host)
	r.log.Info("removing container", "repo", p.repo.Key, "container", a.Name, "host", a.Host, "cause", removalCause(p, a))
	if err := e.Remove(ctx, a.Name); err != nil && !errors.Is(err, fault.NotFound) {
		return fmt.Errorf("remove %s: %w", a.Name, err)
	}
	if err := r.store.ReleasePorts(a.Name); err != nil {
		return err
	}
	if !r.cfg.Policy.PruneVolumes {
		return nil
	}
	inUse := map[string]bool{}
	for _, d := range p.desired {
		for _, m := range d.Spec.Mounts {
			inUse[m.Volume] = true
		}
	}
	for _, l := range p.ownerLive {
		if l.Name != a.Name {
			for _, v := range l.Volumes {
				inUse[v] = true
			}
		}
	}
	for _, v := range a.Live.Volumes {
		if inUse[v] {
			continue
		}
		r.log.Info("removing volume", "repo", p.repo.Key, "volume", v, "host", a.Host,
			"cause", "its container "+a.Name+" was removed, no other container of the owner mounts it, and policy.pruneVolumes is on")
		if err := e.RemoveVolume(ctx, v); err != nil && !errors.Is(err, fault.NotFound) {
			return fmt.Errorf("remove volume %s: %w", v, err)
		}
	}
	return nil
}

// allocateGPUs gives a running GPU container its own devices on host: the
// first of the host's GPUs (in the server config's order) that no running
// container of this instance holds, or, on a host that shares its GPUs,
// the least shared ones. What runs is read from the host itself, so an
// allocation survives a restart of WhaleMountain in the containers'
// labels; a container made before devices were allocated holds the
// host's first GPUs, as Docker gave them. The caller holds gpuMu until
// the container is created.
func (r *Reconciler) allocateGPUs(ctx context.Context, host string, spec *core.ContainerSpec) error {
	cfg := r.hosts[host]
	devices := cfg.Devices()
	live, err := r.engine(host).ListManaged(ctx)
	if err != nil {
		return fmt.Errorf("read which GPUs of %s are taken: %w", host, err)
	}
	holders := gpuHolders(devices, live, spec.Name)
	chosen := chooseGPUs(devices, holders, spec.GPUs, cfg.GPUSharing)
	if chosen == nil {
		return waiting(core.NoCapacity, "%s needs %d GPU(s) and %s has %d free of %d; it is created once they are",
			spec.Name, spec.GPUs, host, len(devices)-len(holders), len(devices))
	}
	spec.GPUDevices = chosen
	return nil
}

// gpuHolders counts, for each of a host's devices, the running containers
// that hold it, except the container called except (being recreated).
func gpuHolders(devices []string, live []core.Container, except string) map[string]int {
	holders := map[string]int{}
	for _, c := range live {
		if !c.Running || c.GPUs == 0 || c.Name == except {
			continue
		}
		held := c.GPUDevices
		if len(held) == 0 {
			held = devices[:min(c.GPUs, len(devices))]
		}
		for _, d := range held {
			holders[d]++
		}
	}
	return holders
}

// chooseGPUs picks n of devices: free ones in order, or, when shared, the
// least held ones (in order among equals); nil when there are not enough.
func chooseGPUs(devices []string, holders map[string]int, n int, shared bool) []string {
	order := slices.Clone(devices)
	if shared {
		slices.SortStableFunc(order, func(a, b string) int { return holders[a] - holders[b] })
	}
	var out []string
	for _, d := range order {
		if len(out) == n {
			break
		}
		if shared || holders[d] == 0 {
			out = append(out, d)
		}
	}
	if len(out) < n {
		return nil
	}
	return out
}

// stopCause says why a pass stops a container, for the log.
func stopCause(p *pass, a Action) string {
	switch c, declared := p.file.Containers[a.Spec.LocalName]; {
	case declared && c.State != schema.StateRunning:
		return "wm.yaml at " + short(p.rev) + " sets containers." + a.Spec.LocalName + ".state: " + c.State
	case p.expired && p.file.Expires != "":
		return "the repo expired on " + p.file.Expires
	case p.expired:
		return "the repo's end date is past"
	}
	if c, culled := p.culled[a.Spec.LocalName]; culled {
		return "idle culling stopped it: " + c.Reason
	}
	return "the pass does not run it though wm.yaml asks for it running"
}

// recreateCause says why a pass recreates a container, for the log.
func recreateCause(p *pass, a Action) string {
	switch {
	case a.Live.Running && !a.Spec.Running:
		return stopCause(p, a)
	case a.Live.Host != a.Host:
		return "it moves from Docker host " + a.Live.Host + " to " + a.Host
	case a.Live.Name != a.Name:
		return "it is renamed from " + a.Live.Name + " to " + a.Name
	case a.Live.SpecHash != a.Spec.Hash():
		return "wm.yaml or the server's policy changed what it is made of (its image, command, env, ports, volumes or limits)"
	}
	return "it is to run with GPU devices of its own"
}

// removalCause says why a pass removes a container, for the log.
func removalCause(p *pass, a Action) string {
	local, ok := identity(a.Live.Container)
	switch {
	case p.retiring:
		return "its repo is gone (deleted, or moved to another path or owner)"
	case !ok:
		return "it was set aside by a recreation that did not finish"
	}
	_, declared := p.file.Containers[local]
	switch {
	case slices.ContainsFunc(p.desired, func(d Desired) bool { return d.Spec.LocalName == local }):
		return "it is a second copy of containers." + local + " (on another host, or under its old name)"
	case declared:
		return "wm.yaml declares containers." + local + ", but the repo is past its end date and its clean-up period"
	}
	return "containers." + local + " is no longer in wm.yaml at " + short(p.rev)
}

// podRemovalCause says why a pass deletes a pod, for the log.
func podRemovalCause(p *pass, name string) string {
	_, declared := p.file.Pods[name]
	switch {
	case p.retiring:
		return "its repo is gone (deleted, or moved to another path or owner)"
	case declared && p.expired:
		return "the repo is past its end date, and a pod cannot be stopped"
	case declared:
		return "wm.yaml declares pods." + name + ", but the repo is past its end date and its clean-up period"
	}
	return "pods." + name + " is no longer in wm.yaml at " + short(p.rev)
}
