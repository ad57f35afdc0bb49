package gitlabtest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/memory"
	gitlab "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
)

const token = "glpat-gitlabtest-token"

func TestGroupProjects(t *testing.T) {
	t.Parallel()
	t.Run("a group's projects are listed across nested subgroups page by page, 20 unless asked", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		var want []string
		for i := range 12 {
			want = append(want, g.AddProject(t, fmt.Sprintf("students/2026/a/p%02d", i)).Path())
		}
		for i := range 8 {
			want = append(want, g.AddProject(t, fmt.Sprintf("students/2026/b/c/q%02d", i)).Path())
		}
		for i := range 5 {
			want = append(want, g.AddProject(t, fmt.Sprintf("students/2026/r%02d", i)).Path())
		}
		g.AddProject(t, "students/2025/old")
		g.AddProject(t, "teachers/exam")
		c := g.Client(t)

		opt := &gitlab.ListGroupProjectsOptions{
			ListOptions:      gitlab.ListOptions{PerPage: 10},
			IncludeSubGroups: gitlab.Ptr(true),
			OrderBy:          gitlab.Ptr("path"),
			Sort:             gitlab.Ptr("asc"),
		}
		var got []string
		var sizes []int
		for page := int64(1); page != 0; {
			opt.Page = page
			ps, resp, err := c.Groups.ListGroupProjects("students/2026", opt)
			if err != nil {
				t.Fatal(err)
			}
			if resp.TotalItems != 25 || resp.TotalPages != 3 || resp.ItemsPerPage != 10 || resp.CurrentPage != page {
				t.Fatalf("page %d: total %d, pages %d, per page %d, current %d; want 25, 3, 10, %d",
					page, resp.TotalItems, resp.TotalPages, resp.ItemsPerPage, resp.CurrentPage, page)
			}
			for _, p := range ps {
				got = append(got, p.PathWithNamespace)
			}
			sizes = append(sizes, len(ps))
			page = resp.NextPage
		}
		slices.Sort(want)
		if !slices.Equal(got, want) || !slices.Equal(sizes, []int{10, 10, 5}) {
			t.Fatalf("got %v in pages of %v, want %v in pages of 10, 10, 5", got, sizes, want)
		}

		// gitlab.Scan follows the Link header's next page, as keyset
		// pagination would.
		all, err := gitlab.ScanAndCollect(func(p gitlab.PaginationOptionFunc) ([]*gitlab.Project, *gitlab.Response, error) {
			return c.Groups.ListGroupProjects(g.AddGroup(t, "students/2026").ID(), &gitlab.ListGroupProjectsOptions{
				ListOptions: gitlab.ListOptions{PerPage: 7}, IncludeSubGroups: gitlab.Ptr(true),
			}, p)
		})
		if err != nil || len(all) != 25 {
			t.Fatalf("scanning pages of 7: %d projects, %v; want 25", len(all), err)
		}

		direct, _, err := c.Groups.ListGroupProjects("students/2026", nil)
		if err != nil || len(direct) != 5 {
			t.Fatalf("without include_subgroups: %d projects, %v; want the 5 direct ones", len(direct), err)
		}

		// Pages hold 20 projects unless asked, never more than 100, newest
		// first unless asked.
		ps, resp, err := c.Groups.ListGroupProjects("students", &gitlab.ListGroupProjectsOptions{IncludeSubGroups: gitlab.Ptr(true)})
		if err != nil || len(ps) != 20 || resp.ItemsPerPage != 20 || resp.NextPage != 2 || resp.TotalItems != 26 {
			t.Fatalf("default page: %d projects, per page %d, next %d, total %d, %v; want 20, 20, 2, 26",
				len(ps), resp.ItemsPerPage, resp.NextPage, resp.TotalItems, err)
		}
		if ps[0].PathWithNamespace != "students/2025/old" {
			t.Fatalf("first project %s, want the newest, students/2025/old", ps[0].PathWithNamespace)
		}
		_, resp, err = c.Groups.ListGroupProjects("students", &gitlab.ListGroupProjectsOptions{
			ListOptions: gitlab.ListOptions{PerPage: 500}, IncludeSubGroups: gitlab.Ptr(true),
		})
		if err != nil || resp.ItemsPerPage != 100 || resp.NextPage != 0 || resp.TotalPages != 1 {
			t.Fatalf("per_page 500: per page %d, next %d, pages %d, %v; want 100, 0, 1",
				resp.ItemsPerPage, resp.NextPage, resp.TotalPages, err)
		}
	})

	t.Run("the archived parameter keeps only archived or only active projects", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		g.AddProject(t, "students/active")
		g.AddProject(t, "students/old", gitlabtest.Archived())
		g.AddProject(t, "students/later")
		g.Archive(t, "students/later")
		c := g.Client(t)
		for _, tc := range []struct {
			archived *bool
			want     []string
		}{
			{nil, []string{"students/active", "students/later", "students/old"}},
			{gitlab.Ptr(true), []string{"students/later", "students/old"}},
			{gitlab.Ptr(false), []string{"students/active"}},
		} {
			ps, _, err := c.Groups.ListGroupProjects("students", &gitlab.ListGroupProjectsOptions{
				Archived: tc.archived, OrderBy: gitlab.Ptr("path"), Sort: gitlab.Ptr("asc"),
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := paths(ps); !slices.Equal(got, tc.want) {
				t.Errorf("archived=%v: got %v, want %v", show(tc.archived), got, tc.want)
			}
			for _, p := range ps {
				if p.Archived != (p.PathWithNamespace != "students/active") {
					t.Errorf("%s: archived %v", p.PathWithNamespace, p.Archived)
				}
			}
		}
		// Like GitLab's BasicProjectDetails, a simple listing has no
		// archived field: it cannot tell archived projects apart.
		ps, _, err := c.Groups.ListGroupProjects("students", &gitlab.ListGroupProjectsOptions{
			Simple: gitlab.Ptr(true), Archived: gitlab.Ptr(true),
		})
		if err != nil || len(ps) != 2 || ps[0].Archived || ps[1].Archived {
			t.Fatalf("simple archived listing: %+v, %v; want two projects without the archived field", ps, err)
		}
	})

	t.Run("the topic parameter keeps projects having every topic", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		g.AddProject(t, "students/both", gitlabtest.Topics("web", "go"))
		g.AddProject(t, "students/go", gitlabtest.Topics("go"))
		g.AddProject(t, "students/none")
		c := g.Client(t)
		for topic, want := range map[string][]string{
			"go":     {"students/both", "students/go"},
			"GO":     {"students/both", "students/go"},
			"go,web": {"students/both"},
			"rust":   nil,
		} {
			ps, _, err := c.Groups.ListGroupProjects("students", &gitlab.ListGroupProjectsOptions{
				Topic: gitlab.Ptr(topic), OrderBy: gitlab.Ptr("path"), Sort: gitlab.Ptr("asc"),
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := paths(ps); !slices.Equal(got, want) {
				t.Errorf("topic=%s: got %v, want %v", topic, got, want)
			}
		}
		p, _, err := c.Projects.GetProject("students/both", nil)
		if err != nil || !slices.Equal(p.Topics, []string{"go", "web"}) {
			t.Fatalf("topics %v, %v; want them sorted: [go web]", p.Topics, err)
		}
	})

	t.Run("a group and a project are found by id or by full path", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/2026/alice.b/web.site", gitlabtest.DefaultBranch("trunk"))
		c := g.Client(t)
		gr, _, err := c.Groups.GetGroup("students/2026", nil)
		if err != nil || gr.FullPath != "students/2026" || gr.ParentID != int64(g.AddGroup(t, "students").ID()) {
			t.Fatalf("group %+v, %v", gr, err)
		}
		for _, id := range []any{p.ID(), "students/2026/alice.b/web.site", "Students/2026/Alice.B/Web.Site"} {
			got, _, err := c.Projects.GetProject(id, nil)
			if err != nil {
				t.Fatalf("get project %v: %v", id, err)
			}
			if got.ID != int64(p.ID()) || got.PathWithNamespace != p.Path() || got.DefaultBranch != "trunk" ||
				!got.EmptyRepo || got.HTTPURLToRepo != g.URL()+"/students/2026/alice.b/web.site.git" ||
				got.Namespace.FullPath != "students/2026/alice.b" || got.Namespace.Kind != "group" {
				t.Fatalf("get project %v: %+v", id, got)
			}
		}
		if _, _, err := c.Projects.GetProject("students/nobody", nil); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("missing project: %v, want gitlab.ErrNotFound", err)
		}
	})
}

