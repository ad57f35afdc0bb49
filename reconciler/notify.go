package reconciler

import "context"

// Notifier tells a repo's student something where they look (an issue
// in their GitLab project), once per key: a second Notify with the same
// key does nothing.
type Notifier interface {
	Notify(ctx context.Context, repo Repo, key, title, body string) error
}

// Extender says whether an admin approved a repo running past its
// semester's end, and until when: a merge request that set wm.yaml's
// `expires:` and that an admin labelled as the server config's
// semester.extensionLabel. until is a day (YYYY-MM-DD), "" when there is
// no approved extension; mr is the merge request's IID.
type Extender interface {
	Extension(ctx context.Context, repo Repo) (until, approvedBy string, mr int, err error)
}
