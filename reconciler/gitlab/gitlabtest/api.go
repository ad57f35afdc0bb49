package gitlabtest

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// route is one implemented endpoint: a method and a pattern of path
// segments under /api/v4, where ":name" matches one segment (URL-decoded,
// so "students%2Falice%2Fweb" is one segment, as GitLab requires).
type route struct {
	method  string
	pattern string
	handle  func(g *GitLab, w http.ResponseWriter, r *http.Request, a args)
}

// args are a request's path parameters and its parameters from the query
// and the body (form or JSON), the body winning, as in Grape.
type args struct {
	path   map[string]string
	params url.Values
}

var routes = []route{
	{"GET", "user", (*GitLab).currentUser},
	{"GET", "users", (*GitLab).listUsers},
	{"GET", "groups/:id", (*GitLab).getGroup},
	{"GET", "groups/:id/members/all/:user_id", (*GitLab).getGroupMember},
	{"GET", "groups/:id/projects", (*GitLab).listGroupProjects},
	{"GET", "projects/:id", (*GitLab).getProject},
	{"GET", "projects/:id/members/all/:user_id", (*GitLab).getProjectMember},
	{"GET", "projects/:id/repository/files/:file_path", (*GitLab).getFile},
	{"HEAD", "projects/:id/repository/files/:file_path", (*GitLab).getFile},
	{"GET", "projects/:id/repository/branches/:branch", (*GitLab).getBranch},
	{"POST", "projects/:id/statuses/:sha", (*GitLab).postStatus},
	{"GET", "projects/:id/repository/commits/:sha/statuses", (*GitLab).listStatuses},
	{"GET", "projects/:id/repository/files/:file_path/raw", (*GitLab).getRawFile},
	{"GET", "projects/:id/merge_requests", (*GitLab).listMergeRequests},
	{"GET", "projects/:id/merge_requests/:merge_request_iid", (*GitLab).getMergeRequest},
	{"GET", "projects/:id/merge_requests/:merge_request_iid/versions", (*GitLab).listVersions},
	{"GET", "projects/:id/merge_requests/:merge_request_iid/resource_label_events", (*GitLab).listLabelEvents},
	{"GET", "projects/:id/merge_requests/:noteable_id/notes", (*GitLab).listNotes},
	{"POST", "projects/:id/merge_requests/:noteable_id/notes", (*GitLab).createNote},
	{"PUT", "projects/:id/merge_requests/:noteable_id/notes/:note_id", (*GitLab).updateNote},
	{"GET", "projects/:id/issues", (*GitLab).listIssues},
	{"POST", "projects/:id/issues", (*GitLab).createIssue},
	{"GET", "projects/:id/issues/:issue_iid", (*GitLab).getIssue},
	{"PUT", "projects/:id/issues/:issue_iid", (*GitLab).updateIssue},
}

// Routes lists the implemented API endpoints as "METHOD /api/v4/pattern".
func Routes() []string {
	out := make([]string, 0, len(routes))
	for _, rt := range routes {
		out = append(out, rt.method+" /api/v4/"+rt.pattern)
	}
	return out
}

// match returns the route for method and the decoded segments, with the
// path parameters.
func match(method string, segs []string) (*route, map[string]string) {
	for i := range routes {
		rt := &routes[i]
		pat := strings.Split(rt.pattern, "/")
		if rt.method != method || len(pat) != len(segs) {
			continue
		}
		vars := map[string]string{}
		ok := true
		for j, p := range pat {
			switch {
			case strings.HasPrefix(p, ":") && segs[j] != "":
				vars[p[1:]] = segs[j]
			case p != segs[j]:
				ok = false
			}
			if !ok {
				break
			}
		}
		if ok {
			return rt, vars
		}
	}
	return nil, nil
}

// serveAPI routes an /api/v4 request. Like GitLab, an unknown route is a
// 404 whatever the token; a known one needs the token, then valid
// parameters.
func (g *GitLab) serveAPI(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.EscapedPath(), "/api/v4"), "/")
	segs := strings.Split(rest, "/")
	var rt *route
	var vars map[string]string
	decoded := true
	for i, s := range segs {
		d, err := url.PathUnescape(s)
		if err != nil {
			decoded = false
			break
		}
		segs[i] = d
	}
	if decoded {
		rt, vars = match(r.Method, segs)
	}
	if rt == nil {
		g.recordUnimplemented(r)
		writeError(w, http.StatusNotFound, "404 Not Found")
		return
	}
	if !g.authorized(r) {
		writeMessage(w, http.StatusUnauthorized, "401 Unauthorized")
		return
	}
	params, err := requestParams(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	rt.handle(g, w, r, args{path: vars, params: params})
}

