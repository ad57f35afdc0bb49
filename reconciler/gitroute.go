package reconciler

import (
	"context"
	"strings"
)

// GitRoute sends the repos whose URL starts with Prefix to Source.
type GitRoute struct {
	Prefix string
	Source GitSource
}

// GitRouter is a GitSource that sends each repo to the source of the
// first route its URL matches, or to Default. It keeps credentials where
// they belong: the GitLab token goes only to GitLab's URLs.
type GitRouter struct {
	Routes  []GitRoute
	Default GitSource
}

var _ GitSource = GitRouter{}

func (g GitRouter) pick(url string) GitSource {
	for _, r := range g.Routes {
		if strings.HasPrefix(url, r.Prefix) {
			return r.Source
		}
	}
	return g.Default
}

// Head asks the source of url.
func (g GitRouter) Head(ctx context.Context, url, branch string) (string, error) {
	return g.pick(url).Head(ctx, url, branch)
}

// ReadFile asks the source of url.
func (g GitRouter) ReadFile(ctx context.Context, url, branch, rev, path string, maxSize int64) ([]byte, error) {
	return g.pick(url).ReadFile(ctx, url, branch, rev, path, maxSize)
}
