package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/file"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// DefaultTimeout bounds each network operation unless WithTimeout says
// otherwise.
const DefaultTimeout = 60 * time.Second

// Source reads students' repos with go-git (github.com/go-git/go-git/v5):
// one cheap ls-remote to learn a branch head, and a shallow fetch into a
// local cache only when a commit is needed that the cache lacks.
//
// A Source is safe for concurrent use, by any number of goroutines on any
// repos.
type Source struct {
	cacheDir string

	// Network.
	auth    *githttp.BasicAuth
	timeout time.Duration
	http    transport.Transport // keeps connections alive across polls

	// One lock per cache folder: calls on one repo take turns, calls on
	// different repos run in parallel.
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

// Option configures a Source.
type Option func(*Source)

// WithBasicAuth sends username and password with every HTTP(S) request (for
// GitLab, any username and a token as the password). The password never
// appears in an error or a log.
func WithBasicAuth(username, password string) Option {
	return func(s *Source) { s.auth = &githttp.BasicAuth{Username: username, Password: password} }
}

// WithTimeout bounds each network operation (one ls-remote, one fetch);
// the default is DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(s *Source) { s.timeout = d }
}

// New returns a Source that keeps its clones under cacheDir, created when
// first needed. A cacheDir left by an earlier process is used as it is.
func New(cacheDir string, opts ...Option) *Source {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64 // one GitLab serves every repo: keep the workers' connections
	s := &Source{
		cacheDir: cacheDir,
		timeout:  DefaultTimeout,
		http:     githttp.NewClient(&http.Client{Transport: t}),
		locks:    make(map[string]*sync.Mutex),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Head lists the remote's refs (one request: GET
// info/refs?service=git-upload-pack over HTTP, one git-upload-pack process
// for file://) and returns the commit sha of refs/heads/<branch>.
func (s *Source) Head(ctx context.Context, url, branch string) (string, error) {
	r, err := s.resolve(url)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	sess, ar, err := r.advertise(ctx)
	if err != nil {
		return "", fmt.Errorf("list refs of %s: %w", r.url, err)
	}
	defer sess.Close()
	head, err := branchHead(ar, branch)
	if err != nil {
		return "", fmt.Errorf("list refs of %s: %w", r.url, err)
	}
	return head.String(), nil
}

// ReadFile returns the content of path at commit rev of the repo (rev being
// a sha previously returned by Head), fetching shallowly (depth 1, only
// that branch) into the cache when the cache does not have rev yet. If rev
// is no longer the branch's head, the fetch takes the branch's whole
// history instead, and if rev is not in it either (it was force-pushed
// away) the error wraps ErrRevisionNotFound. A path that is not a regular
// file gives ErrFileNotFound; a file over maxSize bytes gives ErrTooLarge.
func (s *Source) ReadFile(ctx context.Context, url, branch, rev, path string, maxSize int64) ([]byte, error) {
	var data []byte
	err := s.atRev(ctx, url, branch, rev, func(c *object.Commit) (err error) {
		data, err = readFile(c, path, maxSize)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s at %s of %s: %w", path, short(rev), ScrubURL(url), err)
	}
	return data, nil
}

// Files lists the regular files at rev (executables included; folders,
// symlinks and submodules left out), as sorted slash-separated paths, so
// that callers can tell whether a Dockerfile exists. It fetches as ReadFile
// does.
func (s *Source) Files(ctx context.Context, url, branch, rev string) ([]string, error) {
	var names []string
	err := s.atRev(ctx, url, branch, rev, func(c *object.Commit) (err error) {
		names, err = listFiles(c)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list files at %s of %s: %w", short(rev), ScrubURL(url), err)
	}
	return names, nil
}

// remote is a repository URL made ready for go-git: the transport for its
// scheme and an endpoint without credentials.
type remote struct {
	url  string // scrubbed, for messages and the cache's name
	ep   *transport.Endpoint
	tr   transport.Transport
	auth transport.AuthMethod
}

// resolve parses url. Credentials in the URL are used as basic auth when no
// WithBasicAuth was given, and removed from the endpoint so that no go-git
// message can show them.
func (s *Source) resolve(url string) (*remote, error) {
	r := &remote{url: ScrubURL(url)}
	ep, err := transport.NewEndpoint(url)
	if err != nil { // the parser's message would quote the URL whole
		return nil, fmt.Errorf("parse %s: not a git URL", r.url)
	}
	switch ep.Protocol {
	case "http", "https":
		r.tr = s.http
		if s.auth != nil {
			r.auth = s.auth
		} else if ep.User != "" || ep.Password != "" {
			r.auth = &githttp.BasicAuth{Username: ep.User, Password: ep.Password}
		}
	case "file":
		r.tr = file.DefaultClient // runs git-upload-pack
	default:
		return nil, fmt.Errorf("parse %s: scheme %q not supported, use file, http or https", r.url, ep.Protocol)
	}
	ep.User, ep.Password = "", ""
	r.ep = ep
	return r, nil
}

// advertise opens an upload-pack session and reads the refs the remote
// advertises: the one request a poll costs. The caller closes the session.
func (r *remote) advertise(ctx context.Context) (transport.UploadPackSession, *packp.AdvRefs, error) {
	sess, err := r.tr.NewUploadPackSession(r.ep, r.auth)
	if err != nil {
		return nil, nil, classify(err)
	}
	ar, err := sess.AdvertisedReferencesContext(ctx)
	if err != nil {
		sess.Close()
		return nil, nil, classify(err)
	}
	return sess, ar, nil
}

// branchHead returns the commit refs/heads/<branch> points to.
func branchHead(ar *packp.AdvRefs, branch string) (plumbing.Hash, error) {
	refs, err := ar.AllReferences()
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("decode refs: %w", err)
	}
	ref, err := refs.Reference(plumbing.NewBranchReferenceName(branch))
	if err != nil || ref.Type() != plumbing.HashReference {
		return plumbing.ZeroHash, fmt.Errorf("%w: %s", ErrBranchNotFound, branch)
	}
	return ref.Hash(), nil
}

// readFile reads the regular file at name in c, up to maxSize bytes.
func readFile(c *object.Commit, name string, maxSize int64) ([]byte, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		return nil, ErrFileNotFound
	}
	entry, err := tree.FindEntry(name)
	if errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
		return nil, ErrFileNotFound
	}
	if err != nil {
		return nil, err
	}
	if !regular(entry.Mode) {
		return nil, fmt.Errorf("%w: a %s, not a regular file", ErrFileNotFound, kind(entry.Mode))
	}
	f, err := tree.TreeEntryFile(entry)
	if err != nil {
		return nil, err
	}
	if f.Size > maxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, f.Size, maxSize)
	}
	rd, err := f.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	return io.ReadAll(io.LimitReader(rd, f.Size))
}

// listFiles returns the sorted paths of the regular files in c.
func listFiles(c *object.Commit) ([]string, error) {
	tree, err := c.Tree()
	if err != nil {
		return nil, err
	}
	w := object.NewTreeWalker(tree, true, nil)
	defer w.Close()
	var names []string
	for {
		name, entry, err := w.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if regular(entry.Mode) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

func regular(m filemode.FileMode) bool {
	return m == filemode.Regular || m == filemode.Executable || m == filemode.Deprecated
}

func kind(m filemode.FileMode) string {
	switch m {
	case filemode.Dir:
		return "folder"
	case filemode.Symlink:
		return "symlink"
	case filemode.Submodule:
		return "submodule"
	}
	return m.String()
}

// short abbreviates a sha for messages, as git does.
func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}