// requestParams merges the query with a form or JSON body.
func requestParams(r *http.Request) (url.Values, error) {
	params := r.URL.Query()
	if r.Body == nil || (r.Method != http.MethodPost && r.Method != http.MethodPut) {
		return params, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		b, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
		if err != nil {
			return nil, err
		}
		if len(strings.TrimSpace(string(b))) == 0 {
			return params, nil
		}
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			return nil, fmt.Errorf("the request body is not valid JSON: %v", err)
		}
		for k, v := range body {
			switch v := v.(type) {
			case nil:
			case string:
				params.Set(k, v)
			case float64:
				params.Set(k, strconv.FormatFloat(v, 'f', -1, 64))
			case bool:
				params.Set(k, strconv.FormatBool(v))
			default:
				b, _ := json.Marshal(v)
				params.Set(k, string(b))
			}
		}
	case "application/x-www-form-urlencoded":
		if err := r.ParseForm(); err != nil {
			return nil, err
		}
		maps.Copy(params, r.PostForm)
	}
	return params, nil
}

// writeJSON answers v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"message":"500 Internal Server Error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeMessage answers GitLab's {"message": ...}, used by not_found!,
// unauthorized!, forbidden! and render_api_error!.
func writeMessage(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}

// writeError answers Grape's {"error": ...}, used for invalid parameters and
// unknown routes.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func itoa(n int) string { return strconv.Itoa(n) }

// first returns the first of two results.
func first[T, U any](v T, _ U) T { return v }

// boolParam parses a Grape Boolean parameter.
func boolParam(params url.Values, name string, def bool) (bool, error) {
	if !params.Has(name) {
		return def, nil
	}
	switch strings.ToLower(params.Get(name)) {
	case "true", "1", "t", "yes", "y", "on":
		return true, nil
	case "false", "0", "f", "no", "n", "off":
		return false, nil
	}
	return false, fmt.Errorf("%s is invalid", name)
}

// intParam parses a Grape Integer parameter.
func intParam(params map[string]string, name string) (int, error) {
	n, err := strconv.Atoi(params[name])
	if err != nil {
		return 0, fmt.Errorf("%s is invalid", name)
	}
	return n, nil
}

// projectOr404 finds the :id project or answers GitLab's 404.
func (g *GitLab) projectOr404(w http.ResponseWriter, id string) *Project {
	p := g.findProjectLocked(id, true)
	if p == nil {
		writeMessage(w, http.StatusNotFound, "404 Project Not Found")
	}
	return p
}

// sortedProjectsLocked returns every project by id.
func (g *GitLab) sortedProjectsLocked() []*Project {
	ps := slices.Collect(maps.Values(g.projects))
	slices.SortFunc(ps, func(a, b *Project) int { return a.id - b.id })
	return ps
}

// writePage answers one page of n items, made by item, with GitLab's offset pagination
// headers: X-Page, X-Per-Page, X-Next-Page, X-Prev-Page, X-Total,
// X-Total-Pages and Link. Like GitLab, it leaves out the totals (and the
// last link) past 10,000 items.
func (g *GitLab) writePage(w http.ResponseWriter, r *http.Request, a args, n int, item func(i int) any) {
	page, perPage := 1, 20
	if a.params.Has("page") {
		n, err := strconv.Atoi(a.params.Get("page"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "page is invalid")
			return
		}
		page = max(n, 1)
	}
	if a.params.Has("per_page") {
		n, err := strconv.Atoi(a.params.Get("per_page"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "per_page is invalid")
			return
		}
		if n >= 1 {
			perPage = min(n, 100)
		}
	}
	total := n
	pages := max(1, (total+perPage-1)/perPage)
	lo := min((page-1)*perPage, total)
	hi := min(lo+perPage, total)

	link := func(p int, rel string) string {
		q := r.URL.Query()
		q.Set("page", itoa(p))
		q.Set("per_page", itoa(perPage))
		return "<" + g.URL() + r.URL.EscapedPath() + "?" + q.Encode() + `>; rel="` + rel + `"`
	}
	h := w.Header()
	h.Set("X-Page", itoa(page))
	h.Set("X-Per-Page", itoa(perPage))
	h.Set("X-Next-Page", "")
	h.Set("X-Prev-Page", "")
	var links []string
	if page > 1 {
		h.Set("X-Prev-Page", itoa(page-1))
		links = append(links, link(page-1, "prev"))
	}
	if page < pages {
		h.Set("X-Next-Page", itoa(page+1))
		links = append(links, link(page+1, "next"))
	}
	links = append(links, link(1, "first"))
	if total <= 10000 {
		h.Set("X-Total", itoa(total))
		h.Set("X-Total-Pages", itoa(pages))
		links = append(links, link(pages, "last"))
	}
	h.Set("Link", strings.Join(links, ", "))
	out := make([]any, 0, hi-lo)
	for i := lo; i < hi; i++ {
		out = append(out, item(i))
	}
	writeJSON(w, http.StatusOK, out)
}

