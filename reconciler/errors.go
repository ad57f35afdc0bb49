package reconciler

import (
	"context"
	"errors"
	"fmt"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/fault"
)

// Outcome says what happens after a pass failed, and so which condition
// the repo gets.
type Outcome int

const (
	// Transient failures (an engine hiccup, a full disk) are retried with
	// backoff; the repo stays Reconciling.
	Transient Outcome = iota
	// Waiting failures need something outside the repo to happen first
	// (CI to push the image, the git server to come back): the repo is
	// Ready=False with the reason and is looked at again soon.
	Waiting
	// Stalled failures need the student (or an admin) to change
	// something: the revision is not retried until a new commit or a new
	// server config arrives.
	Stalled
)

// String names the outcome.
func (o Outcome) String() string {
	return [...]string{"Transient", "Waiting", "Stalled"}[o]
}

// Reason is the outcome as the reason of the Reconciling condition.
func (o Outcome) Reason() core.Reason { return core.Reason(o.String()) }

// PassError is a failed pass: what happens next, a CamelCase reason for
// machines, and the cause, whose message is written for the student.
type PassError struct {
	Outcome Outcome
	Reason  core.Reason
	Err     error
}

// Error is the message of the error the pass ended with.
func (e *PassError) Error() string { return e.Err.Error() }

// Unwrap returns that error, for errors.Is and errors.As.
func (e *PassError) Unwrap() error { return e.Err }

func stalled(reason core.Reason, format string, args ...any) error {
	return &PassError{Outcome: Stalled, Reason: reason, Err: fmt.Errorf(format, args...)}
}

func waiting(reason core.Reason, format string, args ...any) error {
	return &PassError{Outcome: Waiting, Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Classify returns the outcome and reason of any error: a PassError says
// so itself; any other error is judged by its kind (package fault), which
// every backend gives its errors, so that the pass maps kinds to outcomes
// in this one place; an error of no kind is transient.
func Classify(err error) (Outcome, core.Reason) {
	var pe *PassError
	if errors.As(err, &pe) {
		return pe.Outcome, pe.Reason
	}
	switch {
	case err == nil:
		return Transient, ""
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Transient, core.Interrupted
	case errors.Is(err, fault.Unreachable):
		return Waiting, core.BackendUnreachable
	case errors.Is(err, fault.NotReady):
		return Waiting, core.NotReady
	case errors.Is(err, fault.Refused):
		return Stalled, core.Refused
	case errors.Is(err, fault.TooLarge):
		return Stalled, core.TooLarge
	case errors.Is(err, fault.Invalid):
		return Stalled, core.Invalid
	}
	return Transient, core.TransientError
}
