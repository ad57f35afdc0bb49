// Package gitsource is WhaleMountain's git backend: it tells which commit
// a student's branch points to, and reads files at that commit, over
// file:// or smart HTTP(S), with go-git and a cache of bare repositories.
//
// # Model
//
// A poll is cheap and a change is rare, so the two are separate calls:
//
//   - Head lists the remote's refs, the ls-remote of git (one request:
//     GET info/refs?service=git-upload-pack), and returns the branch's
//     commit sha. It touches no disk; an unchanged sha means there is
//     nothing to do.
//   - ReadFile and Files work on a commit sha, normally the one Head just
//     returned. Commits are immutable, so a commit the cache holds is read
//     from disk with no network at all; when the cache lacks it, one fetch
//     of the branch (two requests) brings it: only the head, depth 1, when
//     the sha is the head, else the branch's whole history, in which an
//     older commit may still be. A commit that is not on the branch any more
//     (force-pushed away) is ErrRevisionNotFound: Head again and read the
//     new head.
//
// # Cache
//
// The cache is one bare repository per URL under the cache folder, named
// by a hash of the URL without credentials plus its last path elements,
// for people ("3f2a9c0d1e7b5a64-alice-web.git"). It can be read with git
// itself, survives restarts, and may be deleted at any time: it is refilled
// on demand. Calls on one URL take turns on a per-URL lock, calls on
// different URLs run in parallel; the locks live in the Source, so a cache
// folder belongs to one Source at a time. A read that fails for a reason other than
// the outcomes below (a corrupt pack, a half-written folder) empties that
// repo's cache and tries once more. Every fetch adds one pack; at 64 packs
// the cache of that repo is emptied and starts again from one shallow
// fetch.
//
// # Errors
//
// Every error names the operation and the URL without credentials
// (ScrubURL), and is classified behind the API, so that callers branch with
// errors.Is on what happens next:
//
//   - ErrUnreachable: connection refused, DNS, timeout, HTTP 429 or 5xx;
//     transient, retry with backoff and keep what runs.
//   - ErrRepoNotFound, ErrAccessDenied: wrong URL or token; an
//     administrator must act.
//   - ErrBranchNotFound, ErrFileNotFound, ErrTooLarge: the student must push
//     something.
//   - ErrRevisionNotFound: the branch moved on and dropped the commit; read
//     the new head.
//
// Each sentinel is also of one of the kinds every backend shares (package
// fault), which errors.Is matches as well: ErrUnreachable is
// fault.Unreachable; ErrRepoNotFound, ErrBranchNotFound,
// ErrRevisionNotFound and ErrFileNotFound are fault.NotFound;
// ErrAccessDenied is fault.Refused; ErrTooLarge is fault.TooLarge.
//
// Credentials (WithBasicAuth, or user:password in the URL) go only into
// the Authorization header, never into a URL go-git could print.
//
// # Transports
//
// HTTP(S) uses one net/http client per Source that keeps connections alive
// between polls. file:// runs git-upload-pack, as git does, so git must be
// installed to read local repos; they may be bare or not. Other schemes
// (ssh, git) are refused.
package gitsource