func TestRepositoryFiles(t *testing.T) {
	t.Parallel()
	g := gitlabtest.New(t, token)
	p := g.AddProject(t, "students/alice/web")
	first := p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n", "conf/app.env": "A=1\n"}, "add wm.yaml")
	head := p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n", "conf/app.env": "A=2\n"}, "change app.env")
	c := g.Client(t)
	blob := gittest.Git(t, p.GitDir(), "rev-parse", head+":wm.yaml")
	sum := sha256.Sum256([]byte("version: 1\n"))

	t.Run("a file is read at a branch with GitLab's fields", func(t *testing.T) {
		f, resp, err := c.RepositoryFiles.GetFile(p.Path(), "wm.yaml", &gitlab.GetFileOptions{Ref: gitlab.Ptr("main")})
		if err != nil {
			t.Fatal(err)
		}
		content, _ := base64.StdEncoding.DecodeString(f.Content)
		want := gitlab.File{
			FileName: "wm.yaml", FilePath: "wm.yaml", Size: 11, Encoding: "base64", Content: f.Content,
			Ref: "main", BlobID: blob, CommitID: head, SHA256: hex.EncodeToString(sum[:]), LastCommitID: first,
		}
		if *f != want || string(content) != "version: 1\n" {
			t.Fatalf("got %+v (content %q), want %+v", *f, content, want)
		}
		if resp.Header.Get("X-Gitlab-Last-Commit-Id") != first {
			t.Fatalf("GET headers %v", resp.Header)
		}
	})

	t.Run("a HEAD of a file gives its metadata in X-Gitlab headers", func(t *testing.T) {
		f, resp, err := c.RepositoryFiles.GetFileMetaData(p.ID(), "conf/app.env", &gitlab.GetFileMetaDataOptions{Ref: gitlab.Ptr(first)})
		if err != nil {
			t.Fatal(err)
		}
		if f.FileName != "app.env" || f.FilePath != "conf/app.env" || f.Ref != first || f.CommitID != first ||
			f.LastCommitID != first || f.Size != 4 || f.Encoding != "base64" || f.Content != "" {
			t.Fatalf("got %+v", *f)
		}
		if resp.Request.Method != http.MethodHead || resp.Header.Get("X-Gitlab-Blob-Id") == "" {
			t.Fatalf("%s with headers %v", resp.Request.Method, resp.Header)
		}
		if got := g.Requests(); got[len(got)-1] != "HEAD /api/v4/projects/"+fmt.Sprint(p.ID())+"/repository/files/conf%2Fapp%2Eenv" {
			t.Fatalf("last request %q", got[len(got)-1])
		}
	})

	t.Run("a missing file, ref or project is not found", func(t *testing.T) {
		for _, tc := range []struct{ project, file, ref string }{
			{p.Path(), "nope.yaml", "main"},
			{p.Path(), "conf", "main"},
			{p.Path(), "wm.yaml", "no-such-branch"},
			{"students/bob/web", "wm.yaml", "main"},
		} {
			_, _, err := c.RepositoryFiles.GetFile(tc.project, tc.file, &gitlab.GetFileOptions{Ref: &tc.ref})
			_, _, herr := c.RepositoryFiles.GetFileMetaData(tc.project, tc.file, &gitlab.GetFileMetaDataOptions{Ref: &tc.ref})
			if !errors.Is(err, gitlab.ErrNotFound) || !errors.Is(herr, gitlab.ErrNotFound) {
				t.Errorf("%+v: GET %v, HEAD %v; want gitlab.ErrNotFound", tc, err, herr)
			}
		}
		_, _, err := c.RepositoryFiles.GetFile(p.Path(), "wm.yaml", nil)
		if !gitlab.HasStatusCode(err, http.StatusBadRequest) || !strings.Contains(err.Error(), "ref is missing") {
			t.Fatalf("no ref: %v, want 400 ref is missing", err)
		}
	})

	t.Run("a branch gives its head commit", func(t *testing.T) {
		b, _, err := c.Branches.GetBranch(p.Path(), "main")
		if err != nil || b.Commit.ID != head || b.Commit.Title != "change app.env" || !b.Default || !b.Protected {
			t.Fatalf("got %+v, %v", b, err)
		}
		if _, _, err := c.Branches.GetBranch(p.Path(), "feature/x"); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("missing branch: %v", err)
		}
	})
}

func TestCommitStatuses(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*gitlabtest.GitLab, *gitlabtest.Project, *gitlab.Client, string) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		sha := p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")
		return g, p, g.Client(t), sha
	}
	post := func(c *gitlab.Client, p *gitlabtest.Project, sha string, state gitlab.BuildStateValue, name string) (*gitlab.CommitStatus, error) {
		st, _, err := c.Commits.SetCommitStatus(p.Path(), sha, &gitlab.SetCommitStatusOptions{
			State: state, Name: gitlab.Ptr(name), Ref: gitlab.Ptr("main"),
			Description: gitlab.Ptr(string(state)), TargetURL: gitlab.Ptr("https://wm.example/alice"),
		})
		return st, err
	}

	t.Run("a status moves from pending to running to success in one record", func(t *testing.T) {
		g, p, c, sha := setup(t)
		var ids []int64
		for _, state := range []gitlab.BuildStateValue{gitlab.Pending, gitlab.Running, gitlab.Success} {
			st, err := post(c, p, sha, state, "wm/deploy")
			if err != nil {
				t.Fatalf("%s: %v", state, err)
			}
			if st.Status != string(state) || st.SHA != sha || st.Ref != "main" || st.Name != "wm/deploy" ||
				st.Description != string(state) || st.Author.Username != g.BotUsername() || st.PipelineID == 0 {
				t.Fatalf("%s: got %+v", state, st)
			}
			ids = append(ids, st.ID)
		}
		if ids[0] != ids[1] || ids[1] != ids[2] {
			t.Fatalf("ids %v, want one record", ids)
		}
		history := g.Statuses(p.Path(), sha)
		if len(history) != 3 || history[0].Status != "pending" || history[1].Status != "running" ||
			history[2].Status != "success" || history[1].StartedAt == nil || history[2].FinishedAt == nil {
			t.Fatalf("history %+v", history)
		}
		list, _, err := c.Commits.GetCommitStatuses(p.Path(), sha, nil)
		if err != nil || len(list) != 1 || list[0].Status != "success" || list[0].ID != ids[0] {
			t.Fatalf("list %+v, %v", list, err)
		}
	})

	t.Run("a finished status posted again is a new record and hides the older one", func(t *testing.T) {
		_, p, c, sha := setup(t)
		for _, s := range []gitlab.BuildStateValue{gitlab.Success, gitlab.Failed} {
			if _, err := post(c, p, sha, s, "wm/deploy"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := post(c, p, sha, gitlab.Success, "wm/health"); err != nil {
			t.Fatal(err)
		}
		latest, _, err := c.Commits.GetCommitStatuses(p.Path(), sha, nil)
		if err != nil || len(latest) != 2 || latest[0].Status != "failed" || latest[1].Name != "wm/health" {
			t.Fatalf("latest %+v, %v", latest, err)
		}
		all, _, err := c.Commits.GetCommitStatuses(p.Path(), sha, &gitlab.GetCommitStatusesOptions{All: gitlab.Ptr(true)})
		if err != nil || len(all) != 3 {
			t.Fatalf("all %+v, %v", all, err)
		}
		named, _, err := c.Commits.GetCommitStatuses(p.Path(), sha, &gitlab.GetCommitStatusesOptions{Name: gitlab.Ptr("wm/health")})
		if err != nil || len(named) != 1 || named[0].Name != "wm/health" {
			t.Fatalf("named %+v, %v", named, err)
		}
		short, _, err := c.Commits.GetCommitStatuses(p.Path(), sha[:8], nil)
		if err != nil || len(short) != 0 {
			t.Fatalf("by short sha: %+v, %v; GitLab lists nothing", short, err)
		}
	})

	t.Run("posting the state a status already has is refused as GitLab refuses it", func(t *testing.T) {
		g, p, c, sha := setup(t)
		for _, tc := range []struct {
			state gitlab.BuildStateValue
			want  string
		}{
			{gitlab.Pending, `Cannot transition status via :enqueue from :pending (Reason(s): Status cannot transition via "enqueue")`},
			{gitlab.Running, `Cannot transition status via :run from :running (Reason(s): Status cannot transition via "run")`},
		} {
			if _, err := post(c, p, sha, tc.state, "wm/"+string(tc.state)); err != nil {
				t.Fatal(err)
			}
			_, err := post(c, p, sha, tc.state, "wm/"+string(tc.state))
			var e *gitlab.ErrorResponse
			if !errors.As(err, &e) || e.Response.StatusCode != http.StatusBadRequest || e.Message != "{message: "+tc.want+"}" {
				t.Fatalf("%s twice: %v, want 400 %q", tc.state, err, tc.want)
			}
		}
		if _, err := post(c, p, sha, gitlab.Pending, "wm/running"); !gitlab.HasStatusCode(err, http.StatusBadRequest) {
			t.Fatalf("running back to pending: %v, want 400", err)
		}
		if n := len(g.Statuses(p.Path(), sha)); n != 2 {
			t.Fatalf("%d statuses recorded, want the 2 accepted", n)
		}
	})

	t.Run("an unknown state, commit or ref is refused", func(t *testing.T) {
		_, p, c, sha := setup(t)
		_, err := post(c, p, sha, "bogus", "wm/deploy")
		var e *gitlab.ErrorResponse
		if !errors.As(err, &e) || e.Response.StatusCode != http.StatusBadRequest || e.Message != "{error: state does not have a valid value}" {
			t.Fatalf("unknown state: %v", err)
		}
		if _, err := post(c, p, strings.Repeat("1", 40), gitlab.Success, "wm/deploy"); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("unknown commit: %v", err)
		}
		st, _, err := c.Commits.SetCommitStatus(p.ID(), sha, &gitlab.SetCommitStatusOptions{State: gitlab.Success})
		if err != nil || st.Ref != "main" || st.Name != "default" {
			t.Fatalf("without ref and name: %+v, %v; want ref main, name default", st, err)
		}
	})

	t.Run("an archived project refuses statuses", func(t *testing.T) {
		g, p, c, sha := setup(t)
		g.Archive(t, p.Path())
		if _, err := post(c, p, sha, gitlab.Success, "wm/deploy"); !gitlab.HasStatusCode(err, http.StatusForbidden) {
			t.Fatalf("got %v, want 403", err)
		}
	})
}

