package docker

import (
	"context"
	"errors"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/client"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
)

// Classes of errors. Every error the engines return that falls in one of
// them matches it with errors.Is, whatever the implementation, and matches
// its kind in package fault too (noted on each), so that a caller can
// branch on the kind alone; the rest are transient (retry with backoff)
// unless they wrap a context error.
var (
	// ErrNotFound (fault.NotFound): the container or volume does not
	// exist, or exists but is not managed by this WhaleMountain instance,
	// which to a caller is the same thing.
	ErrNotFound = fault.New(fault.NotFound, "not found")
	// ErrConflict (fault.Conflict): the name is taken (by any container,
	// labelled or not, of any instance; by a volume or network that is not
	// the owner's under this instance), or a volume is still in use.
	// Retrying the same call does not help.
	ErrConflict = fault.New(fault.Conflict, "conflict")
	// ErrImageNotFound (core.ErrImageNotFound, fault.NotFound): the image is not on the host
	// (Create) or the registry says it does not exist (Pull). The student
	// must fix the reference, or CI has not pushed it yet.
	ErrImageNotFound = core.ErrImageNotFound
	// ErrUnauthorized (fault.Refused): the registry refused the
	// credentials. The student or the operator must fix them.
	ErrUnauthorized = fault.New(fault.Refused, "unauthorized")
	// ErrUnreachable (fault.Unreachable): the Docker daemon or the
	// registry could not be reached. Transient: requeue with backoff.
	ErrUnreachable = fault.New(fault.Unreachable, "unreachable")
	// ErrPortInUse (core.ErrPortInUse, fault.Conflict): a host port of the container is held
	// by something else, so it could not start. The container is left
	// created.
	ErrPortInUse = core.ErrPortInUse
)

// classifiedError keeps the daemon's message and adds a class to it, so that
// errors.Is matches both the class and whatever the client returned.
type classifiedError struct {
	class error
	err   error
}

func (e *classifiedError) Error() string   { return e.err.Error() }
func (e *classifiedError) Unwrap() []error { return []error{e.class, e.err} }

// classify adds one of the classes to err, judged from the Docker client's
// error definitions. notFound is the class a "not found" from the daemon
// means for this call (ErrNotFound or ErrImageNotFound); byMessage, when not
// nil, classifies what the daemon only says in words.
func classify(err error, notFound error, byMessage func(string) error) error {
	if err == nil {
		return nil
	}
	var class error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case client.IsErrConnectionFailed(err):
		class = ErrUnreachable
	case cerrdefs.IsNotFound(err):
		class = notFound
	case cerrdefs.IsConflict(err):
		class = ErrConflict
	case cerrdefs.IsUnauthorized(err), cerrdefs.IsPermissionDenied(err):
		class = ErrUnauthorized
	case byMessage != nil:
		class = byMessage(err.Error())
	}
	if class == nil {
		return err
	}
	return &classifiedError{class: class, err: err}
}

// startMessage classifies why a container did not start.
func startMessage(msg string) error {
	if containsAny(msg, "port is already allocated", "address already in use") {
		return ErrPortInUse
	}
	return nil
}

// registryMessage classifies a registry's answer to a pull, which Docker
// 20.10 reports as a 500 or inside the pull's progress stream, in words.
func registryMessage(msg string) error {
	switch {
	case containsAny(msg, "manifest unknown", "not found", "does not exist", "name unknown"):
		return ErrImageNotFound
	case containsAny(msg, "unauthorized", "authentication required", "no basic auth credentials",
		"incorrect username or password", "denied"):
		return ErrUnauthorized
	case containsAny(msg, "connection refused", "no such host", "i/o timeout", "network is unreachable",
		"tls handshake timeout", "connection reset", "server misbehaving", "no route to host"):
		return ErrUnreachable
	}
	return nil
}

// containsAny reports whether msg contains one of subs, ignoring case.
func containsAny(msg string, subs ...string) bool {
	m := strings.ToLower(msg)
	for _, s := range subs {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// Both implementations are Docker hosts as the domain core defines one.
var (
	_ core.Engine = (*Engine)(nil)
	_ core.Engine = (*Fake)(nil)
)
