package gitlab

import (
	"context"
	"net/url"
	"strings"
	"sync"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
)

// StatusName is the commit status of a rolled-out commit; PlanStatusName
// the one of a merge request's plan.
const (
	StatusName     = "whalemountain"
	PlanStatusName = "whalemountain/plan"
)

// statusSetter posts commit statuses; *Client is one.
type statusSetter interface {
	SetStatus(ctx context.Context, project, sha, name string, state gl.BuildStateValue, description, targetURL string) error
}

// Reporter turns passes into the "whalemountain" commit status of the
// commit they rolled out. It posts only what changed since it last posted
// for that commit, so a poll that finds everything as it was says nothing.
// It implements reconciler.Reporter.
type Reporter struct {
	client    statusSetter
	dashboard string
	paths     func(key string) (string, bool) // repo key → GitLab path
	log       interface{ Warn(string, ...any) }

	mu   sync.Mutex
	last map[string]posted // repo key → what was last posted for it
}

// posted is the last status posted for a repo; one per repo keeps memory
// bounded by the number of repos.
type posted struct{ sha, status string }

var _ reconciler.Reporter = (*Reporter)(nil)

// NewReporter reports through client for the repos paths knows.
func NewReporter(client statusSetter, dashboardURL string, paths func(key string) (string, bool), log interface{ Warn(string, ...any) }) *Reporter {
	return &Reporter{client: client, dashboard: strings.TrimRight(dashboardURL, "/"), paths: paths, log: log, last: map[string]posted{}}
}

// Pending says a pushed commit is queued.
func (r *Reporter) Pending(ctx context.Context, repo, sha string) {
	r.post(ctx, repo, sha, StatePending, "queued: WhaleMountain will roll this commit out")
}

// PassStarted says the pass is running.
func (r *Reporter) PassStarted(ctx context.Context, repo reconciler.Repo, rev string) {
	r.post(ctx, repo.Key, rev, StateRunning, "rolling out "+short(rev))
}

// PassFinished says how the pass ended.
func (r *Reporter) PassFinished(ctx context.Context, repo reconciler.Repo, res reconciler.Result, err error) {
	state, desc := StatusOf(res, err)
	r.post(ctx, repo.Key, res.Revision, state, desc)
}

// StatusOf maps a pass's outcome to a commit status and a one-line
// description a student can act on.
func StatusOf(res reconciler.Result, err error) (gl.BuildStateValue, string) {
	if err == nil {
		if res.Ready && res.HeldRemovals == 0 {
			return StateSuccess, "ready: " + res.Message
		}
		return StateFailed, "not ready: " + res.Message
	}
	outcome, reason := reconciler.Classify(err)
	msg := err.Error()
	if reason == "ValidationFailed" {
		// The first error line, with its file, line and field.
		if _, rest, ok := strings.Cut(msg, "\n"); ok {
			first, _, _ := strings.Cut(rest, "\n")
			msg = "invalid wm.yaml: " + first
		}
	}
	switch outcome {
	case reconciler.Waiting:
		return StatePending, firstLine(msg)
	case reconciler.Stalled:
		return StateFailed, firstLine(msg)
	}
	return StateRunning, "retrying after: " + firstLine(msg)
}

func (r *Reporter) post(ctx context.Context, key, sha string, state gl.BuildStateValue, desc string) {
	path, ok := r.paths(key)
	if !ok || sha == "" {
		return
	}
	now := posted{sha, string(state) + "|" + desc}
	r.mu.Lock()
	same := r.last[key] == now
	r.last[key] = now
	r.mu.Unlock()
	if same {
		return
	}
	target := ""
	if r.dashboard != "" {
		target = r.dashboard + "/repos/" + url.PathEscape(key)
	}
	if err := r.client.SetStatus(ctx, path, sha, StatusName, state, desc, target); err != nil {
		r.mu.Lock()
		delete(r.last, key) // post again next time
		r.mu.Unlock()
		r.log.Warn("commit status not posted", "repo", key, "sha", short(sha), "err", err)
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