func TestUsersAndMembers(t *testing.T) {
	t.Parallel()
	g := gitlabtest.New(t, token)
	p := g.AddProject(t, "students/alice/web", gitlabtest.CreatedBy("alice"))
	g.AddMember(t, "students/alice", "alice", gitlabtest.Owner)
	g.AddMember(t, "students/alice/web", "bob", gitlabtest.Reporter, "alice")
	g.AddMember(t, "students", "alice", gitlabtest.Guest)
	carol := g.AddUser(t, "carol")
	c := g.Client(t)

	t.Run("users are found by username without regard to case", func(t *testing.T) {
		us, _, err := c.Users.ListUsers(&gitlab.ListUsersOptions{Username: gitlab.Ptr("Alice")})
		if err != nil || len(us) != 1 || us[0].Username != "alice" || us[0].State != "active" {
			t.Fatalf("users named Alice: %+v, %v", us, err)
		}
		us, _, err = c.Users.ListUsers(&gitlab.ListUsersOptions{Username: gitlab.Ptr("nobody")})
		if err != nil || len(us) != 0 {
			t.Fatalf("users named nobody: %+v, %v", us, err)
		}
	})

	t.Run("members/all gives the highest access level, direct or inherited", func(t *testing.T) {
		us, _, _ := c.Users.ListUsers(&gitlab.ListUsersOptions{Username: gitlab.Ptr("alice")})
		m, _, err := c.ProjectMembers.GetInheritedProjectMember(p.ID(), us[0].ID)
		if err != nil || m.AccessLevel != gitlab.OwnerPermissions || m.Username != "alice" || m.CreatedBy != nil {
			t.Fatalf("alice in web: %+v, %v", m, err)
		}
		us, _, _ = c.Users.ListUsers(&gitlab.ListUsersOptions{Username: gitlab.Ptr("bob")})
		m, _, err = c.ProjectMembers.GetInheritedProjectMember("students/alice/web", us[0].ID)
		if err != nil || m.AccessLevel != gitlab.ReporterPermissions || m.CreatedBy == nil || m.CreatedBy.Username != "alice" {
			t.Fatalf("bob in web: %+v, %v", m, err)
		}
		gm, _, err := c.GroupMembers.GetInheritedGroupMember("students/alice", us[0].ID)
		if !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("bob in students/alice: %+v, %v", gm, err)
		}
		_, resp, err := c.ProjectMembers.GetInheritedProjectMember(p.ID(), int64(carol))
		if !errors.Is(err, gitlab.ErrNotFound) || resp.StatusCode != http.StatusNotFound {
			t.Fatalf("carol in web: %v, %v", resp, err)
		}
		alice, _, _ := c.Users.ListUsers(&gitlab.ListUsersOptions{Username: gitlab.Ptr("alice")})
		got, _, err := c.Projects.GetProject(p.ID(), nil)
		if err != nil || got.CreatorID != alice[0].ID {
			t.Fatalf("creator_id %d, want alice's", got.CreatorID)
		}
	})
	if u := g.UnimplementedRequests(); len(u) != 0 {
		t.Errorf("unimplemented: %v", u)
	}
}

func TestMergeRequests(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*gitlabtest.GitLab, *gitlabtest.Project, *gitlabtest.MergeRequest, *gitlab.Client) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")
		p.Commit(t, "feature", map[string]string{"wm.yaml": "version: 2\n"}, "try v2")
		return g, p, g.OpenMergeRequest(t, p.Path(), "feature", "main"), g.Client(t)
	}

	t.Run("a merge request reports its source branch's head", func(t *testing.T) {
		g, p, mr, c := setup(t)
		if second := g.OpenMergeRequest(t, p.Path(), "feature", "main"); mr.IID() != 1 || second.IID() != 2 {
			t.Fatalf("iids %d, %d; want 1, 2", mr.IID(), second.IID())
		}
		m, _, err := c.MergeRequests.GetMergeRequest(p.Path(), int64(mr.IID()), nil)
		if err != nil {
			t.Fatal(err)
		}
		if m.IID != 1 || m.ProjectID != int64(p.ID()) || m.SourceProjectID != m.ProjectID ||
			m.TargetProjectID != m.ProjectID || m.SourceBranch != "feature" || m.TargetBranch != "main" ||
			m.State != "opened" || m.SHA != mr.SHA() || m.WebURL != g.URL()+"/students/alice/web/-/merge_requests/1" {
			t.Fatalf("got %+v", m.BasicMergeRequest)
		}
		next := p.Commit(t, "feature", map[string]string{"wm.yaml": "version: 3\n"}, "try v3")
		m, _, err = c.MergeRequests.GetMergeRequest(p.ID(), 1, nil)
		if err != nil || m.SHA != next || m.DiffRefs.HeadSha != next {
			t.Fatalf("after a push: %+v, %v; want sha %s", m, err, next)
		}
		if _, _, err := c.MergeRequests.GetMergeRequest(p.ID(), 99, nil); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("missing merge request: %v", err)
		}
	})

	t.Run("a note is created, listed newest first and updated", func(t *testing.T) {
		g, p, mr, c := setup(t)
		iid := int64(mr.IID())
		mine, _, err := c.Notes.CreateMergeRequestNote(p.Path(), iid, &gitlab.CreateMergeRequestNoteOptions{Body: gitlab.Ptr("plan v1")})
		if err != nil {
			t.Fatal(err)
		}
		if mine.Body != "plan v1" || mine.Author.Username != g.BotUsername() || mine.System ||
			mine.NoteableType != "MergeRequest" || mine.NoteableIID != iid || mine.NoteableID != int64(mr.ID()) {
			t.Fatalf("created %+v", mine)
		}
		theirs := g.AddNote(t, p.Path(), mr.IID(), "teacher", "looks good")

		list, resp, err := c.Notes.ListMergeRequestNotes(p.Path(), iid, nil)
		if err != nil || len(list) != 2 || list[0].ID != theirs.ID || list[1].ID != mine.ID || resp.TotalItems != 2 {
			t.Fatalf("list %+v, %v; want the teacher's note first", list, err)
		}
		asc, _, err := c.Notes.ListMergeRequestNotes(p.Path(), iid, &gitlab.ListMergeRequestNotesOptions{Sort: gitlab.Ptr("asc")})
		if err != nil || asc[0].ID != mine.ID {
			t.Fatalf("ascending %+v, %v", asc, err)
		}

		updated, _, err := c.Notes.UpdateMergeRequestNote(p.Path(), iid, mine.ID, &gitlab.UpdateMergeRequestNoteOptions{Body: gitlab.Ptr("plan v2")})
		if err != nil || updated.ID != mine.ID || updated.Body != "plan v2" {
			t.Fatalf("updated %+v, %v", updated, err)
		}
		notes := g.Notes(p.Path(), mr.IID())
		if len(notes) != 2 || notes[0].Body != "plan v2" || notes[1].Author.Username != "teacher" {
			t.Fatalf("notes %+v", notes)
		}
		if _, _, err := c.Notes.UpdateMergeRequestNote(p.Path(), iid, 1, &gitlab.UpdateMergeRequestNoteOptions{Body: gitlab.Ptr("x")}); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("missing note: %v", err)
		}
		if _, _, err := c.Notes.CreateMergeRequestNote(p.Path(), iid, &gitlab.CreateMergeRequestNoteOptions{Body: gitlab.Ptr(" ")}); !gitlab.HasStatusCode(err, http.StatusBadRequest) {
			t.Fatalf("blank note: %v", err)
		}
	})
}

