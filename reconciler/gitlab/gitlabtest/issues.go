package gitlabtest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	gitlab "gitlab.com/gitlab-org/api/client-go"
)

// Issues follow GitLab's issues API (lib/api/issues.rb, documented at
// https://docs.gitlab.com/api/issues/):
//
//	GET  /projects/:id/issues              state (all by default), labels (all must match;
//	                                       None, Any), search, in, iids[], author_id,
//	                                       author_username, confidential, order_by, sort,
//	                                       page, per_page
//	GET  /projects/:id/issues/:issue_iid
//	POST /projects/:id/issues              title, description, labels
//	PUT  /projects/:id/issues/:issue_iid   title, description, labels, add_labels,
//	                                       remove_labels, state_event (close, reopen)
//
// As in GitLab:
//
//   - An issue's iid counts within its project, apart from merge requests'
//     (issue #1 and merge request !1 both exist); its id is instance-wide,
//     the project's id times 100,000 plus the iid, a range of its own.
//   - A title is stripped, required ({"error":"title is missing"}), not
//     blank and at most 255 characters; a description is at most 1,048,576
//     characters when the issue is created. Both are answered as Rails
//     validation errors: {"message":{"title":["can't be blank"]}}.
//   - Labels are a comma-separated string (or a JSON array), trimmed and
//     deduplicated, matched with their case, listed sorted; a label that
//     does not exist yet is created with the issue, so no label registry is
//     modelled.
//   - The list is the Issue entity without subscribed, newest first by
//     created_at unless asked otherwise, ties broken by id descending; the
//     search is GitLab's ILIKE search: every term of at least three
//     characters ("quoted phrases" are one term) must be in the title, or
//     every one in the description; a query without such a term must equal
//     the title or the description, case aside.
//   - The token's owner is an owner of every group, so it may create, read,
//     edit, close and reopen any issue. What refuses it is the project:
//     with issues disabled (IssuesDisabled), creating or editing an issue
//     is 403 {"message":"403 Forbidden"}, listing answers no issue and
//     reading one is 404 {"message":"404 Not found"}, as GitLab's policy
//     hides issues from everyone there; an archived project refuses writes
//     with 403.
//   - Creating or closing an issue moves the project's last_activity_at,
//     at most once an hour.
//
// Not modelled: milestones, assignees, due dates, weights, confidential
// issues, notes on issues, votes, moves and deletion. The list's filters on
// them (milestone, assignee_id, my_reaction_emoji, due_date, the not[...]
// ones, dates, scope) are accepted and ignored; order_by values that sort by
// them order by id, descending.

// issue is a project issue.
type issue struct {
	id  int
	iid int

	// guarded by g.mu
	title       string
	description *string // nil when none was given
	labels      []string
	closed      bool
	author      *user
	closedBy    *user
	closedAt    *time.Time
	created     time.Time
	updated     time.Time
}

// GitLab's limits on an issue (Issuable::TITLE_LENGTH_MAX and
// DESCRIPTION_LENGTH_MAX), in characters.
const (
	maxIssueTitle       = 255
	maxIssueDescription = 1 << 20
)

// issueOrders are the order_by values of GET /projects/:id/issues
// (API::Helpers::IssuesHelpers.sort_options).
var issueOrders = []string{"created_at", "due_date", "label_priority", "milestone_due", "popularity", "priority", "relative_position", "title", "updated_at"}

// updateParams are the parameters of which PUT needs at least one, in
// GitLab's order, which its error message keeps.
var updateParams = []string{"assignee_id", "assignee_ids", "confidential", "created_at", "description",
	"discussion_locked", "due_date", "labels", "add_labels", "remove_labels", "milestone_id", "state_event",
	"title", "issue_type"}

// IssuesDisabled turns the project's issues off, as a teacher may in its
// settings: GitLab then refuses to create or edit an issue there (403) and
// lists none.
func IssuesDisabled() ProjectOption { return func(c *projectConfig) { c.noIssues = true } }

// AddIssue adds an issue to project by username (created as needed), as
// when a student or a teacher opens one: the code under test must tell
// such issues from its own. labels are the issue's labels.
func (g *GitLab) AddIssue(t testing.TB, project, username, title, description string, labels ...string) gitlab.Issue {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mustProjectLocked(t, project)
	is := g.addIssueLocked(p, g.userLocked(username), strings.TrimSpace(title), &description, cleanLabels(labels))
	return decodeAs[gitlab.Issue](t, g.issueEntityLocked(p, is, true))
}

