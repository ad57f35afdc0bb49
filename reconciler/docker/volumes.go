package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/volume"

	"github.com/whalemountain/wm/reconciler/core"
)

// What a drain needs to move a container to another host: the spec it
// was made from (ReadSpec) and the data of its named volumes, as tar
// streams (ExportVolume on the host it leaves, ImportVolume on the one it
// goes to). Both go through the engine's API only: a helper container,
// created and never started, mounts the volume, and the engine's archive
// endpoints copy its files out and in, owners, modes and times kept.
//
// The stream holds the volume's root as "./" and every file below it by
// its path relative to the root ("data/x"), so that it does not depend
// on where a helper mounted the volume.

// helperMount is where a helper container mounts the volume it copies.
const helperMount = "/.wm-volume"

// labelHelper marks a volume-copy helper container; it carries the
// owner's and instance's labels but not LabelManagedBy, so that no pass
// ever lists it.
const labelHelper = "dev.whalemountain.helper"

// helperTimeout bounds the removal of a helper once its copy is over,
// whatever became of the caller's context.
const helperTimeout = 30 * time.Second

// ownVolumeName reports whether volume has one of owner's names (as
// core.ContainerSpec.Validate accepts them).
func ownVolumeName(owner, volume string) bool {
	return owner != "" && (strings.HasPrefix(volume, owner+core.NameSeparator) || strings.HasPrefix(volume, owner+"-")) && len(volume) > len(owner)+1
}

// ExportVolume streams the files of owner's volume called name as a tar
// archive (see above), read through a helper container made from
// helperImage (any image on the host: the image of a container that
// mounts the volume is one). It refuses, as ErrNotFound, a volume that is
// not the engine instance's labelled with owner; ErrImageNotFound when
// helperImage is not on the host. The volume should not be written while
// it is read: stop the containers that mount it first. Closing the stream
// removes the helper.
func (e *Engine) ExportVolume(ctx context.Context, owner, name, helperImage string) (io.ReadCloser, error) {
	fail := func(err error) (io.ReadCloser, error) {
		return nil, fmt.Errorf("export volume %s on %s: %w", name, e.name, err)
	}
	if err := e.ownedVolume(ctx, owner, name); err != nil {
		return fail(err)
	}
	id, err := e.helper(ctx, owner, name, helperImage, "export")
	if err != nil {
		return fail(err)
	}
	rc, _, err := e.cli.CopyFromContainer(ctx, id, helperMount)
	if err != nil {
		e.removeHelper(ctx, id)
		return fail(classify(err, ErrNotFound, nil))
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(rebase(rc, pw, strings.TrimPrefix(helperMount, "/"), "."))
	}()
	return &helperStream{r: pr, close: func() error {
		pr.Close()
		err := rc.Close()
		e.removeHelper(ctx, id)
		return err
	}}, nil
}

// ImportVolume makes owner's volume called name, labelled as Create
// labels it, and fills it with the tar archive content (as ExportVolume
// writes it), through a helper container made from helperImage. It
// refuses a volume that exists already (ErrConflict: a copy never mixes
// with data that is there), a name that is not one of owner's
// (core.ErrInvalidSpec) and a helperImage that is not on the host
// (ErrImageNotFound). When the copy fails, the volume it made is removed.
func (e *Engine) ImportVolume(ctx context.Context, owner, name, helperImage string, content io.Reader) (err error) {
	fail := func(err error) error { return fmt.Errorf("import volume %s on %s: %w", name, e.name, err) }
	if !ownVolumeName(owner, name) {
		return fail(fmt.Errorf("%w: volume %q is not one of %s's names", core.ErrInvalidSpec, name, owner))
	}
	if ok, err := e.ImageExists(ctx, helperImage); err != nil {
		return fail(err)
	} else if !ok {
		return fail(fmt.Errorf("image %s is not on the host: %w", helperImage, ErrImageNotFound))
	}
	e.ensureMu.Lock()
	_, ierr := e.cli.VolumeInspect(ctx, name)
	switch cerr := classify(ierr, ErrNotFound, nil); {
	case ierr == nil:
		e.ensureMu.Unlock()
		return fail(fmt.Errorf("volume %s exists on %s already: a copy goes only into a new volume: %w", name, e.name, ErrConflict))
	case !errors.Is(cerr, ErrNotFound):
		e.ensureMu.Unlock()
		return fail(fmt.Errorf("inspect volume %s: %w", name, cerr))
	}
	_, cerr := e.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Driver: "local", Labels: ownedLabels(e.instance, owner)})
	e.ensureMu.Unlock()
	if cerr != nil {
		return fail(fmt.Errorf("create volume %s: %w", name, classify(cerr, ErrNotFound, nil)))
	}
	defer func() {
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), helperTimeout)
			defer cancel()
			if rerr := e.cli.VolumeRemove(rctx, name, false); rerr != nil {
				err = errors.Join(err, fmt.Errorf("the volume it made stays: %w", classify(rerr, ErrNotFound, nil)))
			}
		}
	}()
	id, err := e.helper(ctx, owner, name, helperImage, "import")
	if err != nil {
		return fail(err)
	}
	defer e.removeHelper(ctx, id)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(rebase(content, pw, ".", strings.TrimPrefix(helperMount, "/"))) }()
	err = e.cli.CopyToContainer(ctx, id, "/", pr, container.CopyToContainerOptions{CopyUIDGID: true})
	pr.CloseWithError(errors.New("copy ended"))
	if err != nil {
		return fail(classify(err, ErrNotFound, nil))
	}
	return nil
}

