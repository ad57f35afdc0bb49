package reconciler

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/whalemountain/wm/schema"
)

// Repo is one student repo, as the sources list it. Owner comes from the
// source (the config, or where the repo lives), never from the repo's
// files.
type Repo struct {
	// Key identifies the repo everywhere (labels, state, queue): its
	// project path, such as "alice/web".
	Key string
	// Owner is the student's account.
	Owner string
	// URL and Branch say where to read it.
	URL    string
	Branch string
	// Revision, when set, pins the commit to read instead of the branch
	// head: a merge request's plan reads the MR's head from its source
	// branch while Key and Owner stay the target repo's.
	Revision string
}

// Repos lists the repos of a server config's sources, ordered by key. A
// folder source lists <root>/<owner>/<repo> folders that are git
// repositories (bare, or with a .git folder); an owner folder whose name is
// not a valid account is reported in skipped, not guessed at.
func Repos(cfg *schema.ServerConfig) (repos []Repo, skipped []string, err error) {
	seen := map[string]bool{}
	add := func(r Repo) {
		if seen[r.Key] {
			skipped = append(skipped, fmt.Sprintf("%s: listed twice, the first is used", r.Key))
			return
		}
		seen[r.Key] = true
		repos = append(repos, r)
	}
	for _, r := range cfg.Sources.Repos {
		add(Repo{Key: r.Project, Owner: r.Owner, URL: r.URL, Branch: r.Branch})
	}
	for _, d := range cfg.Sources.Dirs {
		owners, err := os.ReadDir(d.Root)
		if os.IsNotExist(err) {
			skipped = append(skipped, fmt.Sprintf("%s: no such folder", d.Root))
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("list repos in %s: %w", d.Root, err)
		}
		for _, o := range owners {
			if !o.IsDir() || strings.HasPrefix(o.Name(), ".") {
				continue
			}
			if msg := schema.AccountProblem(o.Name()); msg != "" {
				skipped = append(skipped, fmt.Sprintf("%s: %s", filepath.Join(d.Root, o.Name()), msg))
				continue
			}
			entries, err := os.ReadDir(filepath.Join(d.Root, o.Name()))
			if err != nil {
				return nil, nil, fmt.Errorf("list repos of %s: %w", o.Name(), err)
			}
			for _, e := range entries {
				path := filepath.Join(d.Root, o.Name(), e.Name())
				if !e.IsDir() || !isGitRepo(path) {
					continue
				}
				name := strings.ToLower(strings.TrimSuffix(e.Name(), ".git"))
				add(Repo{Key: o.Name() + "/" + name, Owner: o.Name(), URL: "file://" + filepath.ToSlash(path), Branch: d.Branch})
			}
		}
	}
	slices.SortFunc(repos, func(a, b Repo) int { return strings.Compare(a.Key, b.Key) })
	return repos, skipped, nil
}

func isGitRepo(path string) bool {
	if fi, err := os.Stat(filepath.Join(path, ".git")); err == nil && fi.IsDir() {
		return true
	}
	_, errHead := os.Stat(filepath.Join(path, "HEAD"))
	fi, errObj := os.Stat(filepath.Join(path, "objects"))
	return errHead == nil && errObj == nil && fi.IsDir()
}

// FolderWatch finds the repos that vanished from the folder sources,
// under the guards a GitLab repo is retired under: only an authoritative
// word that a repo is gone, never a failure to read, retires it. A repo
// is confirmed gone when it was listed before from a root (or the state
// store knows it there), is listed no more, its folder does not exist
// (os.Lstat says so), and its root is readable and is the very folder it
// was listed from (same device and inode: an unmounted disk leaves an
// empty mount point behind, which is not an empty root). A repo known
// from the state store only needs its root to list other entries. Any
// other answer retires nothing and is logged, once per reason.
type FolderWatch struct {
	roots []string // the folder sources' roots, cleaned
	log   *slog.Logger

	mu    sync.Mutex
	known map[string]*folderRepo // by key
}

// folderRepo is a repo a folder source listed.
type folderRepo struct {
	repo       Repo
	root, path string
	// rootInfo is the root when the repo was last listed from it; nil for
	// a repo known from the state store only.
	rootInfo os.FileInfo
	// why is why the repo, listed no more, is not retired (logged on a
	// change).
	why string
}

