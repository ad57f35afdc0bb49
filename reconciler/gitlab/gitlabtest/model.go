package gitlabtest

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	gitlab "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
)

// Group is a GitLab group, top-level or nested.
type Group struct {
	g  *GitLab
	id int

	// guarded by g.mu
	name    string
	path    string
	parent  *Group
	created time.Time
	members map[*user]*member // direct members
}

// ID returns the group's numeric id.
func (gr *Group) ID() int { return gr.id }

// FullPath returns the group's full path, such as "students/2026".
func (gr *Group) FullPath() string {
	gr.g.mu.Lock()
	defer gr.g.mu.Unlock()
	return gr.fullPathLocked()
}

func (gr *Group) fullPathLocked() string {
	if gr.parent == nil {
		return gr.path
	}
	return gr.parent.fullPathLocked() + "/" + gr.path
}

func (gr *Group) fullNameLocked() string {
	if gr.parent == nil {
		return gr.name
	}
	return gr.parent.fullNameLocked() + " / " + gr.name
}

// isWithinLocked reports whether gr is anc or one of its descendants.
func (gr *Group) isWithinLocked(anc *Group) bool {
	for x := gr; x != nil; x = x.parent {
		if x == anc {
			return true
		}
	}
	return false
}

// Project is a GitLab project with a real bare git repository on disk.
type Project struct {
	g    *GitLab
	id   int
	repo *gittest.Repo

	// guarded by g.mu
	name         string
	path         string
	namespace    *Group
	archived     bool
	topics       []string
	visibility   string
	created      time.Time
	updated      time.Time
	lastActivity time.Time
	mrs          map[int]*MergeRequest // by iid
	nextIID      int
	history      map[string][]gitlab.CommitStatus // by full sha, every status as posted
	deleted      bool
	creator      *user             // creator_id; the token's owner unless CreatedBy says otherwise
	members      map[*user]*member // direct members
	issues       []*issue          // by iid - 1: issues are never deleted
	noIssues     bool              // the issues feature turned off (IssuesDisabled)
	labelIDs     map[string]int    // the project's labels by name, made as merge requests get them
	lastStamp    time.Time         // the last stampLocked, which label events and versions are made at
}

// ID returns the project's numeric id, which survives renames and
// transfers.
func (p *Project) ID() int { return p.id }

// Path returns the project's current path with namespace, such as
// "students/alice/web".
func (p *Project) Path() string {
	p.g.mu.Lock()
	defer p.g.mu.Unlock()
	return p.fullPathLocked()
}

// HTTPURL returns the project's http_url_to_repo: where git clones it.
func (p *Project) HTTPURL() string { return p.g.URL() + "/" + p.Path() + ".git" }

// GitDir returns the bare repository's folder, for tests that shape
// history with git directly (a force push, a deleted branch).
func (p *Project) GitDir() string { return p.repo.Path() }

func (p *Project) fullPathLocked() string {
	return p.namespace.fullPathLocked() + "/" + p.path
}

// Commit makes a commit on branch whose tree is exactly files, as
// gittest.Repo.Commit does, and returns its sha. Like a push, it moves
// last_activity_at, but at most once an hour, as GitLab does.
func (p *Project) Commit(t testing.TB, branch string, files map[string]string, msg string) string {
	t.Helper()
	sha := p.repo.Commit(t, branch, files, msg)
	p.g.mu.Lock()
	defer p.g.mu.Unlock()
	if n := now(); n.Sub(p.lastActivity) >= time.Hour {
		p.lastActivity = n
	}
	return sha
}

// ProjectOption shapes a project made by AddProject.
type ProjectOption func(*projectConfig)

type projectConfig struct {
	archived      bool
	topics        []string
	defaultBranch string
	visibility    string
	creator       string
	noIssues      bool
}

// Archived makes the project archived: read-only, and filtered by the
// archived parameter of project lists.
func Archived() ProjectOption { return func(c *projectConfig) { c.archived = true } }

// Topics sets the project's topics.
func Topics(topics ...string) ProjectOption {
	return func(c *projectConfig) { c.topics = append(c.topics, topics...) }
}

// DefaultBranch sets the branch HEAD names, "main" unless given.
func DefaultBranch(branch string) ProjectOption {
	return func(c *projectConfig) { c.defaultBranch = branch }
}

// CreatedBy makes username (created as needed) the project's creator, its
// creator_id; the token's owner otherwise. Like GitLab, creating a project
// in a group adds no membership: use AddMember.
func CreatedBy(username string) ProjectOption {
	return func(c *projectConfig) { c.creator = username }
}

