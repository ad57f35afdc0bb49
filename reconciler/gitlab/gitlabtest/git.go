package gitlabtest

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// gitTimeout bounds one git command on a small test repository.
const gitTimeout = 30 * time.Second

// zeroSHA is git's null object id, the before of a created branch and the
// after of a deleted one.
const zeroSHA = "0000000000000000000000000000000000000000"

// git runs git with args in the bare repository dir, isolated from the
// machine's configuration, with pathspecs taken literally, and returns its
// standard output.
func git(dir string, args ...string) ([]byte, error) {
	return gitStdin(dir, "", args...)
}

// gitStdin is git with stdin as the command's standard input.
func gitStdin(dir, stdin string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), gitTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_LITERAL_PATHSPECS=1",
		"GIT_TERMINAL_PROMPT=0",
	)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// resolveCommit resolves a revision (a branch, a tag, a sha, full or short)
// to a commit sha, as GitLab's ref parameters do.
func (p *Project) resolveCommit(rev string) (string, bool) {
	if rev == "" || strings.HasPrefix(rev, "-") {
		return "", false
	}
	out, err := git(p.repo.Path(), "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(out)), true
}

// branches returns every branch and its head, sorted by name. It reads
// the files backend's refs directly, for project lists must not run git
// once per project; a reftable repository is asked through git.
func (p *Project) branches() ([]string, map[string]string) {
	dir := p.repo.Path()
	var heads map[string]string
	if _, err := os.Stat(filepath.Join(dir, "reftable")); err == nil {
		heads = p.branchesFromGit()
	} else {
		heads = readLooseAndPackedHeads(dir)
	}
	names := slices.Sorted(maps.Keys(heads))
	return names, heads
}

// readLooseAndPackedHeads reads refs/heads from packed-refs, then from the
// loose ref files, which win.
func readLooseAndPackedHeads(dir string) map[string]string {
	heads := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(dir, "packed-refs")); err == nil {
		for line := range strings.Lines(string(b)) {
			sha, ref, ok := strings.Cut(strings.TrimSpace(line), " ")
			if ok && len(sha) == 40 && strings.HasPrefix(ref, "refs/heads/") {
				heads[strings.TrimPrefix(ref, "refs/heads/")] = sha
			}
		}
	}
	root := filepath.Join(dir, "refs", "heads")
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".lock") {
			return nil
		}
		b, err := os.ReadFile(path)
		sha := strings.TrimSpace(string(b))
		if err != nil || len(sha) != 40 {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err == nil {
			heads[filepath.ToSlash(rel)] = sha
		}
		return nil
	})
	return heads
}

