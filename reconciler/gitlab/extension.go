package gitlab

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/schema"
)

var _ reconciler.Extender = (*Service)(nil)

// Bounds on what one Extension reads.
const (
	// maxExtensionMRs is how many of the newest merged, labelled merge
	// requests are looked at.
	maxExtensionMRs = 20
	// maxLabelEventPages bounds the pages of 100 label events read of one
	// merge request.
	maxLabelEventPages = 10
)

// Extension says whether an admin approved repo running past its
// semester's end, and until when. It looks at the newest 20 merged merge
// requests of repo's project into repo's branch (its default branch when
// the repo names none) that carry the extension label (WithExtensions),
// and counts one as approved when all of these hold:
//
//   - the label's last resource label event is an "add" (one removed
//     since, by anyone, withdraws it), by an admin: a member of the admin
//     group, directly or through a parent group, active and not expired,
//     as GitLab answers WhaleMountain's own token, or an account named in
//     the admins list;
//   - that admin is not the merge request's author: nobody approves their
//     own request, admins included (another admin labels it);
//   - the label was added after the merge request's last diff version:
//     a push after the approval, which could change the date, voids it
//     until the label is removed and added again.
//
// Its date is the `expires:` of the wm.yaml it merged: at its
// merge_commit_sha, else its squash_commit_sha, else (a fast-forward) its
// head. A merge that removed wm.yaml, left out `expires:` or made it
// invalid approves nothing. until is the latest date of the approved merge
// requests, with the admin who labelled it and its IID; "" when none is
// approved.
//
// The project is the one the last listing of GitLab found for the repo; a
// repo it did not find (not listed yet, refused, or a folder source's) is
// an error of kind fault.NotFound. GitLab is asked within the job deadline
// (WithJobTimeout); an error names the project and is of kind
// fault.Unreachable when GitLab could not be reached, failed on its side
// or did not answer in time, fault.Refused when it said no, and so on as
// for Notify: the caller asks again at its next run.
func (s *Service) Extension(ctx context.Context, repo reconciler.Repo) (until, approvedBy string, mr int, err error) {
	s.mu.Lock()
	p, ok := s.projects[repo.Key]
	s.mu.Unlock()
	if !ok {
		return "", "", 0, fault.Wrap(fault.NotFound, fmt.Errorf("extension of %s: GitLab's last listing has no such project of WhaleMountain's (not listed yet, or refused)", repo.Key))
	}
	if s.extLabel == "" {
		return "", "", 0, nil
	}
	branch := repo.Branch
	if branch == "" {
		branch = p.DefaultBranch
	}
	jctx, cancel := s.withDeadline(ctx)
	defer cancel()
	until, approvedBy, mr, err = s.extension(jctx, p, branch)
	if err != nil {
		if fault.Of(err) == nil && ctx.Err() == nil && jctx.Err() != nil {
			// The job deadline passed: GitLab hung, not the caller.
			err = fault.Wrap(fault.Unreachable, fmt.Errorf("GitLab did not answer within %v: %w", s.jobTimeout, err))
		}
		return "", "", 0, fmt.Errorf("extension of %s: %w", p.Path, err)
	}
	return until, approvedBy, mr, nil
}

// extension is Extension's work, within ctx.
func (s *Service) extension(ctx context.Context, p Project, branch string) (until, approvedBy string, iid int, err error) {
	c := s.client.gl
	mrs, resp, err := c.MergeRequests.ListProjectMergeRequests(p.ID, &gl.ListProjectMergeRequestsOptions{
		ListOptions:  gl.ListOptions{PerPage: maxExtensionMRs, Page: 1},
		State:        gl.Ptr("merged"),
		Labels:       &gl.LabelOptions{s.extLabel},
		TargetBranch: gl.Ptr(branch),
		OrderBy:      gl.Ptr("created_at"),
		Sort:         gl.Ptr("desc"),
	}, gl.WithContext(ctx))
	if err != nil {
		return "", "", 0, fmt.Errorf("list the merged merge requests of %s labelled %q: %w", p.Path, s.extLabel, notifyFault(ctx, resp, err))
	}
	admins := map[int64]bool{}
	for _, m := range mrs {
		by, err := s.approver(ctx, p, m, admins)
		if err != nil {
			return "", "", 0, err
		}
		if by == "" {
			continue
		}
		ref := m.MergeCommitSHA
		if ref == "" {
			ref = m.SquashCommitSHA
		}
		if ref == "" {
			ref = m.SHA
		}
		date, err := s.expiresAt(ctx, p, m.IID, ref)
		if err != nil {
			return "", "", 0, err
		}
		if date > until {
			until, approvedBy, iid = date, by, int(m.IID)
		}
	}
	return until, approvedBy, iid, nil
}

