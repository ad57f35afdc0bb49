package gitlabtest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// Merged merge requests, their diff versions and raw files follow GitLab's
// merge requests and repository files APIs
// (https://docs.gitlab.com/api/merge_requests/,
// https://docs.gitlab.com/api/repository_files/):
//
//	GET /projects/:id/merge_requests                               state (all by default), labels
//	                                                               (all must match; None, Any),
//	                                                               target_branch, source_branch,
//	                                                               author_id, author_username, iids[],
//	                                                               order_by, sort, page, per_page
//	GET /projects/:id/merge_requests/:merge_request_iid/versions   page, per_page
//	GET /projects/:id/repository/files/:file_path/raw              ref (the default branch if absent)
//
// As in GitLab:
//
//   - MergeMR merges with a real commit in the project's repository, so
//     that the target branch, a fetch and files/raw at the merge commit all
//     see it: by default a merge commit (parents: the target's head, then
//     the source's), whose sha is merge_commit_sha; with Squash a squash
//     commit of the source's changes on the target's head first
//     (squash_commit_sha, and the merge commit's second parent); with
//     FastForward no merge commit (merge_commit_sha null): the target moves
//     to the source's head, or to the squash commit with Squash. The merge
//     request is then "merged", with merged_at, merged_by and merge_user;
//     its sha and diff_refs stay those it merged.
//   - A diff version is recorded when the merge request opens and whenever
//     its source branch has a new head (as after a push), with the target's
//     head as start_commit_sha; versions are listed newest first, with
//     state "collected", real_size (the changed files, as a string) and
//     patch_id_sha. Version ids are the merge request's id times 10,000,
//     plus 5,000, plus the version's number.
//   - The list is the MergeRequestBasic entity, newest first by created_at
//     unless asked otherwise, ties broken by id descending; order_by is
//     created_at, updated_at, merged_at or title (label_priority,
//     milestone_due, popularity and priority order by id); a state other
//     than opened, closed, locked, merged or all is 400 {"error":"state does
//     not have a valid value"}.
//   - files/raw answers the file's bytes as text/plain, or 404 "404 File
//     Not Found", or "404 Commit Not Found" for a ref that names no commit.
//
// Not modelled: closing, reopening and locking (a merge request is opened
// or merged), approvals, pipelines, rebases, merge conflicts (a merge that
// would conflict fails the test), and the list's filters on milestones,
// assignees, reviewers, dates, scope and search, which are accepted and
// ignored.

// mrVersion is one diff version of a merge request.
type mrVersion struct {
	id                int
	head, base, start string
	created           time.Time
	realSize          int
	patchID           string // "" when the diff is empty
}

// mergeRecord is how a merge request was merged.
type mergeRecord struct {
	by           *user
	at           time.Time
	mergeCommit  string // "" for a fast-forward
	squashCommit string // "" without squash
}

// addVersionLocked records the merge request's current head as a new diff
// version made at at.
func (mr *MergeRequest) addVersionLocked(at time.Time) {
	p := mr.project
	start, _ := p.resolveCommit("refs/heads/" + mr.target)
	base := p.mergeBase(start, mr.sha)
	v := &mrVersion{
		id:   mr.id*10_000 + 5_000 + len(mr.versions) + 1,
		head: mr.sha, base: base, start: start, created: at,
		realSize: p.changedPaths(base, mr.sha),
	}
	if diff, err := git(p.repo.Path(), "diff", "--no-renames", base, mr.sha); err == nil && len(diff) > 0 {
		if out, err := gitStdin(p.repo.Path(), string(diff), "patch-id", "--stable"); err == nil {
			v.patchID, _, _ = strings.Cut(string(out), " ")
		}
	}
	mr.versions = append(mr.versions, v)
}

// mergeConfig is how MergeMR merges.
type mergeConfig struct {
	squash, fastForward bool
}

// MergeOption shapes a merge by MergeMR.
type MergeOption func(*mergeConfig)

// Squash squashes the source's commits into one on the target's head
// before merging, as the merge request's "Squash commits" box does.
func Squash() MergeOption { return func(c *mergeConfig) { c.squash = true } }

// FastForward merges as a project whose merge method is "Fast-forward
// merge": no merge commit. The target's head must be an ancestor of the
// source's (GitLab asks for a rebase otherwise, and so does the test).
func FastForward() MergeOption { return func(c *mergeConfig) { c.fastForward = true } }

