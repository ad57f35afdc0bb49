package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/schema"
)

// buildSIFs builds every declared Singularity image into
// <artifacts>/<owner>/<name>.sif (and the shared folder), and removes the
// files of SIFs no longer declared once their grace period is over. An
// unchanged image digest rebuilds nothing.
//
// A build's size is only known once it is made, so each is made in a
// staging folder, <artifacts>/<owner>/.staging/<name>.sif, holding hard
// links to the SIF in use (so that an unchanged image is still a cache
// hit), and kept only when the owner's SIFs, all repos together, stay
// within policy.quota.artifacts (keepSIF).
func (r *Reconciler) buildSIFs(ctx context.Context, p *pass) error {
	if err := r.retireSIFs(p); err != nil {
		return err
	}
	if len(p.file.Singularity) == 0 {
		return nil
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
			return stalled(core.NameTaken, "singularity.%s: the SIF name %s is already used by your repo %s", name, name, other)
		}
		ref := p.sifRefs[name]
		dst := r.sifPath(p.repo.Owner, name)
		if r.progress != nil {
			r.progress(p.repo.Key, "build SIF "+name)
		}
		staging := filepath.Join(filepath.Dir(dst), stagingDir, filepath.Base(dst))
		if err := os.MkdirAll(filepath.Dir(staging), 0o755); err != nil {
			return fmt.Errorf("artifacts folder: %w", err)
		}
		if err := r.sif.Link(dst, staging); err != nil {
			return fmt.Errorf("stage SIF %s: %w", name, err)
		}
		res, err := r.sif.Build(ctx, ref, staging, nil)
		if err == nil && !res.Cached {
			err = r.keepSIF(p, name, staging, dst, res.Size)
		}
		// What is left: the links of a cache hit, or a refused build.
		if rerr := r.sif.Remove(staging); rerr != nil && err == nil {
			err = fmt.Errorf("unstage SIF %s: %w", name, rerr)
		}
		switch {
		case errors.Is(err, core.ErrImageNotFound) && strings.HasSuffix(ref, ":"+p.rev):
			return waiting(core.WaitingForImage, "singularity.%s: waiting for CI to push %s", name, ref)
		case errors.Is(err, core.ErrImageNotFound):
			return waiting(core.ImageNotFound, "singularity.%s: image %s not found", name, ref)
		case errors.Is(err, fault.Unreachable):
			return waiting(core.ImageSourceUnreachable, "singularity.%s: cannot read %s: %v", name, ref, err)
		case errors.Is(err, fault.TooLarge):
			return stalled(core.SIFTooLarge, "singularity.%s: %v", name, err)
		case errors.Is(err, core.ErrToolMissing):
			return stalled(core.SIFBuilderBroken, "singularity.%s: the server cannot build SIFs (ask the admins): %v", name, err)
		case errors.Is(err, fault.Invalid), errors.Is(err, fault.Refused):
			return stalled(core.SIFBuildFailed, "singularity.%s: %v", name, err)
		case errors.As(err, new(*PassError)):
			return err
		case err != nil:
			return fmt.Errorf("build SIF %s: %w", name, err)
		}
		if shared := r.cfg.SIF.SharedDir; shared != "" && (!res.Cached || !exists(filepath.Join(shared, p.repo.Owner, name+".sif"))) {
			if err := copyAtomically(dst, filepath.Join(shared, p.repo.Owner, name+".sif")); err != nil {
				return fmt.Errorf("copy SIF %s to the shared folder: %w", name, err)
			}
		}
		p.res.SIFs = append(p.res.SIFs, core.SIFStatus{Name: name, Path: dst, SHA256: res.SHA256, Size: res.Size, Image: ref})
	}
	return nil
}

// stagingDir is the folder of an owner's artifacts where builds are made
// before keepSIF keeps them; hidden, so never served.
const stagingDir = ".staging"

// keepMu makes the quota check and the move of keepSIF one step, for
// every owner at once: passes of two repos of one owner could otherwise
// both fit in what is left. It is held for a folder listing and three
// renames.
var keepMu sync.Mutex

// keepSIF moves a new build from staging over dst when the owner's SIFs,
// all repos together, stay within policy.quota.artifacts with it: the
// SIF it replaces no longer counts, so a rebuild counts only the
// difference. Otherwise the build is refused (and removed by the caller).
func (r *Reconciler) keepSIF(p *pass, name, staging, dst string, size int64) error {
	keepMu.Lock()
	defer keepMu.Unlock()
	if q := r.cfg.Policy.Quota.Artifacts; q != "" {
		quota := schema.SizeBytes(q)
		others, n, err := sifBytes(filepath.Dir(dst), filepath.Base(dst))
		if err != nil {
			return fmt.Errorf("count SIFs of %s: %w", p.repo.Owner, err)
		}
		if others+size > quota {
			return stalled(core.ArtifactQuotaExceeded,
				"singularity.%s: the new SIF is %s; with your other SIFs (%d, %s over all your repos, counting those kept for %v after wm.yaml dropped them) that makes %s, more than your artifact quota of %s (policy.quota.artifacts). The new SIF was not kept%s: make the image smaller, or drop SIFs you no longer need",
				name, core.FormatBytes(size), n, core.FormatBytes(others), r.cfg.SIF.GracePeriod.Std(),
				core.FormatBytes(others+size), core.FormatBytes(quota), keptNote(dst))
		}
	}
	if err := r.sif.Move(staging, dst); err != nil {
		return fmt.Errorf("keep SIF %s: %w", name, err)
	}
	return nil
}

// keptNote says that the SIF in use, if any, stays.
func keptNote(dst string) string {
	if exists(dst) {
		return " (the one built before stays)"
	}
	return ""
}

// sifBytes is the total size and count of the SIFs in an owner's folder,
// but for the one named except.
func sifBytes(dir, except string) (int64, int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, err
	}
	var total int64
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".sif") || strings.HasPrefix(e.Name(), ".") || e.Name() == except {
			continue
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since the listing
		} else if err != nil {
			return 0, 0, err
		}
		total += fi.Size()
		n++
	}
	return total, n, nil
}

func (r *Reconciler) sifPath(owner, name string) string {
	return filepath.Join(r.cfg.ArtifactsDir, owner, name+".sif")
}

// sifNamesOfOtherRepos maps the SIF names the owner's other repos hold to
// those repos: two repos cannot write one file.
func (r *Reconciler) sifNamesOfOtherRepos(p *pass) (map[string]string, error) {
	repos, err := r.store.OwnerRepos(p.repo.Owner)
	if err != nil {
		return nil, err
	}
	taken := map[string]string{}
	for _, other := range repos {
		if other.Key != p.repo.Key {
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
			p.state.RetiredSIFs = append(p.state.RetiredSIFs, core.RetiredSIF{Path: s.Path, Since: now})
		}
	}
	keep := p.state.RetiredSIFs[:0]
	for _, rs := range p.state.RetiredSIFs {
		switch {
		case declared[rs.Path]:
			// declared again: nothing to remove
		case now.Sub(rs.Since) < r.cfg.SIF.GracePeriod.Std(), r.sif == nil:
			// Within its grace period; or this server builds no SIFs
			// any more, and so removes none either, until it does.
			keep = append(keep, rs)
		default:
			r.log.Info("removing SIF", "repo", p.repo.Key, "path", rs.Path, "cause",
				fmt.Sprintf("no longer in wm.yaml since %s, and sif.gracePeriod (%v) is over", rs.Since.Format(time.RFC3339), r.cfg.SIF.GracePeriod.Std()))
			if err := r.sif.Remove(rs.Path); err != nil {
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
