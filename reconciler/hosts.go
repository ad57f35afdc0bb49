package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/store"
)

// Operations on Docker hosts, for admins: what each host holds (Hosts),
// keeping new containers off a host (Cordon, Uncordon: a pass's place
// skips a cordoned host for anything not on it already), and moving
// everything off one (Drain). A drain moves each container to another
// host under the pass's placement rules, with the data of its named
// volumes copied through the engines' APIs (HostMover), and stops with a
// plain reason, leaving the container where it was, whenever it cannot:
// a volume is never left behind or made empty on the way.

// HostMover is what a drain needs of a Docker host besides core.Engine:
// the spec a container was made from, and its volumes' data as tar
// streams. *docker.Engine and *docker.Fake are two.
type HostMover interface {
	// ReadSpec returns the spec the managed container called name was
	// made from, Running as it is now.
	ReadSpec(ctx context.Context, name string) (core.ContainerSpec, error)
	// ExportVolume streams the files of owner's volume, read through a
	// helper container made from helperImage; closing it ends the copy.
	ExportVolume(ctx context.Context, owner, name, helperImage string) (io.ReadCloser, error)
	// ImportVolume makes owner's volume, which must not exist, and fills
	// it with what ExportVolume streamed.
	ImportVolume(ctx context.Context, owner, name, helperImage string, content io.Reader) error
}

// HostInfo is one Docker host as `wm hosts` shows it.
type HostInfo struct {
	// Name and Endpoint are the host's in the server config.
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	// Reachable is false when the host could not be listed; Error says
	// why.
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// Cordon, when set, says since when the host takes no new containers.
	Cordon *store.Cordon `json:"cordon,omitempty"`
	// GPUSharing is the host's gpuSharing.
	GPUSharing bool `json:"gpuSharing,omitempty"`
	// GPUs are the host's devices, in the config's order, each with the
	// running containers that hold it (none: free).
	GPUs []GPU `json:"gpus,omitempty"`
	// Containers are the instance's containers on the host.
	Containers []HostContainer `json:"containers,omitempty"`
}

// GPU is one device of a host and who holds it.
type GPU struct {
	Device  string      `json:"device"`
	Holders []GPUHolder `json:"holders,omitempty"`
}

// GPUHolder is a running container holding a GPU.
type GPUHolder struct {
	Container string `json:"container"`
	Owner     string `json:"owner"`
}

// FreeGPUs counts the host's devices no running container holds.
func (h HostInfo) FreeGPUs() int {
	n := 0
	for _, g := range h.GPUs {
		if len(g.Holders) == 0 {
			n++
		}
	}
	return n
}

// HostContainer is a container on a host.
type HostContainer struct {
	Name    string             `json:"name"`
	Owner   string             `json:"owner"`
	Repo    string             `json:"repo"`
	State   string             `json:"state"`
	GPUs    []string           `json:"gpus,omitempty"`
	Ports   []core.PortBinding `json:"ports,omitempty"`
	Volumes []string           `json:"volumes,omitempty"`
}

// Hosts lists every configured Docker host with what it holds: its
// containers, which GPU serves which, whether it answers and whether it
// is cordoned. A host that does not answer is listed with the reason.
func (r *Reconciler) Hosts(ctx context.Context) ([]HostInfo, error) {
	cordons, err := r.store.Cordons()
	if err != nil {
		return nil, err
	}
	var out []HostInfo
	for _, e := range r.engines {
		cfg := r.hosts[e.Name()]
		info := HostInfo{Name: cfg.Name, Endpoint: cfg.Endpoint, GPUSharing: cfg.GPUSharing}
		if c, ok := cordons[cfg.Name]; ok {
			info.Cordon = &c
		}
		devices := cfg.Devices()
		for _, d := range devices {
			info.GPUs = append(info.GPUs, GPU{Device: d})
		}
		live, err := e.ListManaged(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, err
			}
			info.Error = err.Error()
			out = append(out, info)
			continue
		}
		info.Reachable = true
		for _, c := range live {
			hc := HostContainer{Name: c.Name, Owner: c.Owner, Repo: c.Repo, State: c.State,
				Ports: slices.Clone(c.Ports), Volumes: slices.Clone(c.Volumes)}
			if c.Running && c.GPUs > 0 {
				held := c.GPUDevices
				if len(held) == 0 {
					held = devices[:min(c.GPUs, len(devices))]
				}
				hc.GPUs = slices.Clone(held)
				for _, d := range held {
					i := slices.IndexFunc(info.GPUs, func(g GPU) bool { return g.Device == d })
					if i < 0 {
						// A device the config no longer names.
						info.GPUs = append(info.GPUs, GPU{Device: d})
						i = len(info.GPUs) - 1
					}
					info.GPUs[i].Holders = append(info.GPUs[i].Holders, GPUHolder{Container: c.Name, Owner: c.Owner})
				}
			}
			info.Containers = append(info.Containers, hc)
		}
		out = append(out, info)
	}
	return out, nil
}