// CloseIssue closes issue #iid of project as username (created as needed)
// would, as when a student has read it.
func (g *GitLab) CloseIssue(t testing.TB, project string, iid int, username string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.mustProjectLocked(t, project)
	if iid < 1 || iid > len(p.issues) {
		t.Fatalf("gitlabtest: project %q has no issue #%d", project, iid)
	}
	p.issues[iid-1].closeLocked(p, g.userLocked(username), now())
}

// Issues returns every issue of project by iid, as GET
// /projects/:id/issues/:issue_iid answers it to the token's owner.
func (g *GitLab) Issues(project string) []gitlab.Issue {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.findProjectLocked(project, true)
	if p == nil {
		return nil
	}
	out := make([]gitlab.Issue, 0, len(p.issues))
	for _, is := range p.issues {
		out = append(out, decodeAs[gitlab.Issue](g.t, g.issueEntityLocked(p, is, true)))
	}
	return out
}

func (g *GitLab) addIssueLocked(p *Project, author *user, title string, description *string, labels []string) *issue {
	at := now()
	is := &issue{
		id: p.id*100_000 + len(p.issues) + 1, iid: len(p.issues) + 1,
		title: title, description: description, labels: labels,
		author: author, created: at, updated: at,
	}
	p.issues = append(p.issues, is)
	p.touchActivityLocked(at)
	return is
}

// closeLocked closes an open issue, as the close event does; a closed one
// stays as it is.
func (is *issue) closeLocked(p *Project, by *user, at time.Time) {
	if is.closed {
		return
	}
	is.closed, is.closedBy, is.closedAt, is.updated = true, by, &at, at
	p.touchActivityLocked(at)
}

// touchActivityLocked moves last_activity_at as an event does: at most
// once an hour.
func (p *Project) touchActivityLocked(at time.Time) {
	if at.Sub(p.lastActivity) >= time.Hour {
		p.lastActivity = at
	}
}

// cleanLabels is GitLab's reading of a label list: trimmed, without blanks
// or repeats, sorted as the entity lists them.
func cleanLabels(labels []string) []string {
	out := []string{}
	for _, l := range labels {
		if l = strings.TrimSpace(l); l != "" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// labelsParam reads a Grape Array[String] coerced from a comma-separated
// string, or sent as a JSON array.
func labelsParam(params url.Values, name string) []string {
	v := params.Get(name)
	var list []string
	if strings.HasPrefix(v, "[") && json.Unmarshal([]byte(v), &list) == nil {
		return cleanLabels(list)
	}
	return cleanLabels(strings.Split(v, ","))
}

// issueInvalid returns GitLab's validation error for an issue's title and,
// when given, its description; nil when both are valid.
func issueInvalid(title string, description *string) map[string]any {
	errs := map[string][]string{}
	switch {
	case title == "":
		errs["title"] = []string{"can't be blank"}
	case utf8.RuneCountInString(title) > maxIssueTitle:
		errs["title"] = []string{"is too long (maximum is 255 characters)"}
	}
	if description != nil && utf8.RuneCountInString(*description) > maxIssueDescription {
		errs["description"] = []string{"is too long (maximum is 1048576 characters)"}
	}
	if len(errs) == 0 {
		return nil
	}
	return map[string]any{"message": errs}
}

// issueOr404 finds the :issue_iid issue of the :id project, answering
// GitLab's errors: 404 for the project, 400 for a non-integer iid, 404 "404
// Not found" for no such issue.
func (g *GitLab) issueOr404(w http.ResponseWriter, a args) (*Project, *issue) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return nil, nil
	}
	iid, err := intParam(a.path, "issue_iid")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, nil
	}
	if iid < 1 || iid > len(p.issues) {
		writeMessage(w, http.StatusNotFound, "404 Not found")
		return nil, nil
	}
	return p, p.issues[iid-1]
}

