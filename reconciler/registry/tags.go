package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Tags lists the tags of repository (host/path, no tag), sorted; none when
// the registry has no such repository.
func (c *Client) Tags(ctx context.Context, repository string) ([]string, error) {
	r, opts, err := c.options(ctx, repository+":latest")
	if err != nil {
		return nil, err
	}
	tags, err := remote.List(r.Context(), opts...)
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusNotFound || hasCode(te, transport.NameUnknownErrorCode)) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list the tags of %s: %w: %w", repository, ErrUnreachable, err)
	}
	slices.Sort(tags)
	return tags, nil
}

func hasCode(te *transport.Error, code transport.ErrorCode) bool {
	for _, d := range te.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// DeleteTags deletes the images the tags drop of repository point to,
// except an image a tag of keep also points to: a registry deletes
// manifests, not tags, so deleting one would take every tag of it along.
// It returns the tags whose images it deleted.
func (c *Client) DeleteTags(ctx context.Context, repository string, drop, keep []string) ([]string, error) {
	kept := map[string]bool{}
	for _, tag := range keep {
		d, ok, err := c.Digest(ctx, repository+":"+tag)
		if err != nil {
			return nil, err
		}
		if ok {
			kept[d] = true
		}
	}
	var deleted []string
	for _, tag := range drop {
		ref := repository + ":" + tag
		d, ok, err := c.Digest(ctx, ref)
		if err != nil {
			return deleted, err
		}
		if !ok || kept[d] {
			continue
		}
		r, opts, err := c.options(ctx, ref)
		if err != nil {
			return deleted, err
		}
		if err := remote.Delete(r.Context().Digest(d), opts...); err != nil {
			return deleted, fmt.Errorf("delete %s: %w", ref, err)
		}
		deleted = append(deleted, tag)
	}
	return deleted, nil
}
