// Package gitlab connects WhaleMountain to the department GitLab, always
// through gitlab.com/gitlab-org/api/client-go:
//
//   - discovery: every project with a wm.yaml under the configured groups
//     (subgroups included, archived ones skipped, optionally one topic),
//     relisted every discoverInterval; the owner of a project comes from
//     its path by OwnerOf, never from the file;
//   - feedback: a commit status "whalemountain" on every commit rolled out
//     on a default branch (pending when a push arrives, running while the
//     pass runs, then success or failed with a one-line reason), and on
//     merge requests one note, found again by a hidden marker and edited
//     in place, with the plan of what merging would change, plus a commit
//     status "whalemountain/plan" on the MR's head;
//   - events: Service turns webhook events into work: a push on a default
//     branch triggers that repo's pass, a merge request gets a plan, and a
//     project renamed, transferred or deleted has its old resources retired.
//
// Nothing here decides what runs; the reconciler does. A GitLab that cannot
// be reached leaves the known repos as they are: only an authoritative word
// (a system hook, or a successful listing showing a project under a new
// path) retires anything.
package gitlab
