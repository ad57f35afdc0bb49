// Package registry asks container registries about images without pulling
// them, with go-containerregistry: whether the tag CI pushes for a commit
// exists yet, and what digest it has. Image gating rests on it: a commit
// is rolled out only once the registry has its image.
package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Errors callers branch on.
var (
	ErrUnauthorized = errors.New("registry refused the credentials")
	ErrUnreachable  = errors.New("registry unreachable")
)

// Client asks one configured registry (and, anonymously, any other).
type Client struct {
	host     string
	insecure bool
	auth     authn.Authenticator
}

// New returns a client whose credentials (may be empty) go to host only;
// insecure talks plain HTTP to it.
func New(host string, insecure bool, username, password string) *Client {
	c := &Client{host: host, insecure: insecure, auth: authn.Anonymous}
	if username != "" {
		c.auth = &authn.Basic{Username: username, Password: password}
	}
	return c
}

func (c *Client) options(ctx context.Context, ref string) (name.Reference, []remote.Option, error) {
	var nopts []name.Option
	own := c.host != "" && strings.HasPrefix(ref, c.host+"/")
	if own && c.insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("parse image reference %s: %w", ref, err)
	}
	auth := authn.Anonymous
	if own {
		auth = c.auth
	}
	return r, []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}, nil
}

// Digest returns the digest of ref's manifest, and false when the registry
// says it has no such image (or tag) yet.
func (c *Client) Digest(ctx context.Context, ref string) (string, bool, error) {
	r, opts, err := c.options(ctx, ref)
	if err != nil {
		return "", false, err
	}
	desc, err := remote.Head(r, opts...)
	if err == nil {
		return desc.Digest.String(), true, nil
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case te.StatusCode == http.StatusNotFound:
			return "", false, nil
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return "", false, fmt.Errorf("look up %s: %w: %w", ref, ErrUnauthorized, err)
		case te.StatusCode >= 500:
			return "", false, fmt.Errorf("look up %s: %w: %w", ref, ErrUnreachable, err)
		}
		for _, d := range te.Errors {
			if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode {
				return "", false, nil
			}
		}
		return "", false, fmt.Errorf("look up %s: %w", ref, err)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return "", false, fmt.Errorf("look up %s: %w: %w", ref, ErrUnreachable, err)
	}
	return "", false, fmt.Errorf("look up %s: %w: %w", ref, ErrUnreachable, err)
}

// Exists reports whether the registry has ref.
func (c *Client) Exists(ctx context.Context, ref string) (bool, error) {
	_, ok, err := c.Digest(ctx, ref)
	return ok, err
}

// Created returns when the image ref was built, from its config.
func (c *Client) Created(ctx context.Context, ref string) (time.Time, error) {
	r, opts, err := c.options(ctx, ref)
	if err != nil {
		return time.Time{}, err
	}
	img, err := remote.Image(r, opts...)
	if err != nil {
		return time.Time{}, fmt.Errorf("read %s: %w", ref, err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return time.Time{}, fmt.Errorf("read the config of %s: %w", ref, err)
	}
	return cfg.Created.Time, nil
}
