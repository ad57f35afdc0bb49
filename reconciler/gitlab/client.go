package gitlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"unicode/utf8"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/schema"
)

// ErrUnreachable classifies failures to talk to GitLab at all (network,
// 5xx, timeouts), as opposed to GitLab answering "no".
var ErrUnreachable = errors.New("gitlab unreachable")

// Project is one student repo as GitLab lists it.
type Project struct {
	ID            int64
	Path          string // path_with_namespace, as GitLab spells it
	DefaultBranch string
	HTTPURL       string // http_url_to_repo
	WebURL        string
	Owner         string
	// Name is the path below the owner, lower case: "web" for
	// students/alice/web, "ml/train" for students/alice/ml/train. Other
	// students reach its image as shared/<Owner>/<Name>.
	Name string
}

// Repo is the project as the reconciler knows it: its key is the path in
// lower case, which is also its image path in the registry.
func (p Project) Repo() reconciler.Repo {
	return reconciler.Repo{Key: strings.ToLower(p.Path), Owner: p.Owner, URL: p.HTTPURL, Branch: p.DefaultBranch}
}

// Client is WhaleMountain's view of GitLab.
type Client struct {
	gl  *gl.Client
	cfg schema.GitLabSource
	log *slog.Logger

	mu     sync.Mutex
	selfID int64 // the token's account, once known
}

// New returns a client for the configured GitLab; extra client-go options
// come last (tests shorten the retry backoff with them).
func New(cfg schema.GitLabSource, token string, log *slog.Logger, extra ...gl.ClientOptionFunc) (*Client, error) {
	opts := append([]gl.ClientOptionFunc{gl.WithBaseURL(cfg.URL + "/api/v4"), gl.WithCustomRetryMax(2)}, extra...)
	c, err := gl.NewClient(token, opts...)
	if err != nil {
		return nil, fmt.Errorf("gitlab client: %w", err)
	}
	return &Client{gl: c, cfg: cfg, log: log}, nil
}

