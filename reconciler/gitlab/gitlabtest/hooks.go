package gitlabtest

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The builders below make the payloads GitLab sends to project webhooks
// and system hooks, with the fields and shapes of GitLab's webhook
// documentation (webhook_events.md, system_hooks.md) and of
// Gitlab::HookData::*. The acting user of push and merge request events is
// "student", the author of merge requests.

// hookUserAgent is the User-Agent GitLab's webhook deliveries carry.
const hookUserAgent = "GitLab/18.2.0"

// maxPushCommits is how many commits a push payload lists at most: the
// newest ones.
const maxPushCommits = 20

var visibilityLevel = map[string]int{"private": 0, "internal": 10, "public": 20}

// hookProject is Project#hook_attrs.
type hookProject struct {
	ID                int     `json:"id"`
	Name              string  `json:"name"`
	Description       *string `json:"description"`
	WebURL            string  `json:"web_url"`
	AvatarURL         *string `json:"avatar_url"`
	GitSSHURL         string  `json:"git_ssh_url"`
	GitHTTPURL        string  `json:"git_http_url"`
	Namespace         string  `json:"namespace"`
	VisibilityLevel   int     `json:"visibility_level"`
	PathWithNamespace string  `json:"path_with_namespace"`
	DefaultBranch     string  `json:"default_branch"`
	CIConfigPath      *string `json:"ci_config_path"`
	Homepage          string  `json:"homepage"`
	URL               string  `json:"url"`
	SSHURL            string  `json:"ssh_url"`
	HTTPURL           string  `json:"http_url"`
}

func (g *GitLab) hookProjectLocked(p *Project) hookProject {
	b := g.basicProjectLocked(p, first(p.defaultBranch()))
	return hookProject{
		ID: p.id, Name: p.name, WebURL: b.WebURL,
		GitSSHURL: b.SSHURLToRepo, GitHTTPURL: b.HTTPURLToRepo,
		Namespace: p.namespace.name, VisibilityLevel: visibilityLevel[p.visibility],
		PathWithNamespace: b.PathWithNamespace, DefaultBranch: b.DefaultBranch,
		Homepage: b.WebURL, URL: b.SSHURLToRepo, SSHURL: b.SSHURLToRepo, HTTPURL: b.HTTPURLToRepo,
	}
}

// hookCommit is Commit#hook_attrs.
type hookCommit struct {
	ID        string            `json:"id"`
	Message   string            `json:"message"`
	Title     string            `json:"title"`
	Timestamp string            `json:"timestamp"`
	URL       string            `json:"url"`
	Author    map[string]string `json:"author"`
}

func (g *GitLab) hookCommitLocked(p *Project, c commitData) hookCommit {
	return hookCommit{
		ID: c.id, Message: c.message, Title: c.title(),
		Timestamp: c.authored.Format("2006-01-02T15:04:05-07:00"),
		URL:       g.URL() + "/" + p.fullPathLocked() + "/-/commit/" + c.id,
		Author:    map[string]string{"name": c.authorName, "email": c.authorEmail},
	}
}

// pushCommit is a commit in a push payload: with the paths it changed.
type pushCommit struct {
	hookCommit
	Added    []string `json:"added"`
	Modified []string `json:"modified"`
	Removed  []string `json:"removed"`
}

// hookUser is User#hook_attrs; emails are redacted, as for a user without
// a public email.
func (g *GitLab) hookUser(u *user) map[string]any {
	return map[string]any{
		"id": u.id, "name": u.name, "username": u.username,
		"avatar_url": nil, "email": "[REDACTED]",
	}
}