func TestAccess(t *testing.T) {
	t.Parallel()
	t.Run("a wrong token is unauthorized and a bearer token is accepted", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		g.AddProject(t, "students/alice/web")
		wrong, err := gitlab.NewClient("glpat-wrong", gitlab.WithBaseURL(g.URL()))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = wrong.Projects.GetProject("students/alice/web", nil)
		var e *gitlab.ErrorResponse
		if !errors.As(err, &e) || e.Response.StatusCode != http.StatusUnauthorized || e.Message != "{message: 401 Unauthorized}" {
			t.Fatalf("wrong token: %v", err)
		}
		bearer, err := gitlab.NewClient("", gitlab.WithBaseURL(g.URL()))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := bearer.Projects.GetProject("students/alice/web", nil, gitlab.WithToken(gitlab.OAuthToken, token)); err != nil {
			t.Fatalf("bearer token: %v", err)
		}
		u, _, err := g.Client(t).Users.CurrentUser()
		if err != nil || u.Username != g.BotUsername() {
			t.Fatalf("current user %+v, %v", u, err)
		}
	})

	t.Run("a clone over smart HTTP needs the token as password", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		sha := p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")

		heads, err := lsRemote(p.HTTPURL(), &githttp.BasicAuth{Username: "oauth2", Password: token})
		if err != nil || heads["refs/heads/main"] != sha {
			t.Fatalf("ls-remote with the token: %v, %v", heads, err)
		}
		for _, auth := range []*githttp.BasicAuth{nil, {Username: "oauth2", Password: "wrong"}} {
			if _, err := lsRemote(p.HTTPURL(), auth); !errors.Is(err, transport.ErrAuthenticationRequired) {
				t.Fatalf("ls-remote with %v: %v, want authentication required", auth, err)
			}
		}

		dir := filepath.Join(t.TempDir(), "web")
		authed := strings.Replace(p.HTTPURL(), "http://", "http://oauth2:"+token+"@", 1)
		if out, err := gitCLI("clone", "--quiet", authed, dir); err != nil {
			t.Fatalf("clone with the token: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "wm.yaml")); err != nil || string(b) != "version: 1\n" {
			t.Fatalf("cloned wm.yaml %q, %v", b, err)
		}
		if out, err := gitCLI("ls-remote", p.HTTPURL()); err == nil {
			t.Fatalf("ls-remote without the token worked:\n%s", out)
		}
	})

	t.Run("a renamed or transferred project keeps its id and its old path", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		sha := p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")
		c := g.Client(t)
		g.Rename(t, "students/alice/web", "site")
		g.Transfer(t, "students/alice/site", "archive/2025")
		if p.Path() != "archive/2025/site" {
			t.Fatalf("path %s", p.Path())
		}
		for _, id := range []string{"students/alice/web", "students/alice/site", "archive/2025/site"} {
			got, _, err := c.Projects.GetProject(id, nil)
			if err != nil || got.ID != int64(p.ID()) || got.PathWithNamespace != "archive/2025/site" {
				t.Fatalf("get %s: %+v, %v", id, got, err)
			}
		}
		old := strings.Replace(g.URL()+"/students/alice/web.git", "http://", "http://oauth2:"+token+"@", 1)
		if out, err := gitCLI("ls-remote", old, "refs/heads/main"); err != nil || !strings.Contains(out, sha+"\trefs/heads/main") {
			t.Fatalf("ls-remote of the old path: %v\n%s", err, out)
		}
		ps, _, err := c.Groups.ListGroupProjects("students", &gitlab.ListGroupProjectsOptions{IncludeSubGroups: gitlab.Ptr(true)})
		if err != nil || len(ps) != 0 {
			t.Fatalf("students still lists %v, %v", paths(ps), err)
		}
	})

	t.Run("a deleted project is gone from the API and git", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")
		url := p.HTTPURL()
		g.Delete(t, p.Path())
		if _, _, err := g.Client(t).Projects.GetProject(p.ID(), nil); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("get: %v", err)
		}
		if _, err := lsRemote(url, &githttp.BasicAuth{Username: "oauth2", Password: token}); !errors.Is(err, transport.ErrRepositoryNotFound) {
			t.Fatalf("ls-remote: %v, want repository not found", err)
		}
	})
}

func TestFailures(t *testing.T) {
	t.Parallel()
	t.Run("a GitLab set down fails client-go calls and git until it is back", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")
		c := g.Client(t)
		g.SetDown(true)
		before := len(g.Requests())
		if _, _, err := c.Projects.GetProject(p.ID(), nil); !gitlab.HasStatusCode(err, http.StatusServiceUnavailable) {
			t.Fatalf("get project while down: %v, want 503", err)
		}
		if n := len(g.Requests()) - before; n != 6 {
			t.Fatalf("%d requests, want client-go's 1 + 5 retries", n)
		}
		if _, err := lsRemote(p.HTTPURL(), &githttp.BasicAuth{Username: "oauth2", Password: token}); err == nil {
			t.Fatal("ls-remote worked while down")
		}
		g.SetDown(false)
		if _, _, err := c.Projects.GetProject(p.ID(), nil); err != nil {
			t.Fatalf("get project once back: %v", err)
		}
	})

	t.Run("a hung request is never answered and ends when its client gives up", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		c := g.Client(t)
		hung := fmt.Sprintf("GET /api/v4/projects/%d", p.ID())
		g.Hang(func(req string) bool { return req == hung })
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, _, err := c.Projects.GetProject(p.ID(), nil, gitlab.WithContext(ctx)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("get project while hung: %v, want the client's deadline", err)
		}
		if got := g.Requests(); !slices.Contains(got, hung) {
			t.Fatalf("the hung request is not recorded: %v", got)
		}
		deadline := time.Now().Add(10 * time.Second)
		for g.Hanging() != 0 {
			if time.Now().After(deadline) {
				t.Fatal("the hung request's handler did not return once its client gave up")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, _, err := c.Groups.GetGroup("students", nil); err != nil {
			t.Fatalf("a request Hang does not match: %v", err)
		}
		g.Hang(nil)
		if _, _, err := c.Projects.GetProject(p.ID(), nil); err != nil {
			t.Fatalf("get project once answered again: %v", err)
		}
	})

	t.Run("unimplemented endpoints answer 404 and are recorded", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		c := g.Client(t)
		if _, _, err := c.Projects.GetProject(p.ID(), nil); err != nil {
			t.Fatal(err)
		}
		if got := g.UnimplementedRequests(); len(got) != 0 {
			t.Fatalf("unimplemented %v after an implemented call", got)
		}
		if _, _, err := c.Projects.ListProjects(nil); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("list projects: %v", err)
		}
		if _, _, err := c.Pipelines.ListProjectPipelines(p.ID(), nil); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("list pipelines: %v", err)
		}
		want := []string{"GET /api/v4/projects", fmt.Sprintf("GET /api/v4/projects/%d/pipelines", p.ID())}
		if got := g.UnimplementedRequests(); !slices.Equal(got, want) {
			t.Fatalf("unimplemented %v, want %v", got, want)
		}
		if got := g.Requests(); len(got) != 3 {
			t.Fatalf("requests %v", got)
		}
	})
}

