package gitlab_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/gitlab"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
)

// extensionLabel is the server config's semester.extensionLabel in these
// tests; admins are the members of the group staff ("teacher") and the
// account "dean" of access.admins. Merge requests are opened by
// "student", as the double does.
const extensionLabel = "semester-extension"

func withExtensions() gitlab.ServiceOption {
	return gitlab.WithExtensions(extensionLabel, "staff", []string{"Dean"})
}

// extensionGitLab is a GitLab with students/alice/web (a wm.yaml on main)
// and the admin group staff, of which teacher is a member.
func extensionGitLab(t *testing.T) (*gitlabtest.GitLab, *gitlabtest.Project) {
	t.Helper()
	g := gitlabtest.New(t, token)
	p := aliceWeb(t, g)
	g.AddGroup(t, "staff")
	g.AddMember(t, "staff", "teacher", gitlabtest.Developer)
	return g, p
}

// propose opens a merge request into main from a new branch of main whose
// wm.yaml sets expires: to day, and returns its IID.
func propose(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project, branch, day string) int {
	t.Helper()
	p.Branch(t, branch, "main")
	p.Commit(t, branch, expiring(day), "run until "+day)
	return g.OpenMergeRequest(t, p.Path(), branch, "main").IID()
}

// expiring is the files of a commit whose wm.yaml expires on day.
func expiring(day string) map[string]string {
	files := wmYAML("dev")
	files["wm.yaml"] = strings.Replace(files["wm.yaml"], "version: 1\n", "version: 1\nexpires: "+day+"\n", 1)
	return files
}

func TestAnExtensionIsTheExpiresOfAMergedRequestAnAdminLabelled(t *testing.T) {
	for _, c := range []struct {
		name string
		// steps shape GitLab once the service has listed it.
		steps func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project)
		until string
		by    string
		mr    int
	}{
		{
			name: "a request a member of the admin group labelled and the student merged extends to its date",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice")
			},
			until: "2027-03-31", by: "teacher", mr: 1,
		},
		{
			name: "a request an account of the admins list labelled extends too, its name matched without regard to case",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "dean", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice")
			},
			until: "2027-03-31", by: "dean", mr: 1,
		},
		{
			name: "a request labelled by someone who is no admin extends nothing",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "tutor", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice")
			},
		},
		{
			name: "a request an admin labelled whose label was removed since extends nothing",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				g.UnlabelMR(t, p.Path(), iid, "tutor", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice")
			},
		},
		{
			name: "the label's last add counts: an admin's add, removed and added again by someone else, extends nothing",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				g.UnlabelMR(t, p.Path(), iid, "tutor", extensionLabel)
				g.LabelMR(t, p.Path(), iid, "tutor", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice")
			},
		},
		{
			name: "a request an admin labelled that is not merged extends nothing",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
			},
		},
		{
			name: "a request its author labelled extends nothing, even when the author is an admin",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				g.AddMember(t, "staff", "student", gitlabtest.Maintainer)
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "student", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice")
			},
		},
		{
			name: "a push after the admin's label voids it",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				p.Commit(t, "longer", expiring("2099-12-31"), "run for ever")
				g.MergeMR(t, p.Path(), iid, "alice")
			},
		},
		{
			name: "the label added again after the push approves what was pushed",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				p.Commit(t, "longer", expiring("2027-04-30"), "a month more")
				g.UnlabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice")
			},
			until: "2027-04-30", by: "teacher", mr: 1,
		},
		{
			name: "of two approved requests the later date holds, whichever merged last",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				first := propose(t, g, p, "longer", "2027-05-31")
				g.LabelMR(t, p.Path(), first, "teacher", extensionLabel)
				g.MergeMR(t, p.Path(), first, "alice")
				second := propose(t, g, p, "shorter", "2027-03-31")
				g.LabelMR(t, p.Path(), second, "dean", extensionLabel)
				g.MergeMR(t, p.Path(), second, "alice")
			},
			until: "2027-05-31", by: "teacher", mr: 1,
		},
		{
			name: "a squashed fast-forward merge is read at its squash commit",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				iid := propose(t, g, p, "longer", "2027-03-31")
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice", gitlabtest.Squash(), gitlabtest.FastForward())
			},
			until: "2027-03-31", by: "teacher", mr: 1,
		},
		{
			name: "a merge that left no expires: extends nothing",
			steps: func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				p.Branch(t, "tidy", "main")
				p.Commit(t, "tidy", wmYAML("prod"), "prod")
				iid := g.OpenMergeRequest(t, p.Path(), "tidy", "main").IID()
				g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
				g.MergeMR(t, p.Path(), iid, "alice")
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, p := extensionGitLab(t)
			n := newNotifier(t, g, withExtensions())
			c.steps(t, g, p)
			until, by, mr, err := n.svc.Extension(context.Background(), n.repo)
			if err != nil {
				t.Fatal(err)
			}
			if until != c.until || by != c.by || mr != c.mr {
				t.Errorf("extension until %q approved by %q in !%d; want %q, %q, !%d", until, by, mr, c.until, c.by, c.mr)
			}
			if got := g.UnimplementedRequests(); len(got) != 0 {
				t.Errorf("unimplemented requests %v", got)
			}
		})
	}
}