// PushHook returns the "Push Hook" payload GitLab sends when ref (a branch
// name or refs/heads/...) moved from before to after, either of which may
// be the zero sha for a created or deleted branch. commits lists the
// newest 20 pushed commits, oldest first, and total_commits_count all of
// them.
func PushHook(p *Project, ref, before, after string) []byte {
	g := p.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	branch := strings.TrimPrefix(ref, "refs/heads/")
	def, _ := p.defaultBranch()

	var shas []string
	switch {
	case after == zeroSHA:
	case before == zeroSHA && branch == def:
		shas = p.revList(after)
	case before == zeroSHA:
		shas = p.revList(after, "--not", "refs/heads/"+def)
	default:
		shas = p.revList(before + ".." + after)
	}
	total := len(shas)
	if len(shas) > maxPushCommits {
		shas = shas[len(shas)-maxPushCommits:]
	}
	commits := []pushCommit{}
	cs, _ := p.commits(shas)
	changes := p.changes(cs)
	for _, c := range cs {
		ch := changes[c.id]
		commits = append(commits, pushCommit{
			hookCommit: g.hookCommitLocked(p, c),
			Added:      ch.added, Modified: ch.modified, Removed: ch.removed,
		})
	}
	var checkout any
	if after != zeroSHA {
		checkout = after
	}
	pusher := g.userLocked("student")
	proj := g.hookProjectLocked(p)
	return mustJSON(struct {
		ObjectKind        string         `json:"object_kind"`
		EventName         string         `json:"event_name"`
		Before            string         `json:"before"`
		After             string         `json:"after"`
		Ref               string         `json:"ref"`
		RefProtected      bool           `json:"ref_protected"`
		CheckoutSHA       any            `json:"checkout_sha"`
		Message           any            `json:"message"`
		UserID            int            `json:"user_id"`
		UserName          string         `json:"user_name"`
		UserUsername      string         `json:"user_username"`
		UserEmail         string         `json:"user_email"`
		UserAvatar        any            `json:"user_avatar"`
		ProjectID         int            `json:"project_id"`
		Project           hookProject    `json:"project"`
		Commits           []pushCommit   `json:"commits"`
		TotalCommitsCount int            `json:"total_commits_count"`
		PushOptions       map[string]any `json:"push_options"`
		Repository        map[string]any `json:"repository"`
	}{
		ObjectKind: "push", EventName: "push", Before: before, After: after, Ref: ref,
		RefProtected: branch == def, CheckoutSHA: checkout,
		UserID: pusher.id, UserName: pusher.name, UserUsername: pusher.username, UserEmail: "[REDACTED]",
		ProjectID: p.id, Project: proj, Commits: commits, TotalCommitsCount: total,
		PushOptions: map[string]any{},
		Repository: map[string]any{
			"name": p.name, "url": proj.URL, "description": nil, "homepage": proj.WebURL,
			"git_http_url": proj.GitHTTPURL, "git_ssh_url": proj.GitSSHURL,
			"visibility_level": proj.VisibilityLevel,
		},
	})
}

// mergeRequestStates maps an action to the state it leaves the merge
// request in.
var mergeRequestStates = map[string]struct {
	state string
	id    int
}{
	"close": {"closed", 2},
	"merge": {"merged", 3},
}

// MergeRequestHook returns the "Merge Request Hook" payload for action:
// open, close, reopen, update, approved, unapproved, approval, unapproval
// or merge. object_attributes.last_commit is the source branch's head;
// for "update" after new commits, oldrev is the head the previous payload
// reported. The state follows the action (close: closed, merge: merged,
// otherwise opened); the API keeps reporting the merge request opened.
func MergeRequestHook(mr *MergeRequest, action string) []byte {
	g := mr.g
	g.mu.Lock()
	defer g.mu.Unlock()
	mr.refreshLocked()
	p := mr.project
	state, stateID := "opened", 1
	if s, ok := mergeRequestStates[action]; ok {
		state, stateID = s.state, s.id
	}
	var oldrev string
	if action == "update" && mr.hookSHA != mr.sha {
		oldrev = mr.hookSHA
	}
	mr.hookSHA = mr.sha
	var last any
	if c, err := p.commit(mr.sha); err == nil {
		last = g.hookCommitLocked(p, c)
	}
	proj := g.hookProjectLocked(p)
	attrs := map[string]any{
		"id": mr.id, "iid": mr.iid,
		"target_branch": mr.target, "source_branch": mr.source,
		"source_project_id": p.id, "target_project_id": p.id,
		"author_id": mr.author.id, "assignee_ids": []int{}, "assignee_id": nil, "reviewer_ids": []int{},
		"title": mr.title, "description": "",
		"created_at": mr.created.UTC().Format(time.RFC3339), "updated_at": mr.updated.UTC().Format(time.RFC3339),
		"last_edited_at": nil, "last_edited_by_id": nil, "milestone_id": nil,
		"state_id": stateID, "state": state,
		"blocking_discussions_resolved": true, "work_in_progress": false, "draft": false,
		"first_contribution": false, "merge_status": "can_be_merged",
		"prepared_at":      mr.created.UTC().Format(time.RFC3339),
		"total_time_spent": 0, "time_change": 0,
		"human_total_time_spent": nil, "human_time_change": nil, "human_time_estimate": nil,
		"url":    g.URL() + "/" + p.fullPathLocked() + "/-/merge_requests/" + itoa(mr.iid),
		"source": proj, "target": proj, "last_commit": last, "labels": []any{},
		"action": action, "detailed_merge_status": "mergeable",
	}
	if oldrev != "" {
		attrs["oldrev"] = oldrev
	}
	return mustJSON(struct {
		ObjectKind       string         `json:"object_kind"`
		EventType        string         `json:"event_type"`
		User             map[string]any `json:"user"`
		Project          hookProject    `json:"project"`
		Repository       map[string]any `json:"repository"`
		ObjectAttributes map[string]any `json:"object_attributes"`
		Labels           []any          `json:"labels"`
		Changes          map[string]any `json:"changes"`
		Assignees        []any          `json:"assignees"`
		Reviewers        []any          `json:"reviewers"`
	}{
		ObjectKind: "merge_request", EventType: "merge_request", User: g.hookUser(mr.author),
		Project: proj,
		Repository: map[string]any{
			"name": p.name, "url": proj.URL, "description": nil, "homepage": proj.WebURL,
		},
		ObjectAttributes: attrs, Labels: []any{}, Changes: map[string]any{},
		Assignees: []any{}, Reviewers: []any{},
	})
}

