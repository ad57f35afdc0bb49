package kube

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/whalemountain/wm/reconciler/fault"
)

func TestClassify(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	refused := &url.Error{Op: "Get", URL: "https://127.0.0.1:1/api", Err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"a refused connection is Unreachable", refused, fault.Unreachable},
		{"an API server that is unavailable is Unreachable", apierrors.NewServiceUnavailable("etcd"), fault.Unreachable},
		{"an API server that timed out is Unreachable", apierrors.NewTimeoutError("slow", 1), fault.Unreachable},
		{"too many requests is Unreachable", apierrors.NewTooManyRequests("slow down", 1), fault.Unreachable},
		{"a missing object is NotFound", apierrors.NewNotFound(pods, "x"), fault.NotFound},
		{"forbidden is Refused", apierrors.NewForbidden(pods, "x", errors.New("no RBAC")), fault.Refused},
		{"a namespace being deleted is NotReady", apierrors.NewForbidden(pods, "x", errors.New("unable to create new content in namespace wm-a because it is being terminated")), fault.NotReady},
		{"a bad request is Invalid", apierrors.NewBadRequest("bad"), fault.Invalid},
		{"a resourceVersion that moved is a race, not a kind: retry", apierrors.NewConflict(pods, "x", errors.New("modified")), nil},
		{"a namespace made in between is a race, not a kind: retry", apierrors.NewAlreadyExists(pods, "x"), nil},
		{"an error already of a kind keeps it", fmt.Errorf("x: %w", ErrQuotaNotReady), fault.NotReady},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := classify(c.err)
			if fault.Of(got) != c.want {
				t.Errorf("classify(%v) is of kind %v, want %v", c.err, fault.Of(got), c.want)
			}
			if !errors.Is(got, c.err) || got.Error() != c.err.Error() {
				t.Errorf("classify(%v) = %v: want the error itself, marked", c.err, got)
			}
		})
	}
}