// classify wraps an error from client-go with ErrUnreachable when GitLab
// could not be reached or failed on its side.
func classify(resp *gl.Response, err error) error {
	if err == nil {
		return nil
	}
	if resp == nil || resp.StatusCode >= 500 {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}

func notFound(resp *gl.Response) bool { return resp != nil && resp.StatusCode == http.StatusNotFound }

// Skip is a project discovery left out, and why.
type Skip struct {
	ID   int64
	Path string
	// Reason says why, in one line, with the path.
	Reason string
	// Refused is set when GitLab did not confirm the owner the path names
	// (see confirmOwner): the project may be someone posing as them.
	Refused bool
}

// String is the reason the project was skipped.
func (s Skip) String() string { return s.Reason }

// Discover lists the projects with a wm.yaml under every configured
// group, subgroups included, archived ones left out, whose owner GitLab
// confirms. Projects without an owner or a wm.yaml, and those whose owner
// is refused, are returned in skipped with the reason. Any failure to
// list or to check is an error: a partial list must not be taken for the
// truth.
func (c *Client) Discover(ctx context.Context) (projects []Project, skipped []Skip, err error) {
	seen := map[int64]bool{}
	owners := map[string]ownerAccount{} // one user lookup per owner per listing
	for _, group := range c.cfg.Groups {
		opt := &gl.ListGroupProjectsOptions{
			ListOptions:      gl.ListOptions{PerPage: 100, Page: 1},
			IncludeSubGroups: gl.Ptr(true),
			Archived:         gl.Ptr(false),
			Simple:           gl.Ptr(true),
		}
		if c.cfg.Topic != "" {
			opt.Topic = gl.Ptr(c.cfg.Topic)
		}
		for {
			page, resp, err := c.gl.Groups.ListGroupProjects(group, opt, gl.WithContext(ctx))
			if err != nil {
				return nil, nil, fmt.Errorf("list projects of group %s: %w", group, classify(resp, err))
			}
			for _, p := range page {
				if seen[p.ID] || p.Archived || p.DefaultBranch == "" {
					continue
				}
				seen[p.ID] = true
				skip := func(refused bool, format string, a ...any) {
					skipped = append(skipped, Skip{ID: p.ID, Path: p.PathWithNamespace, Reason: fmt.Sprintf(format, a...), Refused: refused})
				}
				owner, name, err := OwnerAndName(group, p.PathWithNamespace, c.cfg.OwnerSegment)
				if err != nil {
					skip(false, "%s", err)
					continue
				}
				has, err := c.hasFile(ctx, p.ID, reconciler.WmFile, p.DefaultBranch)
				if err != nil {
					return nil, nil, err
				}
				if !has {
					skip(false, "%s: no %s on %s", p.PathWithNamespace, reconciler.WmFile, p.DefaultBranch)
					continue
				}
				why, err := c.confirmOwner(ctx, owners, p.ID, owner)
				if err != nil {
					return nil, nil, err
				}
				if why != "" {
					skip(true, "%s: not run as %s: %s", p.PathWithNamespace, owner, why)
					continue
				}
				projects = append(projects, Project{ID: p.ID, Path: p.PathWithNamespace, DefaultBranch: p.DefaultBranch,
					HTTPURL: p.HTTPURLToRepo, WebURL: p.WebURL, Owner: owner, Name: name})
			}
			if resp.NextPage == 0 {
				break
			}
			opt.Page = resp.NextPage
		}
	}
	return projects, skipped, nil
}

// Whereabouts is what GitLab says of a project WhaleMountain knows.
type Whereabouts int

const (
	// Here: the project is still at the path WhaleMountain knows.
	Here Whereabouts = iota
	// Gone: GitLab has no project of that id any more.
	Gone
	// Moved: the project lives at another path now (renamed or
	// transferred).
	Moved
)

// Locate asks GitLab, by id, whether p is still where WhaleMountain knows
// it. Only a 404 is Gone, and only a different path_with_namespace is
// Moved (a change of letter case is not: keys are lower case); any other
// answer, and no answer, is an error. It is what a system hook's news is
// checked against before anything is retired.
func (c *Client) Locate(ctx context.Context, p Project) (Whereabouts, string, error) {
	got, resp, err := c.gl.Projects.GetProject(p.ID, nil, gl.WithContext(ctx))
	switch {
	case err == nil && strings.EqualFold(got.PathWithNamespace, p.Path):
		return Here, got.PathWithNamespace, nil
	case err == nil && got.ID == p.ID && got.PathWithNamespace != "":
		return Moved, got.PathWithNamespace, nil
	case err == nil:
		return Here, "", fmt.Errorf("read project %d: GitLab answered another project (%d)", p.ID, got.ID)
	case notFound(resp):
		return Gone, "", nil
	}
	return Here, "", fmt.Errorf("read project %d: %w", p.ID, classify(resp, err))
}

// hasFile asks, with a HEAD request and no body, whether a file exists.
func (c *Client) hasFile(ctx context.Context, pid int64, path, ref string) (bool, error) {
	_, resp, err := c.gl.RepositoryFiles.GetFileMetaData(pid, path, &gl.GetFileMetaDataOptions{Ref: gl.Ptr(ref)}, gl.WithContext(ctx))
	switch {
	case err == nil:
		return true, nil
	case notFound(resp):
		return false, nil
	}
	return false, fmt.Errorf("look for %s in project %d: %w", path, pid, classify(resp, err))
}

// Status states WhaleMountain posts.
const (
	StatePending = gl.Pending
	StateRunning = gl.Running
	StateSuccess = gl.Success
	StateFailed  = gl.Failed
)

// maxDescription is GitLab's limit on a commit status description.
const maxDescription = 255

// SetStatus posts a commit status. The description, which may echo what a
// student wrote, is made one line of plain text within GitLab's limit
// (StatusText); a status GitLab refuses as an impossible transition (the
// same state twice) is not an error.
func (c *Client) SetStatus(ctx context.Context, project, sha, name string, state gl.BuildStateValue, description, targetURL string) error {
	opt := &gl.SetCommitStatusOptions{State: state, Name: gl.Ptr(name), Description: gl.Ptr(StatusText(description))}
	if targetURL != "" {
		opt.TargetURL = gl.Ptr(targetURL)
	}
	_, resp, err := c.gl.Commits.SetCommitStatus(project, sha, opt, gl.WithContext(ctx))
	if err != nil && resp != nil && resp.StatusCode == http.StatusBadRequest && strings.Contains(err.Error(), "transition") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("set status %s of %s@%s: %w", name, project, short(sha), classify(resp, err))
	}
	return nil
}