// MergeMR merges merge request !iid of project as username (created as
// needed) would with GitLab's Merge button, and returns the commit the
// target branch now points at: the merge commit, or with FastForward the
// source's head or the squash commit. The merge request must be open and
// merge without conflicts.
func (g *GitLab) MergeMR(t testing.TB, project string, iid int, username string, opts ...MergeOption) string {
	t.Helper()
	var cfg mergeConfig
	for _, o := range opts {
		o(&cfg)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	mr := g.mustMergeRequestLocked(t, project, iid)
	if mr.merged != nil {
		t.Fatalf("gitlabtest: merge %s!%d: merged already", project, iid)
	}
	mr.refreshLocked()
	p, by := mr.project, g.userLocked(username)
	dir := p.repo.Path()
	run := func(args ...string) string {
		t.Helper()
		out, err := git(dir, append([]string{"-c", "user.name=" + by.name, "-c", "user.email=" + by.email}, args...)...)
		if err != nil {
			t.Fatalf("gitlabtest: merge %s!%d: %v", project, iid, err)
		}
		return strings.TrimSpace(string(out))
	}
	target, ok := p.resolveCommit("refs/heads/" + mr.target)
	if !ok {
		t.Fatalf("gitlabtest: merge %s!%d: no target branch %q", project, iid, mr.target)
	}
	var tree string
	if cfg.fastForward {
		if p.mergeBase(target, mr.sha) != target {
			t.Fatalf("gitlabtest: merge %s!%d: fast-forward is not possible, the source must be rebased on %s", project, iid, mr.target)
		}
		tree = run("rev-parse", mr.sha+"^{tree}")
	} else {
		// --write-tree fails with exit status 1 on a conflict.
		tree, _, _ = strings.Cut(run("merge-tree", "--write-tree", "--no-messages", target, mr.sha), "\n")
	}
	rec := &mergeRecord{by: by}
	landed := mr.sha
	if cfg.squash {
		rec.squashCommit = run("commit-tree", tree, "-p", target, "-m", mr.title)
		landed = rec.squashCommit
	}
	if !cfg.fastForward {
		msg := "Merge branch '" + mr.source + "' into '" + mr.target + "'\n\n" + mr.title +
			"\n\nSee merge request " + p.fullPathLocked() + "!" + itoa(mr.iid)
		rec.mergeCommit = run("commit-tree", tree, "-p", target, "-p", landed, "-m", msg)
		landed = rec.mergeCommit
	}
	run("update-ref", "refs/heads/"+mr.target, landed, target)
	rec.at = p.stampLocked()
	mr.merged, mr.updated = rec, rec.at
	p.touchActivityLocked(rec.at)
	return landed
}

// stateLocked is the merge request's state as the API reports it.
func (mr *MergeRequest) stateLocked() string {
	if mr.merged != nil {
		return "merged"
	}
	return "opened"
}

// mergeRequestStates are the state values of GET
// /projects/:id/merge_requests.
var mergeRequestListStates = []string{"opened", "closed", "locked", "merged", "all"}

// mergeRequestOrders are its order_by values.
var mergeRequestOrders = []string{"created_at", "label_priority", "milestone_due", "popularity", "priority", "title", "updated_at", "merged_at"}

// fullOnly are the fields of Entities::MergeRequest that
// Entities::MergeRequestBasic, the list's entity, does not have.
var fullOnly = []string{"subscribed", "changes_count", "latest_build_started_at", "latest_build_finished_at",
	"first_deployed_to_production_at", "pipeline", "head_pipeline", "diff_refs", "merge_error",
	"first_contribution", "user"}

// listMergeRequests is GET /projects/:id/merge_requests.
func (g *GitLab) listMergeRequests(w http.ResponseWriter, r *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	q, err := listParams(a.params, mergeRequestListStates, mergeRequestOrders, nil)
	state, orderBy, sortDir, iids, authorID := q.state, q.orderBy, q.sortDir, q.iids, q.authorID
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var labels []string
	if a.params.Has("labels") {
		labels = labelsParam(a.params, "labels")
	}
	var out []*MergeRequest
	for _, mr := range p.mrs {
		mr.refreshLocked()
		switch st := mr.stateLocked(); {
		case state != "all" && st != state,
			len(iids) > 0 && !slices.Contains(iids, mr.iid),
			a.params.Has("target_branch") && mr.target != a.params.Get("target_branch"),
			a.params.Has("source_branch") && mr.source != a.params.Get("source_branch"),
			a.params.Has("author_id") && mr.author.id != authorID,
			a.params.Has("author_username") && !strings.EqualFold(mr.author.username, a.params.Get("author_username")),
			!hasLabels(mr.labels, labels):
		default:
			out = append(out, mr)
		}
	}
	slices.SortStableFunc(out, func(x, y *MergeRequest) int {
		var c int
		switch orderBy {
		case "created_at":
			c = x.created.Compare(y.created)
		case "updated_at":
			c = x.updated.Compare(y.updated)
		case "merged_at":
			c = mergedAt(x).Compare(mergedAt(y))
		case "title":
			c = strings.Compare(strings.ToLower(x.title), strings.ToLower(y.title))
		}
		if sortDir == "desc" {
			c = -c
		}
		if c == 0 {
			c = y.id - x.id
		}
		return c
	})
	g.writePage(w, r, a, len(out), func(i int) any { return g.basicMergeRequestLocked(out[i]) })
}

// mergedAt is when mr was merged; zero while it is open.
func mergedAt(mr *MergeRequest) time.Time {
	if mr.merged == nil {
		return time.Time{}
	}
	return mr.merged.at
}

// basicMergeRequestLocked is Entities::MergeRequestBasic: the full entity
// without the fields only GET of one merge request sends.
func (g *GitLab) basicMergeRequestLocked(mr *MergeRequest) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(mustJSON(g.mergeRequestLocked(mr)), &m); err != nil {
		g.t.Errorf("gitlabtest: merge request entity: %v", err)
	}
	for _, k := range fullOnly {
		delete(m, k)
	}
	return m
}

