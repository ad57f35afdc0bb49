package gitlab_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"github.com/whalemountain/wm/reconciler"
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
					msg := "1 container running"
					if !e.ready {
						msg = "web: unhealthy"
					}
					rep.PassFinished(ctx, repo, reconciler.Result{Repo: repo, Revision: sha, Ready: e.ready, Message: msg}, e.err)
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