// ownedVolume checks that name is owner's volume under e's instance.
func (e *Engine) ownedVolume(ctx context.Context, owner, name string) error {
	v, err := e.cli.VolumeInspect(ctx, name)
	if err != nil {
		return classify(err, ErrNotFound, nil)
	}
	if !ownVolumeName(owner, name) || !e.ownedBy(v.Labels, owner) {
		return fmt.Errorf("volume %s is not %s's under instance %s: %w", name, owner, e.instance, ErrNotFound)
	}
	return nil
}

// helper creates (never starts) the helper container of one copy of
// owner's volume, replacing one a copy cut short left behind, and returns
// its ID. A container of its name that is not such a helper is a
// conflict.
func (e *Engine) helper(ctx context.Context, owner, vol, image, role string) (string, error) {
	if ok, err := e.ImageExists(ctx, image); err != nil {
		return "", err
	} else if !ok {
		return "", fmt.Errorf("image %s is not on the host: %w", image, ErrImageNotFound)
	}
	name := vol + ".wm-" + role
	if old, err := e.cli.ContainerInspect(ctx, name); err == nil {
		l := old.Config.Labels
		if l[labelHelper] == "volume-copy" && l[LabelInstance] == e.instance && l[LabelOwner] == owner {
			e.removeHelper(ctx, old.ID)
		} else {
			return "", fmt.Errorf("a container named %s exists that is not a volume-copy helper: %w", name, ErrConflict)
		}
	} else if cerr := classify(err, ErrNotFound, nil); !errors.Is(cerr, ErrNotFound) {
		return "", cerr
	}
	config := &container.Config{
		Image:           image,
		Entrypoint:      []string{"/.wm-never-started"},
		Labels:          map[string]string{labelHelper: "volume-copy", LabelInstance: e.instance, LabelOwner: owner},
		NetworkDisabled: true,
	}
	hostConfig := &container.HostConfig{
		NetworkMode: "none",
		CapDrop:     []string{"ALL"},
		SecurityOpt: []string{"no-new-privileges:true"},
		Mounts: []mount.Mount{{Type: mount.TypeVolume, Source: vol, Target: helperMount,
			VolumeOptions: &mount.VolumeOptions{NoCopy: true}}},
	}
	created, err := e.cli.ContainerCreate(ctx, config, hostConfig, nil, nil, name)
	if err != nil {
		return "", fmt.Errorf("create helper %s: %w", name, classify(err, ErrNotFound, nil))
	}
	return created.ID, nil
}

// removeHelper removes a helper container, whatever became of ctx; a
// helper that cannot be removed is replaced by the next copy.
func (e *Engine) removeHelper(ctx context.Context, id string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), helperTimeout)
	defer cancel()
	_ = e.cli.ContainerRemove(rctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
}

// helperStream is an export's stream; Close ends the copy and removes
// its helper.
type helperStream struct {
	r     io.Reader
	close func() error
	once  sync.Once
	err   error
}

func (s *helperStream) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *helperStream) Close() error {
	s.once.Do(func() { s.err = s.close() })
	return s.err
}

