package access

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	gitlab "gitlab.com/gitlab-org/api/client-go"
	"golang.org/x/oauth2"
)

// Identity is who a request speaks for.
type Identity struct {
	// Account is the student's account: their GitLab username, or the
	// owner a tokens-file line names. It is "" for an admin token of the
	// tokens file ("*"), which speaks for no student.
	Account string `json:"account"`
	// Admin may read and act on every student's resources.
	Admin bool `json:"admin"`
	// Via says what vouched for the token: "gitlab" or "tokens-file".
	Via string `json:"via"`
}

// who is how an identity appears in the audit log.
func (id Identity) who() string {
	if id.Account == "" && id.Admin {
		return "*"
	}
	return id.Account
}

// The ways authentication fails; every Authenticator's errors match one.
var (
	// ErrUnauthenticated: the token is missing, unknown, revoked or
	// expired, or its account is blocked. Answered 401.
	ErrUnauthenticated = errors.New("no valid token")
	// ErrUnavailable: what vouches for tokens (GitLab) cannot be reached,
	// and no identity it confirmed for this token is still fresh.
	// Answered 503.
	ErrUnavailable = errors.New("GitLab cannot be reached to check the token")
)

// Authenticator says who a token belongs to.
type Authenticator interface {
	// Authenticate returns the token's identity, or an error matching
	// ErrUnauthenticated or ErrUnavailable.
	Authenticate(ctx context.Context, token string) (Identity, error)
}

// Tokens is the tokens file's authenticator: fixed tokens, each speaking
// for one account, or for an admin ("*").
type Tokens struct {
	tokens [][2]string // token, owner
}

// NewTokens makes an authenticator of a token → owner map (the owner "*"
// is an admin).
func NewTokens(m map[string]string) *Tokens {
	t := &Tokens{}
	for tok, owner := range m {
		t.tokens = append(t.tokens, [2]string{tok, owner})
	}
	return t
}

// Authenticate compares token with every known one in constant time.
func (t *Tokens) Authenticate(_ context.Context, token string) (Identity, error) {
	var found *[2]string
	for i := range t.tokens {
		if subtle.ConstantTimeCompare([]byte(token), []byte(t.tokens[i][0])) == 1 {
			found = &t.tokens[i]
		}
	}
	switch {
	case found == nil || token == "":
		return Identity{}, ErrUnauthenticated
	case found[1] == "*":
		return Identity{Admin: true, Via: "tokens-file"}, nil
	default:
		return Identity{Account: found[1], Via: "tokens-file"}, nil
	}
}

// GitLabConfig configures the GitLab authenticator.
type GitLabConfig struct {
	// URL is GitLab's base URL.
	URL string
	// ServiceToken is WhaleMountain's own token (sources.gitlab's), used
	// to read the admin group's members only.
	ServiceToken string
	// AdminGroup, when set, is the full path of the group whose members
	// are admins; Admins are usernames that are admins besides.
	AdminGroup string
	Admins     []string
	// TTL is how long a confirmed identity is believed without asking
	// GitLab again; it is also how long it outlives GitLab's outage.
	TTL time.Duration
	// HTTPClient, when set, is the client GitLab is asked with; the
	// default gives up after 10 s.
	HTTPClient *http.Client
	// Now, when set, is the clock (tests).
	Now func() time.Time
}

// maxCached bounds the identities GitLab keeps in memory.
const maxCached = 10_000

// GitLab authenticates personal access tokens and OAuth access tokens
// with GitLab's GET /api/v4/user, and caches what it answers for TTL.
type GitLab struct {
	cfg GitLabConfig

	mu    sync.Mutex
	cache map[[32]byte]cached // by the token's SHA-256: tokens are not kept
}

type cached struct {
	id      Identity
	expires time.Time
}

// NewGitLab returns a GitLab authenticator.
func NewGitLab(cfg GitLabConfig) *GitLab {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	return &GitLab{cfg: cfg, cache: map[[32]byte]cached{}}
}

