package gitsource

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"github.com/whalemountain/wm/reconciler/fault"
)

// The outcomes a caller branches on with errors.Is. Each says what happens
// next; none of them means the repository's desired state is empty. Each
// is also of one of the kinds of package fault, named on it, which
// errors.Is matches too (and fault.Of returns), so that a caller that
// knows only the kinds can judge a git error like any backend's.
var (
	// ErrUnreachable (fault.Unreachable): the remote could not be reached
	// or failed on its side (connection refused, DNS, timeout, HTTP 429 or
	// 5xx). Transient: retry with backoff and keep what runs.
	ErrUnreachable = fault.New(fault.Unreachable, "remote unreachable")
	// ErrRepoNotFound (fault.NotFound): there is no repository at the URL
	// (HTTP 404, or no repository at a local path). GitLab also answers 404
	// for a project the token cannot see.
	ErrRepoNotFound = fault.New(fault.NotFound, "repository not found")
	// ErrAccessDenied (fault.Refused): the remote refused the credentials
	// (HTTP 401 or 403), an administrator must fix the token.
	ErrAccessDenied = fault.New(fault.Refused, "access denied")
	// ErrBranchNotFound (fault.NotFound): the repository has no such
	// branch, or no commit at all. The student must push the branch.
	ErrBranchNotFound = fault.New(fault.NotFound, "branch not found")
	// ErrRevisionNotFound (fault.NotFound): the commit asked for is no
	// longer on the branch (it was force-pushed away). Call Head again and
	// read the new head.
	ErrRevisionNotFound = fault.New(fault.NotFound, "revision not found")
	// ErrFileNotFound (fault.NotFound): the path is not a regular file at
	// the revision (it is absent, a folder, a symlink or a submodule). The
	// student must add it.
	ErrFileNotFound = fault.New(fault.NotFound, "file not found")
	// ErrTooLarge (fault.TooLarge): the file is larger than the caller's
	// cap.
	ErrTooLarge = fault.New(fault.TooLarge, "file too large")
)

// outcomes are the sentinels above; an error that is none of them, nor a
// cancellation, may come from a corrupt cache.
var outcomes = []error{
	ErrUnreachable, ErrRepoNotFound, ErrAccessDenied, ErrBranchNotFound,
	ErrRevisionNotFound, ErrFileNotFound, ErrTooLarge,
	context.Canceled, context.DeadlineExceeded,
}

// classified is a transport error placed under one of the sentinels: Is
// matches both, and the message says the sentinel once, on one line (go-git
// appends the server's answer, which may be a whole page, or nothing).
type classified struct {
	kind, err error
}

func (e *classified) Error() string {
	msg := strings.TrimRight(strings.Join(strings.Fields(e.err.Error()), " "), ": ")
	if strings.HasPrefix(msg, e.kind.Error()) {
		return msg
	}
	return e.kind.Error() + ": " + msg
}

func (e *classified) Unwrap() []error { return []error{e.kind, e.err} }

// classify puts an error of go-git's transports under one of the
// sentinels, or returns it as it is when none fits.
func classify(err error) error {
	var kind error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, transport.ErrRepositoryNotFound):
		kind = ErrRepoNotFound
	case errors.Is(err, transport.ErrAuthenticationRequired),
		errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrInvalidAuthMethod):
		kind = ErrAccessDenied
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		kind = ErrBranchNotFound
	case unreachable(err):
		kind = ErrUnreachable
	default:
		return err
	}
	return &classified{kind: kind, err: err}
}

// unreachable tells whether err means the remote could not be reached or
// failed on its side, something that may well succeed later.
func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	if _, ok := errors.AsType[*fs.PathError](err); ok {
		// A file of the local cache could not be written (a full or
		// read-only disk): the remote is not to blame. (Its errno is a
		// net.Error too, so this comes first.)
		return false
	}
	if _, ok := errors.AsType[net.Error](err); ok { // refused, reset, DNS, timeouts
		return true
	}
	// go-git hides the HTTP status behind an UnexpectedError, which does
	// not unwrap.
	if ue, ok := errors.AsType[*plumbing.UnexpectedError](err); ok {
		if he, ok := errors.AsType[*githttp.Err](ue.Err); ok {
			code := he.StatusCode()
			return code >= 500 || code == http.StatusTooManyRequests
		}
	}
	return false
}

// cacheSuspect tells whether a failure of reading through the cache may
// come from the cache itself (a corrupt pack, a broken folder), rather than
// being one of the answers of the remote or of the repository's content.
func cacheSuspect(err error) bool {
	if err == nil {
		return false
	}
	for _, o := range outcomes {
		if errors.Is(err, o) {
			return false
		}
	}
	return true
}
