package fault_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/whalemountain/wm/reconciler/fault"
)

func TestKinds(t *testing.T) {
	errImage := fault.New(fault.NotFound, "image not found")
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"a backend's sentinel matches its kind", errImage, fault.NotFound},
		{"a wrapped backend sentinel matches its kind", fmt.Errorf("pull x: %w", errImage), fault.NotFound},
		{"a marked error matches its kind", fault.Wrap(fault.Unreachable, errors.New("dial unix: no such file")), fault.Unreachable},
		{"a marked error wrapped again matches its kind", fmt.Errorf("list: %w", fault.Wrap(fault.Conflict, errors.New("taken"))), fault.Conflict},
		{"a kind matches itself", fault.TooLarge, fault.TooLarge},
		{"a context error has no kind", fmt.Errorf("list: %w", context.DeadlineExceeded), nil},
		{"an unclassified error has no kind", errors.New("boom"), nil},
		{"nil has no kind", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fault.Of(tt.err); got != tt.want {
				t.Errorf("Of(%v) = %v, want %v", tt.err, got, tt.want)
			}
			if tt.want != nil && !errors.Is(tt.err, tt.want) {
				t.Errorf("errors.Is(%v, %v) is false", tt.err, tt.want)
			}
		})
	}
}

func TestASentinelMatchesOnlyItselfAndItsKind(t *testing.T) {
	a := fault.New(fault.NotFound, "a")
	b := fault.New(fault.NotFound, "b")
	if errors.Is(a, b) || errors.Is(b, a) {
		t.Error("two sentinels of one kind match each other")
	}
	if !errors.Is(fmt.Errorf("x: %w", a), a) {
		t.Error("a sentinel does not match itself through a wrap")
	}
	if errors.Is(a, fault.Conflict) {
		t.Error("a NotFound sentinel matches Conflict")
	}
}

func TestWrapKeepsTheMessageAndTheCause(t *testing.T) {
	cause := errors.New("connection refused")
	err := fault.Wrap(fault.Unreachable, cause)
	if err.Error() != "connection refused" || !errors.Is(err, cause) {
		t.Errorf("Wrap = %q, want the cause's message and the cause", err)
	}
	if fault.Wrap(fault.Unreachable, nil) != nil {
		t.Error("Wrap of nil is not nil")
	}
}
