package gitlab_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/gitlab"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/schema"
)

// reportEvent is one thing the reconciler or a webhook tells the reporter.
type reportEvent struct {
	kind   string // "push", "pass" (started and finished), "restart"
	commit int    // index of the commit
	err    error
	ready  bool
	msg    string // the pass's summary, when not the usual one
	cut    bool   // the pass's context is done when it finishes
}

func poll(commit int) reportEvent { return reportEvent{kind: "pass", commit: commit, ready: true} }

func TestTheReporterPostsACommitStatusOnlyOnAChange(t *testing.T) {
	stalled := &reconciler.PassError{Outcome: reconciler.Stalled, Reason: "ValidationFailed", Err: errors.New("wm.yaml:3:1: containers.web.image: required")}
	for _, tc := range []struct {
		name   string
		events []reportEvent
		want   [][]string // per commit, the states posted, oldest first
	}{{
		name:   "polls of an unchanged commit post only the first rollout's statuses",
		events: []reportEvent{poll(0), poll(0), poll(0), poll(0), poll(0)},
		want:   [][]string{{"running", "success"}},
	}, {
		name:   "a reporter that restarts reads the commit's status from GitLab and posts nothing",
		events: []reportEvent{poll(0), {kind: "restart"}, poll(0), poll(0)},
		want:   [][]string{{"running", "success"}},
	}, {
		name:   "a ready commit whose later passes say something else stays as it was",
		events: []reportEvent{{kind: "pass", ready: true, msg: "1 created"}, poll(0), {kind: "pass", ready: true, msg: "1 recreated"}},
		want:   [][]string{{"running", "success"}},
	}, {
		name:   "a pass whose context is done still reports its outcome",
		events: []reportEvent{{kind: "pass", err: stalled, cut: true}},
		want:   [][]string{{"running", "failed"}},
	}, {
		name:   "a new commit posts its own rollout, once",
		events: []reportEvent{poll(0), poll(0), poll(1), poll(1), poll(1)},
		want:   [][]string{{"running", "success"}, {"running", "success"}},
	}, {
		name: "a changed outcome posts the new outcome only, without running again",
		events: []reportEvent{poll(0), {kind: "pass", commit: 0, ready: false}, {kind: "pass", commit: 0, ready: false},
			poll(0), poll(0)},
		want: [][]string{{"running", "success", "failed", "success"}},
	}, {
		name:   "a stalled commit is reported failed once, however often it is polled",
		events: []reportEvent{{kind: "pass", err: stalled}, {kind: "pass", err: stalled}, {kind: "restart"}, {kind: "pass", err: stalled}},
		want:   [][]string{{"running", "failed"}},
	}, {
		name:   "a push posts pending, then its first pass running and the outcome",
		events: []reportEvent{{kind: "push"}, poll(0), {kind: "push"}, poll(0)},
		want:   [][]string{{"pending", "running", "success"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			g := gitlabtest.New(t, "glpat-test-token")
			p := g.AddProject(t, "students/alice/web")
			var shas []string
			for i := range tc.want {
				shas = append(shas, p.Commit(t, "main", map[string]string{"wm.yaml": fmt.Sprintf("version: 1 # %d\n", i)}, "commit"))
			}
			log := slog.New(slog.DiscardHandler)
			client, err := gitlab.New(schema.GitLabSource{URL: g.URL()}, "glpat-test-token", log)
			if err != nil {
				t.Fatal(err)
			}
			paths := func(key string) (string, bool) { return p.Path(), key == "alice/web" }
			rep := gitlab.NewReporter(client, "", paths, log)
			repo := reconciler.Repo{Key: "alice/web", Owner: "alice"}
			ctx := context.Background()
			for _, e := range tc.events {
				sha := shas[e.commit]
				switch e.kind {
				case "restart":
					rep = gitlab.NewReporter(client, "", paths, log)
				case "push":
					rep.Pending(ctx, repo.Key, sha)
				case "pass":
					rep.PassStarted(ctx, repo, sha)
					msg := "1 container(s) up to date"
					if !e.ready {
						msg = "web: unhealthy"
					}
					if e.msg != "" {
						msg = e.msg
					}
					done := ctx
					if e.cut {
						var cancel context.CancelFunc
						done, cancel = context.WithCancel(ctx)
						cancel()
					}
					rep.PassFinished(done, repo, reconciler.Result{Repo: repo, Revision: sha, Ready: e.ready, Message: msg}, e.err)
				}
			}
			for i, sha := range shas {
				var got []string
				for _, st := range g.Statuses(p.Path(), sha) {
					got = append(got, st.Status)
				}
				if !slices.Equal(got, tc.want[i]) {
					t.Errorf("commit %d got the statuses %v; want %v", i, got, tc.want[i])
				}
			}
		})
	}
}

// infoRefs counts the ref listings of a project's repo the double served:
// one per pass.
func infoRefs(g *gitlabtest.GitLab, p *gitlabtest.Project) int {
	n := 0
	for _, r := range g.Requests() {
		if r == "GET /"+p.Path()+".git/info/refs" {
			n++
		}
	}
	return n
}

func TestPollsOfARolledOutCommitPostNoNewStatusThroughTheWholeStack(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/alice/web")
	s := newStack(t, docker.NewFake("h1"), g)
	first := s.rollOut(p)
	want := s.statuses(p.Path(), first, gitlab.StatusName)
	// Each poll lists the repo's refs first; once the last one has, every
	// pass before it has ended (passes of one repo never overlap).
	for i := range 6 {
		before := infoRefs(g, p)
		if !s.loop.Trigger(strings.ToLower(p.Path())) {
			t.Fatal("the repo is not known to the loop")
		}
		eventually(t, fmt.Sprintf("poll %d", i+1), func() bool { return infoRefs(g, p) > before })
	}
	if got := s.statuses(p.Path(), first, gitlab.StatusName); !slices.Equal(got, want) {
		t.Errorf("after 6 more polls the commit has the statuses %v; want those of its rollout, %v", got, want)
		for _, st := range g.Statuses(p.Path(), first) {
			t.Logf("%s %q", st.Status, st.Description)
		}
	}
	if !slices.Equal(want, []string{"running", "success"}) {
		t.Errorf("the rollout posted %v; want [running success]", want)
	}
}