func TestWebhooks(t *testing.T) {
	t.Parallel()
	t.Run("a push payload decodes with client-go and lists the newest 20 commits", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		shas := commitMany(t, p, "main", 21)
		body := gitlabtest.PushHook(p, "main", strings.Repeat("0", 40), shas[20])
		ev, err := gitlab.ParseWebhook(gitlab.EventTypePush, body)
		if err != nil {
			t.Fatal(err)
		}
		push := ev.(*gitlab.PushEvent)
		if push.ObjectKind != "push" || push.EventName != "push" || push.Ref != "refs/heads/main" ||
			push.After != shas[20] || push.CheckoutSHA != shas[20] || push.ProjectID != int64(p.ID()) ||
			push.Project.PathWithNamespace != p.Path() || push.Project.GitHTTPURL != p.HTTPURL() ||
			push.Project.DefaultBranch != "main" || push.TotalCommitsCount != 21 || len(push.Commits) != 20 ||
			push.Commits[0].ID != shas[1] || push.Commits[19].ID != shas[20] || push.UserUsername != "student" {
			t.Fatalf("push %+v", push)
		}
		if !slices.Equal(push.Commits[19].Modified, []string{"wm.yaml"}) || push.Commits[19].Timestamp == nil {
			t.Fatalf("last commit %+v", push.Commits[19])
		}
		ev, _ = gitlab.ParseWebhook(gitlab.EventTypePush, gitlabtest.PushHook(p, "refs/heads/main", shas[19], shas[20]))
		if push := ev.(*gitlab.PushEvent); push.TotalCommitsCount != 1 || push.Before != shas[19] {
			t.Fatalf("one-commit push %+v", push)
		}
	})

	t.Run("a merge request payload reports the action, the head and the old head", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")
		old := p.Commit(t, "feature", map[string]string{"wm.yaml": "version: 2\n"}, "v2")
		mr := g.OpenMergeRequest(t, p.Path(), "feature", "main")
		ev, err := gitlab.ParseWebhook(gitlab.EventTypeMergeRequest, gitlabtest.MergeRequestHook(mr, "open"))
		if err != nil {
			t.Fatal(err)
		}
		open := ev.(*gitlab.MergeEvent)
		a := open.ObjectAttributes
		if open.ObjectKind != "merge_request" || a.Action != "open" || a.IID != 1 || a.State != "opened" ||
			a.LastCommit.ID != old || a.SourceProjectID != int64(p.ID()) || a.TargetProjectID != int64(p.ID()) ||
			a.SourceBranch != "feature" || a.OldRev != "" || open.Project.PathWithNamespace != p.Path() ||
			open.User.Username != "student" {
			t.Fatalf("open %+v", open)
		}
		head := p.Commit(t, "feature", map[string]string{"wm.yaml": "version: 3\n"}, "v3")
		ev, _ = gitlab.ParseWebhook(gitlab.EventTypeMergeRequest, gitlabtest.MergeRequestHook(mr, "update"))
		if a := ev.(*gitlab.MergeEvent).ObjectAttributes; a.LastCommit.ID != head || a.OldRev != old {
			t.Fatalf("update %+v", a)
		}
	})

	t.Run("system hook payloads for moved projects carry the old path", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		g.Transfer(t, p.Path(), "archive")
		ev, err := gitlab.ParseSystemhook(gitlabtest.SystemHook("project_transfer", p, "students/alice/web"))
		if err != nil {
			t.Fatal(err)
		}
		e := ev.(*gitlab.ProjectSystemEvent)
		if e.EventName != "project_transfer" || e.PathWithNamespace != "archive/web" ||
			e.OldPathWithNamespace != "students/alice/web" || e.ProjectID != int64(p.ID()) || e.ProjectVisibility != "private" {
			t.Fatalf("transfer %+v", e)
		}
		ev, _ = gitlab.ParseSystemhook(gitlabtest.SystemHook("project_destroy", p, "ignored"))
		if e := ev.(*gitlab.ProjectSystemEvent); e.EventName != "project_destroy" || e.OldPathWithNamespace != "" {
			t.Fatalf("destroy %+v", e)
		}
	})

	t.Run("a delivery carries GitLab's headers", func(t *testing.T) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		got := make(chan http.Header, 2)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			got <- r.Header.Clone()
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte("queued"))
		}))
		defer srv.Close()
		body := gitlabtest.SystemHook("project_create", p, "")
		resp := gitlabtest.PostHook(t, srv.URL, "System Hook", body, http.Header{"X-Gitlab-Token": {"s3cret"}})
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusAccepted || !bytes.Equal(b, []byte("queued")) {
			t.Fatalf("response %d %q", resp.StatusCode, b)
		}
		h := <-got
		uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
		if h.Get("X-Gitlab-Event") != "System Hook" || h.Get("X-Gitlab-Token") != "s3cret" ||
			h.Get("Content-Type") != "application/json" || !strings.HasPrefix(h.Get("User-Agent"), "GitLab/") ||
			!uuid.MatchString(h.Get("Idempotency-Key")) || !uuid.MatchString(h.Get("X-Gitlab-Event-UUID")) ||
			!uuid.MatchString(h.Get("X-Gitlab-Webhook-UUID")) {
			t.Fatalf("headers %v", h)
		}
		push := gitlabtest.PostHook(t, srv.URL, "Push Hook", gitlabtest.PushHook(p, "main", strings.Repeat("0", 40), strings.Repeat("0", 40)),
			http.Header{"Idempotency-Key": {h.Get("Idempotency-Key")}})
		if h2 := <-got; push.StatusCode != http.StatusAccepted || h2.Get("Idempotency-Key") != h.Get("Idempotency-Key") ||
			h2.Get("X-Gitlab-Instance") != g.URL() {
			t.Fatalf("retried delivery headers %v", h2)
		}
	})
}