// versionEntity is Entities::MergeRequestDiff.
type versionEntity struct {
	ID             int     `json:"id"`
	HeadCommitSHA  string  `json:"head_commit_sha"`
	BaseCommitSHA  string  `json:"base_commit_sha"`
	StartCommitSHA string  `json:"start_commit_sha"`
	CreatedAt      string  `json:"created_at"`
	MergeRequestID int     `json:"merge_request_id"`
	State          string  `json:"state"`
	RealSize       string  `json:"real_size"`
	PatchIDSHA     *string `json:"patch_id_sha"`
}

// listVersions is GET /projects/:id/merge_requests/:merge_request_iid/versions.
func (g *GitLab) listVersions(w http.ResponseWriter, r *http.Request, a args) {
	mr := g.mergeRequestOr404(w, a, "merge_request_iid")
	if mr == nil {
		return
	}
	mr.refreshLocked()
	vs := mr.versions
	g.writePage(w, r, a, len(vs), func(i int) any {
		v := vs[len(vs)-1-i]
		e := versionEntity{
			ID: v.id, HeadCommitSHA: v.head, BaseCommitSHA: v.base, StartCommitSHA: v.start,
			CreatedAt: iso(v.created), MergeRequestID: mr.id, State: "collected", RealSize: itoa(v.realSize),
		}
		if v.patchID != "" {
			e.PatchIDSHA = &v.patchID
		}
		return e
	})
}

// getRawFile is GET /projects/:id/repository/files/:file_path/raw.
func (g *GitLab) getRawFile(w http.ResponseWriter, _ *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	ref := a.params.Get("ref")
	if ref == "" {
		ref, _ = p.defaultBranch()
	}
	path := a.path["file_path"]
	sha, blob, _, content, ok := p.fileAt(w, path, ref)
	if !ok {
		return
	}
	name := path[strings.LastIndex(path, "/")+1:]
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Disposition", `inline; filename="`+strings.ReplaceAll(name, `"`, "")+`"`)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Gitlab-Blob-Id", blob)
	h.Set("X-Gitlab-Commit-Id", sha)
	h.Set("Content-Length", itoa(len(content)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(content)
}

// Branch creates branch name at the head of branch from, as GitLab's "New
// branch" does, so that a merge request from it shares the target's
// history (a branch Project.Commit makes first has none).
func (p *Project) Branch(t testing.TB, name, from string) string {
	t.Helper()
	p.g.mu.Lock()
	defer p.g.mu.Unlock()
	sha, ok := p.resolveCommit("refs/heads/" + from)
	if !ok {
		t.Fatalf("gitlabtest: branch %q from %q: no such branch", name, from)
	}
	if _, err := git(p.repo.Path(), "update-ref", "refs/heads/"+name, sha, zeroSHA); err != nil {
		t.Fatalf("gitlabtest: branch %q from %q: %v", name, from, err)
	}
	return sha
}
