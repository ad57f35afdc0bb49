package gitlab

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
)

// StatusName is the commit status of a rolled-out commit; PlanStatusName
// the one of a merge request's plan.
const (
	StatusName     = "whalemountain"
	PlanStatusName = "whalemountain/plan"
)

// statusSetter posts and reads commit statuses; *Client is one.
type statusSetter interface {
	SetStatus(ctx context.Context, project, sha, name string, state gl.BuildStateValue, description, targetURL string) error
	LatestStatus(ctx context.Context, project, sha, name string) (state gl.BuildStateValue, description string, found bool, err error)
}

// Reporter turns passes into the "whalemountain" commit status of the
// commit they rolled out. On GitLab every finished status posted again
// adds a job to the commit's external pipeline (which then shows as
// running), so the reporter posts only a change: "running" on the first
// pass of a commit, and an outcome only when its state or description
// differs from the last one on the commit (a success only after another
// state: its description says what that pass did, which is no news). What was posted is remembered
// per repo for its current commit; a commit it does not remember (a new
// one, or any after a restart) has its latest status read from GitLab
// before anything is posted. It implements reconciler.Reporter.
type Reporter struct {
	client    statusSetter
	dashboard string
	paths     func(key string) (string, bool) // repo key → GitLab path
	log       interface{ Warn(string, ...any) }

	mu   sync.Mutex
	last map[string]posted // repo key → what was last posted for it
}

// posted is the last status on a repo's current commit, "state|description"
// ("" for none); one per repo keeps memory bounded by the number of repos.
type posted struct{ sha, status string }

// queued is the description of the status a push webhook posts.
const queued = "queued: WhaleMountain will roll this commit out"

// when says which posts a status makes: the queued status only on a
// commit without any status; "running" only on a commit no pass has
// reported on yet; an outcome whenever it changed.
type when int

const (
	onFirst when = iota
	beforeOutcome
	onChange
)

var _ reconciler.Reporter = (*Reporter)(nil)

// NewReporter reports through client for the repos paths knows.
func NewReporter(client statusSetter, dashboardURL string, paths func(key string) (string, bool), log interface{ Warn(string, ...any) }) *Reporter {
	return &Reporter{client: client, dashboard: strings.TrimRight(dashboardURL, "/"), paths: paths, log: log, last: map[string]posted{}}
}

// Pending says a pushed commit is queued.
func (r *Reporter) Pending(ctx context.Context, repo, sha string) {
	r.post(ctx, repo, sha, StatePending, queued, onFirst)
}

// PassStarted says the pass is running.
func (r *Reporter) PassStarted(ctx context.Context, repo reconciler.Repo, rev string) {
	r.post(ctx, repo.Key, rev, StateRunning, "rolling out "+short(rev), beforeOutcome)
}

// PassFinished says how the pass ended.
func (r *Reporter) PassFinished(ctx context.Context, repo reconciler.Repo, res reconciler.Result, err error) {
	state, desc := StatusOf(res, err)
	r.post(ctx, repo.Key, res.Revision, state, desc, onChange)
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

// postTimeout bounds the reading and posting of one status, which go on
// when the pass's own context is done: a pass cut at its deadline still
// says so.
const postTimeout = 10 * time.Second

func (r *Reporter) post(ctx context.Context, key, sha string, state gl.BuildStateValue, desc string, w when) {
	path, ok := r.paths(key)
	if !ok || sha == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), postTimeout)
	defer cancel()
	r.mu.Lock()
	last, known := r.last[key]
	r.mu.Unlock()
	if !known || last.sha != sha {
		last = posted{sha: sha}
		st, d, found, err := r.client.LatestStatus(ctx, path, sha, StatusName)
		switch {
		case err != nil:
			// Not knowing is no reason to stay silent: post, and read
			// again next time.
			r.log.Warn("commit status not read; posting without knowing the last", "repo", key, "sha", short(sha), "err", err)
		case found:
			last.status = statusKey(st, d)
		}
	}
	now := statusKey(state, desc)
	switch {
	case now == last.status,
		// A green commit stays green: what a later pass did ("created",
		// "up to date") is no news.
		state == StateSuccess && strings.HasPrefix(last.status, string(StateSuccess)+"|"),
		w == onFirst && last.status != "",
		w == beforeOutcome && last.status != "" && last.status != statusKey(StatePending, queued):
		r.remember(key, last)
		return
	}
	target := ""
	if r.dashboard != "" {
		target = r.dashboard + "/repos/" + url.PathEscape(key)
	}
	if err := r.client.SetStatus(ctx, path, sha, StatusName, state, desc, target); err != nil {
		r.mu.Lock()
		delete(r.last, key) // read and post again next time
		r.mu.Unlock()
		r.log.Warn("commit status not posted", "repo", key, "sha", short(sha), "err", err)
		return
	}
	r.remember(key, posted{sha, now})
}

func (r *Reporter) remember(key string, p posted) {
	r.mu.Lock()
	r.last[key] = p
	r.mu.Unlock()
}

// statusKey is a status as GitLab keeps it: the description as SetStatus
// sends it.
func statusKey(state gl.BuildStateValue, desc string) string {
	return string(state) + "|" + StatusText(desc)
}

// LatestStatus reads the newest status named name on a commit (GitLab
// lists the latest of each job; a retried one is left out), so that a
// reporter that does not remember the commit posts only a change.
func (c *Client) LatestStatus(ctx context.Context, project, sha, name string) (gl.BuildStateValue, string, bool, error) {
	opt := &gl.GetCommitStatusesOptions{Name: gl.Ptr(name), ListOptions: gl.ListOptions{PerPage: 100}}
	var latest *gl.CommitStatus
	for {
		page, resp, err := c.gl.Commits.GetCommitStatuses(project, sha, opt, gl.WithContext(ctx))
		if err != nil {
			return "", "", false, fmt.Errorf("read status %s of %s@%s: %w", name, project, short(sha), classify(resp, err))
		}
		for _, s := range page {
			if s.Name == name && (latest == nil || s.ID > latest.ID) {
				latest = s
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opt.Page = resp.NextPage
	}
	if latest == nil {
		return "", "", false, nil
	}
	return gl.BuildStateValue(latest.Status), latest.Description, true, nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
