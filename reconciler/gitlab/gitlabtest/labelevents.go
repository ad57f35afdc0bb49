package gitlabtest

import (
	"net/http"
	"slices"
	"testing"
	"time"

	gitlab "gitlab.com/gitlab-org/api/client-go"
)

// Labels on merge requests follow GitLab's resource label events
// (documented at https://docs.gitlab.com/api/resource_label_events/):
//
//	GET /projects/:id/merge_requests/:merge_request_iid/resource_label_events   page, per_page
//
// As in GitLab:
//
//   - Adding a label a merge request does not carry records an "add" event
//     by the acting user, removing one it carries a "remove" event; adding
//     a label it carries, or removing one it does not, records nothing.
//   - Events are listed oldest first, each with its user (UserBasic), its
//     created_at, resource_type "MergeRequest", resource_id (the merge
//     request's id, not its iid) and the label (LabelBasic: id, name,
//     color, description, description_html, text_color).
//   - A label is the project's: the first merge request to get a name makes
//     it, with an id of its own that every later event reuses.
//   - Labelling moves the merge request's updated_at.
//
// Events are made at the project's clock (stampLocked), which never gives
// two of them, or an event and a diff version, the same instant: a test of
// "labelled before or after a push" cannot tie. Event ids are the merge
// request's id times 10,000 plus the event's number; labels' ids are the
// project's id times 1,000 plus the label's number.

// labelEvent is one resource label event of a merge request.
type labelEvent struct {
	id      int
	action  string // add, remove
	label   string
	user    *user
	created time.Time
}

// labelColor is the color GitLab gives a label made without one.
const labelColor = "#6699cc"

// stampLocked returns now, or just after the last stamp of the project
// when the millisecond clock has not moved since.
func (p *Project) stampLocked() time.Time {
	at := now()
	if !at.After(p.lastStamp) {
		at = p.lastStamp.Add(time.Millisecond)
	}
	p.lastStamp = at
	return at
}

// labelIDLocked returns the id of the project's label name, making it.
func (p *Project) labelIDLocked(name string) int {
	if p.labelIDs == nil {
		p.labelIDs = map[string]int{}
	}
	id, ok := p.labelIDs[name]
	if !ok {
		id = p.id*1000 + len(p.labelIDs) + 1
		p.labelIDs[name] = id
	}
	return id
}

// LabelMR adds label to merge request !iid of project as username (created
// as needed) would in GitLab's sidebar, recording an "add" resource label
// event by them; a label the merge request carries already records
// nothing. It works on merged merge requests too, as GitLab's does.
func (g *GitLab) LabelMR(t testing.TB, project string, iid int, username, label string) {
	t.Helper()
	g.relabel(t, project, iid, username, label, true)
}

// UnlabelMR removes label from merge request !iid of project as username
// (created as needed) would, recording a "remove" event by them; a label
// the merge request does not carry records nothing.
func (g *GitLab) UnlabelMR(t testing.TB, project string, iid int, username, label string) {
	t.Helper()
	g.relabel(t, project, iid, username, label, false)
}

func (g *GitLab) relabel(t testing.TB, project string, iid int, username, label string, add bool) {
	t.Helper()
	if clean := cleanLabels([]string{label}); len(clean) != 1 || clean[0] != label {
		t.Fatalf("gitlabtest: label %q is not a label name", label)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	mr := g.mustMergeRequestLocked(t, project, iid)
	mr.refreshLocked() // a push before the label is a version before the event
	has := slices.Contains(mr.labels, label)
	if has == add {
		return
	}
	action := "add"
	if add {
		mr.labels = cleanLabels(append(mr.labels, label))
	} else {
		action = "remove"
		mr.labels = slices.DeleteFunc(mr.labels, func(l string) bool { return l == label })
	}
	mr.project.labelIDLocked(label)
	at := mr.project.stampLocked()
	mr.labelEvents = append(mr.labelEvents, &labelEvent{
		id: mr.id*10_000 + len(mr.labelEvents) + 1, action: action, label: label,
		user: g.userLocked(username), created: at,
	})
	mr.updated = at
}

// LabelEvents returns the resource label events of merge request !iid of
// project, oldest first, as the API lists them.
func (g *GitLab) LabelEvents(project string, iid int) []gitlab.LabelEvent {
	g.mu.Lock()
	defer g.mu.Unlock()
	p := g.findProjectLocked(project, true)
	if p == nil || p.mrs[iid] == nil {
		return nil
	}
	mr := p.mrs[iid]
	out := make([]gitlab.LabelEvent, 0, len(mr.labelEvents))
	for _, e := range mr.labelEvents {
		out = append(out, decodeAs[gitlab.LabelEvent](g.t, g.labelEventEntityLocked(mr, e)))
	}
	return out
}

// labelBasicEntity is Entities::LabelBasic.
type labelBasicEntity struct {
	ID              int    `json:"id"`
	Name            string `json:"name"`
	Color           string `json:"color"`
	Description     any    `json:"description"`
	DescriptionHTML string `json:"description_html"`
	TextColor       string `json:"text_color"`
}

// labelEventEntity is Entities::ResourceLabelEvent.
type labelEventEntity struct {
	ID           int              `json:"id"`
	User         userBasicEntity  `json:"user"`
	CreatedAt    string           `json:"created_at"`
	ResourceType string           `json:"resource_type"`
	ResourceID   int              `json:"resource_id"`
	Label        labelBasicEntity `json:"label"`
	Action       string           `json:"action"`
}

func (g *GitLab) labelEventEntityLocked(mr *MergeRequest, e *labelEvent) labelEventEntity {
	return labelEventEntity{
		ID: e.id, User: g.userBasic(e.user), CreatedAt: iso(e.created),
		ResourceType: "MergeRequest", ResourceID: mr.id,
		Label: labelBasicEntity{
			ID: mr.project.labelIDLocked(e.label), Name: e.label, Color: labelColor,
			Description: nil, TextColor: "#FFFFFF",
		},
		Action: e.action,
	}
}

// listLabelEvents is GET
// /projects/:id/merge_requests/:merge_request_iid/resource_label_events.
func (g *GitLab) listLabelEvents(w http.ResponseWriter, r *http.Request, a args) {
	mr := g.mergeRequestOr404(w, a, "merge_request_iid")
	if mr == nil {
		return
	}
	events := mr.labelEvents
	g.writePage(w, r, a, len(events), func(i int) any { return g.labelEventEntityLocked(mr, events[i]) })
}
