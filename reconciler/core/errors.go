package core

import "github.com/whalemountain/wm/reconciler/fault"

// The errors of the backends' contract that a pass tells apart from the
// rest of their kind. Each backend returns these very values (its own
// names for them are the same errors), so that the pass branches on core
// alone; every other error is judged by its kind in package fault.
var (
	// ErrImageNotFound (fault.NotFound): no host, registry or image
	// source has the image. For the commit's own image, CI has not
	// pushed it yet; otherwise the student must fix the reference.
	ErrImageNotFound = fault.New(fault.NotFound, "image not found")
	// ErrPortInUse (fault.Conflict): a host port of a new container is
	// bound by something the engine does not manage, so the container
	// could not start; another port is chosen on the next pass.
	ErrPortInUse = fault.New(fault.Conflict, "host port in use")
	// ErrNamespaceNotOurs (fault.Conflict): the owner's namespace exists
	// but was not made for them by this instance; nothing is written
	// into it.
	ErrNamespaceNotOurs = fault.New(fault.Conflict, "namespace not made by WhaleMountain for this owner")
	// ErrToolMissing (fault.Invalid): a program the backend runs (such
	// as mksquashfs) is not installed: the admins must install it.
	ErrToolMissing = fault.New(fault.Invalid, "tool missing")
)