// NewFolderWatch watches the repos of dirs. known are repos the state
// store has state for (from any source): those under one of the roots are
// watched as if listed before, so a repo removed while the server was
// down is retired too.
func NewFolderWatch(dirs []schema.DirSource, known []Repo, log *slog.Logger) *FolderWatch {
	w := &FolderWatch{log: log, known: map[string]*folderRepo{}}
	for _, d := range dirs {
		w.roots = append(w.roots, filepath.Clean(d.Root))
	}
	for _, r := range known {
		if root, path, ok := w.folderOf(r); ok {
			w.known[r.Key] = &folderRepo{repo: r, root: root, path: path}
		}
	}
	return w
}

// folderOf returns the root and folder of a repo listed from a folder
// source: its URL is file://<root>/<owner>/<repo>.
func (w *FolderWatch) folderOf(r Repo) (root, path string, ok bool) {
	rest, ok := strings.CutPrefix(r.URL, "file://")
	if !ok {
		return "", "", false
	}
	path = filepath.Clean(filepath.FromSlash(rest))
	root = filepath.Dir(filepath.Dir(path))
	return root, path, slices.Contains(w.roots, root)
}

// Vanished takes a complete, successful listing of every source and
// returns the folder repos confirmed gone since the last one; each is
// returned once, and then forgotten.
func (w *FolderWatch) Vanished(listed []Repo) []Repo {
	w.mu.Lock()
	defer w.mu.Unlock()
	roots := map[string]os.FileInfo{} // root → its info now, nil if unreadable
	rootInfo := func(root string) os.FileInfo {
		fi, seen := roots[root]
		if !seen {
			fi, _ = os.Stat(root)
			roots[root] = fi
		}
		return fi
	}
	now := make(map[string]bool, len(listed))
	for _, r := range listed {
		now[r.Key] = true
		root, path, ok := w.folderOf(r)
		if !ok {
			delete(w.known, r.Key) // listed from another source now
			continue
		}
		w.known[r.Key] = &folderRepo{repo: r, root: root, path: path, rootInfo: rootInfo(root)}
	}
	var gone []Repo
	for key, k := range w.known {
		if now[key] {
			continue
		}
		why := k.notGone(rootInfo(k.root))
		if why == "" {
			gone = append(gone, k.repo)
			delete(w.known, key)
			w.log.Info("repo folder removed: retiring the repo", "repo", key, "folder", k.path)
			continue
		}
		if why != k.why {
			w.log.Warn("repo no longer listed but not confirmed gone; nothing is retired", "repo", key, "folder", k.path, "why", why)
		}
		k.why = why
	}
	slices.SortFunc(gone, func(a, b Repo) int { return strings.Compare(a.Key, b.Key) })
	return gone
}

// notGone says why a repo listed no more is not confirmed gone, or "" when
// it is.
func (k *folderRepo) notGone(root os.FileInfo) string {
	if root == nil || !root.IsDir() {
		return fmt.Sprintf("its root %s cannot be read (a disk not mounted?)", k.root)
	}
	if k.rootInfo != nil && !os.SameFile(root, k.rootInfo) {
		return fmt.Sprintf("its root %s is not the folder it was listed from (a disk not mounted, or replaced?)", k.root)
	}
	f, err := os.Open(k.root)
	if err != nil {
		return fmt.Sprintf("its root cannot be read: %v", err)
	}
	names, err := f.Readdirnames(1)
	f.Close()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("its root cannot be read: %v", err)
	}
	if len(names) == 0 && k.rootInfo == nil {
		return fmt.Sprintf("its root %s is empty, and was never seen listing the repo", k.root)
	}
	switch _, err := os.Lstat(k.path); {
	case err == nil:
		return "its folder is still there (no longer a git repository, or its owner folder not a valid account)"
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("its folder cannot be checked: %v", err)
	}
	return ""
}

// Discovering wraps a Loop's discover function: after each successful
// listing, the folder repos confirmed gone are handed to retire (the
// loop's Retire) before the listing is returned.
func (w *FolderWatch) Discovering(discover func() ([]Repo, error), retire func(Repo)) func() ([]Repo, error) {
	return func() ([]Repo, error) {
		repos, err := discover()
		if err != nil {
			return nil, err
		}
		for _, r := range w.Vanished(repos) {
			retire(r)
		}
		return repos, nil
	}
}
