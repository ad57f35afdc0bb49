// Package reconciler makes the world match what students' repos declare.
//
// The unit of work is one pass of one repo (Reconciler.Reconcile): an
// ordered list of small steps with one signature, run until the first
// error, whose outcome is written to the repo's state in one deferred
// block so that no early return skips it:
//
//	fetch source → parse wm.yaml → list live containers → resolve
//	(images, placement, host ports) → check quota → plan → pull images →
//	apply → check health
//
// Desired and live containers are paired by the pure function Diff, keyed
// by the container's wm.yaml name as its labels say (its engine name is
// "<owner>_<name>", core.ObjectName); only containers carrying
// the repo's labels are ever candidates for change, so an unlabelled
// container or another student's is never touched. Ownership comes from
// the Repo (where the repo lives), never from the file.
//
// Containers are placed on the configured Docker hosts by place: where a
// container already runs when that host can still hold it, else the least
// loaded host with enough free GPUs, never a cordoned one (Cordon). A
// running GPU container is given its own GPU devices when it is created
// (allocateGPUs, one lock for every pass), read back from the hosts'
// labels, so that no device serves two containers unless the host shares
// its GPUs. Drain moves a host's containers, with their volume data, to
// the others (hosts.go); a host that does not answer stalls only what
// lives there, and nothing of it is made elsewhere unless it is drained.
//
// Every failure is a PassError saying what happens next (Classify): the
// student must fix something (Stalled: not retried for the same commit),
// something outside must happen first (Waiting: CI has not pushed the
// image yet, the repo is unreachable), or it is transient (retried with
// backoff). None of them ever removes anything: "could not read desired
// state" is never taken for "desired state is empty".
//
// The domain lives in package core, at the root of the reconciler: the
// desired and observed types of every kind of resource, usage, conditions
// and their reasons, and the interfaces of the backends (core.Engine,
// core.Cluster, core.SIFBuilder). The backends (docker, kube, sif) and
// the state store import core; this package imports none of the
// backends, which the server wires in (cmd/wm). Each backend has a real
// implementation and a fake checked by one shared contract suite; the
// sources it reads (GitSource, Registry) are narrow interfaces declared
// here. Loop is the
// thin scheduling wrapper: repo keys on a work queue, polled on an
// interval with jitter, triggered by webhooks, never two passes of one
// repo at once.
//
// What the server tells those who watch it comes from what passes already
// know: Metrics (metrics.go) times each step, counts each outcome by its
// reason and keeps what each owner holds where as passes record it, so
// that a scrape asks no engine; Loop.Alive (liveness.go) says whether the
// loop is wedged, for a liveness probe; and every destructive action of a
// pass is logged at info with its cause (apply.go, pods.go, sifs.go).
package reconciler
