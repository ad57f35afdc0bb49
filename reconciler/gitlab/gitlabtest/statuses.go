package gitlabtest

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	gitlab "gitlab.com/gitlab-org/api/client-go"
)

// pipeline is the external pipeline GitLab makes to hold the statuses
// posted for one sha and ref.
type pipeline struct {
	id        int
	projectID int
	sha       string
	ref       string
}

// commitStatus is one GenericCommitStatus record: a job of an external
// pipeline. Posting a new state for a pending or running record moves that
// record; posting for a finished one makes a new record, and the older
// record of the same name in the pipeline becomes "retried".
type commitStatus struct {
	id          int
	projectID   int
	pipelineID  int
	sha         string
	ref         string
	name        string
	status      string
	description *string
	targetURL   *string
	coverage    *float64
	author      *user
	created     time.Time
	started     *time.Time
	finished    *time.Time
	retried     bool
}

// statusEvent is the state-machine event a posted state fires, as in
// lib/api/commit_statuses.rb: "running" fires enqueue (ignored when it
// does not apply) then run.
var statusEvent = map[string]string{
	"pending":  "enqueue",
	"running":  "run",
	"success":  "success",
	"failed":   "drop",
	"canceled": "cancel",
	"skipped":  "skip",
}

// transitions is CommitStatus's state machine restricted to the states an
// external status can be in when found: created (new), pending, running.
var transitions = map[string]map[string]string{
	"enqueue": {"created": "pending"},
	"run":     {"pending": "running"},
	"success": {"created": "success", "pending": "success", "running": "success"},
	"drop":    {"created": "failed", "pending": "failed", "running": "failed"},
	"cancel":  {"created": "canceled", "pending": "canceled", "running": "canceled"},
	"skip":    {"created": "skipped", "pending": "skipped"},
}

// fire applies event to s, as state_machines' bang methods do, or returns
// GitLab's InvalidTransition message.
func (s *commitStatus) fire(event string, at time.Time) error {
	to, ok := transitions[event][s.status]
	if !ok {
		//lint:ignore ST1005 GitLab's own message, word for word, which clients match
		return fmt.Errorf("Cannot transition status via :%s from :%s (Reason(s): Status cannot transition via \"%s\")",
			event, s.status, event)
	}
	if to == "running" {
		s.started = &at
	}
	if to == "success" || to == "failed" || to == "canceled" {
		s.finished = &at
	}
	s.status = to
	return nil
}

