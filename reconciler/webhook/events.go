package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Push is a push of one branch: a "Push Hook" of a project or group hook, or
// a push sent by a system hook. Tag pushes are never a Push.
type Push struct {
	// Project
	ProjectID     int    // project_id
	Project       string // project.path_with_namespace
	DefaultBranch string // project.default_branch

	// Change
	Ref    string // ref, "refs/heads/NAME"
	Before string // before: the old head, all zeros for a new branch
	After  string // after: the new head, all zeros for a deleted branch

	// Who
	UserUsername string // user_username; system hooks leave it empty
}

// Branch is the pushed branch: "x" for refs/heads/x, "" for anything else.
func (p Push) Branch() string {
	b, ok := strings.CutPrefix(p.Ref, "refs/heads/")
	if !ok {
		return ""
	}
	return b
}

// OnDefaultBranch tells whether the push is to the project's default
// branch, the one WhaleMountain deploys.
func (p Push) OnDefaultBranch() bool {
	b := p.Branch()
	return b != "" && b == p.DefaultBranch
}

// Deleted tells whether the push deleted the branch: GitLab then sends an
// after of all zeros (40 for SHA-1 repositories, 64 for SHA-256 ones).
func (p Push) Deleted() bool { return isZeroSHA(p.After) }

func isZeroSHA(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

// MergeRequest is a "Merge Request Hook": a merge request was opened,
// edited, got new commits, was approved, merged, closed or reopened.
type MergeRequest struct {
	// Target project, the one the merge request is filed against
	ProjectID int    // project.id
	Project   string // project.path_with_namespace

	// The merge request
	IID        int    // object_attributes.iid, the number people see (!IID)
	Action     string // object_attributes.action: open, update, reopen, close, merge, approved, unapproved, approval, unapproval
	State      string // object_attributes.state: opened, closed, merged, locked
	LastCommit string // object_attributes.last_commit.id, the head of the source branch

	// Source, which may be a fork
	SourceProjectID int    // object_attributes.source_project_id
	SourceProject   string // object_attributes.source.path_with_namespace
	SourceHTTPURL   string // object_attributes.source.git_http_url
	SourceBranch    string // object_attributes.source_branch
	TargetBranch    string // object_attributes.target_branch
}

// WantsPlan tells whether the merge request should be planned (a dry run of
// what merging it would change): on open, reopen and update.
//
// GitLab sends "update" both for new commits (then object_attributes.oldrev
// is present) and for edits of the title, description, labels or
// assignees. WhaleMountain plans on every update: a plan of an unchanged
// head is cheap, and telling the two apart would rely on a field GitLab
// documents only loosely.
func (m MergeRequest) WantsPlan() bool {
	switch m.Action {
	case "open", "reopen", "update":
		return true
	}
	return false
}

// ProjectChange is a system hook's news that a project was created,
// destroyed, renamed or moved to another namespace. It is a claim, not a
// fact: anyone who knows the hook's secret can send one, so whoever acts
// on it must first ask GitLab (by ProjectID) whether it is true.
type ProjectChange struct {
	EventName  string // event_name: project_create, project_destroy, project_rename, project_transfer
	ProjectID  int    // project_id
	Project    string // path_with_namespace, the path after the change
	OldProject string // old_path_with_namespace; only for project_rename and project_transfer
}

// GitLab's X-Gitlab-Event values this package reads.
const (
	eventPush         = "Push Hook"
	eventMergeRequest = "Merge Request Hook"
	eventSystem       = "System Hook"
)

// The event label of the metrics.
const (
	labelPush         = "push"
	labelMergeRequest = "merge_request"
	labelProject      = "project"
	labelOther        = "other"
)

// errBadPayload is a known event whose body is not the JSON GitLab sends.
var errBadPayload = errors.New("bad payload")

// decode turns a delivery into one of Push, MergeRequest or ProjectChange.
// A nil event and a nil error mean the delivery is valid but of no interest
// (a tag push, a comment, a pipeline, another system event, an unknown
// header). label names the kind for the metrics either way. It never
// panics, whatever the body.
func decode(header string, body []byte) (e any, label string, err error) {
	switch header {
	case eventPush:
		e, err = orNil(decodePush(body))
		return e, labelPush, err
	case eventMergeRequest:
		e, err = orNil(decodeMergeRequest(body))
		return e, labelMergeRequest, err
	case eventSystem:
		return decodeSystem(body)
	}
	return nil, labelOther, nil
}

// orNil boxes a decoded event, or nothing at all when decoding failed: a
// zero Push beside an error would be a non-nil any.
func orNil[T any](v T, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return v, nil
}

// decodeSystem reads a system hook. Older events name themselves in
// event_name, newer ones in object_kind; pushes carry both, except in
// GitLab's own documented example, which has only event_name.
func decodeSystem(body []byte) (any, string, error) {
	var kind struct {
		EventName  string `json:"event_name"`
		ObjectKind string `json:"object_kind"`
	}
	if err := unmarshal(body, &kind); err != nil {
		return nil, labelOther, err
	}
	switch {
	case kind.ObjectKind == "push" || kind.EventName == "push":
		e, err := orNil(decodePush(body))
		return e, labelPush, err
	case kind.ObjectKind == "merge_request":
		// System hooks send merge requests too, in the project hooks'
		// shape; an instance that uses only a system hook would otherwise
		// never plan a merge request.
		e, err := orNil(decodeMergeRequest(body))
		return e, labelMergeRequest, err
	}
	switch kind.EventName {
	case "project_create", "project_destroy", "project_rename", "project_transfer":
		e, err := orNil(decodeProjectChange(body))
		return e, labelProject, err
	}
	return nil, labelOther, nil
}

func decodePush(body []byte) (Push, error) {
	var v struct {
		Ref          string `json:"ref"`
		Before       string `json:"before"`
		After        string `json:"after"`
		UserUsername string `json:"user_username"`
		ProjectID    int    `json:"project_id"`
		Project      struct {
			ID                int    `json:"id"`
			PathWithNamespace string `json:"path_with_namespace"`
			DefaultBranch     string `json:"default_branch"`
		} `json:"project"`
	}
	if err := unmarshal(body, &v); err != nil {
		return Push{}, err
	}
	p := Push{
		ProjectID:     firstNonZero(v.ProjectID, v.Project.ID),
		Project:       v.Project.PathWithNamespace,
		DefaultBranch: v.Project.DefaultBranch,
		Ref:           v.Ref,
		Before:        v.Before,
		After:         v.After,
		UserUsername:  v.UserUsername,
	}
	if p.ProjectID == 0 && p.Project == "" {
		return Push{}, missing("project_id")
	}
	if !strings.HasPrefix(p.Ref, "refs/") {
		return Push{}, missing("ref")
	}
	return p, nil
}

func decodeMergeRequest(body []byte) (MergeRequest, error) {
	var v struct {
		Project struct {
			ID                int    `json:"id"`
			PathWithNamespace string `json:"path_with_namespace"`
		} `json:"project"`
		Attrs struct {
			IID             int    `json:"iid"`
			Action          string `json:"action"`
			State           string `json:"state"`
			TargetProjectID int    `json:"target_project_id"`
			SourceProjectID int    `json:"source_project_id"`
			SourceBranch    string `json:"source_branch"`
			TargetBranch    string `json:"target_branch"`
			Source          struct {
				PathWithNamespace string `json:"path_with_namespace"`
				GitHTTPURL        string `json:"git_http_url"`
			} `json:"source"`
			LastCommit struct {
				ID string `json:"id"`
			} `json:"last_commit"`
		} `json:"object_attributes"`
	}
	if err := unmarshal(body, &v); err != nil {
		return MergeRequest{}, err
	}
	a := v.Attrs
	m := MergeRequest{
		ProjectID:       firstNonZero(v.Project.ID, a.TargetProjectID),
		Project:         v.Project.PathWithNamespace,
		IID:             a.IID,
		Action:          a.Action,
		State:           a.State,
		LastCommit:      a.LastCommit.ID,
		SourceProjectID: a.SourceProjectID,
		SourceProject:   a.Source.PathWithNamespace,
		SourceHTTPURL:   a.Source.GitHTTPURL,
		SourceBranch:    a.SourceBranch,
		TargetBranch:    a.TargetBranch,
	}
	if m.ProjectID == 0 && m.Project == "" {
		return MergeRequest{}, missing("project")
	}
	if m.IID == 0 {
		return MergeRequest{}, missing("object_attributes.iid")
	}
	return m, nil
}

func decodeProjectChange(body []byte) (ProjectChange, error) {
	var v struct {
		EventName            string `json:"event_name"`
		ProjectID            int    `json:"project_id"`
		PathWithNamespace    string `json:"path_with_namespace"`
		OldPathWithNamespace string `json:"old_path_with_namespace"`
	}
	if err := unmarshal(body, &v); err != nil {
		return ProjectChange{}, err
	}
	c := ProjectChange{
		EventName:  v.EventName,
		ProjectID:  v.ProjectID,
		Project:    v.PathWithNamespace,
		OldProject: v.OldPathWithNamespace,
	}
	if c.ProjectID == 0 && c.Project == "" {
		return ProjectChange{}, missing("project_id")
	}
	return c, nil
}

// unmarshal decodes a JSON object. Unknown fields are welcome (GitLab adds
// some in most releases); anything but an object is not a payload.
func unmarshal(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %s", errBadPayload, jsonProblem(err))
	}
	return nil
}

// jsonProblem says what is wrong with the JSON without quoting the body.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return "not a JSON object"
		}
		return fmt.Sprintf("%s: want %s", typ.Field, typ.Type)
	}
	return "invalid JSON"
}

func missing(field string) error {
	return fmt.Errorf("%w: missing %s", errBadPayload, field)
}

func firstNonZero(a, b int) int {
	if a != 0 {
		return a
	}
	return b
}
