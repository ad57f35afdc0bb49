// Package probe answers a server's liveness and readiness probes as the
// Kubernetes apiserver answers its own /livez and /readyz: a probe is a
// list of named checks; GET answers 200 "ok" when every check passes and
// 503 with one line per check when one fails; ?verbose lists every check
// either way, ?exclude=NAME leaves one out, and /readyz/NAME asks one
// alone.
//
// A probe must never hang its caller nor load what it checks: each check
// has a timeout and runs at most once per interval (its result is reused
// meanwhile), only one run of a check is ever under way (a run that
// outlives its timeout fails the probes that wait for it, and no other
// starts until it returns), and the checks of one probe run in parallel,
// so that a probe answers within its longest timeout.
//
// Why a check failed is logged when it starts failing (and again when the
// reason changes), and is answered only by a handler that may reveal it
// (the admin listener's): the public listener says "reason withheld", as
// the apiserver does, since its reasons name hosts and files.
package probe
