package gitlabtest

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// GitLab's access levels (Gitlab::Access), as the members API reports them.
const (
	Guest      = 10
	Planner    = 15
	Reporter   = 20
	Developer  = 30
	Maintainer = 40
	Owner      = 50
)

// member is one direct membership of a user in a group or a project.
type member struct {
	level     int
	created   time.Time
	createdBy *user // who added the user; nil for the namespace's creator
}

// AddUser creates the account username (active, like every user of the
// double) and returns its id; an existing account is returned as it is.
func (g *GitLab) AddUser(t testing.TB, username string) int {
	t.Helper()
	if !validSegment(username) {
		t.Fatalf("gitlabtest: add user %q: not a valid username", username)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.userLocked(username).id
}

// AddMember makes username (created as needed) a direct member of the
// group or project at fullPath with accessLevel (Guest ... Owner), as
// POST /groups/:id/members or /projects/:id/members would, added by
// addedBy ("" for the group's creator). A project is looked for first,
// then a group. Membership of a group is inherited by its subgroups and
// their projects.
func (g *GitLab) AddMember(t testing.TB, fullPath, username string, accessLevel int, addedBy ...string) {
	t.Helper()
	switch accessLevel {
	case Guest, Planner, Reporter, Developer, Maintainer, Owner:
	default:
		t.Fatalf("gitlabtest: add member %q to %q: %d is not an access level", username, fullPath, accessLevel)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m := &member{level: accessLevel, created: now()}
	if len(addedBy) > 0 && addedBy[0] != "" {
		m.createdBy = g.userLocked(addedBy[0])
	}
	u := g.userLocked(username)
	if p := g.findProjectLocked(fullPath, false); p != nil {
		if p.members == nil {
			p.members = map[*user]*member{}
		}
		p.members[u] = m
		return
	}
	gr := g.findGroupLocked(fullPath)
	if gr == nil {
		t.Fatalf("gitlabtest: add member %q: no project or group %q", username, fullPath)
	}
	if gr.members == nil {
		gr.members = map[*user]*member{}
	}
	gr.members[u] = m
}

// effectiveMemberLocked is a user's membership of a project including the
// ones inherited from its groups: the one with the highest access level,
// as GitLab answers members/all. The token's owner is an owner of every
// group.
func (g *GitLab) effectiveMemberLocked(p *Project, u *user) *member {
	var best *member
	consider := func(m *member) {
		if m != nil && (best == nil || m.level > best.level) {
			best = m
		}
	}
	consider(p.members[u])
	for gr := p.namespace; gr != nil; gr = gr.parent {
		consider(gr.members[u])
	}
	if u == g.bot {
		consider(&member{level: Owner, created: g.bot.created})
	}
	return best
}

// effectiveGroupMemberLocked is effectiveMemberLocked for a group.
func (g *GitLab) effectiveGroupMemberLocked(gr *Group, u *user) *member {
	var best *member
	for x := gr; x != nil; x = x.parent {
		if m := x.members[u]; m != nil && (best == nil || m.level > best.level) {
			best = m
		}
	}
	if u == g.bot {
		best = &member{level: Owner, created: g.bot.created}
	}
	return best
}

// memberEntity is Entities::Member.
type memberEntity struct {
	userBasicEntity
	AccessLevel       int              `json:"access_level"`
	CreatedAt         string           `json:"created_at"`
	CreatedBy         *userBasicEntity `json:"created_by,omitempty"`
	ExpiresAt         *string          `json:"expires_at"`
	GroupSAMLIdentity any              `json:"group_saml_identity"`
	MembershipState   string           `json:"membership_state"`
}

func (g *GitLab) memberEntityLocked(u *user, m *member) memberEntity {
	e := memberEntity{
		userBasicEntity: g.userBasic(u), AccessLevel: m.level,
		CreatedAt: iso(m.created), MembershipState: "active",
	}
	if m.createdBy != nil {
		by := g.userBasic(m.createdBy)
		e.CreatedBy = &by
	}
	return e
}

// userByIDLocked finds a user by numeric id.
func (g *GitLab) userByIDLocked(id string) *user {
	for _, u := range g.users {
		if itoa(u.id) == id {
			return u
		}
	}
	return nil
}

// getProjectMember is GET /projects/:id/members/all/:user_id: 404 "404 Not
// found" when the user holds nothing of the project.
func (g *GitLab) getProjectMember(w http.ResponseWriter, _ *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	if _, err := intParam(a.path, "user_id"); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u := g.userByIDLocked(a.path["user_id"])
	var m *member
	if u != nil {
		m = g.effectiveMemberLocked(p, u)
	}
	if m == nil {
		writeMessage(w, http.StatusNotFound, "404 Not found")
		return
	}
	writeJSON(w, http.StatusOK, g.memberEntityLocked(u, m))
}

// getGroupMember is GET /groups/:id/members/all/:user_id.
func (g *GitLab) getGroupMember(w http.ResponseWriter, _ *http.Request, a args) {
	gr := g.findGroupLocked(a.path["id"])
	if gr == nil {
		writeMessage(w, http.StatusNotFound, "404 Group Not Found")
		return
	}
	if _, err := intParam(a.path, "user_id"); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u := g.userByIDLocked(a.path["user_id"])
	var m *member
	if u != nil {
		m = g.effectiveGroupMemberLocked(gr, u)
	}
	if m == nil {
		writeMessage(w, http.StatusNotFound, "404 Not found")
		return
	}
	writeJSON(w, http.StatusOK, g.memberEntityLocked(u, m))
}

// listUsers is GET /users: with username, the one account of that name,
// matched without regard to case, as GitLab does; without it, every
// account by id.
func (g *GitLab) listUsers(w http.ResponseWriter, r *http.Request, a args) {
	var us []*user
	for _, u := range g.users {
		if a.params.Has("username") && !strings.EqualFold(u.username, a.params.Get("username")) {
			continue
		}
		us = append(us, u)
	}
	slices.SortFunc(us, func(x, y *user) int { return x.id - y.id })
	g.writePage(w, r, a, len(us), func(i int) any { return g.userBasic(us[i]) })
}
