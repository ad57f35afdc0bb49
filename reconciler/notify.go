package reconciler

import "context"

// Notifier tells a repo's student something where they look (an issue
// in their GitLab project), once per key: a second Notify with the same
// key does nothing.
type Notifier interface {
	Notify(ctx context.Context, repo Repo, key, title, body string) error
}