// currentUser is GET /user: the token's owner.
func (g *GitLab) currentUser(w http.ResponseWriter, _ *http.Request, _ args) {
	u := g.bot
	writeJSON(w, http.StatusOK, currentUserEntity{
		userBasicEntity: g.userBasic(u), CreatedAt: iso(u.created),
		ConfirmedAt: iso(u.created), Email: u.email, ProjectsLimit: 100000,
		CanCreateGroup: true, CanCreateProject: true,
	})
}

// getGroup is GET /groups/:id.
func (g *GitLab) getGroup(w http.ResponseWriter, _ *http.Request, a args) {
	gr := g.findGroupLocked(a.path["id"])
	if gr == nil {
		writeMessage(w, http.StatusNotFound, "404 Group Not Found")
		return
	}
	writeJSON(w, http.StatusOK, g.groupLocked(gr))
}

// projectOrders are the order_by values of GET /groups/:id/projects.
var projectOrders = []string{"id", "name", "path", "created_at", "updated_at", "last_activity_at", "similarity", "star_count"}

// listGroupProjects is GET /groups/:id/projects.
func (g *GitLab) listGroupProjects(w http.ResponseWriter, r *http.Request, a args) {
	gr := g.findGroupLocked(a.path["id"])
	if gr == nil {
		writeMessage(w, http.StatusNotFound, "404 Group Not Found")
		return
	}
	flags := map[string]bool{"include_subgroups": false, "simple": false, "with_shared": true, "archived": false}
	for name, def := range flags {
		v, err := boolParam(a.params, name, def)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		flags[name] = v
	}
	orderBy := a.params.Get("order_by")
	if orderBy == "" {
		orderBy = "created_at"
	}
	if !slices.Contains(projectOrders, orderBy) {
		writeError(w, http.StatusBadRequest, "order_by does not have a valid value")
		return
	}
	sortDir := strings.ToLower(a.params.Get("sort"))
	if sortDir == "" {
		sortDir = "desc"
	}
	if sortDir != "asc" && sortDir != "desc" {
		writeError(w, http.StatusBadRequest, "sort does not have a valid value")
		return
	}
	var topics []string
	for t := range strings.SplitSeq(a.params.Get("topic"), ",") {
		if t = strings.TrimSpace(t); t != "" {
			topics = append(topics, t)
		}
	}
	search := strings.ToLower(a.params.Get("search"))
	visibility := a.params.Get("visibility")

	var ps []*Project
	for _, p := range g.sortedProjectsLocked() {
		switch {
		case p.namespace != gr && !(flags["include_subgroups"] && p.namespace.isWithinLocked(gr)):
		case a.params.Has("archived") && p.archived != flags["archived"]:
		case !hasTopics(p.topics, topics):
		case search != "" && !strings.Contains(strings.ToLower(p.name), search) &&
			!strings.Contains(strings.ToLower(p.path), search):
		case visibility != "" && p.visibility != visibility:
		default:
			ps = append(ps, p)
		}
	}
	slices.SortStableFunc(ps, func(x, y *Project) int {
		c := compareProjects(x, y, orderBy)
		if c == 0 {
			c = x.id - y.id
		}
		if sortDir == "desc" {
			c = -c
		}
		return c
	})
	g.writePage(w, r, a, len(ps), func(i int) any {
		if flags["simple"] {
			return g.basicProjectLocked(ps[i], first(ps[i].defaultBranch()))
		}
		return g.projectLocked(ps[i], false)
	})
}

// hasTopics reports whether have holds every topic in want, ignoring case.
func hasTopics(have, want []string) bool {
	for _, t := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return strings.EqualFold(h, t) }) {
			return false
		}
	}
	return true
}

func compareProjects(x, y *Project, orderBy string) int {
	switch orderBy {
	case "name":
		return strings.Compare(strings.ToLower(x.name), strings.ToLower(y.name))
	case "path":
		return strings.Compare(strings.ToLower(x.path), strings.ToLower(y.path))
	case "created_at":
		return x.created.Compare(y.created)
	case "updated_at":
		return x.updated.Compare(y.updated)
	case "last_activity_at":
		return x.lastActivity.Compare(y.lastActivity)
	}
	return 0 // id, and star_count and similarity, which are all equal here
}