// branchesFromGit lists the branches with git for-each-ref.
func (p *Project) branchesFromGit() map[string]string {
	heads := map[string]string{}
	out, err := git(p.repo.Path(), "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
	if err != nil {
		return heads
	}
	for line := range strings.Lines(string(out)) {
		if sha, ref, ok := strings.Cut(strings.TrimSpace(line), " "); ok {
			heads[strings.TrimPrefix(ref, "refs/heads/")] = sha
		}
	}
	return heads
}

// headName returns the branch the repository's HEAD names.
func (p *Project) headName() string {
	b, err := os.ReadFile(filepath.Join(p.repo.Path(), "HEAD"))
	if err != nil {
		return "main"
	}
	return strings.TrimPrefix(strings.TrimSpace(string(b)), "ref: refs/heads/")
}

// defaultBranch returns the project's default_branch and whether the
// repository is empty, the way Gitaly picks it: HEAD's branch if it
// exists, else main, else master, else the first branch; an empty
// repository reports the branch HEAD names.
func (p *Project) defaultBranch() (branch string, empty bool) {
	names, heads := p.branches()
	head := p.headName()
	if len(names) == 0 {
		return head, true
	}
	for _, b := range []string{head, "main", "master"} {
		if _, ok := heads[b]; ok {
			return b, false
		}
	}
	return names[0], false
}

// blobAt finds the file at path in commit sha: its blob id and mode.
func (p *Project) blobAt(sha, path string) (blob, mode string, ok bool) {
	if path == "" || strings.HasSuffix(path, "/") {
		return "", "", false
	}
	out, err := git(p.repo.Path(), "ls-tree", "-z", "--full-tree", sha, "--", path)
	if err != nil {
		return "", "", false
	}
	for entry := range strings.SplitSeq(string(out), "\x00") {
		meta, name, found := strings.Cut(entry, "\t")
		f := strings.Fields(meta)
		if !found || name != path || len(f) != 3 || f[1] != "blob" {
			continue
		}
		return f[2], f[0], true
	}
	return "", "", false
}

// readBlob returns a blob's content.
func (p *Project) readBlob(blob string) ([]byte, error) {
	return git(p.repo.Path(), "cat-file", "blob", blob)
}

// lastCommitFor returns the newest commit reachable from sha that touched
// path.
func (p *Project) lastCommitFor(sha, path string) string {
	out, err := git(p.repo.Path(), "log", "-1", "--format=%H", sha, "--", path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// branchesContaining returns the branches whose history holds sha, sorted.
func (p *Project) branchesContaining(sha string) []string {
	out, err := git(p.repo.Path(), "for-each-ref", "--contains", sha, "--format=%(refname)", "refs/heads/")
	if err != nil {
		return nil
	}
	var names []string
	for line := range strings.Lines(string(out)) {
		names = append(names, strings.TrimPrefix(strings.TrimSpace(line), "refs/heads/"))
	}
	slices.Sort(names)
	return names
}

// commitData is what GitLab reports of a commit.
type commitData struct {
	id             string
	parents        []string
	authorName     string
	authorEmail    string
	authored       time.Time
	committerName  string
	committerEmail string
	committed      time.Time
	message        string
}

// title is the message's first line.
func (c commitData) title() string {
	t, _, _ := strings.Cut(c.message, "\n")
	return t
}

// commit reads a commit.
func (p *Project) commit(sha string) (commitData, error) {
	cs, err := p.commits([]string{sha})
	if err != nil {
		return commitData{}, err
	}
	return cs[0], nil
}

// commits reads commits, in the order given, with one git command.
func (p *Project) commits(shas []string) ([]commitData, error) {
	if len(shas) == 0 {
		return nil, nil
	}
	args := append([]string{"show", "-s", "-z", "--no-show-signature",
		"--format=%H%x1f%P%x1f%an%x1f%ae%x1f%aI%x1f%cn%x1f%ce%x1f%cI%x1f%B", "--end-of-options"}, shas...)
	out, err := git(p.repo.Path(), args...)
	if err != nil {
		return nil, err
	}
	var cs []commitData
	for rec := range strings.SplitSeq(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		f := strings.SplitN(rec, "\x1f", 9)
		if len(f) != 9 {
			return nil, fmt.Errorf("git show: unexpected output %q", rec)
		}
		authored, _ := time.Parse(time.RFC3339, f[4])
		committed, _ := time.Parse(time.RFC3339, f[7])
		cs = append(cs, commitData{
			id:             f[0],
			parents:        strings.Fields(f[1]),
			authorName:     f[2],
			authorEmail:    f[3],
			authored:       authored,
			committerName:  f[5],
			committerEmail: f[6],
			committed:      committed,
			message:        strings.TrimRight(f[8], "\n") + "\n",
		})
	}
	if len(cs) != len(shas) {
		return nil, fmt.Errorf("git show: %d commits for %d shas", len(cs), len(shas))
	}
	return cs, nil
}

// revList lists commits oldest first.
func (p *Project) revList(args ...string) []string {
	out, err := git(p.repo.Path(), append([]string{"rev-list", "--reverse"}, args...)...)
	if err != nil {
		return nil
	}
	return strings.Fields(string(out))
}

// mergeBase returns the best common ancestor of a and b.
func (p *Project) mergeBase(a, b string) string {
	out, err := git(p.repo.Path(), "merge-base", a, b)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// fileChanges are the paths a commit added, modified and removed against
// its first parent, as push payloads report them.
type fileChanges struct {
	added, modified, removed []string
}

// changes reads the fileChanges of commits with one git diff-tree.
func (p *Project) changes(cs []commitData) map[string]*fileChanges {
	out := map[string]*fileChanges{}
	var stdin strings.Builder
	for _, c := range cs {
		out[c.id] = &fileChanges{added: []string{}, modified: []string{}, removed: []string{}}
		stdin.WriteString(c.id)
		if len(c.parents) > 0 {
			stdin.WriteString(" " + c.parents[0])
		}
		stdin.WriteString("\n")
	}
	b, err := gitStdin(p.repo.Path(), stdin.String(),
		"diff-tree", "--stdin", "-r", "-z", "--no-renames", "--name-status", "--root")
	if err != nil {
		return out
	}
	// Each commit's record is its sha, then status and path pairs.
	var cur *fileChanges
	f := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	for i := 0; i < len(f); i++ {
		if len(f[i]) == 40 {
			cur = out[f[i]]
			continue
		}
		if cur == nil || i+1 >= len(f) {
			break
		}
		switch path := f[i+1]; f[i] {
		case "A":
			cur.added = append(cur.added, path)
		case "D":
			cur.removed = append(cur.removed, path)
		default:
			cur.modified = append(cur.modified, path)
		}
		i++
	}
	return out
}

// changedPaths counts the paths that differ between two commits.
func (p *Project) changedPaths(from, to string) int {
	out, err := git(p.repo.Path(), "diff", "--name-only", "-z", "--no-renames", from, to)
	if err != nil {
		return 0
	}
	return strings.Count(string(out), "\x00")
}