// knownHost fails for a name that is not a configured Docker host.
func (r *Reconciler) knownHost(host string) error {
	if _, ok := r.hosts[host]; ok {
		return nil
	}
	var names []string
	for _, e := range r.engines {
		names = append(names, e.Name())
	}
	return fmt.Errorf("no Docker host %q in the server config (its hosts: %s): %w", host, strings.Join(names, ", "), fault.New(fault.NotFound, "unknown host"))
}

// Cordon keeps new containers off host: no pass places a container there
// that is not there already; what runs there stays. Cordoning a cordoned
// host keeps the time it was first cordoned.
func (r *Reconciler) Cordon(host string) (store.Cordon, error) {
	return r.cordon(host, "cordoned")
}

func (r *Reconciler) cordon(host, reason string) (store.Cordon, error) {
	if err := r.knownHost(host); err != nil {
		return store.Cordon{}, err
	}
	cordons, err := r.store.Cordons()
	if err != nil {
		return store.Cordon{}, err
	}
	c, ok := cordons[host]
	if !ok {
		c = store.Cordon{Host: host, Since: r.now().UTC()}
	}
	c.Reason = reason
	return c, r.store.SetCordon(c)
}

// Uncordon lets host take new containers again; was says whether it was
// cordoned.
func (r *Reconciler) Uncordon(host string) (was bool, err error) {
	if err := r.knownHost(host); err != nil {
		return false, err
	}
	return r.store.Uncordon(host)
}

// cordonedNote says which hosts are cordoned, for a placement that found
// no host.
func cordonedNote(cordoned map[string]store.Cordon) string {
	if len(cordoned) == 0 {
		return ""
	}
	return " (cordoned, taking no new containers: " + strings.Join(sortedKeys(cordoned), ", ") + ")"
}

// DrainReport is what a drain did.
type DrainReport struct {
	// Host is the host drained.
	Host string `json:"host"`
	// Moved are the containers moved, in order.
	Moved []Moved `json:"moved,omitempty"`
	// Volumes are the volumes copied, in order.
	Volumes []VolumeCopy `json:"volumes,omitempty"`
	// Left says what the drain leaves on the host, and why.
	Left []string `json:"left,omitempty"`
}

// Moved is a container a drain moved.
type Moved struct {
	Container string `json:"container"`
	Owner     string `json:"owner"`
	Repo      string `json:"repo"`
	From      string `json:"from"`
	To        string `json:"to"`
	// Ports are the host ports that changed, because the old one was
	// taken on the new host.
	Ports []PortMove `json:"ports,omitempty"`
	// Recreate is true when the spec could not be read back exactly
	// (a container made by another version): the next pass of its repo
	// recreates it where it is now.
	Recreate bool `json:"recreate,omitempty"`
}

// PortMove is a host port a moved container had to change.
type PortMove struct {
	Guest int `json:"guest"`
	From  int `json:"from"`
	To    int `json:"to"`
}

// VolumeCopy is a volume a drain copied.
type VolumeCopy struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
	From  string `json:"from"`
	To    string `json:"to"`
	// Bytes is the size of the archive copied.
	Bytes int64 `json:"bytes"`
}

// undoTimeout bounds putting things back after a move failed, whatever
// became of the caller's context.
const undoTimeout = 2 * time.Minute

