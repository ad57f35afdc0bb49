package sif

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
)

// The outcomes a caller branches on with errors.Is. Each says what happens
// next, and each but ErrSquashFailed is of a kind in package fault (noted
// on each), so that a caller may branch on the kind alone. A build that ran past its deadline or was cancelled wraps
// context.DeadlineExceeded or context.Canceled instead: retry later, the
// SIF already served (if any) stays as it was.
var (
	// ErrImageNotFound: the source has no such image (no repository, no
	// tag, no manifest for the platform asked, or not on the local daemon).
	// The student must push it, or CI has not yet: wait.
	//
	// core.ErrImageNotFound, fault.NotFound.
	ErrImageNotFound = core.ErrImageNotFound
	// ErrAccessDenied: the registry refused the credentials (HTTP 401 or
	// 403). An administrator must fix them (fault.Refused).
	ErrAccessDenied = fault.New(fault.Refused, "registry access denied")
	// ErrUnreachable: the image source could not be reached or failed on
	// its side (connection refused, DNS, HTTP 429 or 5xx, a cut-off
	// download, no Docker daemon). Transient: retry with backoff
	// (fault.Unreachable).
	ErrUnreachable = fault.New(fault.Unreachable, "image source unreachable")
	// ErrInvalidRef: the reference does not parse. The student must fix it
	// (fault.Invalid).
	ErrInvalidRef = fault.New(fault.Invalid, "invalid image reference")
	// ErrInvalidImage: the image cannot become a SIF (not a Linux image,
	// a layer with a path outside the root, no configuration). The student
	// must fix the image (fault.Invalid).
	ErrInvalidImage = fault.New(fault.Invalid, "image unusable for a SIF")
	// ErrTooLarge: the image is past one of a build's limits: bytes or
	// files unpacked (Options.MaxUnpackedBytes, MaxFiles), bytes of layers
	// as stored (MaxCompressedBytes), or a path longer or deeper than
	// Linux and squashfs can hold. The message says which limit, its
	// value and where to change it. Nothing is left of the build. The
	// student must make the image smaller (or an administrator raise the
	// limit). fault.TooLarge.
	ErrTooLarge = fault.New(fault.TooLarge, "image too large for a SIF")
	// ErrToolMissing: tar2sqfs is not installed (apt-get install
	// squashfs-tools-ng). An administrator must install it; no retry helps
	// (core.ErrToolMissing, fault.Invalid: the build host cannot build).
	ErrToolMissing = fault.New(core.ErrToolMissing, "tar2sqfs missing")
	// ErrSquashFailed: tar2sqfs ran and failed (a full disk, most
	// likely); its last lines of output are in the message. Transient.
	ErrSquashFailed = errors.New("tar2sqfs failed")
	// ErrInvalidSIF: Verify found no valid SIF with a squashfs primary
	// partition at the path (fault.Invalid).
	ErrInvalidSIF = fault.New(fault.Invalid, "invalid SIF")
)

// classified is an error placed under one of the sentinels: Is matches
// both, and the message says the sentinel once.
type classified struct {
	kind, err error
}

func (e *classified) Error() string {
	msg := strings.Join(strings.Fields(e.err.Error()), " ")
	if strings.HasPrefix(msg, e.kind.Error()) {
		return msg
	}
	return e.kind.Error() + ": " + msg
}

func (e *classified) Unwrap() []error { return []error{e.kind, e.err} }

// classify puts an error of go-containerregistry or of the ImageStore
// (whose errors are of a kind in package fault) under one of the sentinels, or returns it as it is when none fits.
// Cancellation and deadlines are left as they are: they are the caller's.
func classify(err error) error {
	if err == nil {
		return nil
	}
	for _, known := range []error{
		ErrImageNotFound, ErrAccessDenied, ErrUnreachable, ErrInvalidRef,
		ErrInvalidImage, ErrTooLarge, ErrToolMissing, ErrSquashFailed,
		context.Canceled, context.DeadlineExceeded,
	} {
		if errors.Is(err, known) {
			return err
		}
	}
	var kind error
	switch {
	case errors.Is(err, fault.NotFound):
		kind = ErrImageNotFound
	case errors.Is(err, fault.Unreachable):
		kind = ErrUnreachable
	case errors.Is(err, fault.Refused):
		kind = ErrAccessDenied
	case notFound(err):
		kind = ErrImageNotFound
	case denied(err):
		kind = ErrAccessDenied
	case unreachable(err):
		kind = ErrUnreachable
	// mutate.Extract refuses a layer entry outside the root with this
	// message and no sentinel.
	case strings.Contains(err.Error(), "unsafe tar path"):
		kind = ErrInvalidImage
	default:
		return err
	}
	return &classified{kind: kind, err: err}
}

// notFound tells whether err is a registry's or the daemon's "no such
// image".
func notFound(err error) bool {
	if te, ok := errors.AsType[*transport.Error](err); ok {
		if te.StatusCode == http.StatusNotFound {
			return true
		}
		for _, d := range te.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return true
			}
		}
		return false
	}
	// go-containerregistry: an index without the platform asked.
	if strings.Contains(err.Error(), "no child with platform") {
		return true
	}
	return cerrdefs.IsNotFound(err)
}

// denied tells whether the registry refused the credentials.
func denied(err error) bool {
	if te, ok := errors.AsType[*transport.Error](err); ok {
		if te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden {
			return true
		}
		for _, d := range te.Errors {
			if d.Code == transport.UnauthorizedErrorCode || d.Code == transport.DeniedErrorCode {
				return true
			}
		}
	}
	return false
}

// unreachable tells whether err means the source could not be reached or
// failed on its side, something that may well succeed later.
func unreachable(err error) bool {
	if te, ok := errors.AsType[*transport.Error](err); ok {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests ||
			te.StatusCode == http.StatusRequestTimeout
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	// refused, reset, DNS, timeouts. A bare system call error is a
	// net.Error too (syscall.Errno has Timeout and Temporary), but one that
	// no network wraps comes from this host (a name too long, a full
	// disk): not the source's.
	ne, isNet := errors.AsType[net.Error](err)
	_, local := ne.(syscall.Errno)
	return isNet && !local
}
