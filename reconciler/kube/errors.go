package kube

import (
	"context"
	"errors"
	"net"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/whalemountain/wm/reconciler/fault"
)

// classify marks an error of the Kubernetes client with its kind in
// package fault, so that a caller can tell a cluster that is down
// (fault.Unreachable) from one that said no (fault.Refused: forbidden;
// fault.Invalid: an object the API refuses as malformed, a bug). Errors already of a kind,
// context errors and what fits no kind are returned as they are.
func classify(err error) error {
	if err == nil || fault.Of(err) != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var kind error
	switch {
	case apierrors.IsNotFound(err):
		kind = fault.NotFound
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		// A race (a resourceVersion that moved, a namespace made in
		// between), not a name somebody else holds: the next pass reads
		// again and decides. Left without a kind: transient.
		return err
	case apierrors.IsForbidden(err) && strings.Contains(err.Error(), "is being terminated"):
		// A namespace being deleted: gone in a moment, then made again.
		kind = fault.NotReady
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err), apierrors.IsUnexpectedServerError(err):
		kind = fault.Unreachable
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		kind = fault.Refused
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		kind = fault.Invalid
	default:
		// Refused, reset, DNS, TLS handshake timeouts: the client wraps
		// them in a *url.Error, which is a net.Error.
		if _, isNet := errors.AsType[net.Error](err); isNet {
			kind = fault.Unreachable
		}
	}
	return fault.Wrap(kind, err)
}
