package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/whalemountain/wm/reconciler/sif"
	"github.com/whalemountain/wm/reconciler/store"
)

// buildSIFs builds every declared Singularity image into
// <artifacts>/<owner>/<name>.sif (and the shared folder), and removes the
// files of SIFs no longer declared once their grace period is over. An
// unchanged image digest rebuilds nothing.
func (r *Reconciler) buildSIFs(ctx context.Context, p *pass) error {
	if err := r.retireSIFs(p); err != nil {
		return err
	}
	if len(p.file.Singularity) == 0 {
		return nil
	}
	if r.sif == nil {
		return stalled("NoSIFBuilder", "singularity: this WhaleMountain does not build Singularity images (ask the admins)")
	}
	taken, err := r.sifNamesOfOtherRepos(p)
	if err != nil {
		return err
	}
	if p.expired {
		p.res.SIFs = p.state.SIFs // expired: keep what was built, build nothing
		return nil
	}
	p.res.SIFs = nil
	for _, name := range sortedKeys(p.file.Singularity) {
		if other, ok := taken[name]; ok {
			return stalled("NameTaken", "singularity.%s: the SIF name %s is already used by your repo %s", name, name, other)
		}
		ref := p.sifRefs[name]
		dst := r.sifPath(p.repo.Owner, name)
		if r.progress != nil {
			r.progress(p.repo.Key, "build SIF "+name)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("artifacts folder: %w", err)
		}
		res, err := r.sif.Build(ctx, ref, dst, nil)
		switch {
		case errors.Is(err, sif.ErrImageNotFound) && strings.HasSuffix(ref, ":"+p.rev):
			return waiting("WaitingForImage", "singularity.%s: waiting for CI to push %s", name, ref)
		case errors.Is(err, sif.ErrImageNotFound):
			return waiting("ImageNotFound", "singularity.%s: image %s not found", name, ref)
		case errors.Is(err, sif.ErrUnreachable):
			return waiting("ImageSourceUnreachable", "singularity.%s: cannot read %s: %v", name, ref, err)
		case errors.Is(err, sif.ErrInvalidImage), errors.Is(err, sif.ErrInvalidRef), errors.Is(err, sif.ErrAccessDenied):
			return stalled("SIFBuildFailed", "singularity.%s: %v", name, err)
		case errors.Is(err, sif.ErrToolMissing):
			return stalled("SIFBuilderBroken", "singularity.%s: the server cannot build SIFs (ask the admins): %v", name, err)
		case err != nil:
			return fmt.Errorf("build SIF %s: %w", name, err)
		}
		if shared := r.cfg.SIF.SharedDir; shared != "" && (!res.Cached || !exists(filepath.Join(shared, p.repo.Owner, name+".sif"))) {
			if err := copyAtomically(dst, filepath.Join(shared, p.repo.Owner, name+".sif")); err != nil {
				return fmt.Errorf("copy SIF %s to the shared folder: %w", name, err)
			}
		}
		p.res.SIFs = append(p.res.SIFs, store.SIFStatus{Name: name, Path: dst, SHA256: res.SHA256, Size: res.Size, Image: ref})
	}
	return nil
}

func (r *Reconciler) sifPath(owner, name string) string {
	return filepath.Join(r.cfg.ArtifactsDir, owner, name+".sif")
}

// sifNamesOfOtherRepos maps the SIF names the owner's other repos hold to
// those repos: two repos cannot write one file.
func (r *Reconciler) sifNamesOfOtherRepos(p *pass) (map[string]string, error) {
	repos, err := r.store.Repos()
	if err != nil {
		return nil, err
	}
	taken := map[string]string{}
	for _, other := range repos {
		if other.Owner == p.repo.Owner && other.Key != p.repo.Key {
			for _, s := range other.SIFs {
				taken[s.Name] = other.Key
			}
		}
	}
	return taken, nil
}

// retireSIFs starts the grace period of SIFs the repo no longer declares
// and removes those whose grace period is over.
func (r *Reconciler) retireSIFs(p *pass) error {
	now := r.now()
	declared := map[string]bool{}
	for name := range p.file.Singularity {
		declared[r.sifPath(p.repo.Owner, name)] = true
	}
	retired := map[string]bool{}
	for _, rs := range p.state.RetiredSIFs {
		retired[rs.Path] = true
	}
	for _, s := range p.state.SIFs {
		if !declared[s.Path] && !retired[s.Path] {
			p.state.RetiredSIFs = append(p.state.RetiredSIFs, store.RetiredSIF{Path: s.Path, Since: now})
		}
	}
	keep := p.state.RetiredSIFs[:0]
	for _, rs := range p.state.RetiredSIFs {
		switch {
		case declared[rs.Path]:
			// declared again: nothing to remove
		case now.Sub(rs.Since) < r.cfg.SIF.GracePeriod.Std():
			keep = append(keep, rs)
		default:
			if err := sif.Remove(rs.Path); err != nil {
				return fmt.Errorf("remove retired SIF: %w", err)
			}
			if shared := r.cfg.SIF.SharedDir; shared != "" {
				rel, err := filepath.Rel(r.cfg.ArtifactsDir, rs.Path)
				if err == nil {
					_ = os.Remove(filepath.Join(shared, rel))
				}
			}
		}
	}
	p.state.RetiredSIFs = keep
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// copyAtomically copies src to dst through a temporary file in dst's
// folder, synced, then renamed: readers see the old file or the new one.
func copyAtomically(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".wm-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
