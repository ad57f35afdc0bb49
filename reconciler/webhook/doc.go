// Package webhook receives GitLab's webhooks at POST /hooks/gitlab and turns
// them into typed events for a Dispatcher. It authenticates, bounds,
// de-duplicates and decodes; it knows nothing of repos, containers or
// queues.
//
// # Model
//
// A webhook is a hint, not a source of truth: it makes a push take effect
// in seconds instead of at the next poll, and the poll still runs. So the
// handler answers fast and does no work itself: GitLab waits 10 s for an
// answer and disables a hook after four failures in a row. Whoever
// receives an event re-reads the state from git (a webhook may even arrive
// before the pushed commit can be fetched). An event carries no state of
// its own: losing one costs a poll interval, and acting on one twice costs
// one more pass, which is idempotent.
//
// Project, group and system hooks may all point at the same URL with the
// same secret; events are decoded by X-Gitlab-Event and, for system hooks,
// by the body's event_name or object_kind:
//
//	Push Hook                           -> Push
//	Merge Request Hook                  -> MergeRequest
//	System Hook, push                   -> Push
//	System Hook, merge_request          -> MergeRequest
//	System Hook, project_create,
//	  project_destroy, project_rename,
//	  project_transfer                  -> ProjectChange
//	anything else (Tag Push Hook, Note Hook, Pipeline Hook, Job Hook,
//	  repository_update and other system events, unknown headers)
//	                                    -> 200 {"status":"ignored"}
//
// Events carry only the fields WhaleMountain uses, each commented with the
// name GitLab gives it; the full payload is not kept. Unknown fields are
// ignored, since GitLab adds some in most releases.
//
// # Checks, in order
//
//  1. Method: anything but POST is 405.
//  2. X-Gitlab-Token must equal Config.Secret, compared in constant time
//     (lengths included); otherwise 401 and nothing else happens: the body
//     is not read, nothing is decoded, dispatched or remembered. An empty
//     Secret refuses every delivery.
//  3. The body is read through http.MaxBytesReader; past Config.MaxBody
//     (1 MiB by default; a push lists at most 20 commits) it is 413.
//  4. When Config.SigningSecret is set, the Standard Webhooks signature
//     (GitLab's signing token) is also required: webhook-signature must
//     hold a "v1,<base64>" HMAC-SHA256 of webhook-id "." webhook-timestamp
//     "." body, and webhook-timestamp must lie within 5 minutes of now;
//     otherwise 401. Both checks apply, so a leaked token alone cannot
//     forge a delivery, nor can an old signed one be replayed.
//  5. The body is decoded; a known event that is not GitLab's JSON, or
//     lacks the project or the ref, is 400. Ignored events are 200.
//  6. Idempotency: the delivery's key is remembered for
//     Config.IdempotencyTTL (1 h by default, at most 10,000 keys, least
//     recent first out); a delivery whose key was accepted before is 200
//     {"status":"duplicate"} and is not dispatched. The key is
//     Idempotency-Key (sent since 2024, gitlab#388692; kept across retries
//     and resends), or else X-Gitlab-Event-UUID together with the event and
//     the body, because GitLab gives every hook call made while handling
//     one request the same event UUID (one push of two branches sends two
//     Push Hooks with one UUID). X-Gitlab-Webhook-UUID is new on every attempt and is
//     not used. A delivery with neither header is always dispatched. Only
//     deliveries that passed every check above are remembered, and check
//     and record are one step, so two concurrent retries dispatch once.
//  7. The event is handed to Dispatcher.Dispatch, and the answer is 202
//     {"status":"accepted"}.
//
// Every answer is short JSON, {"status": ...} or {"error": ...}; none
// echoes the secret, the signature or the body, and the handler logs
// nothing: the metrics tell what happened.
//
// # Dispatcher contract
//
// Dispatch must not block: the handler answers GitLab only after it
// returns. It should put the event on a queue (in WhaleMountain, the repo
// keys of reconciler.Loop, where a webhook and a poll of one repo collapse
// into one pass) and return. Its context keeps the request's values but is
// never cancelled, so work handed to a goroutine may use it.
//
// # Metrics
//
// wm_webhook_requests_total{event, outcome} counts deliveries: event is
// push, merge_request, project or other (a system hook refused before its
// body is decoded counts as other), outcome is accepted, ignored,
// duplicate, unauthorized, too_large, bad_request or method_not_allowed.
// wm_webhook_duration_seconds is the time to answer.
package webhook