// SystemHook returns the "System Hook" payload of a project event:
// project_create, project_destroy, project_rename, project_transfer or
// project_update. oldPathWithNamespace is sent for rename and transfer
// only. p may already be deleted; its last state is reported.
func SystemHook(eventName string, p *Project, oldPathWithNamespace string) []byte {
	switch eventName {
	case "project_create", "project_destroy", "project_rename", "project_transfer", "project_update":
	default:
		panic(fmt.Sprintf("gitlabtest: SystemHook: %q is not a project event", eventName))
	}
	g := p.g
	g.mu.Lock()
	defer g.mu.Unlock()
	owner := g.bot
	payload := map[string]any{
		"event_name":           eventName,
		"created_at":           p.created.UTC().Format(time.RFC3339),
		"updated_at":           p.updated.UTC().Format(time.RFC3339),
		"name":                 p.name,
		"path":                 p.path,
		"path_with_namespace":  p.fullPathLocked(),
		"project_id":           p.id,
		"project_namespace_id": p.namespace.id,
		"owners":               []map[string]string{{"name": owner.name, "email": owner.email}},
		"owner_name":           owner.name,
		"owner_email":          owner.email,
		"project_visibility":   p.visibility,
	}
	if eventName == "project_rename" || eventName == "project_transfer" {
		payload["old_path_with_namespace"] = oldPathWithNamespace
	}
	return mustJSON(payload)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("gitlabtest: encode payload: %v", err))
	}
	return b
}

// PostHook delivers a webhook payload to url as GitLab does: a POST with
// Content-Type application/json, User-Agent GitLab/<version>,
// X-Gitlab-Event event ("Push Hook", "Merge Request Hook", "System
// Hook"), fresh X-Gitlab-Webhook-UUID, X-Gitlab-Event-UUID and
// Idempotency-Key, and X-Gitlab-Instance. Values in header are set last:
// put the hook's secret in X-Gitlab-Token, and reuse an Idempotency-Key to
// model GitLab retrying one delivery. Like GitLab, it gives up after 10
// seconds. The response's body is read in full and can be read again.
func PostHook(t testing.TB, url, event string, body []byte, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("gitlabtest: post hook: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", hookUserAgent)
	req.Header.Set("X-Gitlab-Event", event)
	req.Header.Set("X-Gitlab-Webhook-UUID", newUUID())
	req.Header.Set("X-Gitlab-Event-UUID", newUUID())
	req.Header.Set("Idempotency-Key", newUUID())
	if instance := instanceOf(body); instance != "" {
		req.Header.Set("X-Gitlab-Instance", instance)
	}
	for k, vs := range header {
		req.Header.Del(k)
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("gitlabtest: post hook to %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("gitlabtest: read hook response from %s: %v", url, err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp
}

// instanceOf returns the scheme and host of the project in a payload, the
// value of X-Gitlab-Instance.
func instanceOf(body []byte) string {
	var v struct {
		Project struct {
			WebURL string `json:"web_url"`
		} `json:"project"`
	}
	if json.Unmarshal(body, &v) != nil || v.Project.WebURL == "" {
		return ""
	}
	u, err := url.Parse(v.Project.WebURL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// newUUID returns a random version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
