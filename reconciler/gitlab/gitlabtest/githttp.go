package gitlabtest

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strings"
)

// serveGit serves git's smart HTTP protocol for fetching, as GitLab does at
// /<path_with_namespace>.git: GET info/refs?service=git-upload-pack and
// POST git-upload-pack, behind HTTP basic auth whose password must be the
// token (any username). Everything else outside /api/v4, pushes included,
// is unimplemented.
func (g *GitLab) serveGit(w http.ResponseWriter, r *http.Request) {
	esc := r.URL.EscapedPath()
	var repoPath, rest string
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(esc, "/info/refs") &&
		r.URL.Query().Get("service") == "git-upload-pack":
		repoPath, rest = strings.TrimSuffix(esc, "/info/refs"), "/info/refs"
	case r.Method == http.MethodPost && strings.HasSuffix(esc, "/git-upload-pack"):
		repoPath, rest = strings.TrimSuffix(esc, "/git-upload-pack"), "/git-upload-pack"
	default:
		g.recordUnimplemented(r)
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	full, err := url.PathUnescape(strings.TrimPrefix(repoPath, "/"))
	if err != nil {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	dotGit := strings.HasSuffix(full, ".git")
	full = strings.TrimSuffix(full, ".git")

	g.mu.Lock()
	var p *Project
	moved := false
	if strings.Contains(full, "/") { // a project's path, never its id
		p = g.findProjectLocked(full, false)
		if p == nil {
			p, moved = g.findProjectLocked(full, true), true
		}
	}
	var current string
	if p != nil {
		current = p.fullPathLocked()
	}
	g.mu.Unlock()

	if _, pass, ok := r.BasicAuth(); !ok || subtle.ConstantTimeCompare([]byte(pass), []byte(g.token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
		http.Error(w, "HTTP Basic: Access denied. If a password was provided for Git authentication, "+
			"the password was incorrect or you're required to use a token instead of a password.",
			http.StatusUnauthorized)
		return
	}
	if p == nil {
		http.Error(w, "The project you were looking for could not be found or you don't have permission to view it.",
			http.StatusNotFound)
		return
	}
	// An old path, or a path without .git, is redirected on the first
	// request; git follows such a redirect and fetches from there.
	if (moved || !dotGit) && rest == "/info/refs" {
		to := &url.URL{Path: "/" + current + ".git" + rest, RawQuery: r.URL.RawQuery}
		http.Redirect(w, r, to.String(), http.StatusMovedPermanently)
		return
	}
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + itoa(p.id) + ".git" + rest
	r2.URL.RawPath = ""
	g.gitCGI.ServeHTTP(w, r2)
}