// rebase copies the tar archive in to out with every entry under the
// folder from moved under the folder to ("." is the archive's root): the
// folder itself becomes to + "/", what is below it keeps its path below.
// An entry outside from, or a path that climbs out, fails the copy.
func rebase(in io.Reader, out io.Writer, from, to string) error {
	tr := tar.NewReader(in)
	tw := tar.NewWriter(out)
	move := func(name string) (string, error) {
		clean := path.Clean(strings.TrimPrefix(name, "./"))
		if clean == ".." || strings.HasPrefix(clean, "../") || path.IsAbs(clean) {
			return "", fmt.Errorf("archive entry %q climbs out of the volume", name)
		}
		rel := "."
		if from == "." {
			rel = clean
		} else if clean != from {
			r, ok := strings.CutPrefix(clean, from+"/")
			if !ok {
				return "", fmt.Errorf("archive entry %q is not in %s", name, from)
			}
			rel = r
		}
		if rel == "." {
			return to + "/", nil
		}
		if to == "." {
			return rel, nil
		}
		return to + "/" + rel, nil
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return fmt.Errorf("read volume archive: %w", err)
		}
		dir := h.Typeflag == tar.TypeDir
		if h.Name, err = move(h.Name); err != nil {
			return err
		}
		if !dir {
			h.Name = strings.TrimSuffix(h.Name, "/")
		}
		if h.Typeflag == tar.TypeLink {
			if h.Linkname, err = move(h.Linkname); err != nil {
				return err
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("write volume archive: %w", err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("copy volume archive: %w", err)
		}
	}
}

// ReadSpec returns the spec the managed container called name was made
// from, read back from the engine, with Running as the container is now.
// What the engine cannot tell apart (an environment variable, entrypoint,
// command, folder or user the spec set to the image's own; /dev/shm at the
// engine's default) is resolved by the container's spec hash, so that for
// a container made by this version Hash equals its SpecHash; for one made
// by another, the spec is the nearest reading, which runs the same.
func (e *Engine) ReadSpec(ctx context.Context, name string) (core.ContainerSpec, error) {
	fail := func(err error) (core.ContainerSpec, error) {
		return core.ContainerSpec{}, fmt.Errorf("read the spec of container %s on %s: %w", name, e.name, err)
	}
	c, err := e.lookup(ctx, name)
	if err != nil {
		return fail(err)
	}
	raw, err := e.cli.ContainerInspect(ctx, c.ID)
	if err != nil {
		return fail(classify(err, ErrNotFound, nil))
	}
	img, err := e.cli.ImageInspect(ctx, raw.Image)
	if err != nil {
		return fail(fmt.Errorf("inspect its image: %w", classify(err, ErrImageNotFound, nil)))
	}
	imgConfig := &container.Config{}
	if img.Config != nil {
		imgConfig = &container.Config{Env: img.Config.Env, Entrypoint: img.Config.Entrypoint, Cmd: img.Config.Cmd,
			WorkingDir: img.Config.WorkingDir, User: img.Config.User}
	}
	return specFromInspect(raw, imgConfig, c), nil
}

// specFromInspect reads a spec back from a container and its image's
// configuration (see ReadSpec).
func specFromInspect(raw container.InspectResponse, img *container.Config, c core.Container) core.ContainerSpec {
	base := core.ContainerSpec{
		Name: c.Name, Owner: c.Owner, Repo: c.Repo, LocalName: c.LocalName,
		Ports: slices.Clone(c.Ports), GPUs: c.GPUs, GPUDevices: slices.Clone(c.GPUDevices), Running: c.Running,
	}
	cfg := raw.Config
	if cfg == nil {
		cfg = &container.Config{}
	}
	base.Image = cfg.Image
	var shm int64
	if hc := raw.HostConfig; hc != nil {
		base.Network = string(hc.NetworkMode)
		base.NanoCPUs, base.MemoryBytes, shm = hc.NanoCPUs, hc.Memory, hc.ShmSize
		if hc.PidsLimit != nil {
			base.PidsLimit = *hc.PidsLimit
		}
		for _, m := range hc.Mounts {
			if m.Type == mount.TypeVolume {
				base.Mounts = append(base.Mounts, core.Mount{Volume: m.Source, Target: m.Target})
			}
		}
	}
	// Each dimension lists what the spec may have said, the reading
	// that adds nothing to the image first.
	type choice func(s *core.ContainerSpec)
	var dims [][]choice
	one := func(f choice) { dims = append(dims, []choice{f}) }
	imageEnv := map[string]bool{}
	for _, kv := range img.Env {
		imageEnv[kv] = true
	}
	base.Env = map[string]string{}
	var ambiguous []string
	for _, kv := range cfg.Env {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case c.GPUs == 0 && kv == "NVIDIA_VISIBLE_DEVICES=void":
		case imageEnv[kv]:
			ambiguous = append(ambiguous, kv)
		default:
			base.Env[k] = v
		}
	}
	if len(ambiguous) <= 8 {
		for _, kv := range ambiguous {
			k, v, _ := strings.Cut(kv, "=")
			dims = append(dims, []choice{func(*core.ContainerSpec) {}, func(s *core.ContainerSpec) { s.Env[k] = v }})
		}
	}
	ep, cmd := cfg.Entrypoint, cfg.Cmd
	switch {
	case !slices.Equal(ep, img.Entrypoint):
		one(func(s *core.ContainerSpec) { s.Entrypoint, s.Command = slices.Clone(ep), slices.Clone(cmd) })
	default:
		// The image's entrypoint: the spec left it, and the command is
		// its own or the image's; or the spec set it to the same, and
		// the command is its own (the image's is not inherited then).
		alts := []choice{}
		if slices.Equal(cmd, img.Cmd) {
			alts = append(alts, func(s *core.ContainerSpec) {})
		}
		alts = append(alts, func(s *core.ContainerSpec) { s.Command = slices.Clone(cmd) })
		if len(ep) > 0 {
			alts = append(alts, func(s *core.ContainerSpec) { s.Entrypoint, s.Command = slices.Clone(ep), slices.Clone(cmd) })
		}
		dims = append(dims, alts)
	}
	for _, f := range []struct {
		got, image string
		set        func(s *core.ContainerSpec, v string)
	}{
		{cfg.WorkingDir, img.WorkingDir, func(s *core.ContainerSpec, v string) { s.Workdir = v }},
		{cfg.User, img.User, func(s *core.ContainerSpec, v string) { s.User = v }},
	} {
		v, set := f.got, f.set
		if v != f.image {
			one(func(s *core.ContainerSpec) { set(s, v) })
		} else if v != "" {
			dims = append(dims, []choice{func(*core.ContainerSpec) {}, func(s *core.ContainerSpec) { set(s, v) }})
		}
	}
	if shm > 0 {
		dims = append(dims, []choice{func(*core.ContainerSpec) {}, func(s *core.ContainerSpec) { s.ShmBytes = shm }})
	}
	// The first reading whose hash is the container's; else the first.
	var first *core.ContainerSpec
	var found *core.ContainerSpec
	var walk func(i int, picks []choice)
	walk = func(i int, picks []choice) {
		if found != nil {
			return
		}
		if i == len(dims) {
			s := base
			s.Env = maps.Clone(base.Env)
			s.Mounts = slices.Clone(base.Mounts)
			for _, p := range picks {
				p(&s)
			}
			if first == nil {
				first = &s
			}
			if s.Hash() == c.SpecHash {
				found = &s
			}
			return
		}
		for _, alt := range dims[i] {
			walk(i+1, append(picks, alt))
		}
	}
	walk(0, nil)
	if found != nil {
		return *found
	}
	return *first
}

