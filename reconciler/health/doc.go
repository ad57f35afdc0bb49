// Package health tells, from what an engine reports, how one workload is
// doing, in a fixed vocabulary shared by every kind of workload. It is
// pure: no I/O, one function per kind, tested with one fixture per state.
// The health of the server itself, which does I/O, is package probe
// below: its liveness and readiness probes.
package health
