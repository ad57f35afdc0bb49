package reconciler

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

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
