package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/fault"
)

// NotifyLabel labels every issue Notify posts. With the hidden marker of
// the notice's key in the description, it is how the issue is found again.
const NotifyLabel = "whalemountain"

// GitLab's limits on an issue (Issuable::TITLE_LENGTH_MAX and
// DESCRIPTION_LENGTH_MAX), in characters, as Rails counts them.
const (
	maxIssueTitle       = 255
	maxIssueDescription = 1 << 20
)

var _ reconciler.Notifier = (*Service)(nil)

// noticeKeyPattern is what a notice key may be: it is written into an HTML
// comment, which "--" or ">" could end early and make visible.
var noticeKeyPattern = regexp.MustCompile(`^[A-Za-z0-9._:/]+(-[A-Za-z0-9._:/]+)*$`)

// maxNoticeKey bounds a key, which every description holds once.
const maxNoticeKey = 200

// noticeMarker is the hidden line that ties an issue to its key; GitLab
// renders it as nothing.
func noticeMarker(key string) string { return "<!-- whalemountain:" + key + " -->" }

// Notify tells the student of repo something in an issue of the repo's
// GitLab project, once per key: labelled NotifyLabel, titled title (one
// line, cut to GitLab's 255 characters) and described by body (Markdown,
// posted as it is, so it must hold nothing a student wrote unless made
// inert as in note.go; cut so that the description stays within GitLab's
// 1,048,576 characters) under a hidden marker of key. When an issue with
// that label and marker is already there, open or closed (a student who
// closed it has read it), nothing is posted; two Notify calls for the
// same project and key in this process take turns, so the second finds
// the first's issue.
//
// A key is letters, digits and ". _ : / -", at most 200 bytes, with no
// "--" and no "-" at either end. The project is the one the last listing
// of GitLab found for the repo; a repo it did not find (not listed yet, or
// refused) is an error of kind fault.NotFound. GitLab is asked within the
// job deadline (WithJobTimeout); an error names the project and is of
// kind fault.Unreachable when GitLab could not be reached, failed on its
// side or did not answer in time, and fault.Refused when it said no (the
// project's issues disabled, or the project archived): the caller tries
// again later either way.
func (s *Service) Notify(ctx context.Context, repo reconciler.Repo, key, title, body string) error {
	if len(key) > maxNoticeKey || !noticeKeyPattern.MatchString(key) {
		return fault.Wrap(fault.Invalid, fmt.Errorf("notify %s: %q is not a notice key (letters, digits and . _ : / -, with no -- and no - at either end)", repo.Key, key))
	}
	title = cutChars(oneLine(title), maxIssueTitle)
	if title == "" {
		return fault.Wrap(fault.Invalid, fmt.Errorf("notify %s: the title is blank", repo.Key))
	}
	path, ok := s.path(repo.Key)
	if !ok {
		return fault.Wrap(fault.NotFound, fmt.Errorf("notify %s: GitLab's last listing has no such project of WhaleMountain's (not listed yet, or refused)", repo.Key))
	}
	unlock, err := lockNotice(ctx, notice{s, strings.ToLower(path), key})
	if err != nil {
		return fmt.Errorf("notify %s: %w", path, err)
	}
	defer unlock()

	jctx, cancel := s.withDeadline(ctx)
	defer cancel()
	marker := noticeMarker(key)
	room := maxIssueDescription - utf8.RuneCountInString(marker) - 2
	url, created, err := s.client.PostIssueOnce(jctx, path, marker, title, marker+"\n\n"+cutChars(body, room), NotifyLabel)
	if err != nil {
		if fault.Of(err) == nil && ctx.Err() == nil && jctx.Err() != nil {
			// The job deadline passed: GitLab hung, not the caller.
			err = fault.Wrap(fault.Unreachable, fmt.Errorf("GitLab did not answer within %v: %w", s.jobTimeout, err))
		}
		return fmt.Errorf("notify %s: %w", path, err)
	}
	if created {
		s.log.Info("notice posted as an issue", "repo", repo.Key, "key", key, "issue", url)
	} else {
		s.log.Debug("notice already posted; not posted again", "repo", repo.Key, "key", key, "issue", url)
	}
	return nil
}

// PostIssueOnce creates an issue in project labelled label, unless one
// with that label whose description holds marker is there already, open or
// closed. It returns the issue's web URL and whether it was created now.
// Errors are classified as fault kinds (see notifyFault).
func (c *Client) PostIssueOnce(ctx context.Context, project, marker, title, description, label string) (string, bool, error) {
	opt := &gl.ListProjectIssuesOptions{
		ListOptions: gl.ListOptions{PerPage: 100, Page: 1},
		State:       gl.Ptr("all"),
		Labels:      &gl.LabelOptions{label},
	}
	for {
		page, resp, err := c.gl.Issues.ListProjectIssues(project, opt, gl.WithContext(ctx))
		if err != nil {
			return "", false, fmt.Errorf("read the issues of %s: %w", project, notifyFault(ctx, resp, err))
		}
		for _, is := range page {
			if strings.Contains(is.Description, marker) {
				return is.WebURL, false, nil
			}
		}
		if resp.NextPage == 0 {
			break
		}
		opt.Page = resp.NextPage
	}
	is, resp, err := c.gl.Issues.CreateIssue(project, &gl.CreateIssueOptions{
		Title: gl.Ptr(title), Description: gl.Ptr(description), Labels: &gl.LabelOptions{label},
	}, gl.WithContext(ctx))
	if err != nil {
		err = notifyFault(ctx, resp, err)
		if errors.Is(err, fault.Refused) {
			return "", false, fmt.Errorf("create an issue in %s (are the project's issues disabled, or is it archived?): %w", project, err)
		}
		return "", false, fmt.Errorf("create an issue in %s: %w", project, err)
	}
	return is.WebURL, true, nil
}

// notifyFault classifies an error of client-go as classify does, and gives
// it its fault kind: Unreachable when GitLab could not be reached, failed
// on its side or is rate limiting, Refused when it said no, NotFound for a
// 404 and Invalid for a request it would not take. An error of ctx (its
// deadline or its cancellation) gets no kind: it is the caller's.
func notifyFault(ctx context.Context, resp *gl.Response, err error) error {
	err = classify(resp, err)
	switch {
	case resp == nil && ctx.Err() != nil:
		return err
	case resp == nil || resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return fault.Wrap(fault.Unreachable, err)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fault.Wrap(fault.Refused, err)
	case resp.StatusCode == http.StatusNotFound:
		return fault.Wrap(fault.NotFound, err)
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnprocessableEntity:
		return fault.Wrap(fault.Invalid, err)
	}
	return err
}

// cutChars shortens s to at most n characters, marking the cut with "…".
func cutChars(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i, kept := 0, 0
	for kept < n-1 {
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		kept++
	}
	return s[:i] + "…"
}

// notice names one notice of one project, for lockNotice.
type notice struct {
	s       *Service
	project string // path_with_namespace, lower case
	key     string
}

// notices holds, for each notice being posted, a channel closed when it is
// done.
var notices = struct {
	sync.Mutex
	busy map[notice]chan struct{}
}{busy: map[notice]chan struct{}{}}

// lockNotice waits until no other Notify of the same notice is under way,
// or ctx ends, and returns the function that lets the next one go.
func lockNotice(ctx context.Context, n notice) (func(), error) {
	for {
		notices.Lock()
		done, busy := notices.busy[n]
		if !busy {
			done = make(chan struct{})
			notices.busy[n] = done
			notices.Unlock()
			return func() {
				notices.Lock()
				delete(notices.busy, n)
				notices.Unlock()
				close(done)
			}, nil
		}
		notices.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}