// Drain cordons host and moves every container of the instance on it to
// another host, chosen by the pass's placement rules (GPUs, load; no
// cordoned host), with its named volumes copied there with their data.
// Containers that share a volume move together. Each keeps its name, and
// its host ports when they are free on the new host (else it gets new
// ones, reported). A container is moved under its owner's lock, so no
// pass of theirs runs meanwhile: its old container is stopped, its
// volumes are copied, the new one is made (and started when it ran), and
// only then are the old container and its volumes removed. When anything
// fails before that, what was made on the new host is removed and the old
// container started again, and the drain stops with the reason; what was
// moved before stays moved. A host that cannot be reached is not drained:
// its volumes cannot be copied, and nothing is made elsewhere.
// progress, when not nil, hears of each step.
func (r *Reconciler) Drain(ctx context.Context, host string, progress func(string)) (DrainReport, error) {
	rep := DrainReport{Host: host}
	say := func(format string, args ...any) {
		if progress != nil {
			progress(fmt.Sprintf(format, args...))
		}
	}
	if err := r.knownHost(host); err != nil {
		return rep, err
	}
	src := r.engine(host)
	if _, ok := src.(HostMover); !ok {
		return rep, fmt.Errorf("the engine of Docker host %s cannot move containers", host)
	}
	live, err := src.ListManaged(ctx)
	if errors.Is(err, fault.Unreachable) && ctx.Err() == nil {
		return rep, fmt.Errorf("the Docker host %s cannot be reached, so it is not drained: nothing was moved and nothing is made elsewhere, "+
			"since the data of its containers' volumes can only be copied from a host that answers. "+
			"Bring it back and drain it again (wm hosts cordon %s keeps new containers off it meanwhile): %w", host, host, err)
	}
	if err != nil {
		return rep, fmt.Errorf("list the containers on %s: %w", host, err)
	}
	if _, err := r.cordon(host, "drained"); err != nil {
		return rep, err
	}
	say("cordoned %s: it takes no new containers", host)
	// A pass that placed a container before the cordon may make it
	// after the first listing: the host is listed again until it holds
	// nothing to move (a few rounds at most).
	for round := 0; round < 3; round++ {
		if round > 0 {
			if live, err = src.ListManaged(ctx); err != nil {
				return rep, fmt.Errorf("list the containers on %s: %w", host, err)
			}
		}
		var owners []string
		for _, c := range live {
			if _, ok := identity(c); ok && !slices.Contains(owners, c.Owner) {
				owners = append(owners, c.Owner)
			}
		}
		if len(owners) == 0 {
			break
		}
		slices.Sort(owners)
		for _, owner := range owners {
			if err := r.drainOwner(ctx, host, owner, &rep, say); err != nil {
				return rep, err
			}
		}
	}
	// A volume no container mounts is no container's to move: it stays,
	// and the admins hear of it.
	vs, err := src.ListVolumes(ctx)
	if err != nil {
		return rep, fmt.Errorf("%s is drained of its containers, but its volumes cannot be listed: %w", host, err)
	}
	for _, v := range vs {
		rep.Left = append(rep.Left, fmt.Sprintf("volume %s: no container mounts it, so it was not moved", v.Name))
	}
	say("%s is drained: %d container(s) moved, %d volume(s) copied", host, len(rep.Moved), len(rep.Volumes))
	return rep, nil
}

// drainOwner moves owner's containers off host, under the owner's lock.
func (r *Reconciler) drainOwner(ctx context.Context, host, owner string, rep *DrainReport, say func(string, ...any)) error {
	lock := r.ownerLock(owner)
	lock.Lock()
	defer lock.Unlock()
	mine, err := r.engine(host).ListOwned(ctx, owner)
	if err != nil {
		return fmt.Errorf("list %s's containers on %s: %w", owner, host, err)
	}
	var movable []core.Container
	for _, c := range mine {
		if _, ok := identity(c); ok {
			movable = append(movable, c)
		} else {
			if left := fmt.Sprintf("%s: set aside by a recreation that was cut short; the next pass of %s removes it", c.Name, c.Repo); !slices.Contains(rep.Left, left) {
				rep.Left = append(rep.Left, left)
			}
		}
	}
	for _, g := range volumeGroups(movable) {
		if err := r.moveGroup(ctx, host, owner, g, rep, say); err != nil {
			return err
		}
	}
	return nil
}

