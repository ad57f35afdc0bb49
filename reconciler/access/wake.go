package access

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

// Waker lets a container that idle culling stopped run again and has its
// repo passed; ErrNotCulled when culling did not stop it.
type Waker interface {
	Wake(owner, name string) (repo string, err error)
}

// WakerFunc is a function that is a Waker.
type WakerFunc func(owner, name string) (string, error)

// Wake calls f.
func (f WakerFunc) Wake(owner, name string) (string, error) { return f(owner, name) }

// ErrNotCulled is a Waker's answer for a container culling did not stop.
var ErrNotCulled = errors.New("the container was not stopped for being idle")

// wake is POST /api/v1/containers/{name}/wake: a container idle culling
// stopped runs again at once (its repo's pass starts it). Nothing else
// is started: a container wm.yaml stops stays stopped.
func (s *Server) wake(w http.ResponseWriter, r *http.Request, id Identity) outcome {
	t, o := s.resolve(r.Context(), w, r, id)
	if o != nil {
		return *o
	}
	if s.cfg.Waker == nil {
		return fail(w, http.StatusNotImplemented, t.name, "this WhaleMountain does not cull idle containers")
	}
	repo, err := s.cfg.Waker.Wake(t.owner, strings.TrimPrefix(t.name, t.owner+"_"))
	switch {
	case errors.Is(err, ErrNotCulled):
		return fail(w, http.StatusConflict, t.name, "container "+t.name+" was not stopped for being idle: change wm.yaml to start one it stops")
	case err != nil:
		s.log.Error("wake failed", "container", t.name, "err", err)
		return fail(w, http.StatusInternalServerError, t.name, "the wake was not recorded; try again")
	}
	writeJSON(w, http.StatusOK, map[string]string{"woken": t.name, "repo": repo})
	return ok(t.name)
}

// Wake starts again a container of the caller's that idle culling
// stopped.
func (c *Client) Wake(ctx context.Context, name string) error {
	resp, err := c.Do(ctx, http.MethodPost, containerPath(name, "wake"), nil, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}