// The Fake's side. A Fake's volumes hold files only through these
// methods and WriteVolumeFile; what its containers write is not modelled.

// fakeVolumeFiles is what a Fake keeps of its volumes' files, beside the
// Fake's own state: volume name → the volume's labels (which tell a
// volume from one made again under its name) and its files.
type fakeVolumeFiles struct {
	volumes map[string]*fakeVolume
}

type fakeVolume struct {
	labels map[string]string
	files  map[string][]byte // path relative to the root → content; nil for a folder
}

var fakeVolumesOf sync.Map // *Fake → *fakeVolumeFiles

// volumeFiles returns the files of the volume called name, made empty
// when it is not the volume they were written to. The caller holds f.mu
// and has checked that the volume exists.
func (f *Fake) volumeFiles(name string) map[string][]byte {
	v, _ := fakeVolumesOf.LoadOrStore(f, &fakeVolumeFiles{volumes: map[string]*fakeVolume{}})
	all := v.(*fakeVolumeFiles)
	labels := f.volumes[name].Labels
	fv := all.volumes[name]
	if fv == nil || reflect.ValueOf(fv.labels).UnsafePointer() != reflect.ValueOf(labels).UnsafePointer() {
		fv = &fakeVolume{labels: labels, files: map[string][]byte{}}
		all.volumes[name] = fv
	}
	return fv.files
}

// WriteVolumeFile writes content at the path p (relative to the volume's
// root) of the managed volume called name, made for owner when missing,
// as a container mounting it would.
func (f *Fake) WriteVolumeFile(owner, name, p string, content []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.volumes[name]; !ok {
		f.volumes[name] = core.Volume{Name: name, Labels: ownedLabels(core.DefaultInstance, owner)}
	}
	f.volumeFiles(name)[path.Clean(strings.TrimPrefix(p, "/"))] = slices.Clone(content)
}