// postStatus is POST /projects/:id/statuses/:sha.
func (g *GitLab) postStatus(w http.ResponseWriter, r *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	state := a.params.Get("state")
	switch {
	case !a.params.Has("state"):
		writeError(w, http.StatusBadRequest, "state is missing, state does not have a valid value")
		return
	case statusEvent[state] == "":
		writeError(w, http.StatusBadRequest, "state does not have a valid value")
		return
	}
	var pipelineID int
	if a.params.Has("pipeline_id") {
		n, err := strconv.Atoi(a.params.Get("pipeline_id"))
		if err != nil {
			writeError(w, http.StatusBadRequest, "pipeline_id is invalid")
			return
		}
		pipelineID = n
	}
	var coverage *float64
	if a.params.Has("coverage") {
		f, err := strconv.ParseFloat(a.params.Get("coverage"), 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "coverage is invalid")
			return
		}
		coverage = &f
	}
	if p.archived {
		writeMessage(w, http.StatusForbidden, "403 Forbidden")
		return
	}
	sha, ok := p.resolveCommit(a.path["sha"])
	if !ok {
		writeMessage(w, http.StatusNotFound, "404 Commit Not Found")
		return
	}
	if tu := a.params.Get("target_url"); tu != "" {
		if msg := invalidTargetURL(tu); msg != "" {
			writeJSON(w, http.StatusBadRequest, map[string]any{"message": map[string][]string{"target_url": {msg}}})
			return
		}
	}

	// The newest pipeline for the sha, narrowed by ref and pipeline_id,
	// else a new one on the given ref or the first branch holding the sha.
	ref := a.params.Get("ref")
	var pl *pipeline
	for i := len(g.pipelines) - 1; i >= 0; i-- {
		c := g.pipelines[i]
		if c.projectID == p.id && c.sha == sha && (ref == "" || c.ref == ref) &&
			(pipelineID == 0 || c.id == pipelineID) {
			pl = c
			break
		}
	}
	if pl != nil && ref == "" {
		ref = pl.ref
	}
	if ref == "" {
		if names := p.branchesContaining(sha); len(names) > 0 {
			ref = names[0]
		}
	}
	if ref == "" {
		writeMessage(w, http.StatusNotFound, "404 References for commit Not Found")
		return
	}
	name := a.params.Get("name")
	if name == "" {
		name = a.params.Get("context")
	}
	if name == "" {
		name = "default"
	}

	// The pending or running status of that name and ref in the pipeline,
	// else a new one; unsaved until the transition succeeds.
	at := now()
	var s *commitStatus
	if pl != nil {
		for _, c := range g.statuses {
			if c.pipelineID == pl.id && c.name == name && c.ref == ref &&
				(c.status == "pending" || c.status == "running") {
				s = c
				break
			}
		}
	}
	fresh := s == nil
	if fresh {
		s = &commitStatus{projectID: p.id, sha: sha, ref: ref, name: name, status: "created",
			author: g.bot, created: at}
	}
	updated := *s
	if a.params.Has("description") {
		d := a.params.Get("description")
		updated.description = &d
	}
	if a.params.Has("target_url") {
		u := a.params.Get("target_url")
		updated.targetURL = &u
	}
	if coverage != nil {
		updated.coverage = coverage
	}
	event := statusEvent[state]
	if event == "run" && updated.status == "created" {
		_ = updated.fire("enqueue", at) // status.enqueue, not enqueue!: never fails the request
	}
	if err := updated.fire(event, at); err != nil {
		writeMessage(w, http.StatusBadRequest, err.Error())
		return
	}

	if pl == nil {
		pl = &pipeline{id: g.seq.pipeline, projectID: p.id, sha: sha, ref: ref}
		g.seq.pipeline++
		g.pipelines = append(g.pipelines, pl)
	}
	updated.pipelineID = pl.id
	*s = updated
	if fresh {
		s.id = g.seq.status
		g.seq.status++
		for _, c := range g.statuses {
			if c.pipelineID == pl.id && c.name == name {
				c.retried = true
			}
		}
		g.statuses = append(g.statuses, s)
	}
	e := g.commitStatusLocked(s)
	p.history[sha] = append(p.history[sha], decodeAs[gitlab.CommitStatus](g.t, e))
	writeJSON(w, http.StatusCreated, e)
}

// invalidTargetURL returns the validation message GitLab gives a bad
// target_url, or "" if it is acceptable.
func invalidTargetURL(s string) string {
	if len(s) > 255 {
		return "is too long (maximum is 255 characters)"
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "is blocked: Only allowed schemes are http, https"
	}
	return ""
}

// listStatuses is GET /projects/:id/repository/commits/:sha/statuses. Like
// GitLab, it matches the sha as given: a short sha or a branch name finds
// the commit but lists nothing.
func (g *GitLab) listStatuses(w http.ResponseWriter, r *http.Request, a args) {
	p := g.projectOr404(w, a.path["id"])
	if p == nil {
		return
	}
	all, err := boolParam(a.params, "all", false)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, ok := p.resolveCommit(a.path["sha"]); !ok {
		writeMessage(w, http.StatusNotFound, "404 Commit Not Found")
		return
	}
	var out []*commitStatus
	for _, s := range g.statuses {
		if s.projectID != p.id || s.sha != a.path["sha"] || (s.retried && !all) {
			continue
		}
		if v := a.params.Get("pipeline_id"); v != "" && v != itoa(s.pipelineID) {
			continue
		}
		if v := a.params.Get("ref"); v != "" && v != s.ref {
			continue
		}
		if v := a.params.Get("stage"); v != "" && v != "external" {
			continue
		}
		if v := a.params.Get("name"); v != "" && v != s.name {
			continue
		}
		out = append(out, s)
	}
	g.writePage(w, r, a, len(out), func(i int) any { return g.commitStatusLocked(out[i]) })
}