// listIssues is GET /projects/:id/issues.
func (g *GitLab) listIssues(w http.ResponseWriter, r *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	confidential, err := boolParam(a.params, "confidential", false)
	q, err := listParams(a.params, []string{"opened", "closed", "all"}, issueOrders, err)
	state, orderBy, sortDir, iids, authorID := q.state, q.orderBy, q.sortDir, q.iids, q.authorID
	if err == nil && a.params.Has("author_id") && a.params.Has("author_username") {
		err = errInvalid("author_id, author_username are mutually exclusive")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var labels []string
	if a.params.Has("labels") {
		labels = labelsParam(a.params, "labels")
	}
	search := strings.Join(strings.Fields(a.params.Get("search")), " ")

	var out []*issue
	for _, is := range p.issues {
		switch {
		case p.noIssues, // nobody may read issues there
			a.params.Has("confidential") && confidential, // none is confidential
			state == "opened" && is.closed,
			state == "closed" && !is.closed,
			len(iids) > 0 && !slices.Contains(iids, is.iid),
			a.params.Has("author_id") && is.author.id != authorID,
			a.params.Has("author_username") && !strings.EqualFold(is.author.username, a.params.Get("author_username")),
			!hasLabels(is.labels, labels),
			search != "" && !searchMatches(is, search, a.params.Get("in")):
		default:
			out = append(out, is)
		}
	}
	slices.SortStableFunc(out, func(x, y *issue) int {
		var c int
		switch orderBy {
		case "created_at":
			c = x.created.Compare(y.created)
		case "updated_at":
			c = x.updated.Compare(y.updated)
		case "title":
			c = strings.Compare(strings.ToLower(x.title), strings.ToLower(y.title))
		}
		if sortDir == "desc" {
			c = -c
		}
		if c == 0 {
			c = y.id - x.id // GitLab breaks ties by id, descending, whatever the sort
		}
		return c
	})
	g.writePage(w, r, a, len(out), func(i int) any { return g.issueEntityLocked(p, out[i], false) })
}

// errInvalid is a Grape parameter error.
type errInvalid string

func (e errInvalid) Error() string { return string(e) }

// intsParam reads a Grape Array[Integer]: name[]=1&name[]=2, or a
// comma-separated name=1,2.
// listQuery is what GitLab's lists of issues and merge requests read
// alike: state, order_by and sort (each with its default), iids and
// author_id.
type listQuery struct {
	state, orderBy, sortDir string
	iids                    []int
	authorID                int
}

// listParams reads a list's listQuery from params, states and orders being
// the values its state and order_by take. err is an error an earlier
// parameter already gave: an invalid state, order_by or sort replaces it,
// and the later parameters are read only when there is none.
func listParams(params url.Values, states, orders []string, err error) (listQuery, error) {
	q := listQuery{state: params.Get("state"), orderBy: params.Get("order_by"), sortDir: params.Get("sort")}
	if q.state == "" {
		q.state = "all"
	}
	if q.orderBy == "" {
		q.orderBy = "created_at"
	}
	if q.sortDir == "" {
		q.sortDir = "desc"
	}
	switch {
	case !slices.Contains(states, q.state):
		err = errInvalid("state does not have a valid value")
	case !slices.Contains(orders, q.orderBy):
		err = errInvalid("order_by does not have a valid value")
	case q.sortDir != "asc" && q.sortDir != "desc":
		err = errInvalid("sort does not have a valid value")
	}
	if err == nil {
		q.iids, err = intsParam(params, "iids")
	}
	if err == nil && params.Has("author_id") {
		if q.authorID, err = strconv.Atoi(params.Get("author_id")); err != nil {
			err = errInvalid("author_id is invalid")
		}
	}
	return q, err
}

func intsParam(params url.Values, name string) ([]int, error) {
	vals := params[name+"[]"]
	if v := params.Get(name); v != "" {
		vals = append(vals, strings.Split(v, ",")...)
	}
	var out []int
	for _, v := range vals {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return nil, errInvalid(name + " is invalid")
		}
		out = append(out, n)
	}
	return out, nil
}

// hasLabels reports whether an issue's labels pass the labels filter:
// every one of want, with its case; "None" is no label and "Any" at least
// one, whatever their case.
func hasLabels(have, want []string) bool {
	if len(want) == 1 {
		switch strings.ToLower(want[0]) {
		case "none":
			return len(have) == 0
		case "any":
			return len(have) > 0
		}
	}
	for _, l := range want {
		if !slices.Contains(have, l) {
			return false
		}
	}
	return true
}

// quotedTerm is a "quoted phrase" of a search, one term, when it stands
// between spaces or the ends of the query.
var quotedTerm = regexp.MustCompile(`"[^"]+"`)