func TestIssues(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T, opts ...gitlabtest.ProjectOption) (*gitlabtest.GitLab, *gitlabtest.Project, *gitlab.Client) {
		g := gitlabtest.New(t, token)
		return g, g.AddProject(t, "students/alice/web", opts...), g.Client(t)
	}
	create := func(c *gitlab.Client, p *gitlabtest.Project, title, description string, labels ...string) (*gitlab.Issue, error) {
		is, _, err := c.Issues.CreateIssue(p.Path(), &gitlab.CreateIssueOptions{
			Title: gitlab.Ptr(title), Description: gitlab.Ptr(description), Labels: gitlab.Ptr(gitlab.LabelOptions(labels)),
		})
		return is, err
	}

	t.Run("an issue is created with its labels, numbered apart from merge requests, and read back", func(t *testing.T) {
		g, p, c := setup(t)
		p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n"}, "first")
		p.Commit(t, "feature", map[string]string{"wm.yaml": "version: 2\n"}, "v2")
		g.OpenMergeRequest(t, p.Path(), "feature", "main")

		is, err := create(c, p, "  Semester ends  ", "Copy out your work.", "whalemountain", " notice", "whalemountain")
		if err != nil {
			t.Fatal(err)
		}
		if is.IID != 1 || is.ID == is.IID || is.ProjectID != int64(p.ID()) || is.Title != "Semester ends" ||
			is.Description != "Copy out your work." || is.State != "opened" ||
			!slices.Equal(is.Labels, gitlab.Labels{"notice", "whalemountain"}) ||
			is.Author == nil || is.Author.Username != g.BotUsername() || is.CreatedAt == nil || is.UpdatedAt == nil ||
			is.ClosedAt != nil || is.ClosedBy != nil || !is.Subscribed ||
			is.WebURL != g.URL()+"/students/alice/web/-/issues/1" ||
			is.References == nil || is.References.Full != "students/alice/web#1" ||
			is.Links == nil || is.Links.Self != fmt.Sprintf("%s/api/v4/projects/%d/issues/1", g.URL(), p.ID()) {
			t.Fatalf("created %+v", is)
		}
		got, _, err := c.Issues.GetIssue(p.ID(), 1)
		if err != nil || got.ID != is.ID || got.Title != is.Title || !slices.Equal(got.Labels, is.Labels) {
			t.Fatalf("get %+v, %v", got, err)
		}
		if all := g.Issues(p.Path()); len(all) != 1 || all[0].ID != is.ID || all[0].Description != is.Description {
			t.Fatalf("the model holds %+v", all)
		}
		second, err := create(c, p, "again", "")
		if err != nil || second.IID != 2 || second.ID == is.ID {
			t.Fatalf("second issue %+v, %v", second, err)
		}
		if _, _, err := c.Issues.GetIssue(p.ID(), 3); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("missing issue: %v", err)
		}
	})

	t.Run("the list filters by state, every label and search, newest first, page by page", func(t *testing.T) {
		g, p, c := setup(t)
		// tick waits for the double's millisecond clock to move, so that
		// issues made one after the other differ in created_at (ties are
		// broken by id, newest first, whatever the sort).
		tick := func() {
			for at := time.Now().Truncate(time.Millisecond); !time.Now().Truncate(time.Millisecond).After(at); {
				time.Sleep(100 * time.Microsecond)
			}
		}
		mine, err := create(c, p, "Semester ends", "<!-- whalemountain:semester-end-2026-07-31 -->\nCopy out your work.", "whalemountain")
		if err != nil {
			t.Fatal(err)
		}
		tick()
		g.AddIssue(t, p.Path(), "alice", "my todo", "fix the port", "todo")
		tick()
		g.AddIssue(t, p.Path(), "alice", "ab", "", "todo", "whalemountain")
		g.CloseIssue(t, p.Path(), int(mine.IID), "alice")

		iids := func(opt *gitlab.ListProjectIssuesOptions) []int64 {
			t.Helper()
			list, _, err := c.Issues.ListProjectIssues(p.Path(), opt)
			if err != nil {
				t.Fatal(err)
			}
			var out []int64
			for _, is := range list {
				if is.Subscribed {
					t.Errorf("a listed issue says subscribed: %+v", is)
				}
				out = append(out, is.IID)
			}
			return out
		}
		labels := func(ls ...string) *gitlab.LabelOptions { return gitlab.Ptr(gitlab.LabelOptions(ls)) }
		for _, tt := range []struct {
			name string
			opt  *gitlab.ListProjectIssuesOptions
			want []int64
		}{
			{"every state by default, newest first", nil, []int64{3, 2, 1}},
			{"oldest first when asked", &gitlab.ListProjectIssuesOptions{Sort: gitlab.Ptr("asc")}, []int64{1, 2, 3}},
			{"opened ones", &gitlab.ListProjectIssuesOptions{State: gitlab.Ptr("opened")}, []int64{3, 2}},
			{"closed ones", &gitlab.ListProjectIssuesOptions{State: gitlab.Ptr("closed")}, []int64{1}},
			{"one label", &gitlab.ListProjectIssuesOptions{Labels: labels("whalemountain")}, []int64{3, 1}},
			{"every label given", &gitlab.ListProjectIssuesOptions{Labels: labels("todo", "whalemountain")}, []int64{3}},
			{"labels with their case", &gitlab.ListProjectIssuesOptions{Labels: labels("WhaleMountain")}, nil},
			{"a search term in a description", &gitlab.ListProjectIssuesOptions{Search: gitlab.Ptr("semester-end-2026-07-31")}, []int64{1}},
			{"search terms all in one title", &gitlab.ListProjectIssuesOptions{Search: gitlab.Ptr("TODO my")}, []int64{2}},
			{"search terms split between title and description", &gitlab.ListProjectIssuesOptions{Search: gitlab.Ptr("todo port")}, nil},
			{"a search in the title only", &gitlab.ListProjectIssuesOptions{Search: gitlab.Ptr("port"), In: gitlab.Ptr("title")}, nil},
			{"a short search matching a whole title", &gitlab.ListProjectIssuesOptions{Search: gitlab.Ptr("AB")}, []int64{3}},
			{"a short search matching part of a title", &gitlab.ListProjectIssuesOptions{Search: gitlab.Ptr("my")}, nil},
			{"given iids", &gitlab.ListProjectIssuesOptions{IIDs: gitlab.Ptr([]int64{1, 3})}, []int64{3, 1}},
		} {
			if got := iids(tt.opt); !slices.Equal(got, tt.want) {
				t.Errorf("%s: iids %v, want %v", tt.name, got, tt.want)
			}
		}

		for range 3 {
			g.AddIssue(t, p.Path(), "alice", "more", "")
		}
		var got []int64
		var sizes []int
		opt := &gitlab.ListProjectIssuesOptions{ListOptions: gitlab.ListOptions{PerPage: 4}}
		for page := int64(1); page != 0; {
			opt.Page = page
			list, resp, err := c.Issues.ListProjectIssues(p.ID(), opt)
			if err != nil || resp.TotalItems != 6 || resp.TotalPages != 2 {
				t.Fatalf("page %d: %v, total %d in %d pages", page, err, resp.TotalItems, resp.TotalPages)
			}
			for _, is := range list {
				got = append(got, is.IID)
			}
			sizes = append(sizes, len(list))
			page = resp.NextPage
		}
		if !slices.Equal(got, []int64{6, 5, 4, 3, 2, 1}) || !slices.Equal(sizes, []int{4, 2}) {
			t.Fatalf("iids %v in pages of %v", got, sizes)
		}
		if _, _, err := c.Issues.ListProjectIssues(p.ID(), &gitlab.ListProjectIssuesOptions{State: gitlab.Ptr("open")}); !gitlab.HasStatusCode(err, http.StatusBadRequest) {
			t.Fatalf("state=open: %v, want 400", err)
		}
	})

	t.Run("an issue is closed, reopened and edited, and an edit must change something", func(t *testing.T) {
		g, p, c := setup(t)
		is, err := create(c, p, "Semester ends", "body")
		if err != nil {
			t.Fatal(err)
		}
		update := func(opt *gitlab.UpdateIssueOptions) (*gitlab.Issue, error) {
			got, _, err := c.Issues.UpdateIssue(p.Path(), is.IID, opt)
			return got, err
		}
		closed, err := update(&gitlab.UpdateIssueOptions{StateEvent: gitlab.Ptr("close")})
		if err != nil || closed.State != "closed" || closed.ClosedAt == nil || closed.ClosedBy == nil ||
			closed.ClosedBy.Username != g.BotUsername() {
			t.Fatalf("closed %+v, %v", closed, err)
		}
		reopened, err := update(&gitlab.UpdateIssueOptions{StateEvent: gitlab.Ptr("reopen"), Title: gitlab.Ptr(" New title "), Description: gitlab.Ptr("new body")})
		if err != nil || reopened.State != "opened" || reopened.ClosedAt != nil || reopened.ClosedBy != nil ||
			reopened.Title != "New title" || reopened.Description != "new body" {
			t.Fatalf("reopened %+v, %v", reopened, err)
		}
		if all := g.Issues(p.Path()); len(all) != 1 || all[0].Title != "New title" || all[0].State != "opened" {
			t.Fatalf("the model holds %+v", all)
		}
		for _, tt := range []struct {
			name string
			opt  *gitlab.UpdateIssueOptions
			want string
		}{
			{"nothing to change", &gitlab.UpdateIssueOptions{}, "at least one parameter must be provided"},
			{"an unknown state event", &gitlab.UpdateIssueOptions{StateEvent: gitlab.Ptr("resolve")}, "state_event does not have a valid value"},
			{"a blank title", &gitlab.UpdateIssueOptions{Title: gitlab.Ptr("  ")}, "title: [can't be blank]"},
		} {
			if _, _, err := c.Issues.UpdateIssue(p.Path(), is.IID, tt.opt); !gitlab.HasStatusCode(err, http.StatusBadRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: %v, want 400 with %q", tt.name, err, tt.want)
			}
		}
		if _, _, err := c.Issues.UpdateIssue(p.Path(), 9, &gitlab.UpdateIssueOptions{StateEvent: gitlab.Ptr("close")}); !errors.Is(err, gitlab.ErrNotFound) {
			t.Errorf("a missing issue: %v, want 404", err)
		}
	})

	t.Run("titles and descriptions are held to GitLab's limits, in characters", func(t *testing.T) {
		_, p, c := setup(t)
		for _, tt := range []struct {
			name        string
			title       *string
			description string
			want        string // in the error; "" when created
		}{
			{"a missing title", nil, "", "title is missing"},
			{"a blank title", gitlab.Ptr(" \t"), "", "title: [can't be blank]"},
			{"a title of 255 characters", gitlab.Ptr(strings.Repeat("é", 255)), "", ""},
			{"a title of 256 characters", gitlab.Ptr(strings.Repeat("é", 256)), "", "title: [is too long (maximum is 255 characters)]"},
			{"a description of 1,048,576 characters", gitlab.Ptr("t"), strings.Repeat("é", 1<<20), ""},
			{"a description of 1,048,577 characters", gitlab.Ptr("t"), strings.Repeat("é", 1<<20+1), "description: [is too long (maximum is 1048576 characters)]"},
		} {
			_, _, err := c.Issues.CreateIssue(p.ID(), &gitlab.CreateIssueOptions{Title: tt.title, Description: gitlab.Ptr(tt.description)})
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("%s: %v", tt.name, err)
			case tt.want != "" && (!gitlab.HasStatusCode(err, http.StatusBadRequest) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("%s: %v, want 400 with %q", tt.name, err, tt.want)
			}
		}
	})

	t.Run("a project with issues disabled or archived refuses them, and an unknown one is not found", func(t *testing.T) {
		g, p, c := setup(t, gitlabtest.IssuesDisabled())
		g.AddIssue(t, p.Path(), "alice", "from before", "")
		archived := g.AddProject(t, "students/alice/old", gitlabtest.Archived())
		if _, err := create(c, p, "t", ""); !gitlab.HasStatusCode(err, http.StatusForbidden) || !strings.Contains(err.Error(), "403 Forbidden") {
			t.Fatalf("create with issues disabled: %v, want 403", err)
		}
		if _, _, err := c.Issues.UpdateIssue(p.ID(), 1, &gitlab.UpdateIssueOptions{StateEvent: gitlab.Ptr("close")}); !gitlab.HasStatusCode(err, http.StatusForbidden) {
			t.Fatalf("close with issues disabled: %v, want 403", err)
		}
		list, listed, err := c.Issues.ListProjectIssues(p.ID(), nil)
		if err != nil || len(list) != 0 || listed.TotalItems != 0 {
			t.Fatalf("list with issues disabled: %v, %v; want none", list, err)
		}
		if _, _, err := c.Issues.GetIssue(p.ID(), 1); !errors.Is(err, gitlab.ErrNotFound) {
			t.Fatalf("get with issues disabled: %v, want 404", err)
		}
		if _, err := create(c, archived, "t", ""); !gitlab.HasStatusCode(err, http.StatusForbidden) {
			t.Fatalf("create in an archived project: %v, want 403", err)
		}
		// client-go answers every 404 with ErrNotFound: the body is read
		// over plain HTTP.
		req, err := http.NewRequest(http.MethodPost, g.URL()+"/api/v4/projects/students%2Falice%2Fnope/issues?title=t", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("PRIVATE-TOKEN", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || string(body) != `{"message":"404 Project Not Found"}` {
			t.Fatalf("create in an unknown project: %s %s", resp.Status, body)
		}
		if got := g.UnimplementedRequests(); len(got) != 0 {
			t.Fatalf("unimplemented %v", got)
		}
	})
}

// paths returns the projects' paths with namespace.
func paths(ps []*gitlab.Project) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.PathWithNamespace)
	}
	return out
}

