// Package core is the domain at the root of the reconciler: what a
// student's repo asks for, what the backends report back, and the
// vocabulary in which both are judged and reported.
//
// It holds, for every kind of resource, a desired type (ContainerSpec,
// PodSpec, a SIF's image) and an observed one (Container, Pod, SIFStatus);
// the usage a quota counts (Usage); the status of a repo (RepoState) with
// its conditions (ConditionType) and their reasons (Reason, typed
// constants that GitLab statuses, metrics and the history carry); the
// naming rules that keep every owner inside their own names (ObjectName,
// NetworkName); and the small interfaces each backend implements (Engine
// for a Docker host, Cluster for Kubernetes, SIFBuilder for Singularity
// images).
//
// Dependencies point inwards: the backends (docker, kube, sif), the state
// store and the pass (package reconciler) import core; core imports none
// of them, only package fault for the kinds of error every backend shares.
// Drivers (GitLab, webhooks, the HTTP server, the CLI) sit outside all of
// them.
package core