// searchTerms splits a squished query as Gitlab::SQL::Pattern does: the
// quoted phrases, then the other words, keeping those of at least three
// characters, the shortest GitLab matches partially.
func searchTerms(q string) []string {
	var quoted []string
	var rest strings.Builder
	last := 0
	for _, m := range quotedTerm.FindAllStringIndex(q, -1) {
		if (m[0] > 0 && q[m[0]-1] != ' ') || (m[1] < len(q) && q[m[1]] != ' ') {
			continue
		}
		rest.WriteString(q[last:m[0]])
		quoted = append(quoted, q[m[0]+1:m[1]-1])
		last = m[1]
	}
	rest.WriteString(q[last:])
	var terms []string
	for _, t := range append(strings.Fields(rest.String()), quoted...) {
		if utf8.RuneCountInString(t) >= 3 {
			terms = append(terms, t)
		}
	}
	return terms
}

// searchMatches is Issuable.full_search: in the columns of in ("title",
// "description", or both joined by a comma; both when it names neither),
// an issue matches when one column holds every term, case aside, or,
// without a term of three characters, equals the whole query.
func searchMatches(is *issue, query, in string) bool {
	var cols []string
	for c := range strings.SplitSeq(in, ",") {
		if c = strings.TrimSpace(c); (c == "title" || c == "description") && !slices.Contains(cols, c) {
			cols = append(cols, c)
		}
	}
	if len(cols) == 0 {
		cols = []string{"title", "description"}
	}
	terms := searchTerms(query)
	for _, c := range cols {
		text := is.title
		if c == "description" {
			if is.description == nil {
				continue
			}
			text = *is.description
		}
		text = strings.ToLower(text)
		if len(terms) == 0 {
			if text == strings.ToLower(query) {
				return true
			}
			continue
		}
		all := true
		for _, t := range terms {
			all = all && strings.Contains(text, strings.ToLower(t))
		}
		if all {
			return true
		}
	}
	return false
}

// getIssue is GET /projects/:id/issues/:issue_iid.
func (g *GitLab) getIssue(w http.ResponseWriter, _ *http.Request, a args) {
	p, is := g.issueOr404(w, a)
	switch {
	case is == nil:
	case p.noIssues:
		writeMessage(w, http.StatusNotFound, "404 Not found")
	default:
		writeJSON(w, http.StatusOK, g.issueEntityLocked(p, is, true))
	}
}