func show(b *bool) string {
	if b == nil {
		return "unset"
	}
	return fmt.Sprint(*b)
}

// lsRemote lists a remote's refs with go-git, as a poller does.
func lsRemote(url string, auth *githttp.BasicAuth) (map[string]string, error) {
	remote := gogit.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{url}})
	opts := &gogit.ListOptions{}
	if auth != nil {
		opts.Auth = auth
	}
	refs, err := remote.List(opts)
	if err != nil {
		return nil, err
	}
	heads := map[string]string{}
	for _, r := range refs {
		heads[r.Name().String()] = r.Hash().String()
	}
	return heads, nil
}

// commitMany makes n commits on branch with one git fast-import, each
// setting wm.yaml to "n: <i>", and returns their shas, oldest first.
func commitMany(t *testing.T, p *gitlabtest.Project, branch string, n int) []string {
	t.Helper()
	var in strings.Builder
	for i := range n {
		msg, content := fmt.Sprintf("c%d\n", i), fmt.Sprintf("n: %d\n", i)
		fmt.Fprintf(&in, "commit refs/heads/%s\nmark :%d\ncommitter gittest <gittest@example.invalid> 1735689600 +0000\n", branch, i+1)
		fmt.Fprintf(&in, "data %d\n%s", len(msg), msg)
		if i > 0 {
			fmt.Fprintf(&in, "from :%d\n", i)
		}
		fmt.Fprintf(&in, "M 100644 inline wm.yaml\ndata %d\n%s\n", len(content), content)
	}
	cmd := exec.Command("git", "fast-import", "--quiet")
	cmd.Dir = p.GitDir()
	cmd.Stdin = strings.NewReader(in.String())
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git fast-import: %v\n%s", err, out)
	}
	return strings.Fields(gittest.Git(t, p.GitDir(), "rev-list", "--reverse", branch))
}

