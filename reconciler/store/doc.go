// Package store is WhaleMountain's embedded state: one bbolt file in the
// state directory, no server. It keeps, per repo, what was observed and
// applied (revisions, conditions, the inventory of applied objects), the
// host ports handed out to container ports, and a short history of passes;
// per owner, the GPU-hours their repos held each day (the last GPUDays),
// counted from the GPUs each recorded state holds and when.
//
// Nothing in it is the only copy of the truth: every container carries
// labels naming its owner, repo and spec hash, and its host ports are
// visible on the engine, so a lost store is rebuilt by Adopt from what the
// engines report. What the store adds is memory across passes: the ports
// of a container that is stopped or being recreated, and the history.
//
// Values are JSON, so the file stays readable with any bbolt tool and a
// field added later reads old records as zero values.
package store