// Visibility sets "private" (the default), "internal" or "public".
func Visibility(v string) ProjectOption { return func(c *projectConfig) { c.visibility = v } }

// pathSegment is GitLab's rule for a group or project path segment.
var pathSegment = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

func validSegment(s string) bool {
	return pathSegment.MatchString(s) && !strings.HasSuffix(s, ".git") &&
		!strings.HasSuffix(s, ".atom") && !strings.HasSuffix(s, ".")
}

// AddGroup creates the group at fullPath and any missing parent, and
// returns it; an existing group is returned as it is.
func (g *GitLab) AddGroup(t testing.TB, fullPath string) *Group {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	gr, err := g.ensureGroupLocked(fullPath)
	if err != nil {
		t.Fatalf("gitlabtest: add group %q: %v", fullPath, err)
	}
	return gr
}

func (g *GitLab) ensureGroupLocked(fullPath string) (*Group, error) {
	var parent *Group
	for seg := range strings.SplitSeq(fullPath, "/") {
		if !validSegment(seg) {
			return nil, fmt.Errorf("%q is not a valid path segment", seg)
		}
		var found *Group
		for _, gr := range g.groups {
			if gr.parent == parent && strings.EqualFold(gr.path, seg) {
				found = gr
				break
			}
		}
		if found == nil {
			at := seg
			if parent != nil {
				at = parent.fullPathLocked() + "/" + seg
			}
			if g.pathTakenLocked(at) {
				return nil, fmt.Errorf("%q has already been taken", at)
			}
			delete(g.redirects, strings.ToLower(at))
			found = &Group{g: g, id: g.seq.group, name: seg, path: seg, parent: parent, created: now()}
			g.seq.group++
			g.groups[found.id] = found
		}
		parent = found
	}
	return parent, nil
}

// pathTakenLocked reports whether a group or project has full path p.
func (g *GitLab) pathTakenLocked(p string) bool {
	for _, gr := range g.groups {
		if strings.EqualFold(gr.fullPathLocked(), p) {
			return true
		}
	}
	for _, pr := range g.projects {
		if strings.EqualFold(pr.fullPathLocked(), p) {
			return true
		}
	}
	return false
}

// AddProject creates a project at pathWithNamespace, such as
// "students/alice/web", creating its namespace groups as needed, with an
// empty bare repository whose HEAD names "main" unless DefaultBranch says
// otherwise.
func (g *GitLab) AddProject(t testing.TB, pathWithNamespace string, opts ...ProjectOption) *Project {
	t.Helper()
	cfg := projectConfig{defaultBranch: "main", visibility: "private"}
	for _, o := range opts {
		o(&cfg)
	}
	i := strings.LastIndex(pathWithNamespace, "/")
	if i < 0 {
		t.Fatalf("gitlabtest: add project %q: a project lives in a namespace: give group/project", pathWithNamespace)
	}
	ns, name := pathWithNamespace[:i], pathWithNamespace[i+1:]
	if !validSegment(name) {
		t.Fatalf("gitlabtest: add project %q: %q is not a valid path", pathWithNamespace, name)
	}
	g.mu.Lock()
	group, err := g.ensureGroupLocked(ns)
	if err == nil && g.pathTakenLocked(pathWithNamespace) {
		err = fmt.Errorf("%q has already been taken", pathWithNamespace)
	}
	if err != nil {
		g.mu.Unlock()
		t.Fatalf("gitlabtest: add project %q: %v", pathWithNamespace, err)
	}
	id := g.seq.project
	g.seq.project++
	creator := g.bot
	if cfg.creator != "" {
		creator = g.userLocked(cfg.creator)
	}
	delete(g.redirects, strings.ToLower(pathWithNamespace))
	g.mu.Unlock()

	repo := gittest.NewRepo(t, filepath.Join(g.root, strconv.Itoa(id)+".git"))
	if cfg.defaultBranch != "main" {
		gittest.Git(t, repo.Path(), "symbolic-ref", "HEAD", "refs/heads/"+cfg.defaultBranch)
	}
	created := now()
	p := &Project{
		g: g, id: id, repo: repo,
		name: name, path: name, namespace: group,
		archived: cfg.archived, topics: cfg.topics, visibility: cfg.visibility,
		created: created, updated: created, lastActivity: created,
		mrs: map[int]*MergeRequest{}, nextIID: 1,
		history: map[string][]gitlab.CommitStatus{},
		creator: creator, noIssues: cfg.noIssues,
	}
	g.mu.Lock()
	g.projects[id] = p
	g.mu.Unlock()
	return p
}