// VolumeFiles returns the regular files of the volume called name by
// path relative to its root; nil when there is no such volume.
func (f *Fake) VolumeFiles(name string) map[string][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.volumes[name]; !ok {
		return nil
	}
	out := map[string][]byte{}
	for p, b := range f.volumeFiles(name) {
		if b != nil {
			out[p] = slices.Clone(b)
		}
	}
	return out
}

// ExportVolume streams the files of owner's volume as the Engine's does,
// with its checks: ErrNotFound for a volume that is not owner's managed
// one, ErrImageNotFound for a helper image the host does not have.
func (f *Fake) ExportVolume(ctx context.Context, owner, name, helperImage string) (io.ReadCloser, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(err error) (io.ReadCloser, error) {
		return nil, fmt.Errorf("export volume %s on %s: %w", name, f.name, err)
	}
	if err := f.begin(ctx, "ExportVolume", name); err != nil {
		return fail(err)
	}
	v, ok := f.volumes[name]
	switch {
	case !ok:
		return fail(fmt.Errorf("no volume named %s: %w", name, ErrNotFound))
	case !ownVolumeName(owner, name) || !ownedBy(v.Labels, core.DefaultInstance, owner):
		return fail(fmt.Errorf("volume %s is not %s's under instance %s: %w", name, owner, core.DefaultInstance, ErrNotFound))
	case !f.images[normalizeRef(helperImage)]:
		return fail(fmt.Errorf("image %s is not on the host: %w", helperImage, ErrImageNotFound))
	}
	files := f.volumeFiles(name)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})
	for _, p := range slices.Sorted(maps.Keys(files)) {
		if files[p] == nil {
			_ = tw.WriteHeader(&tar.Header{Name: p + "/", Typeflag: tar.TypeDir, Mode: 0o755})
			continue
		}
		_ = tw.WriteHeader(&tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(files[p]))})
		_, _ = tw.Write(files[p])
	}
	_ = tw.Close()
	return io.NopCloser(&buf), nil
}

// ImportVolume makes owner's volume and fills it from the archive, as the
// Engine's does, with its checks: ErrConflict for a volume that exists,
// core.ErrInvalidSpec for a name that is not owner's, ErrImageNotFound for
// a helper image the host does not have. A failed copy leaves no volume.
func (f *Fake) ImportVolume(ctx context.Context, owner, name, helperImage string, content io.Reader) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(err error) error { return fmt.Errorf("import volume %s on %s: %w", name, f.name, err) }
	if err := f.begin(ctx, "ImportVolume", name); err != nil {
		return fail(err)
	}
	switch _, exists := f.volumes[name]; {
	case !ownVolumeName(owner, name):
		return fail(fmt.Errorf("%w: volume %q is not one of %s's names", core.ErrInvalidSpec, name, owner))
	case !f.images[normalizeRef(helperImage)]:
		return fail(fmt.Errorf("image %s is not on the host: %w", helperImage, ErrImageNotFound))
	case exists:
		return fail(fmt.Errorf("volume %s exists on %s already: a copy goes only into a new volume: %w", name, f.name, ErrConflict))
	}
	files := map[string][]byte{}
	tr := tar.NewReader(content)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(fmt.Errorf("read volume archive: %w", err))
		}
		p := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if p == ".." || strings.HasPrefix(p, "../") || path.IsAbs(p) {
			return fail(fmt.Errorf("archive entry %q climbs out of the volume", h.Name))
		}
		switch {
		case p == ".":
		case h.Typeflag == tar.TypeDir:
			files[p] = nil
		case h.Typeflag == tar.TypeReg:
			b, err := io.ReadAll(tr)
			if err != nil {
				return fail(fmt.Errorf("read volume archive: %w", err))
			}
			files[p] = append([]byte{}, b...)
		}
	}
	f.volumes[name] = core.Volume{Name: name, Labels: ownedLabels(core.DefaultInstance, owner)}
	maps.Copy(f.volumeFiles(name), files)
	return nil
}

// ReadSpec returns the spec the managed container called name was made
// from, with Running as the container is now.
func (f *Fake) ReadSpec(ctx context.Context, name string) (core.ContainerSpec, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc, err := f.lookup(ctx, "ReadSpec", name)
	if err != nil {
		return core.ContainerSpec{}, fmt.Errorf("read the spec of container %s on %s: %w", name, f.name, err)
	}
	s := cloneSpec(fc.spec)
	s.GPUDevices = slices.Clone(s.GPUDevices)
	s.Running = fc.c.Running
	return s, nil
}
