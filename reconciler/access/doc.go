// Package access lets students use what WhaleMountain made for them, and
// admins everything: a versioned JSON API on wm serve's public listener
// (Prefix, /api/v1/) to list their repos, containers, pods and SIFs, read
// and follow a container's logs, restart it, wake it when idle culling
// stopped it, copy files in and out of it (tar streams) and run commands
// in it with a terminal (a WebSocket, see the exec protocol of ChanStdin
// and the rest); the same for a pod's logs, exec and copies (tar run in
// the pod through exec, as kubectl cp does); and the identity SIF
// downloads are checked with (Server.Artifacts). Client is the same API
// from Go, which the wm CLI's client commands use.
//
// # Model
//
// Access is a driver, like the GitLab service and the webhook handler: it
// sits outside the reconciler and its backends and talks to them through
// the narrow interfaces declared here, Host (a Docker host:
// *docker.Engine or *docker.Fake), Cluster (Kubernetes: *Kube, which
// reads pods' logs, runs exec through the apiserver and issues students'
// credentials as TokenRequests of a ServiceAccount in their own namespace)
// and State (the state store), so that nothing it does goes through the
// pass. It changes nothing that a pass
// would change back: declared state stays in git.
//
// Every request speaks for an Identity, found from its token (an
// Authorization: Bearer header or GitLab's PRIVATE-TOKEN header, never the
// URL: a token in the query is refused with 400) by an Authenticator:
// GitLab (GET /api/v4/user with the student's personal or OAuth access
// token, cached for a configured TTL; admins are the members of a GitLab
// group, or listed), Tokens (the tokens file: "TOKEN OWNER" lines, "*" an
// admin) or a Chain of both. A token GitLab refuses is 401; when GitLab
// cannot be reached, identities it confirmed within the TTL still work and
// every other token is 503, never taken for a bad one.
//
// Who owns a resource is never what the request says. A container is
// named by its wm.yaml name (the caller's own) or its full name,
// "<owner>_<name>" (core.ObjectName: the name splits one way only). A
// full name of another owner's is 403 to anyone but an admin, decided from
// the name before anything is looked up, so that the answer never tells
// whether it exists; a name of one's own that no host has is 404. The
// container is then found among the ones each host lists as the owner's
// (their labels), and every Host method checks the labels again and
// refuses, as not found, a container that is not that owner's under the
// engine's instance. Repos, pods and SIFs are listed from the state store
// by owner (the repo's owner, from where the repo lives). A listing is the
// caller's own; an admin's may name an owner (?owner=bob) or everyone
// (?owner=*).
//
// # Bounds
//
// Each account makes at most Config.Rate requests a second on average
// (bursts of Config.Burst), and holds at most Config.MaxSessions exec
// sessions, followed log streams and copies at once (429 past either);
// each of them ends after Config.IdleTimeout without traffic, and a
// client that stops reading is cut off after Config.Stall (a minute). A
// copy moves at most Config.MaxCopyBytes either way; what is copied in is
// vetted on the way (regular files, folders and links with relative names
// only, no device nodes, no setuid or setgid bits, no extended
// attributes) before it reaches the container. An exec
// WebSocket is refused (403) to a browser page of another origin than the
// server's own or Config.AllowedOrigins. Every access and action is
// audited: a structured log line and an entry in the state store (who,
// what, when, result), which admins read at GET /api/v1/audit.
package access
