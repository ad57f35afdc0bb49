package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"

	"github.com/whalemountain/wm/reconciler/fault"
)

// sentinelKinds is every sentinel of the package with its kind and its
// message, which must not change (logs and statuses show it).
var sentinelKinds = []struct {
	name     string
	sentinel error
	kind     error
	msg      string
}{
	{"an unreachable remote is Unreachable", ErrUnreachable, fault.Unreachable, "remote unreachable"},
	{"a missing repository is NotFound", ErrRepoNotFound, fault.NotFound, "repository not found"},
	{"refused credentials are Refused", ErrAccessDenied, fault.Refused, "access denied"},
	{"a missing branch is NotFound", ErrBranchNotFound, fault.NotFound, "branch not found"},
	{"a revision force-pushed away is NotFound", ErrRevisionNotFound, fault.NotFound, "revision not found"},
	{"a missing file is NotFound", ErrFileNotFound, fault.NotFound, "file not found"},
	{"a file over the cap is TooLarge", ErrTooLarge, fault.TooLarge, "file too large"},
}

func TestEverySentinelIsOfItsKind(t *testing.T) {
	for _, c := range sentinelKinds {
		t.Run(c.name, func(t *testing.T) {
			if got := fault.Of(c.sentinel); got != c.kind {
				t.Errorf("fault.Of(%v) = %v, want %v", c.sentinel, got, c.kind)
			}
			if c.sentinel.Error() != c.msg {
				t.Errorf("message %q, want %q", c.sentinel.Error(), c.msg)
			}
			// Wrapped as the package returns it, directly or classified
			// from a transport error, it still matches both.
			for _, err := range []error{
				fmt.Errorf("%w: main", c.sentinel),
				&classified{kind: c.sentinel, err: errors.New("server said no")},
			} {
				if !errors.Is(err, c.sentinel) {
					t.Errorf("%q does not match its sentinel", err)
				}
				if !errors.Is(err, c.kind) {
					t.Errorf("%q does not match %v", err, c.kind)
				}
				if got := fault.Of(err); got != c.kind {
					t.Errorf("fault.Of(%q) = %v, want %v", err, got, c.kind)
				}
			}
			// A sentinel matches no other sentinel of the package.
			for _, o := range sentinelKinds {
				if o.sentinel != c.sentinel && errors.Is(c.sentinel, o.sentinel) {
					t.Errorf("%v matches %v", c.sentinel, o.sentinel)
				}
			}
		})
	}
}

func TestTheTableNamesEverySentinel(t *testing.T) {
	for _, o := range outcomes {
		if o == context.Canceled || o == context.DeadlineExceeded {
			continue
		}
		found := false
		for _, c := range sentinelKinds {
			found = found || c.sentinel == o
		}
		if !found {
			t.Errorf("sentinel %q has no row in sentinelKinds", o)
		}
	}
}

func TestClassifiedTransportErrorsCarryTheirKind(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"a missing repository is NotFound", transport.ErrRepositoryNotFound, fault.NotFound},
		{"a refused token is Refused", transport.ErrAuthorizationFailed, fault.Refused},
		{"a missing token is Refused", transport.ErrAuthenticationRequired, fault.Refused},
		{"an empty remote is NotFound", transport.ErrEmptyRemoteRepository, fault.NotFound},
		{"a timeout is Unreachable", fmt.Errorf("dial: %w", context.DeadlineExceeded), fault.Unreachable},
		{"a refused connection is Unreachable", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, fault.Unreachable},
		{"a full local disk is not Unreachable", &fs.PathError{Op: "write", Path: "/var/lib/wm/git/x.git/objects/pack/tmp_pack_1", Err: syscall.ENOSPC}, nil},
		{"a read-only local disk is not Unreachable", &fs.PathError{Op: "open", Path: "/var/lib/wm/git/x.git/HEAD", Err: syscall.EROFS}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := fault.Of(classify(c.err)); got != c.want {
				t.Errorf("fault.Of(classify(%v)) = %v, want %v", c.err, got, c.want)
			}
		})
	}
}