// volumeGroups splits containers into groups that share no volume, in
// the order of their first container: containers mounting one volume
// must move together, to one host, stopped together.
func volumeGroups(cs []core.Container) [][]core.Container {
	group := make([]int, len(cs))
	for i := range group {
		group[i] = i
	}
	find := func(i int) int {
		for group[i] != i {
			i = group[i]
		}
		return i
	}
	byVolume := map[string]int{}
	for i, c := range cs {
		for _, v := range c.Volumes {
			if j, ok := byVolume[v]; ok {
				group[find(i)] = find(j)
			} else {
				byVolume[v] = i
			}
		}
	}
	var out [][]core.Container
	index := map[int]int{}
	for i, c := range cs {
		root := find(i)
		k, ok := index[root]
		if !ok {
			k = len(out)
			index[root] = k
			out = append(out, nil)
		}
		out[k] = append(out[k], c)
	}
	return out
}

// moveGroup moves containers of owner that share volumes from host to
// one other host (see Drain).
func (r *Reconciler) moveGroup(ctx context.Context, host, owner string, group []core.Container, rep *DrainReport, say func(string, ...any)) error {
	src := r.engine(host)
	srcMover := src.(HostMover)
	var names []string
	for _, c := range group {
		names = append(names, c.Name)
	}
	what := strings.Join(names, ", ")
	specs := make([]core.ContainerSpec, len(group))
	for i, c := range group {
		s, err := srcMover.ReadSpec(ctx, c.Name)
		if err != nil {
			return fmt.Errorf("the drain stopped: %s stays on %s: %w", what, host, err)
		}
		specs[i] = s
	}
	var volumes []string
	helper := map[string]string{} // volume → an image on both hosts that mounts it
	for _, s := range specs {
		for _, m := range s.Mounts {
			if _, ok := helper[m.Volume]; !ok {
				volumes = append(volumes, m.Volume)
				helper[m.Volume] = s.Image
			}
		}
	}
	slices.Sort(volumes)

	// Where it goes: the pass's placement, over the hosts that answer,
	// are not host, and hold none of its volumes already.
	all, down, err := r.listEach(ctx, func(e core.Engine) ([]core.Container, error) { return e.ListManaged(ctx) })
	if err != nil {
		return fmt.Errorf("the drain stopped: %s stays on %s: %w", what, host, err)
	}
	p := &pass{repo: Repo{Key: group[0].Repo, Owner: owner}, allLive: all, allListed: true}
	load, gpusUsed := map[string]int{}, map[string]int{}
	for _, l := range all {
		load[l.Host]++
		if l.Running {
			gpusUsed[l.Host] += l.GPUs
		}
	}
	gpus := 0
	for _, s := range specs {
		if s.Running {
			gpus += s.GPUs
		}
	}
	excluded := map[string]error{host: errors.New("it is the host drained")}
	maps.Copy(excluded, down)
	for _, e := range r.engines {
		if _, out := excluded[e.Name()]; out {
			continue
		}
		vs, err := e.ListVolumes(ctx)
		if err != nil {
			excluded[e.Name()] = fmt.Errorf("its volumes cannot be listed: %w", err)
			continue
		}
		for _, v := range vs {
			if slices.Contains(volumes, v.Name) {
				excluded[e.Name()] = fmt.Errorf("it has a volume named %s already (the copy would mix with its data)", v.Name)
				break
			}
		}
	}
	target, err := r.place(what, gpus, "", gpusUsed, load, excluded)
	if err != nil {
		return fmt.Errorf("the drain stopped: no other Docker host can take %s, which stays on %s as it is (%s)", what, host, r.whyNot(excluded, host, gpus, gpusUsed))
	}
	dst := r.engine(target)
	dstMover, ok := dst.(HostMover)
	if !ok {
		return fmt.Errorf("the drain stopped: the engine of Docker host %s cannot take moved containers; %s stays on %s", target, what, host)
	}
	say("moving %s from %s to %s", what, host, target)

	// The images first, before anything is stopped.
	for _, s := range specs {
		ok, err := dst.ImageExists(ctx, s.Image)
		if err == nil && !ok {
			say("pulling %s on %s", s.Image, target)
			var auth *core.RegistryAuth
			if r.ownImage(s.Image) {
				auth = r.auth
			}
			err = dst.Pull(ctx, s.Image, auth)
		}
		if err != nil {
			return fmt.Errorf("the drain stopped: image %s of %s is not on %s and cannot be pulled there; %s stays on %s as it is: %w", s.Image, what, target, what, host, err)
		}
	}

	var stopped, imported, created []string
	oldPorts := map[string]int{} // store key → the host port it had
	undo := func(cause error) error {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		var errs []error
		for _, name := range slices.Backward(created) {
			if err := dst.Remove(uctx, name); err != nil && !errors.Is(err, fault.NotFound) {
				errs = append(errs, err)
			}
		}
		for _, v := range imported {
			if err := dst.RemoveVolume(uctx, v); err != nil && !errors.Is(err, fault.NotFound) {
				errs = append(errs, err)
			}
		}
		for key, port := range oldPorts {
			if err := r.store.AdoptPort(key, port); err != nil {
				errs = append(errs, err)
			}
		}
		for _, name := range stopped {
			if err := src.Start(uctx, name); err != nil {
				errs = append(errs, err)
			}
		}
		state := "it is as it was"
		if len(stopped) > 0 {
			state = "it runs there again"
		}
		if len(errs) > 0 {
			return fmt.Errorf("the drain stopped: %w; %s stays on %s, but putting things back failed (%v): check %s and %s", cause, what, host, errors.Join(errs...), host, target)
		}
		return fmt.Errorf("the drain stopped: %w; %s stays on %s, %s, and nothing of it is left on %s", cause, what, host, state, target)
	}

	for _, c := range group {
		if !c.Running {
			continue
		}
		say("stopping %s on %s", c.Name, host)
		if err := src.Stop(ctx, c.Name, StopTimeout); err != nil {
			return undo(fmt.Errorf("stop %s on %s: %w", c.Name, host, err))
		}
		stopped = append(stopped, c.Name)
	}
	for _, v := range volumes {
		say("copying volume %s from %s to %s", v, host, target)
		n, err := copyVolume(ctx, srcMover, dstMover, owner, v, helper[v])
		if err != nil {
			return undo(fmt.Errorf("copy volume %s from %s to %s: %w", v, host, target, err))
		}
		imported = append(imported, v)
		rep.Volumes = append(rep.Volumes, VolumeCopy{Name: v, Owner: owner, From: host, To: target, Bytes: n})
		say("copied volume %s (%d bytes)", v, n)
	}
	var moved []Moved
	for i, c := range group {
		s := specs[i]
		s.Ports = slices.Clone(s.Ports)
		// A GPU container gets its own devices on its new host.
		s.GPUDevices = nil
		onTarget := map[int]bool{}
		for _, l := range all {
			if l.Host == target {
				for _, b := range l.Ports {
					onTarget[b.Host] = true
				}
			}
		}
		for j, b := range s.Ports {
			if onTarget[b.Host] {
				oldPorts[store.PortKey(s.Name, b.Guest)] = b.Host
				s.Ports[j].Host = 0
			}
		}
		var err error
		for range 3 {
			say("creating %s on %s", s.Name, target)
			if err = r.create(ctx, p, target, &s); !errors.Is(err, core.ErrPortInUse) {
				break
			}
			// Something on the new host binds a port: new ones.
			for j, b := range s.Ports {
				if b.Host != 0 {
					if _, ok := oldPorts[store.PortKey(s.Name, b.Guest)]; !ok {
						oldPorts[store.PortKey(s.Name, b.Guest)] = specs[i].Ports[j].Host
					}
				}
				s.Ports[j].Host = 0
			}
		}
		if err != nil {
			return undo(fmt.Errorf("create %s on %s: %w", s.Name, target, err))
		}
		created = append(created, s.Name)
		m := Moved{Container: s.Name, Owner: owner, Repo: c.Repo, From: host, To: target, Recreate: specs[i].Hash() != c.SpecHash}
		for j, b := range s.Ports {
			if old := specs[i].Ports[j].Host; old != b.Host {
				m.Ports = append(m.Ports, PortMove{Guest: b.Guest, From: old, To: b.Host})
				say("%s: host port %d is taken on %s; it has %d now", s.Name, old, target, b.Host)
			}
		}
		moved = append(moved, m)
	}

	// Everything is in place on the new host: the old goes.
	for _, c := range group {
		say("removing %s from %s", c.Name, host)
		if err := src.Remove(ctx, c.Name); err != nil && !errors.Is(err, fault.NotFound) {
			rep.Moved = append(rep.Moved, moved...)
			return fmt.Errorf("the drain stopped: %s runs on %s now, but its old container on %s could not be removed: %w; remove it there before the next pass of %s", c.Name, target, host, err, c.Repo)
		}
	}
	for _, v := range volumes {
		say("removing volume %s from %s", v, host)
		if err := src.RemoveVolume(ctx, v); err != nil && !errors.Is(err, fault.NotFound) {
			rep.Left = append(rep.Left, fmt.Sprintf("volume %s: copied to %s, but not removed: %v", v, target, err))
		}
	}
	rep.Moved = append(rep.Moved, moved...)
	if err := r.movedInState(moved); err != nil {
		return fmt.Errorf("%s moved to %s, but its repo's state was not updated (the next pass does): %w", what, target, err)
	}
	return nil
}

