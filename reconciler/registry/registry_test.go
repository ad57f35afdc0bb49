package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/registry"
	"github.com/whalemountain/wm/reconciler/registry/registrytest"
)

func TestTheRegistryIsAskedWithoutPulling(t *testing.T) {
	reg := registrytest.Start(t)
	locked := registrytest.StartWithAuth(t, "ci", "secret-password")
	img := registrytest.BusyboxImage(t)
	reg.Push(t, reg.Ref("alice/web", "abc"), img)
	ctx := context.Background()
	c := registry.New(reg.Host(), true, "", "")
	for _, tc := range []struct {
		name, ref string
		want      bool
		err       error
	}{
		{"a pushed tag exists", reg.Ref("alice/web", "abc"), true, nil},
		{"a tag CI has not pushed yet does not", reg.Ref("alice/web", "def"), false, nil},
		{"an unknown repository does not", reg.Ref("bob/none", "abc"), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := c.Exists(ctx, tc.ref)
			if got != tc.want || !errors.Is(err, tc.err) {
				t.Errorf("got %v, %v", got, err)
			}
		})
	}
	t.Run("its build time is read from the image config", func(t *testing.T) {
		if _, err := c.Created(ctx, reg.Ref("alice/web", "abc")); err != nil {
			t.Error(err)
		}
	})
	t.Run("credentials are needed where the registry asks for them", func(t *testing.T) {
		locked.Push(t, locked.Ref("alice/web", "abc"), img)
		if _, err := registry.New(locked.Host(), true, "", "").Exists(ctx, locked.Ref("alice/web", "abc")); !errors.Is(err, registry.ErrUnauthorized) {
			t.Errorf("anonymous: %v", err)
		}
		ok, err := registry.New(locked.Host(), true, "ci", "secret-password").Exists(ctx, locked.Ref("alice/web", "abc"))
		if !ok || err != nil {
			t.Errorf("with credentials: %v, %v", ok, err)
		}
	})
	t.Run("a registry that is down is unreachable, not missing", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := registry.New("127.0.0.1:1", true, "", "").Exists(ctx, "127.0.0.1:1/alice/web:abc")
		if !errors.Is(err, registry.ErrUnreachable) {
			t.Errorf("got %v", err)
		}
	})
}