// mustProject finds a project for the test API by id or current path.
func (g *GitLab) mustProjectLocked(t testing.TB, project string) *Project {
	t.Helper()
	p := g.findProjectLocked(project, true)
	if p == nil {
		t.Fatalf("gitlabtest: no project %q", project)
	}
	return p
}

// findProjectLocked finds a project by numeric id or full path, as the API
// does: paths are case-insensitive and, if follow is set, an old path of a
// renamed or transferred project still finds it.
func (g *GitLab) findProjectLocked(id string, follow bool) *Project {
	if n, err := strconv.Atoi(id); err == nil {
		return g.projects[n]
	}
	if !strings.Contains(id, "/") {
		return nil
	}
	for _, p := range g.projects {
		if strings.EqualFold(p.fullPathLocked(), id) {
			return p
		}
	}
	if follow {
		if n, ok := g.redirects[strings.ToLower(id)]; ok {
			return g.projects[n]
		}
	}
	return nil
}

// findGroupLocked finds a group by numeric id or full path.
func (g *GitLab) findGroupLocked(id string) *Group {
	if n, err := strconv.Atoi(id); err == nil {
		return g.groups[n]
	}
	for _, gr := range g.groups {
		if strings.EqualFold(gr.fullPathLocked(), id) {
			return gr
		}
	}
	return nil
}

// Transfer moves project into newNamespace, creating its groups as needed.
// The id stays; the old path keeps redirecting to the project, as GitLab's
// redirect routes do, until something else takes it.
func (g *GitLab) Transfer(t testing.TB, project, newNamespace string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mustProjectLocked(t, project)
	ns, err := g.ensureGroupLocked(newNamespace)
	if err != nil {
		t.Fatalf("gitlabtest: transfer %q to %q: %v", project, newNamespace, err)
	}
	g.movedLocked(t, p, ns, p.path)
}

// Rename changes the last segment of project's path; the id stays and the
// old path redirects, as with Transfer. A name equal to the old path
// follows the path.
func (g *GitLab) Rename(t testing.TB, project, newPath string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mustProjectLocked(t, project)
	if !validSegment(newPath) {
		t.Fatalf("gitlabtest: rename %q: %q is not a valid path", project, newPath)
	}
	if p.name == p.path {
		p.name = newPath
	}
	g.movedLocked(t, p, p.namespace, newPath)
}

func (g *GitLab) movedLocked(t testing.TB, p *Project, ns *Group, path string) {
	t.Helper()
	old := p.fullPathLocked()
	to := ns.fullPathLocked() + "/" + path
	if !strings.EqualFold(old, to) && g.pathTakenLocked(to) {
		t.Fatalf("gitlabtest: move %q to %q: the path has already been taken", old, to)
	}
	p.namespace, p.path = ns, path
	p.updated = now()
	delete(g.redirects, strings.ToLower(to))
	if !strings.EqualFold(old, to) {
		g.redirects[strings.ToLower(old)] = p.id
	}
}

// Delete removes project at once, with its redirects; its API and git
// endpoints answer 404 from then on.
func (g *GitLab) Delete(t testing.TB, project string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mustProjectLocked(t, project)
	p.deleted = true
	delete(g.projects, p.id)
	for old, id := range g.redirects {
		if id == p.id {
			delete(g.redirects, old)
		}
	}
}

// Archive archives project: it stays readable (API and clone) but refuses
// writes such as commit statuses and notes with 403.
func (g *GitLab) Archive(t testing.TB, project string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mustProjectLocked(t, project)
	p.archived = true
	p.updated = now()
}

// Unarchive makes an archived project writable again.
func (g *GitLab) Unarchive(t testing.TB, project string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mustProjectLocked(t, project)
	p.archived = false
	p.updated = now()
}

// MergeRequest is a merge request between two branches of one project
// (forks are not modelled): open until MergeMR merges it.
type MergeRequest struct {
	g       *GitLab
	project *Project
	id      int
	iid     int

	// guarded by g.mu
	source, target string
	title          string
	author         *user
	created        time.Time
	updated        time.Time
	sha            string // the source branch's head when last read
	hookSHA        string // the sha the last MergeRequestHook reported
	notes          []*note

	// labels, diff versions and merging (labelevents.go, merge.go)
	labels      []string      // sorted, as the entity lists them
	labelEvents []*labelEvent // oldest first
	versions    []*mrVersion  // oldest first: one per head the merge request had
	merged      *mergeRecord  // nil while the merge request is open
}

// IID returns the merge request's number within its project.
func (mr *MergeRequest) IID() int { return mr.iid }