// approver returns the admin whose label approves m, or "" when nobody's
// does (logged, with why). admins caches who is an admin, by account id.
func (s *Service) approver(ctx context.Context, p Project, m *gl.BasicMergeRequest, admins map[int64]bool) (string, error) {
	c := s.client.gl
	var last *gl.LabelEvent
	opt := &gl.ListLabelEventsOptions{ListOptions: gl.ListOptions{PerPage: 100, Page: 1}}
	for range maxLabelEventPages {
		events, resp, err := c.ResourceLabelEvents.ListMergeRequestsLabelEvents(p.ID, m.IID, opt, gl.WithContext(ctx))
		if err != nil {
			return "", fmt.Errorf("read the label events of %s!%d: %w", p.Path, m.IID, notifyFault(ctx, resp, err))
		}
		for _, e := range events {
			if e.Label.Name == s.extLabel && (e.Action == "add" || e.Action == "remove") {
				last = e
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opt.Page = resp.NextPage
	}
	refuse := func(why string, args ...any) (string, error) {
		s.log.Info("extension not approved: "+fmt.Sprintf(why, args...), "project", p.Path, "mergeRequest", m.IID, "label", s.extLabel)
		return "", nil
	}
	switch {
	case last == nil || last.Action != "add":
		return refuse("the label was removed")
	case last.CreatedAt == nil:
		return refuse("GitLab gave no time for the label's event")
	case m.Author != nil && m.Author.ID == last.User.ID:
		return refuse("%s labelled their own merge request", last.User.Username)
	}
	admin, known := admins[last.User.ID]
	if !known {
		var err error
		if admin, err = s.isAdmin(ctx, last.User); err != nil {
			return "", err
		}
		admins[last.User.ID] = admin
	}
	if !admin {
		return refuse("%s, who labelled it, is not an admin", last.User.Username)
	}
	vs, resp, err := c.MergeRequests.GetMergeRequestDiffVersions(p.ID, m.IID, &gl.GetMergeRequestDiffVersionsOptions{
		ListOptions: gl.ListOptions{PerPage: 1, Page: 1},
	}, gl.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("read the versions of %s!%d: %w", p.Path, m.IID, notifyFault(ctx, resp, err))
	}
	if len(vs) > 0 && (vs[0].CreatedAt == nil || !last.CreatedAt.After(*vs[0].CreatedAt)) {
		return refuse("it was pushed to after %s labelled it", last.User.Username)
	}
	return last.User.Username, nil
}

// isAdmin says whether u is an admin: named in the admins list, or a
// member of the admin group (directly or through a parent group) whose
// account and membership are active, as GitLab answers WhaleMountain's
// token; the access API decides who is an admin the same way.
func (s *Service) isAdmin(ctx context.Context, u gl.BasicUser) (bool, error) {
	for _, a := range s.admins {
		if strings.EqualFold(a, u.Username) {
			return true, nil
		}
	}
	if s.adminGroup == "" {
		return false, nil
	}
	m, resp, err := s.client.gl.GroupMembers.GetInheritedGroupMember(s.adminGroup, u.ID, gl.WithContext(ctx))
	switch {
	case notFound(resp):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("check that %s is a member of the admin group %s: %w", u.Username, s.adminGroup, notifyFault(ctx, resp, err))
	case m.State != "" && m.State != "active":
		return false, nil
	case m.ExpiresAt != nil && time.Time(*m.ExpiresAt).Before(time.Now()):
		return false, nil
	}
	return true, nil
}

// expiresAt reads wm.yaml's `expires:` at commit ref of p; "" when the
// file is not there, does not parse or sets none.
func (s *Service) expiresAt(ctx context.Context, p Project, iid int64, ref string) (string, error) {
	b, resp, err := s.client.gl.RepositoryFiles.GetRawFile(p.ID, reconciler.WmFile, &gl.GetRawFileOptions{Ref: gl.Ptr(ref)}, gl.WithContext(ctx))
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		s.log.Info("extension not approved: the merge left no "+reconciler.WmFile, "project", p.Path, "mergeRequest", iid, "commit", short(ref))
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s of %s at %s: %w", reconciler.WmFile, p.Path, short(ref), notifyFault(ctx, resp, err))
	}
	f, err := schema.Parse(reconciler.WmFile, bytes.NewReader(b))
	if err != nil {
		s.log.Info("extension not approved: the merged "+reconciler.WmFile+" is invalid", "project", p.Path, "mergeRequest", iid, "commit", short(ref), "err", err)
		return "", nil
	}
	return f.Expires, nil
}