// whyNot says, host by host, why none could take what needs gpus.
func (r *Reconciler) whyNot(excluded map[string]error, drained string, gpus int, gpusUsed map[string]int) string {
	cordons, _ := r.store.Cordons()
	var why []string
	for _, e := range r.engines {
		h := e.Name()
		switch err, out := excluded[h]; {
		case h == drained:
			continue
		case out:
			why = append(why, fmt.Sprintf("%s: %v", h, err))
		case cordons[h].Host != "":
			why = append(why, h+": cordoned")
		default:
			n := len(r.hosts[h].Devices())
			why = append(why, fmt.Sprintf("%s: %d GPU(s) needed, %d free of %d", h, gpus, max(n-gpusUsed[h], 0), n))
		}
	}
	if len(why) == 0 {
		return "no other host is configured"
	}
	return strings.Join(why, "; ")
}

// copyVolume copies owner's volume from one host to the other through
// their APIs and returns the size of the archive.
func copyVolume(ctx context.Context, from, to HostMover, owner, volume, helperImage string) (int64, error) {
	rc, err := from.ExportVolume(ctx, owner, volume, helperImage)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	cr := &countingReader{r: rc}
	if err := to.ImportVolume(ctx, owner, volume, helperImage, cr); err != nil {
		return cr.n, err
	}
	return cr.n, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// movedInState writes where moved containers are now into their repos'
// state: the inventory (which a pass reads to know what an unreachable
// host holds) and the status.
func (r *Reconciler) movedInState(moved []Moved) error {
	byRepo := map[string][]Moved{}
	for _, m := range moved {
		byRepo[m.Repo] = append(byRepo[m.Repo], m)
	}
	for _, key := range sortedKeys(byRepo) {
		st, ok, err := r.store.Repo(key)
		if err != nil {
			return err
		}
		if !ok {
			continue // a repo no pass has recorded yet: nothing to update
		}
		for _, m := range byRepo[key] {
			for i, o := range st.Inventory {
				if o.Kind == "container" && o.Name == m.Container && o.Host == m.From {
					st.Inventory[i].Host = m.To
				}
			}
			for i, c := range st.Containers {
				if core.ObjectName(m.Owner, c.Name) == m.Container && c.Host == m.From {
					st.Containers[i].Host = m.To
					for _, pm := range m.Ports {
						if st.Containers[i].Ports != nil {
							st.Containers[i].Ports[fmt.Sprint(pm.Guest)] = pm.To
						}
					}
				}
			}
		}
		if err := r.store.PutRepo(st); err != nil {
			return err
		}
	}
	return nil
}
