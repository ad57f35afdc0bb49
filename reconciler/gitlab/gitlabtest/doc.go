// Package gitlabtest is the project's one GitLab double: an HTTP server on
// 127.0.0.1 that answers the part of GitLab's REST API (v4) and of git's
// smart HTTP protocol that WhaleMountain uses, with the request and
// response shapes of GitLab itself, so that tests drive it through the
// real client library, gitlab.com/gitlab-org/api/client-go, and real git.
//
//	g := gitlabtest.New(t, "glpat-test")
//	p := g.AddProject(t, "students/2026/alice/web", gitlabtest.Topics("wm"))
//	sha := p.Commit(t, "main", map[string]string{"wm.yaml": "..."}, "first")
//	c := g.Client(t) // or gitlab.NewClient(token, gitlab.WithBaseURL(g.URL()))
//	... code under test ...
//	if got := g.UnimplementedRequests(); len(got) > 0 { t.Fatal(got) }
//
// # Model
//
// Groups nest ("students/2026"); every namespace is a group (user
// namespaces are not modelled). A project lives in a group and has a real
// bare repository on disk, stored by project id, so Rename and Transfer
// change its path and keep its id and history. The old path keeps finding
// the project, as GitLab's redirect routes do: through the API it answers
// for the project under its new path, and git's first request is
// redirected (301) to the new URL. A group or project created at that path
// takes it over. Delete removes a project at once.
//
// One token is valid. Its owner, "wm-bot" (BotUsername), is an owner of
// every group: it sees every project and authors the statuses and notes
// the code under test posts. Other accounts exist once a test names them
// (AddUser, AddMember, AddNote, CreatedBy); AddMember gives one a direct
// membership of a group or a project with an access level (Guest 10 ...
// Owner 50), inherited by everything below a group, and CreatedBy sets a
// project's creator_id (the bot's otherwise). As in GitLab, creating a
// project or a group makes nobody a member of it. Merge requests are opened, and pushes made,
// by the user "student"; AddNote adds notes by anyone. Ids come from
// separate ranges per kind (groups 1000+, projects 2000+, pipelines 3000+,
// merge requests 5000+, notes 7000+, statuses 9000+), so a test that mixes
// up a group id and a project id fails instead of passing by luck.
//
// Commit statuses follow GitLab's CommitStatus state machine
// (lib/api/commit_statuses.rb). The statuses of one sha and ref belong to
// one external pipeline. Posting a state finds the pending or running
// status of that name and ref and moves it, keeping its id; otherwise it
// creates a new status, and the older one of that name becomes "retried",
// which hides it from the list unless all=true. A transition the machine
// does not allow is answered 400 with GitLab's own message, such as
// posting running twice: {"message": "Cannot transition status via :run
// from :running (Reason(s): Status cannot transition via \"run\")"}, or
// pending twice (via :enqueue from :pending), or pending after running.
// Posting success or failed twice is accepted and makes a second record.
// Statuses keeps every accepted POST, in order, as it was answered.
//
// # Endpoints
//
// Under /api/v4, each needing the token in PRIVATE-TOKEN, in
// Authorization: Bearer or in private_token (else 401 {"message":"401
// Unauthorized"}); :id is a numeric id or a URL-encoded full path, matched
// without regard to case:
//
//	GET  /user
//	GET  /users                                           username, page, per_page
//	GET  /groups/:id
//	GET  /groups/:id/members/all/:user_id
//	GET  /groups/:id/projects        include_subgroups, archived, topic, simple, search,
//	                                 visibility, order_by, sort, with_shared, page, per_page
//	GET  /projects/:id
//	GET  /projects/:id/members/all/:user_id               the membership with the highest
//	                                                      access_level, the project's own or
//	                                                      an ancestor group's; 404 "404 Not found"
//	GET  /projects/:id/repository/files/:file_path?ref=   (and HEAD)
//	GET  /projects/:id/repository/files/:file_path/raw    ref (merge.go)
//	GET  /projects/:id/repository/branches/:branch
//	POST /projects/:id/statuses/:sha                      state, name|context, ref, description,
//	                                                      target_url, coverage, pipeline_id
//	GET  /projects/:id/repository/commits/:sha/statuses   ref, name, stage, pipeline_id, all
//	GET  /projects/:id/merge_requests                     state, labels, target_branch, ... (merge.go)
//	GET  /projects/:id/merge_requests/:iid
//	GET  /projects/:id/merge_requests/:iid/versions       (merge.go)
//	GET  /projects/:id/merge_requests/:iid/resource_label_events  (labelevents.go)
//	GET  /projects/:id/merge_requests/:iid/notes          sort, order_by
//	POST /projects/:id/merge_requests/:iid/notes          body
//	PUT  /projects/:id/merge_requests/:iid/notes/:note_id body
//
// Parameters come from the query, a form body or a JSON body, as in Grape.
// Lists use GitLab's offset pagination: per_page 20 by default, at most
// 100, with X-Page, X-Per-Page, X-Next-Page, X-Prev-Page, X-Total,
// X-Total-Pages and a Link header (prev, next, first, last) that carries
// the request's parameters, so both resp.NextPage and gitlab.Scan work.
// Git over smart HTTP is served for fetching at /<path_with_namespace>.git
// (info/refs?service=git-upload-pack and git-upload-pack, by git
// http-backend through gittest.Handler), behind basic auth whose password
// must be the token, any username; without it, 401 with WWW-Authenticate.
//
// Accounts (users.go) is a second front that gives accounts tokens of
// their own and is GitLab's OAuth 2 provider (oauth.go): /oauth/authorize
// and /oauth/token, authorization code with PKCE.
//
// Anything else is answered as GitLab answers an unknown route, 404
// {"error":"404 Not Found"}, and recorded in UnimplementedRequests;
// Requests records every request, API and git, as "METHOD /escaped/path".
//
// # What is faithful
//
//   - JSON field names and types of GitLab's entities (UserBasic, Member,
//     Project, the
//     smaller BasicProjectDetails of simple=true, which has no archived
//     field, GroupDetail, Branch, Commit, CommitStatus, Note, MergeRequest,
//     the file JSON), checked by decoding through client-go.
//   - Error bodies and codes: {"message":"404 Project Not Found"}, "404
//     Group Not Found", "404 File Not Found", "404 Commit Not Found", "404
//     Branch Not Found", "404 Not found" (merge requests, notes), Grape's
//     {"error":"ref is missing"} and {"error":"state does not have a valid
//     value"}, 403 {"message":"403 Forbidden"} for writes (statuses, notes)
//     to an archived project.
//   - File metadata: blob_id, commit_id, last_commit_id (the last commit
//     that touched the file), content_sha256, execute_filemode, also sent
//     as X-Gitlab-* headers on GET and HEAD; content is read from git.
//   - file_path and ids must be URL-encoded: an unencoded slash is an
//     unknown route, as in GitLab.
//   - The statuses list matches the sha as given: a short sha finds the
//     commit but lists nothing, as in GitLab.
//   - Notes are listed newest first unless sort=asc; a note's body is at
//     most 1,000,000 characters.
//   - default_branch and empty_repo come from the repository, picked as
//     Gitaly does; a merge request's sha, diff_refs and changes_count
//     follow its source branch on every read.
//   - last_activity_at moves at most once an hour, as in GitLab: it is not
//     a signal that a repository changed.
//   - Webhook payloads (PushHook, MergeRequestHook, SystemHook) have the
//     fields of GitLab's webhook and system hook documentation and decode
//     with gitlab.ParseWebhook and gitlab.ParseSystemhook; a push lists the
//     newest 20 commits and counts them all. PostHook delivers one with
//     GitLab's headers.
//
// # What is simplified
//
//   - A request without a token is refused 401; GitLab would serve it as
//     an anonymous user (404 for private projects, short lists).
//   - There is no permission model beyond the one token and archived
//     projects: memberships are reported, not enforced, and visibility is
//     reported, not enforced. User namespaces are not modelled, every
//     account is active, and GET /users answers every account to the
//     token (GitLab hides some from non-admins). Group sharing and
//     invited groups add no members.
//   - Sharing is not modelled (with_shared has no effect), owned, starred
//     and min_access_level are ignored, and ordering by similarity or
//     star_count orders by id. Keyset pagination is not implemented.
//   - Merge requests are within one project and are "opened" in the API
//     until MergeMR merges them with a real commit (merge.go); they are
//     never closed (a MergeRequestHook may report close); no approvals, no
//     pipelines, no system notes, no discussions. LabelMR and UnlabelMR
//     label them as a user would, recording resource label events
//     (labelevents.go).
//   - Deletion is immediate; recent GitLab marks a project for deletion
//     first (renamed and scheduled), which the double does not show.
//   - Git is fetch-only: pushes (git-receive-pack) and dumb HTTP are
//     unimplemented; tests change repositories with Project.Commit or git
//     on Project.GitDir. Nothing sends webhooks by itself: tests build and
//     post them, as GitLab's asynchronous delivery may arrive before or
//     after a fetch sees the push.
//   - SetDown answers 503 to everything; a real outage may also be a
//     refused connection, a 502 or a timeout. Hang leaves the requests it
//     matches unanswered until their client gives up (the request's
//     context ends), which is how a hung GitLab looks to a client without a
//     deadline: forever. No rate-limit headers are sent.
//   - Client returns a client-go client whose retries of 5xx (five, as
//     client-go's default) wait a millisecond instead of 700–900 ms.
package gitlabtest