// Authenticate returns the identity cached for token while it is fresh;
// otherwise it asks GitLab: 401 or 403 (a revoked, expired or blocked
// token) is ErrUnauthenticated and forgets the token, anything else that
// is not an answer is ErrUnavailable.
func (g *GitLab) Authenticate(ctx context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, ErrUnauthenticated
	}
	key := sha256.Sum256([]byte(token))
	now := g.cfg.Now()
	g.mu.Lock()
	c, ok := g.cache[key]
	g.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.id, nil
	}
	id, err := g.ask(ctx, token)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case errors.Is(err, ErrUnauthenticated):
		delete(g.cache, key)
		return Identity{}, err
	case err != nil:
		return Identity{}, err
	}
	if len(g.cache) >= maxCached {
		for k, v := range g.cache {
			if !now.Before(v.expires) {
				delete(g.cache, k)
			}
		}
		for k := range g.cache {
			if len(g.cache) < maxCached {
				break
			}
			delete(g.cache, k)
		}
	}
	g.cache[key] = cached{id: id, expires: now.Add(g.cfg.TTL)}
	return id, nil
}

// ask asks GitLab who token is, and whether they are an admin.
func (g *GitLab) ask(ctx context.Context, token string) (Identity, error) {
	opts := []gitlab.ClientOptionFunc{gitlab.WithBaseURL(g.cfg.URL), gitlab.WithHTTPClient(g.cfg.HTTPClient), gitlab.WithoutRetries()}
	// Authorization: Bearer, which GitLab accepts for personal, project,
	// group and OAuth access tokens alike.
	c, err := gitlab.NewAuthSourceClient(gitlab.OAuthTokenSource{TokenSource: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})}, opts...)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	u, resp, err := c.Users.CurrentUser(gitlab.WithContext(ctx))
	if err != nil {
		if resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) {
			return Identity{}, ErrUnauthenticated
		}
		return Identity{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if u.State != "" && u.State != "active" {
		return Identity{}, fmt.Errorf("account %s is %s: %w", u.Username, u.State, ErrUnauthenticated)
	}
	id := Identity{Account: u.Username, Via: "gitlab", Admin: slices.Contains(g.cfg.Admins, u.Username)}
	if id.Admin || g.cfg.AdminGroup == "" {
		return id, nil
	}
	svc, err := gitlab.NewClient(g.cfg.ServiceToken, opts...)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	m, resp, err := svc.GroupMembers.GetInheritedGroupMember(g.cfg.AdminGroup, u.ID, gitlab.WithContext(ctx))
	switch {
	case err == nil:
		id.Admin = m.State == "" || m.State == "active"
	case resp != nil && resp.StatusCode == http.StatusNotFound:
	default:
		return Identity{}, fmt.Errorf("%w: admin group %s: %w", ErrUnavailable, g.cfg.AdminGroup, err)
	}
	return id, nil
}

// Chain tries each authenticator in turn: the first that knows the token
// answers; when none does, the first ErrUnavailable (if any) is the
// answer, so that an outage is not taken for a bad token.
type Chain []Authenticator

// Authenticate asks each authenticator in turn.
func (c Chain) Authenticate(ctx context.Context, token string) (Identity, error) {
	var unavailable error
	for _, a := range c {
		id, err := a.Authenticate(ctx, token)
		switch {
		case err == nil:
			return id, nil
		case errors.Is(err, ErrUnavailable) && unavailable == nil:
			unavailable = err
		}
	}
	if unavailable != nil {
		return Identity{}, unavailable
	}
	return Identity{}, ErrUnauthenticated
}

// tokenOf reads a request's token from Authorization: Bearer or
// PRIVATE-TOKEN; inURL says whether the URL carries one, which is refused
// whatever it holds (it would land in logs).
func tokenOf(r *http.Request) (token string, inURL bool) {
	q := r.URL.Query()
	for _, k := range []string{"private_token", "access_token", "token"} {
		if q.Has(k) {
			return "", true
		}
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t), false
	}
	return strings.TrimSpace(r.Header.Get("PRIVATE-TOKEN")), false
}