// MergeRequest is what a plan needs of an MR.
type MergeRequest struct {
	IID             int64
	SHA             string
	SourceProjectID int64
	SourceBranch    string
	State           string
}

// GetMergeRequest reads an MR's current head.
func (c *Client) GetMergeRequest(ctx context.Context, project string, iid int64) (MergeRequest, error) {
	mr, resp, err := c.gl.MergeRequests.GetMergeRequest(project, iid, nil, gl.WithContext(ctx))
	if err != nil {
		return MergeRequest{}, fmt.Errorf("read merge request %s!%d: %w", project, iid, classify(resp, err))
	}
	return MergeRequest{IID: mr.IID, SHA: mr.SHA, SourceProjectID: mr.SourceProjectID, SourceBranch: mr.SourceBranch, State: mr.State}, nil
}

// ProjectHTTPURL returns the clone URL of a project (an MR's source).
func (c *Client) ProjectHTTPURL(ctx context.Context, pid int64) (string, error) {
	p, resp, err := c.gl.Projects.GetProject(pid, nil, gl.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("read project %d: %w", pid, classify(resp, err))
	}
	return p.HTTPURLToRepo, nil
}

// UpsertNote makes the MR carry exactly one note of WhaleMountain's
// account starting with marker, with body: that note is edited in place,
// else one is created. A note by anyone else is never edited, even one
// that copies the marker.
func (c *Client) UpsertNote(ctx context.Context, project string, iid int64, marker, body string) error {
	me, err := c.self(ctx)
	if err != nil {
		return err
	}
	opt := &gl.ListMergeRequestNotesOptions{ListOptions: gl.ListOptions{PerPage: 100, Page: 1}}
	for {
		notes, resp, err := c.gl.Notes.ListMergeRequestNotes(project, iid, opt, gl.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("list notes of %s!%d: %w", project, iid, classify(resp, err))
		}
		for _, n := range notes {
			if n.Author.ID == me && strings.HasPrefix(n.Body, marker) {
				_, resp, err := c.gl.Notes.UpdateMergeRequestNote(project, iid, n.ID, &gl.UpdateMergeRequestNoteOptions{Body: gl.Ptr(body)}, gl.WithContext(ctx))
				if err != nil {
					return fmt.Errorf("update the plan note of %s!%d: %w", project, iid, classify(resp, err))
				}
				return nil
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opt.Page = resp.NextPage
	}
	_, resp, err := c.gl.Notes.CreateMergeRequestNote(project, iid, &gl.CreateMergeRequestNoteOptions{Body: gl.Ptr(body)}, gl.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("create the plan note of %s!%d: %w", project, iid, classify(resp, err))
	}
	return nil
}

// self returns the id of the token's account, asked once.
func (c *Client) self(ctx context.Context) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.selfID != 0 {
		return c.selfID, nil
	}
	u, resp, err := c.gl.Users.CurrentUser(gl.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("read the token's account: %w", classify(resp, err))
	}
	c.selfID = u.ID
	return c.selfID, nil
}

// cut shortens s to at most n bytes, at a character boundary, marking
// the cut with "...".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= 3
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

func short(sha string) string { return sha[:min(len(sha), 12)] }