// gitCLI runs the git command line without configuration or prompts.
func gitCLI(args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull, "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestMergedMergeRequestsLabelsAndRawFiles(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*gitlabtest.GitLab, *gitlabtest.Project, *gitlab.Client) {
		g := gitlabtest.New(t, token)
		p := g.AddProject(t, "students/alice/web")
		p.Commit(t, "main", map[string]string{"wm.yaml": "version: 1\n", "README": "hi\n"}, "first")
		return g, p, g.Client(t)
	}
	open := func(t *testing.T, g *gitlabtest.GitLab, p *gitlabtest.Project, branch, content string) int {
		p.Branch(t, branch, "main")
		p.Commit(t, branch, map[string]string{"wm.yaml": content, "README": "hi\n", branch + ".txt": branch}, branch)
		return g.OpenMergeRequest(t, p.Path(), branch, "main").IID()
	}

	t.Run("label events record who added and removed a label, oldest first, and only changes", func(t *testing.T) {
		g, p, c := setup(t)
		iid := open(t, g, p, "feature", "version: 2\n")
		g.LabelMR(t, p.Path(), iid, "teacher", "approved")
		g.LabelMR(t, p.Path(), iid, "teacher", "approved") // carried already: no event
		g.UnlabelMR(t, p.Path(), iid, "tutor", "approved")
		g.UnlabelMR(t, p.Path(), iid, "tutor", "approved") // not carried: no event
		g.LabelMR(t, p.Path(), iid, "dean", "approved")
		events, resp, err := c.ResourceLabelEvents.ListMergeRequestsLabelEvents(p.Path(), int64(iid), nil)
		if err != nil || len(events) != 3 || resp.TotalItems != 3 {
			t.Fatalf("events %+v, %v", events, err)
		}
		m, _, err := c.MergeRequests.GetMergeRequest(p.ID(), int64(iid), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []struct{ action, user string }{{"add", "teacher"}, {"remove", "tutor"}, {"add", "dean"}} {
			e := events[i]
			if e.Action != want.action || e.User.Username != want.user || e.Label.Name != "approved" ||
				e.Label.ID != events[0].Label.ID || e.ResourceType != "MergeRequest" || e.ResourceID != m.ID || e.CreatedAt == nil ||
				(i > 0 && !e.CreatedAt.After(*events[i-1].CreatedAt)) || (i > 0 && e.ID <= events[i-1].ID) {
				t.Errorf("event %d: %+v; want %s by %s, after the one before", i, e, want.action, want.user)
			}
		}
		if !slices.Equal(m.Labels, gitlab.Labels{"approved"}) {
			t.Errorf("labels %v", m.Labels)
		}
		if got := g.LabelEvents(p.Path(), iid); len(got) != 3 || got[2].User.Username != "dean" {
			t.Errorf("the model holds %+v", got)
		}
		if _, _, err := c.ResourceLabelEvents.ListMergeRequestsLabelEvents(p.Path(), 99, nil); !errors.Is(err, gitlab.ErrNotFound) {
			t.Errorf("missing merge request: %v", err)
		}
	})

	t.Run("a merge makes a real merge commit that the branch, the entity and files/raw show", func(t *testing.T) {
		g, p, c := setup(t)
		iid := open(t, g, p, "feature", "version: 2\n")
		head := g.OpenMergeRequest(t, p.Path(), "feature", "main").SHA() // a second one, left open
		landed := g.MergeMR(t, p.Path(), iid, "alice")
		b, _, err := c.Branches.GetBranch(p.ID(), "main")
		if err != nil || b.Commit.ID != landed || len(b.Commit.ParentIDs) != 2 || b.Commit.ParentIDs[1] != head {
			t.Fatalf("main %+v, %v; want the merge commit %s with parents main and %s", b, err, landed, head)
		}
		m, _, err := c.MergeRequests.GetMergeRequest(p.ID(), int64(iid), nil)
		if err != nil || m.State != "merged" || m.MergeCommitSHA != landed || m.SquashCommitSHA != "" || m.SHA != head ||
			m.MergedAt == nil || m.MergeUser == nil || m.MergeUser.Username != "alice" || mergedBy(m) == nil ||
			m.DiffRefs.HeadSha != head || m.DetailedMergeStatus != "not_open" {
			t.Fatalf("merged %+v, %v", m, err)
		}
		raw, resp, err := c.RepositoryFiles.GetRawFile(p.ID(), "wm.yaml", &gitlab.GetRawFileOptions{Ref: gitlab.Ptr(landed)})
		if err != nil || string(raw) != "version: 2\n" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Fatalf("raw at the merge commit %q, %v", raw, err)
		}
		if raw, _, err := c.RepositoryFiles.GetRawFile(p.Path(), "wm.yaml", nil); err != nil || string(raw) != "version: 2\n" {
			t.Fatalf("raw on the default branch %q, %v", raw, err)
		}
		for _, c := range []struct{ file, ref, want string }{
			{"missing.yaml", landed, `{"message":"404 File Not Found"}`},
			{"wm.yaml", "nope", `{"message":"404 Commit Not Found"}`},
		} {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v4/projects/%d/repository/files/%s/raw?ref=%s", g.URL(), p.ID(), c.file, c.ref), nil)
			req.Header.Set("PRIVATE-TOKEN", token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || string(body) != c.want {
				t.Errorf("raw %s at %s: %d %s; want 404 %s", c.file, c.ref, resp.StatusCode, body, c.want)
			}
		}
		if got := g.UnimplementedRequests(); len(got) != 0 {
			t.Fatalf("unimplemented requests %v", got)
		}
	})

	t.Run("squash and fast-forward set squash_commit_sha and no merge commit", func(t *testing.T) {
		g, p, c := setup(t)
		iid := open(t, g, p, "feature", "version: 3\n")
		head := g.OpenMergeRequest(t, p.Path(), "feature", "main").SHA()
		landed := g.MergeMR(t, p.Path(), iid, "alice", gitlabtest.Squash(), gitlabtest.FastForward())
		m, _, err := c.MergeRequests.GetMergeRequest(p.ID(), int64(iid), nil)
		if err != nil || m.MergeCommitSHA != "" || m.SquashCommitSHA != landed || landed == head || !m.Squash {
			t.Fatalf("merged %+v, %v; want squash commit %s", m, err, landed)
		}
		if raw, _, err := c.RepositoryFiles.GetRawFile(p.ID(), "wm.yaml", &gitlab.GetRawFileOptions{Ref: gitlab.Ptr(landed)}); err != nil || string(raw) != "version: 3\n" {
			t.Fatalf("raw at the squash commit %q, %v", raw, err)
		}
	})

	t.Run("the list filters by state, every label and target branch, newest first, page by page", func(t *testing.T) {
		g, p, c := setup(t)
		p.Branch(t, "other", "main")
		var iids []int
		for i := range 3 {
			iids = append(iids, open(t, g, p, fmt.Sprintf("f%d", i), "version: 1\n"))
			g.LabelMR(t, p.Path(), iids[i], "teacher", "approved")
		}
		g.LabelMR(t, p.Path(), iids[2], "teacher", "other")
		other := g.OpenMergeRequest(t, p.Path(), "f0", "other").IID()
		g.LabelMR(t, p.Path(), other, "teacher", "approved")
		g.MergeMR(t, p.Path(), iids[0], "alice")
		g.MergeMR(t, p.Path(), iids[2], "alice", gitlabtest.Squash())
		g.MergeMR(t, p.Path(), other, "alice")
		list := func(opt *gitlab.ListProjectMergeRequestsOptions) []int64 {
			t.Helper()
			mrs, _, err := c.MergeRequests.ListProjectMergeRequests(p.Path(), opt)
			if err != nil {
				t.Fatal(err)
			}
			var out []int64
			for _, m := range mrs {
				out = append(out, m.IID)
			}
			return out
		}
		merged := &gitlab.ListProjectMergeRequestsOptions{
			State: gitlab.Ptr("merged"), Labels: &gitlab.LabelOptions{"approved"}, TargetBranch: gitlab.Ptr("main"),
		}
		if got := list(merged); !slices.Equal(got, []int64{3, 1}) {
			t.Errorf("merged, approved, into main: %v; want [3 1]", got)
		}
		merged.Labels = &gitlab.LabelOptions{"approved", "other"}
		if got := list(merged); !slices.Equal(got, []int64{3}) {
			t.Errorf("with both labels: %v; want [3]", got)
		}
		if got := list(&gitlab.ListProjectMergeRequestsOptions{State: gitlab.Ptr("opened")}); !slices.Equal(got, []int64{2}) {
			t.Errorf("opened: %v; want [2]", got)
		}
		if got := list(&gitlab.ListProjectMergeRequestsOptions{Sort: gitlab.Ptr("asc")}); !slices.Equal(got, []int64{1, 2, 3, 4}) {
			t.Errorf("all, oldest first: %v", got)
		}
		page, resp, err := c.MergeRequests.ListProjectMergeRequests(p.Path(), &gitlab.ListProjectMergeRequestsOptions{ListOptions: gitlab.ListOptions{PerPage: 3}})
		if err != nil || len(page) != 3 || resp.NextPage != 2 || resp.TotalItems != 4 || page[0].IID != 4 {
			t.Errorf("first page %d items, next %d, total %d, %v", len(page), resp.NextPage, resp.TotalItems, err)
		}
		_, _, err = c.MergeRequests.ListProjectMergeRequests(p.Path(), &gitlab.ListProjectMergeRequestsOptions{State: gitlab.Ptr("done")})
		if !gitlab.HasStatusCode(err, http.StatusBadRequest) {
			t.Errorf("an unknown state: %v", err)
		}
	})

	t.Run("each new head of the source branch is a diff version, listed newest first", func(t *testing.T) {
		g, p, c := setup(t)
		iid := open(t, g, p, "feature", "version: 2\n")
		first := g.OpenMergeRequest(t, p.Path(), "feature", "main").SHA()
		second := p.Commit(t, "feature", map[string]string{"wm.yaml": "version: 3\n", "README": "hi\n"}, "v3")
		vs, _, err := c.MergeRequests.GetMergeRequestDiffVersions(p.ID(), int64(iid), nil)
		if err != nil || len(vs) != 2 {
			t.Fatalf("versions %+v, %v", vs, err)
		}
		if vs[0].HeadCommitSHA != second || vs[1].HeadCommitSHA != first || !vs[0].CreatedAt.After(*vs[1].CreatedAt) ||
			vs[0].State != "collected" || vs[0].RealSize != "1" || vs[1].RealSize != "2" || vs[0].StartCommitSHA != vs[0].BaseCommitSHA {
			t.Fatalf("versions %+v; want %s then %s", vs, second, first)
		}
	})
}

// mergedBy is the deprecated merged_by GitLab still sends, and so the
// double too.
func mergedBy(m *gitlab.MergeRequest) *gitlab.BasicUser {
	//lint:ignore SA1019 GitLab still sends merged_by, so the double does too
	return m.MergedBy
}
