package gitlab

import (
	"context"
	"fmt"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/schema"
)

// OwnerOf derives the owner of a project from its path: the segment-th
// path segment below group, lower-cased. With group "students" and segment
// 1, "students/alice/web" and "students/alice/ml/train" are alice's. A
// project with too few segments below the group ("students/web") has no
// owner, and neither has one whose segment is not an account name.
func OwnerOf(group, project string, segment int) (string, error) {
	owner, _, err := OwnerAndName(group, project, segment)
	return owner, err
}

// OwnerAndName is OwnerOf that also returns the project's name below its
// owner, lower-cased: "web" for "students/alice/web", "ml/train" for
// "cs/2026/bob/ml/train" with group "cs" and segment 2. It is what
// "shared/<owner>/<name>" names in another student's wm.yaml; the
// segments between the group and the owner are not part of it.
func OwnerAndName(group, project string, segment int) (owner, name string, err error) {
	rest, ok := strings.CutPrefix(strings.ToLower(project), strings.ToLower(strings.Trim(group, "/"))+"/")
	if !ok {
		return "", "", fmt.Errorf("%s is not under the group %s", project, group)
	}
	parts := strings.Split(rest, "/")
	// The last part is the project itself, never an owner.
	if len(parts) <= segment {
		return "", "", fmt.Errorf("%s has no owner: it needs %d folder(s) below %s before the project", project, segment, group)
	}
	owner = parts[segment-1]
	if msg := schema.AccountProblem(owner); msg != "" {
		return "", "", fmt.Errorf("%s: the owner segment %s", project, msg)
	}
	return owner, strings.Join(parts[segment:], "/"), nil
}

// Owner checks (sources.gitlab.ownerCheck).
const (
	// OwnerCheckMembership confirms that an active GitLab account of the
	// owner's name holds the project with at least the configured access
	// level, directly or through its groups.
	OwnerCheckMembership = "membership"
	// OwnerCheckCreator also requires that account to have created the
	// project, which nobody else can arrange.
	OwnerCheckCreator = "creator"
	// OwnerCheckNone trusts the path alone.
	OwnerCheckNone = "none"
)

// ownerAccount is the GitLab account of an owner name, or why there is
// none that counts.
type ownerAccount struct {
	id      int64
	refusal string
}

var accessNames = map[gl.AccessLevelValue]string{
	gl.GuestPermissions: "Guest", gl.PlannerPermissions: "Planner", gl.ReporterPermissions: "Reporter",
	gl.DeveloperPermissions: "Developer", gl.MaintainerPermissions: "Maintainer", gl.OwnerPermissions: "Owner",
}

func accessName(l gl.AccessLevelValue) string {
	if n, ok := accessNames[l]; ok {
		return fmt.Sprintf("%s (%d)", n, l)
	}
	return fmt.Sprint(int(l))
}

// confirmOwner asks GitLab whether owner, the account a project's path
// names, really holds the project: without it, anyone who can create a
// group or project at students/<someone>/ would run code as that someone,
// with their volumes, quota and namespace. It returns "" when GitLab
// confirms, the reason when GitLab says no, and an error when GitLab could
// not be asked (which must change nothing). owners caches accounts for
// one listing.
func (c *Client) confirmOwner(ctx context.Context, owners map[string]ownerAccount, pid int64, owner string) (string, error) {
	mode := c.cfg.OwnerCheck
	if mode == OwnerCheckNone {
		return "", nil
	}
	acct, ok := owners[owner]
	if !ok {
		var err error
		if acct, err = c.account(ctx, owner); err != nil {
			return "", err
		}
		owners[owner] = acct
	}
	if acct.refusal != "" {
		return acct.refusal, nil
	}
	m, resp, err := c.gl.ProjectMembers.GetInheritedProjectMember(pid, acct.id, gl.WithContext(ctx))
	switch {
	case notFound(resp):
		return fmt.Sprintf("the GitLab account %s is not a member of the project", owner), nil
	case err != nil:
		return "", fmt.Errorf("check that %s holds project %d: %w", owner, pid, classify(resp, err))
	}
	least := gl.AccessLevelValue(c.cfg.OwnerMinAccessLevel)
	if least == 0 {
		least = gl.DeveloperPermissions
	}
	if m.AccessLevel < least {
		return fmt.Sprintf("the GitLab account %s has %s access to the project, less than %s", owner, accessName(m.AccessLevel), accessName(least)), nil
	}
	if m.ExpiresAt != nil && time.Time(*m.ExpiresAt).Before(time.Now()) {
		return fmt.Sprintf("the membership of %s in the project expired on %s", owner, m.ExpiresAt), nil
	}
	if mode != OwnerCheckCreator {
		return "", nil
	}
	p, resp, err := c.gl.Projects.GetProject(pid, nil, gl.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("read project %d: %w", pid, classify(resp, err))
	}
	if p.CreatorID != acct.id {
		return fmt.Sprintf("the project was not created by the GitLab account %s", owner), nil
	}
	return "", nil
}

// account finds the active GitLab account named owner (GitLab's usernames
// are unique without regard to case).
func (c *Client) account(ctx context.Context, owner string) (ownerAccount, error) {
	us, resp, err := c.gl.Users.ListUsers(&gl.ListUsersOptions{Username: gl.Ptr(owner)}, gl.WithContext(ctx))
	if err != nil {
		return ownerAccount{}, fmt.Errorf("look up the GitLab account %s: %w", owner, classify(resp, err))
	}
	for _, u := range us {
		if !strings.EqualFold(u.Username, owner) {
			continue
		}
		if u.State != "active" {
			return ownerAccount{refusal: fmt.Sprintf("the GitLab account %s is %s", owner, u.State)}, nil
		}
		return ownerAccount{id: u.ID}, nil
	}
	return ownerAccount{refusal: fmt.Sprintf("there is no GitLab account %s", owner)}, nil
}