// getProject is GET /projects/:id.
func (g *GitLab) getProject(w http.ResponseWriter, _ *http.Request, a args) {
	if p := g.projectOr404(w, a.path["id"]); p != nil {
		writeJSON(w, http.StatusOK, g.projectLocked(p, true))
	}
}

// fileAt reads file_path at ref for the files endpoints, answering
// GitLab's 400 and 404s itself (ok is false when it did): the commit,
// the blob and its mode, and its content.
func (p *Project) fileAt(w http.ResponseWriter, path, ref string) (sha, blob, mode string, content []byte, ok bool) {
	if slices.Contains(strings.Split(path, "/"), "..") {
		writeError(w, http.StatusBadRequest, "file_path should be a valid file path")
		return "", "", "", nil, false
	}
	if sha, ok = p.resolveCommit(ref); !ok {
		writeMessage(w, http.StatusNotFound, "404 Commit Not Found")
		return "", "", "", nil, false
	}
	if blob, mode, ok = p.blobAt(sha, path); !ok {
		writeMessage(w, http.StatusNotFound, "404 File Not Found")
		return "", "", "", nil, false
	}
	content, err := p.readBlob(blob)
	if err != nil {
		writeMessage(w, http.StatusInternalServerError, "500 Internal Server Error")
		return "", "", "", nil, false
	}
	return sha, blob, mode, content, true
}

// getFile is GET and HEAD /projects/:id/repository/files/:file_path: the
// blob's metadata in X-Gitlab-* headers, and for GET also as JSON with the
// base64 content.
func (g *GitLab) getFile(w http.ResponseWriter, r *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	ref := a.params.Get("ref")
	switch {
	case !a.params.Has("ref"):
		writeError(w, http.StatusBadRequest, "ref is missing")
		return
	case ref == "":
		writeError(w, http.StatusBadRequest, "ref is empty")
		return
	}
	path := a.path["file_path"]
	sha, blob, mode, content, ok := p.fileAt(w, path, ref)
	if !ok {
		return
	}
	sum := sha256.Sum256(content)
	name := path[strings.LastIndex(path, "/")+1:]
	meta := []struct{ key, value string }{
		{"File-Name", name},
		{"File-Path", path},
		{"Size", itoa(len(content))},
		{"Encoding", "base64"},
		{"Content-Sha256", hex.EncodeToString(sum[:])},
		{"Ref", ref},
		{"Blob-Id", blob},
		{"Commit-Id", sha},
		{"Last-Commit-Id", p.lastCommitFor(sha, path)},
		{"Execute-Filemode", strconv.FormatBool(mode == "100755")},
	}
	for _, m := range meta {
		w.Header().Set("X-Gitlab-"+m.key, m.value)
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		FileName        string `json:"file_name"`
		FilePath        string `json:"file_path"`
		Size            int    `json:"size"`
		Encoding        string `json:"encoding"`
		ContentSHA256   string `json:"content_sha256"`
		Ref             string `json:"ref"`
		BlobID          string `json:"blob_id"`
		CommitID        string `json:"commit_id"`
		LastCommitID    string `json:"last_commit_id"`
		ExecuteFilemode bool   `json:"execute_filemode"`
		Content         string `json:"content"`
	}{
		name, path, len(content), "base64", meta[4].value, ref, blob, sha, meta[8].value,
		mode == "100755", base64.StdEncoding.EncodeToString(content),
	})
}

// getBranch is GET /projects/:id/repository/branches/:branch.
func (g *GitLab) getBranch(w http.ResponseWriter, _ *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	name := a.path["branch"]
	_, heads := p.branches()
	sha, ok := heads[name]
	if !ok {
		writeMessage(w, http.StatusNotFound, "404 Branch Not Found")
		return
	}
	c, err := p.commit(sha)
	if err != nil {
		writeMessage(w, http.StatusInternalServerError, "500 Internal Server Error")
		return
	}
	def, _ := p.defaultBranch()
	merged := false
	if d, ok := heads[def]; ok && name != def {
		merged = p.mergeBase(sha, d) == sha
	}
	writeJSON(w, http.StatusOK, branchEntity{
		Name: name, Commit: g.commitLocked(p, c), Merged: merged,
		Protected: name == def, CanPush: true, Default: name == def,
		WebURL: g.URL() + "/" + p.fullPathLocked() + "/-/tree/" + name,
	})
}

