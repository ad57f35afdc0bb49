// Package gitlab connects WhaleMountain to the department GitLab, always
// through gitlab.com/gitlab-org/api/client-go:
//
//   - discovery: every project with a wm.yaml under the configured groups
//     (subgroups included, archived ones skipped, optionally one topic),
//     relisted every discoverInterval; the owner of a project comes from
//     its path by OwnerOf, never from the file, and GitLab must confirm it
//     (sources.gitlab.ownerCheck): by default an active account of that
//     name holds the project with at least ownerMinAccessLevel (Developer),
//     directly or through its groups; with "creator" it must also have
//     created the project. A project that fails is refused: logged, never
//     reconciled, its webhooks ignored, and retired if it ran;
//   - feedback: a commit status "whalemountain" on every commit rolled out
//     on a default branch (pending when a push arrives, running while the
//     pass runs, then success or failed with a one-line reason), and on
//     merge requests one note of WhaleMountain's own account, found again
//     by a hidden marker and edited in place, with the plan of what
//     merging would change, plus a commit status "whalemountain/plan" on
//     the MR's head;
//   - events: Service turns webhook events into work: a push on a default
//     branch triggers that repo's pass, a merge request gets a plan, and a
//     system hook saying a project was renamed, transferred or deleted has
//     GitLab asked about it. Every such job, GitLab requests included, has
//     a deadline (WithJobTimeout, given poll.passTimeout): a hung
//     GitLab or a hung plan ends in a logged error and the next job runs;
//     at shutdown the jobs under way are cancelled after a grace period
//     (WithShutdownGrace). A flood costs no more than its news: the
//     deliveries of one push (retries, a project and a system hook) make
//     one pass and one pending status, and pushes to projects not known
//     have GitLab listed again at most every RediscoverGap.
//
// # Trust
//
// Nothing here decides what runs; the reconciler does. A webhook delivery
// is a hint: anyone who learns the shared secret can send one, so none is
// ever obeyed. A push only makes a pass read git sooner; a system hook
// only makes GitLab be asked, by project id, where the project is now:
// the old repo is retired only when GitLab answers 404 (destroyed) or a
// different path_with_namespace (renamed, transferred). Any other answer,
// or none, changes nothing and is logged. A GitLab that cannot be reached
// leaves the known repos as they are.
//
// What a student wrote (wm.yaml's keys and values, the errors quoting
// them, branch names) is echoed into GitLab only inert: in merge request
// notes inside code spans or indented code blocks (no mention, reference,
// link, HTML or quick action can come alive, see note.go), and in commit
// statuses as one line of plain text within GitLab's 255 characters
// (StatusText).
package gitlab
