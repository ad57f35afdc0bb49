package fault

import "errors"

// The kinds, each named for what a caller does about it.
var (
	// NotFound: the object is not there, or is there but not this
	// WhaleMountain's (another instance's, or nobody's), which to a
	// caller is the same thing. Whether that is an error depends on the
	// call: a removal of what is not there is done.
	NotFound = errors.New("not found")
	// Conflict: a name is taken by something that is not the owner's (an
	// object without WhaleMountain's labels, another owner's or another
	// instance's), or an object is still in use. Retrying does not help:
	// someone must remove or rename the other object.
	Conflict = errors.New("conflict")
	// Unreachable: the engine, API server, registry or daemon could not
	// be reached or failed on its side. Wait and try again: nothing is
	// wrong with the request.
	Unreachable = errors.New("unreachable")
	// Refused: a policy said no (admission, a quota, Pod Security, a
	// registry refusing the credentials). The student, or the admins,
	// must change something; the same request is refused again.
	Refused = errors.New("refused")
	// TooLarge: the input is past a limit (an image too large to become a
	// SIF). The student must make it smaller, or the admins raise the
	// limit.
	TooLarge = errors.New("too large")
	// Invalid: the request cannot be carried out as it stands (a spec
	// breaking an invariant, a reference that does not parse, an image
	// unusable for what was asked). A bug in the caller or a bad input;
	// not fixed by a retry.
	Invalid = errors.New("invalid")
	// NotReady: something the request needs is on its way (a new quota
	// the controller has yet to count): try again shortly.
	NotReady = errors.New("not ready")
)

// Kinds lists every kind, in the order Of looks for them.
var Kinds = []error{NotFound, Conflict, Unreachable, Refused, TooLarge, Invalid, NotReady}

// sentinel is a backend's own sentinel error that also matches a kind.
type sentinel struct {
	msg  string
	kind error
}

func (s *sentinel) Error() string        { return s.msg }
func (s *sentinel) Is(target error) bool { return target == s.kind || errors.Is(s.kind, target) }

// New returns a new sentinel error with message msg that matches kind
// with errors.Is (and only itself otherwise): a backend declares its own
// sentinels with it, e.g.
//
//	var ErrImageNotFound = fault.New(fault.NotFound, "image not found")
//
// kind may itself be such a sentinel: the new error then refines it,
// matching it and its kind too (a backend's own message for an error of
// the domain core, say).
func New(kind error, msg string) error { return &sentinel{msg: msg, kind: kind} }

// marked is an error placed under a kind without changing its message.
type marked struct {
	kind, err error
}

func (m *marked) Error() string   { return m.err.Error() }
func (m *marked) Unwrap() []error { return []error{m.kind, m.err} }

// Wrap returns err marked as kind: its message is err's, and errors.Is
// matches both kind and whatever err matches. A nil err stays nil.
func Wrap(kind, err error) error {
	if err == nil {
		return nil
	}
	return &marked{kind: kind, err: err}
}

// Of returns the kind of err: the first of Kinds it matches, or nil when
// it matches none (a context error, or something no backend classified).
func Of(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range Kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