// mergeRequestOr404 finds the merge request of a path, answering GitLab's
// errors: 400 for a non-integer iid, 404 otherwise.
func (g *GitLab) mergeRequestOr404(w http.ResponseWriter, a args, param string) *MergeRequest {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return nil
	}
	iid, err := intParam(a.path, param)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil
	}
	mr := p.mrs[iid]
	if mr == nil {
		writeMessage(w, http.StatusNotFound, "404 Not found")
	}
	return mr
}

// getMergeRequest is GET /projects/:id/merge_requests/:iid.
func (g *GitLab) getMergeRequest(w http.ResponseWriter, _ *http.Request, a args) {
	if mr := g.mergeRequestOr404(w, a, "merge_request_iid"); mr != nil {
		writeJSON(w, http.StatusOK, g.mergeRequestLocked(mr))
	}
}

// listNotes is GET /projects/:id/merge_requests/:iid/notes: newest first
// unless sort=asc, by created_at unless order_by=updated_at.
func (g *GitLab) listNotes(w http.ResponseWriter, r *http.Request, a args) {
	mr := g.mergeRequestOr404(w, a, "noteable_id")
	if mr == nil {
		return
	}
	orderBy, sortDir := a.params.Get("order_by"), a.params.Get("sort")
	if orderBy == "" {
		orderBy = "created_at"
	}
	if sortDir == "" {
		sortDir = "desc"
	}
	if orderBy != "created_at" && orderBy != "updated_at" {
		writeError(w, http.StatusBadRequest, "order_by does not have a valid value")
		return
	}
	if sortDir != "asc" && sortDir != "desc" {
		writeError(w, http.StatusBadRequest, "sort does not have a valid value")
		return
	}
	notes := slices.Clone(mr.notes)
	slices.SortStableFunc(notes, func(x, y *note) int {
		c := x.created.Compare(y.created)
		if orderBy == "updated_at" {
			c = x.updated.Compare(y.updated)
		}
		if c == 0 {
			c = x.id - y.id
		}
		if sortDir == "desc" {
			c = -c
		}
		return c
	})
	g.writePage(w, r, a, len(notes), func(i int) any { return g.noteEntityLocked(mr, notes[i]) })
}

// maxNoteLength is GitLab's limit on a note's body.
const maxNoteLength = 1_000_000

// noteInvalid returns GitLab's validation error for a note body.
func noteInvalid(body string) map[string]any {
	switch {
	case strings.TrimSpace(body) == "":
		return map[string]any{"message": map[string][]string{"note": {"can't be blank"}}}
	case len([]rune(body)) > maxNoteLength:
		return map[string]any{"message": map[string][]string{"note": {"is too long (maximum is 1000000 characters)"}}}
	}
	return nil
}

// createNote is POST /projects/:id/merge_requests/:iid/notes.
func (g *GitLab) createNote(w http.ResponseWriter, _ *http.Request, a args) {
	mr := g.mergeRequestOr404(w, a, "noteable_id")
	if mr == nil {
		return
	}
	if !a.params.Has("body") {
		writeError(w, http.StatusBadRequest, "body is missing")
		return
	}
	if mr.project.archived {
		writeMessage(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	body := a.params.Get("body")
	if e := noteInvalid(body); e != nil {
		writeJSON(w, http.StatusBadRequest, e)
		return
	}
	n := g.addNoteLocked(mr, g.bot, body)
	writeJSON(w, http.StatusCreated, g.noteEntityLocked(mr, n))
}

// updateNote is PUT /projects/:id/merge_requests/:iid/notes/:note_id. The
// token's owner is an owner of every group, and owners may edit anyone's
// note, so there is no author check.
func (g *GitLab) updateNote(w http.ResponseWriter, _ *http.Request, a args) {
	mr := g.mergeRequestOr404(w, a, "noteable_id")
	if mr == nil {
		return
	}
	id, err := intParam(a.path, "note_id")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	i := slices.IndexFunc(mr.notes, func(n *note) bool { return n.id == id })
	if i < 0 {
		writeMessage(w, http.StatusNotFound, "404 Not found")
		return
	}
	n := mr.notes[i]
	if a.params.Has("body") {
		body := a.params.Get("body")
		if strings.TrimSpace(body) == "" {
			writeError(w, http.StatusBadRequest, "body is empty")
			return
		}
		if mr.project.archived {
			writeMessage(w, http.StatusForbidden, "403 Forbidden")
			return
		}
		if e := noteInvalid(body); e != nil {
			writeJSON(w, http.StatusBadRequest, e)
			return
		}
		if body != n.body {
			n.body = body
			n.updated = now()
		}
	}
	writeJSON(w, http.StatusOK, g.noteEntityLocked(mr, n))
}