// ID returns the merge request's instance-wide id.
func (mr *MergeRequest) ID() int { return mr.id }

// Project returns the merge request's project.
func (mr *MergeRequest) Project() *Project { return mr.project }

// SHA returns the head of the source branch, as the API reports it.
func (mr *MergeRequest) SHA() string {
	mr.g.mu.Lock()
	defer mr.g.mu.Unlock()
	mr.refreshLocked()
	return mr.sha
}

// refreshLocked follows the source branch's head, as GitLab updates a
// merge request after every push to its source branch, recording a new
// diff version for each head; a merged merge request keeps the head it
// merged.
func (mr *MergeRequest) refreshLocked() {
	if mr.merged != nil {
		return
	}
	if sha, ok := mr.project.resolveCommit("refs/heads/" + mr.source); ok && sha != mr.sha {
		mr.sha = sha
		mr.updated = mr.project.stampLocked()
		mr.addVersionLocked(mr.updated)
	}
}

// note is a comment on a merge request.
type note struct {
	id      int
	body    string
	author  *user
	created time.Time
	updated time.Time
}

// OpenMergeRequest opens a merge request of project from sourceBranch into
// targetBranch, both of which must exist, authored by the user "student".
// Its iid is the project's next; its sha follows the source branch.
func (g *GitLab) OpenMergeRequest(t testing.TB, project string, sourceBranch, targetBranch string) *MergeRequest {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mustProjectLocked(t, project)
	for _, b := range []string{sourceBranch, targetBranch} {
		if _, ok := p.resolveCommit("refs/heads/" + b); !ok {
			t.Fatalf("gitlabtest: open merge request on %q: no branch %q", project, b)
		}
	}
	created := now()
	mr := &MergeRequest{
		g: g, project: p, id: g.seq.mr, iid: p.nextIID,
		source: sourceBranch, target: targetBranch, title: sourceBranch,
		author: g.userLocked("student"), created: created, updated: created,
	}
	g.seq.mr++
	p.nextIID++
	mr.refreshLocked()
	mr.hookSHA = mr.sha
	p.mrs[mr.iid] = mr
	return mr
}

// AddNote adds a note by username (created as needed) to a merge request,
// as when a student or a teacher comments: the code under test must tell
// such notes from its own.
func (g *GitLab) AddNote(t testing.TB, project string, iid int, username, body string) gitlab.Note {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	mr := g.mustMergeRequestLocked(t, project, iid)
	n := g.addNoteLocked(mr, g.userLocked(username), body)
	return decodeAs[gitlab.Note](t, g.noteEntityLocked(mr, n))
}

func (g *GitLab) mustMergeRequestLocked(t testing.TB, project string, iid int) *MergeRequest {
	t.Helper()
	p := g.mustProjectLocked(t, project)
	mr, ok := p.mrs[iid]
	if !ok {
		t.Fatalf("gitlabtest: project %q has no merge request !%d", project, iid)
	}
	return mr
}

func (g *GitLab) addNoteLocked(mr *MergeRequest, author *user, body string) *note {
	created := now()
	n := &note{id: g.seq.note, body: body, author: author, created: created, updated: created}
	g.seq.note++
	mr.notes = append(mr.notes, n)
	return n
}

// Notes returns the notes of a merge request in the order they were
// created, with their current bodies.
func (g *GitLab) Notes(project string, iid int) []gitlab.Note {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.findProjectLocked(project, true)
	if p == nil || p.mrs[iid] == nil {
		return nil
	}
	mr := p.mrs[iid]
	out := make([]gitlab.Note, 0, len(mr.notes))
	for _, n := range mr.notes {
		out = append(out, decodeAs[gitlab.Note](g.t, g.noteEntityLocked(mr, n)))
	}
	return out
}

// Statuses returns every commit status ever accepted for sha in project, in
// the order posted, each as the POST answered it: a status posted pending,
// then running, then success is three entries with one id.
func (g *GitLab) Statuses(project, sha string) []gitlab.CommitStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.findProjectLocked(project, true)
	if p == nil {
		return nil
	}
	return append([]gitlab.CommitStatus(nil), p.history[sha]...)
}

// decodeAs turns an entity into the client-go type through JSON, so the
// test API returns exactly what client-go decodes from the wire.
func decodeAs[T any](t testing.TB, entity any) T {
	var v T
	b, err := json.Marshal(entity)
	if err == nil {
		err = json.Unmarshal(b, &v)
	}
	if err != nil {
		t.Fatalf("gitlabtest: decode %T as %T: %v", entity, v, err)
	}
	return v
}