// createIssue is POST /projects/:id/issues, as the token's owner.
func (g *GitLab) createIssue(w http.ResponseWriter, _ *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	if !a.params.Has("title") {
		writeError(w, http.StatusBadRequest, "title is missing")
		return
	}
	if p.noIssues || p.archived {
		writeMessage(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	title := strings.TrimSpace(a.params.Get("title"))
	var description *string
	if a.params.Has("description") {
		d := a.params.Get("description")
		description = &d
	}
	if e := issueInvalid(title, description); e != nil {
		writeJSON(w, http.StatusBadRequest, e)
		return
	}
	is := g.addIssueLocked(p, g.bot, title, description, labelsParam(a.params, "labels"))
	writeJSON(w, http.StatusCreated, g.issueEntityLocked(p, is, true))
}

// updateIssue is PUT /projects/:id/issues/:issue_iid, as the token's owner.
func (g *GitLab) updateIssue(w http.ResponseWriter, _ *http.Request, a args) {
	if !slices.ContainsFunc(updateParams, a.params.Has) {
		writeError(w, http.StatusBadRequest, strings.Join(updateParams, ", ")+" are missing, at least one parameter must be provided")
		return
	}
	event := a.params.Get("state_event")
	if a.params.Has("state_event") && event != "close" && event != "reopen" {
		writeError(w, http.StatusBadRequest, "state_event does not have a valid value")
		return
	}
	p, is := g.issueOr404(w, a)
	if is == nil {
		return
	}
	if p.noIssues || p.archived {
		writeMessage(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	title, description := is.title, is.description
	if a.params.Has("title") {
		title = strings.TrimSpace(a.params.Get("title"))
	}
	if a.params.Has("description") {
		d := a.params.Get("description")
		description = &d
	}
	// The description's length is checked on creation only, as GitLab
	// does, not to break issues written before the limit.
	if e := issueInvalid(title, nil); e != nil {
		writeJSON(w, http.StatusBadRequest, e)
		return
	}
	labels := is.labels
	if a.params.Has("labels") {
		labels = labelsParam(a.params, "labels")
	}
	if a.params.Has("add_labels") {
		labels = cleanLabels(append(slices.Clone(labels), labelsParam(a.params, "add_labels")...))
	}
	if a.params.Has("remove_labels") {
		drop := labelsParam(a.params, "remove_labels")
		labels = slices.DeleteFunc(slices.Clone(labels), func(l string) bool { return slices.Contains(drop, l) })
	}
	at := now()
	if title != is.title || !equalPtr(description, is.description) || !slices.Equal(labels, is.labels) {
		is.title, is.description, is.labels, is.updated = title, description, labels, at
	}
	switch {
	case event == "close":
		is.closeLocked(p, g.bot, at)
	case event == "reopen" && is.closed:
		is.closed, is.closedBy, is.closedAt, is.updated = false, nil, nil, at
	}
	writeJSON(w, http.StatusOK, g.issueEntityLocked(p, is, true))
}

func equalPtr(x, y *string) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }

// issueEntity is Entities::Issue: IssuableEntity, IssueBasic, then Issue's
// own fields. subscribed is left out of lists, as GitLab does.
type issueEntity struct {
	ID                   int               `json:"id"`
	IID                  int               `json:"iid"`
	ProjectID            int               `json:"project_id"`
	Title                string            `json:"title"`
	Description          *string           `json:"description"`
	State                string            `json:"state"`
	CreatedAt            string            `json:"created_at"`
	UpdatedAt            string            `json:"updated_at"`
	ClosedAt             *string           `json:"closed_at"`
	ClosedBy             *userBasicEntity  `json:"closed_by"`
	Labels               []string          `json:"labels"`
	Milestone            any               `json:"milestone"`
	Assignees            []any             `json:"assignees"`
	Author               userBasicEntity   `json:"author"`
	Type                 string            `json:"type"`
	Assignee             any               `json:"assignee"`
	UserNotesCount       int               `json:"user_notes_count"`
	MergeRequestsCount   int               `json:"merge_requests_count"`
	Upvotes              int               `json:"upvotes"`
	Downvotes            int               `json:"downvotes"`
	DueDate              any               `json:"due_date"`
	Confidential         bool              `json:"confidential"`
	DiscussionLocked     any               `json:"discussion_locked"`
	IssueType            string            `json:"issue_type"`
	WebURL               string            `json:"web_url"`
	TimeStats            map[string]any    `json:"time_stats"`
	TaskCompletionStatus map[string]int    `json:"task_completion_status"`
	HasTasks             bool              `json:"has_tasks"`
	Links                map[string]any    `json:"_links"`
	References           map[string]string `json:"references"`
	Severity             string            `json:"severity"`
	Subscribed           *bool             `json:"subscribed,omitempty"`
	MovedToID            any               `json:"moved_to_id"`
	Imported             bool              `json:"imported"`
	ImportedFrom         string            `json:"imported_from"`
	ServiceDeskReplyTo   any               `json:"service_desk_reply_to"`
}

// issueEntityLocked is the entity of an issue; single adds subscribed,
// which the token's owner is to the issues it authored.
func (g *GitLab) issueEntityLocked(p *Project, is *issue, single bool) issueEntity {
	full := p.fullPathLocked()
	api := g.URL() + "/api/v4/projects/" + itoa(p.id)
	ref := "#" + itoa(is.iid)
	e := issueEntity{
		ID: is.id, IID: is.iid, ProjectID: p.id, Title: is.title, Description: is.description,
		State: "opened", CreatedAt: iso(is.created), UpdatedAt: iso(is.updated),
		Labels: slices.Clone(is.labels), Assignees: []any{}, Author: g.userBasic(is.author),
		Type: "ISSUE", IssueType: "issue",
		WebURL: g.URL() + "/" + full + "/-/issues/" + itoa(is.iid),
		TimeStats: map[string]any{
			"time_estimate": 0, "total_time_spent": 0,
			"human_time_estimate": nil, "human_total_time_spent": nil,
		},
		TaskCompletionStatus: map[string]int{"count": 0, "completed_count": 0},
		Links: map[string]any{
			"self":                   api + "/issues/" + itoa(is.iid),
			"notes":                  api + "/issues/" + itoa(is.iid) + "/notes",
			"award_emoji":            api + "/issues/" + itoa(is.iid) + "/award_emoji",
			"project":                api,
			"closed_as_duplicate_of": nil,
		},
		References:   map[string]string{"short": ref, "relative": ref, "full": full + ref},
		Severity:     "UNKNOWN",
		ImportedFrom: "none",
	}
	if is.closed {
		e.State, e.ClosedAt = "closed", isoPtr(is.closedAt)
		by := g.userBasic(is.closedBy)
		e.ClosedBy = &by
	}
	if single {
		subscribed := is.author == g.bot
		e.Subscribed = &subscribed
	}
	return e
}
