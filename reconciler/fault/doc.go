// Package fault is the one vocabulary of errors the backends share: the
// Docker engines, the Kubernetes backend and the SIF builder each classify
// what their outside system says into one of a few kinds, and the
// reconciler decides what happens next from the kind alone, whatever the
// backend.
//
// A kind is a sentinel error used with errors.Is. A backend keeps its own,
// more precise sentinels (docker.ErrImageNotFound, kube.ErrRefused, ...)
// and makes each match its kind by declaring it with New; or it marks an
// error it did not make with Wrap. errors.Is(err, fault.Unreachable) then
// holds for every way an engine can be down, and Of names the kind of any
// error in one call.
//
// A context's cancellation or deadline is never given a kind: it is the
// caller's, not the backend's.
package fault