func TestAnExtensionThatCannotBeReadIsAClassifiedErrorNamingTheProject(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, c := range []struct {
		name   string
		before func(g *gitlabtest.GitLab)
		repo   string // the repo's key when not students/alice/web's
		kind   error
		is     error
		says   []string
	}{
		{
			name:   "a GitLab that is down is unreachable",
			before: func(g *gitlabtest.GitLab) { g.SetDown(true) },
			kind:   fault.Unreachable,
			is:     gitlab.ErrUnreachable,
			says:   []string{"extension of students/alice/web: list the merged merge requests of students/alice/web", "503"},
		},
		{
			name: "a GitLab that hangs on the admin group is unreachable at the job deadline",
			before: func(g *gitlabtest.GitLab) {
				g.Hang(func(req string) bool { return strings.Contains(req, "/groups/") })
			},
			kind: fault.Unreachable,
			is:   context.DeadlineExceeded,
			says: []string{"extension of students/alice/web: GitLab did not answer within 300ms", "teacher", "admin group staff"},
		},
		{
			name: "a repo GitLab did not list is not found",
			repo: "students/bob/web",
			kind: fault.NotFound,
			says: []string{"extension of students/bob/web: GitLab's last listing has no such project"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			g, p := extensionGitLab(t)
			n := newNotifier(t, g, withExtensions(), gitlab.WithJobTimeout(timeout))
			iid := propose(t, g, p, "longer", "2027-03-31")
			g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
			g.MergeMR(t, p.Path(), iid, "alice")
			if c.before != nil {
				c.before(g)
			}
			repo := n.repo
			if c.repo != "" {
				repo.Key = c.repo
			}
			start := time.Now()
			until, _, _, err := n.svc.Extension(context.Background(), repo)
			if err == nil {
				t.Fatalf("no error; until %q", until)
			}
			if got := fault.Of(err); got != c.kind {
				t.Errorf("kind %v, want %v: %v", got, c.kind, err)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("%v does not match %v", err, c.is)
			}
			for _, s := range c.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q does not say %q", err, s)
				}
			}
			if d := time.Since(start); d > timeout+5*time.Second {
				t.Errorf("Extension returned after %v, long past its deadline (%v)", d, timeout)
			}
		})
	}
}

func TestWithoutAnExtensionLabelNothingIsApprovedAndGitLabIsNotAsked(t *testing.T) {
	g, p := extensionGitLab(t)
	n := newNotifier(t, g)
	iid := propose(t, g, p, "longer", "2027-03-31")
	g.LabelMR(t, p.Path(), iid, "teacher", extensionLabel)
	g.MergeMR(t, p.Path(), iid, "alice")
	before := len(g.Requests())
	until, by, mr, err := n.svc.Extension(context.Background(), n.repo)
	if err != nil || until != "" || by != "" || mr != 0 {
		t.Fatalf("extension %q, %q, !%d, %v; want none", until, by, mr, err)
	}
	if got := g.Requests()[before:]; len(got) != 0 {
		t.Fatalf("GitLab was asked %v", got)
	}
}
