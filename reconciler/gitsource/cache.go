package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/storage"
)

// maxPacks is how many packfiles a cache may gather, one a fetch, before
// it is emptied and refetched: reading gets slower with each pack, and a
// refetch of a student repo costs one shallow clone.
const maxPacks = 64

// atRev runs fn on commit rev of url, fetching it into the cache first if
// the cache lacks it. A failure that may come from a broken cache (any
// failure but the package's outcomes) empties the cache and tries once more.
func (s *Source) atRev(ctx context.Context, url, branch, rev string, fn func(*object.Commit) error) error {
	r, err := s.resolve(url)
	if err != nil {
		return err
	}
	if !plumbing.IsHash(rev) {
		return fmt.Errorf("%q is not a commit sha", rev)
	}
	dir := filepath.Join(s.cacheDir, cacheName(r.url))
	mu := s.lock(dir)
	mu.Lock()
	defer mu.Unlock()

	h := plumbing.NewHash(rev)
	err = s.visit(ctx, r, dir, branch, h, fn)
	if cacheSuspect(err) {
		if rmErr := os.RemoveAll(dir); rmErr != nil {
			return errors.Join(err, fmt.Errorf("empty cache: %w", rmErr))
		}
		err = s.visit(ctx, r, dir, branch, h, fn)
	}
	return err
}

// lock returns the mutex of one cache folder.
func (s *Source) lock(dir string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	mu, ok := s.locks[dir]
	if !ok {
		mu = new(sync.Mutex)
		s.locks[dir] = mu
	}
	return mu
}

// visit opens the cache at dir, fetches h from the remote if the cache
// lacks it, and runs fn on it.
func (s *Source) visit(ctx context.Context, r *remote, dir, branch string, h plumbing.Hash, fn func(*object.Commit) error) error {
	repo, err := openCache(dir)
	if err != nil {
		return err
	}
	c, err := repo.CommitObject(h)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		if packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack")); len(packs) >= maxPacks {
			if repo, err = emptyCache(dir); err != nil {
				return err
			}
		}
		if err := s.fetch(ctx, r, repo.Storer, branch, h); err != nil {
			return fmt.Errorf("fetch %s: %w", branch, err)
		}
		c, err = repo.CommitObject(h)
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return fmt.Errorf("%w: %s is not on branch %s", ErrRevisionNotFound, short(h.String()), branch)
		}
	}
	if err != nil {
		return fmt.Errorf("read commit: %w", err)
	}
	return fn(c)
}

// openCache opens the bare repository at dir, creating it if missing.
func openCache(dir string) (*git.Repository, error) {
	repo, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		return emptyCache(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open cache: %w", err)
	}
	return repo, nil
}

// emptyCache replaces whatever is at dir with an empty bare repository.
func emptyCache(dir string) (*git.Repository, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("empty cache: %w", err)
	}
	repo, err := git.PlainInit(dir, true)
	if err != nil {
		return nil, fmt.Errorf("create cache: %w", err)
	}
	return repo, nil
}

// fetch brings rev of branch into st: the branch's head alone (depth 1)
// when rev is the head, as it is right after Head, else the branch's whole
// history, in which an older rev may still be. It sends no haves, so the
// remote sends every object of what is asked: student repos are small and
// a fetch happens only when the head moved, and there is no negotiation to
// get wrong with a shallow cache.
func (s *Source) fetch(ctx context.Context, r *remote, st storage.Storer, branch string, rev plumbing.Hash) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	sess, ar, err := r.advertise(ctx)
	if err != nil {
		return err
	}
	defer sess.Close()
	head, err := branchHead(ar, branch)
	if err != nil {
		return err
	}

	req := packp.NewUploadPackRequestFromCapabilities(ar.Capabilities)
	req.Wants = []plumbing.Hash{head}
	if head == rev {
		req.Depth = packp.DepthCommits(1)
		if err := req.Capabilities.Set(capability.Shallow); err != nil {
			return err
		}
	}
	if ar.Capabilities.Supports(capability.NoProgress) {
		if err := req.Capabilities.Set(capability.NoProgress); err != nil {
			return err
		}
	}
	resp, err := sess.UploadPack(ctx, req)
	if err != nil {
		return classify(err)
	}
	defer resp.Close()
	if err := packfile.UpdateObjectStorage(st, demux(req.Capabilities, resp)); err != nil {
		return fmt.Errorf("store pack: %w", classify(err))
	}
	if err := updateShallow(st, resp.Shallows); err != nil {
		return fmt.Errorf("record shallow commits: %w", err)
	}
	ref := plumbing.NewHashReference(plumbing.NewBranchReferenceName(branch), head)
	if err := st.SetReference(ref); err != nil {
		return fmt.Errorf("record branch head: %w", err)
	}
	return nil
}

// demux strips the side-band framing from a pack, if the request asked for
// it.
func demux(caps *capability.List, r io.Reader) io.Reader {
	switch {
	case caps.Supports(capability.Sideband64k):
		return sideband.NewDemuxer(sideband.Sideband64k, r)
	case caps.Supports(capability.Sideband):
		return sideband.NewDemuxer(sideband.Sideband, r)
	}
	return r
}

// updateShallow keeps the cache's shallow file true, listing the commits
// whose parents were not fetched, so that git itself can read the cache:
// it adds the ones a shallow fetch reports and drops the ones a deep fetch
// completed.
func updateShallow(st storage.Storer, added []plumbing.Hash) error {
	old, err := st.Shallow()
	if err != nil {
		return err
	}
	var keep []plumbing.Hash
	for _, h := range append(old, added...) {
		if !slices.Contains(keep, h) && lacksParent(st, h) {
			keep = append(keep, h)
		}
	}
	if slices.Equal(keep, old) {
		return nil
	}
	return st.SetShallow(keep)
}

// lacksParent tells whether the cache lacks a parent of commit h.
func lacksParent(st storage.Storer, h plumbing.Hash) bool {
	c, err := object.GetCommit(st, h)
	if err != nil {
		return true
	}
	for _, p := range c.ParentHashes {
		if st.HasEncodedObject(p) != nil {
			return true
		}
	}
	return false
}
