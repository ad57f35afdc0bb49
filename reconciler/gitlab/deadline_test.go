package gitlab_test

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/gitlab"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
)

// jobTimeout is the job deadline of the tests below: long enough for a
// plan on a busy machine, short enough to wait for.
const jobTimeout = 2 * time.Second

func TestAJobOnAHungGitLabEndsAtItsDeadlineAndTheServiceGoesOn(t *testing.T) {
	for _, c := range []struct {
		name string
		// hang says which request of GitLab hangs, given the project and
		// a merge request of it.
		hang func(p *gitlabtest.Project, mr *gitlabtest.MergeRequest) func(string) bool
		// trigger posts the webhook whose job meets the hung request.
		trigger func(s *stack, p *gitlabtest.Project, mr *gitlabtest.MergeRequest)
		// logs are the lines the job ending at its deadline leaves.
		logs [][]string
		// after proves the service still works once GitLab answers.
		after func(t *testing.T, s *stack, p *gitlabtest.Project, mr *gitlabtest.MergeRequest)
	}{
		{
			name: "a merge request whose read hangs is not planned, and the next plan is written",
			hang: func(_ *gitlabtest.Project, mr *gitlabtest.MergeRequest) func(string) bool {
				return func(req string) bool {
					return strings.HasPrefix(req, "GET ") && strings.HasSuffix(req, fmt.Sprintf("/merge_requests/%d", mr.IID()))
				}
			},
			trigger: func(s *stack, _ *gitlabtest.Project, mr *gitlabtest.MergeRequest) {
				s.post("Merge Request Hook", gitlabtest.MergeRequestHook(mr, "open"), nil)
			},
			logs: [][]string{{"merge request not planned: cancelled at its deadline", "iid=1", "timeout=2s", "context deadline exceeded"}},
			after: func(t *testing.T, s *stack, p *gitlabtest.Project, mr *gitlabtest.MergeRequest) {
				s.post("Merge Request Hook", gitlabtest.MergeRequestHook(mr, "update"), nil)
				eventually(t, "the plan status of the merge request's head", func() bool {
					return slices.Contains(s.statuses(p.Path(), mr.SHA(), gitlab.PlanStatusName), "success")
				})
			},
		},
		{
			name: "a system hook whose project lookup hangs retires nothing, and the next push rolls out",
			hang: func(p *gitlabtest.Project, _ *gitlabtest.MergeRequest) func(string) bool {
				return func(req string) bool { return req == fmt.Sprintf("GET /api/v4/projects/%d", p.ID()) }
			},
			trigger: func(s *stack, p *gitlabtest.Project, _ *gitlabtest.MergeRequest) {
				s.post("System Hook", gitlabtest.SystemHook("project_destroy", p, ""), nil)
			},
			logs: [][]string{
				{"system hook not confirmed: GitLab could not be asked; nothing is retired", "context deadline exceeded"},
				{"webhook job cancelled at its deadline", "timeout=2s"},
			},
			after: func(t *testing.T, s *stack, p *gitlabtest.Project, _ *gitlabtest.MergeRequest) {
				if _, ok := s.container(core.ObjectName("alice", "web")); !ok {
					t.Fatal("a hung lookup retired the container")
				}
				head := p.Commit(t, "main", wmYAML("prod"), "prod")
				s.ci(p.Path(), head)
				if resp := s.post("Push Hook", gitlabtest.PushHook(p, "refs/heads/main", "", head), nil); resp.StatusCode != http.StatusAccepted {
					t.Fatalf("push webhook answered %s", resp.Status)
				}
				eventually(t, "the pushed commit is green", func() bool {
					return slices.Contains(s.statuses(p.Path(), head, gitlab.StatusName), "success")
				})
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := gitlabtest.New(t, token)
			p := studentProject(t, g, "students/alice/web")
			s := newStack(t, docker.NewFake("h1"), g, gitlab.WithJobTimeout(jobTimeout))
			s.rollOut(p)
			p.Commit(t, "feature", wmYAML("prod"), "prod")
			mr := g.OpenMergeRequest(t, p.Path(), "feature", "main")

			g.Hang(c.hang(p, mr))
			start := time.Now()
			c.trigger(s, p, mr)
			eventually(t, "a request to GitLab hangs", func() bool { return g.Hanging() > 0 })
			for _, parts := range c.logs {
				t.Logf("logged: %s", s.logged(parts...))
			}
			if d := time.Since(start); d < jobTimeout {
				t.Errorf("the job ended after %v, before its deadline (%v)", d, jobTimeout)
			}
			eventually(t, "the client gives up on the hung request", func() bool { return g.Hanging() == 0 })

			g.Hang(nil)
			c.after(t, s, p, mr)
		})
	}
}

func TestShutdownCancelsAHungJobAfterTheGrace(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/alice/web")
	const grace = 200 * time.Millisecond
	s := newStack(t, docker.NewFake("h1"), g, gitlab.WithJobTimeout(time.Hour), gitlab.WithShutdownGrace(grace))
	s.rollOut(p)
	p.Commit(t, "feature", wmYAML("prod"), "prod")
	mr := g.OpenMergeRequest(t, p.Path(), "feature", "main")
	g.Hang(func(req string) bool { return strings.HasSuffix(req, fmt.Sprintf("/merge_requests/%d", mr.IID())) })
	s.post("Merge Request Hook", gitlabtest.MergeRequestHook(mr, "open"), nil)
	eventually(t, "a request to GitLab hangs", func() bool { return g.Hanging() > 0 })

	start := time.Now()
	stopped := make(chan struct{})
	go func() { s.stop(); close(stopped) }()
	eventually(t, "the service returns from Run", func() bool {
		select {
		case <-stopped:
			return true
		default:
			return false
		}
	})
	if d := time.Since(start); d < grace {
		t.Errorf("the hung job was cancelled after %v, before the grace (%v)", d, grace)
	}
	s.logged("GitLab jobs still under way after the shutdown grace; cancelling them", "grace=200ms")
	s.logged("merge request not planned: cancelled at shutdown", "iid=1")
}
