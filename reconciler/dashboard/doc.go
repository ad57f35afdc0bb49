// Package dashboard is WhaleMountain's web dashboard: server-rendered
// pages (html/template, embedded, no front-end build) on wm serve's public
// listener, where students log in with GitLab and see their repos (the
// revision applied, linked to its commit in GitLab, and the Ready
// condition with its reason), containers (state, health, GPUs, addresses
// as links), pods, SIFs (downloads), their quota use and their repos'
// last passes; follow a container's logs (server-sent events), open a
// shell in it (xterm.js, vendored in static/ by ci/xterm-bundle, over the
// access API's exec WebSocket, with a TTY of the terminal's size), upload
// and download files, restart and wake it. Admins also see every student
// and their use, GPU-hours per student a day (an SVG chart drawn on the
// server, and its table), each host's GPUs and whom each serves, held
// prunes, the repos that are not ready, the webhook's last deliveries and
// the audit log.
//
// # Model
//
// The dashboard decides nothing about who may see or do what. A login is
// GitLab's OAuth 2 authorization code flow with PKCE (S256) and a state,
// both kept until the callback in a sealed cookie; the access token it
// gives is kept in the session cookie, sealed (AES-256-GCM with a key
// derived by HKDF from the session secret, the cookie's name
// authenticated with it), HttpOnly, SameSite=Lax and Secure over https.
// Every page and action then calls the access API (package access) in the
// process with that token in the Authorization header: the API asks
// GitLab whose it is, checks ownership from the repos, counts the
// account's sessions and rate, and audits, exactly as for the CLI. The
// repo page at /repos/<path> (the target of commit statuses) shows a repo
// only if the API lists it to the caller: to a student, another's repo
// is 403 whether it exists or not.
//
// Every form is a POST carrying the session's CSRF token (and, when the
// browser sends one, a same-origin Origin); without it, 403. No token
// ever appears in a URL: the browser holds only the sealed cookies, and
// the exec WebSocket and the log stream are same-origin requests that
// carry them (the API checks the WebSocket's Origin too).
package dashboard
