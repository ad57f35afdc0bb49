package access_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/whalemountain/wm/reconciler/access"
	"github.com/whalemountain/wm/reconciler/core"
)

// wakes records what a Waker was asked, and says culled only of the
// names in culled.
type wakes struct {
	mu     sync.Mutex
	culled map[string]bool
	asked  []string
}

func (w *wakes) Wake(owner, name string) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	full := core.ObjectName(owner, name)
	w.asked = append(w.asked, full)
	if !w.culled[full] {
		return "", access.ErrNotCulled
	}
	delete(w.culled, full)
	return owner + "/web", nil
}

func TestAStudentWakesTheirOwnCulledContainerAndNoOneElses(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Docker Engine")
	}
	t.Parallel()
	w := &wakes{culled: map[string]bool{}}
	e := newEnv(t, func(c *access.Config) { c.Waker = w })
	w.culled[core.ObjectName(e.alice, "web")] = true
	w.culled[core.ObjectName(e.bob, "web")] = true
	alice := e.client(e.aliceToken)

	err := alice.Wake(ctx(t), core.ObjectName(e.bob, "web"))
	wantStatus(t, err, http.StatusForbidden)
	if err := alice.Wake(ctx(t), "web"); err != nil {
		t.Errorf("alice wakes her culled web: %v", err)
	}
	err = alice.Wake(ctx(t), "web") // not culled any more
	wantStatus(t, err, http.StatusConflict)
	err = alice.Wake(ctx(t), "nothing")
	wantStatus(t, err, http.StatusNotFound)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.asked) != 2 || w.asked[0] != core.ObjectName(e.alice, "web") || !w.culled[core.ObjectName(e.bob, "web")] {
		t.Errorf("the waker was asked %v; bob's still culled: %v", w.asked, w.culled[core.ObjectName(e.bob, "web")])
	}
}

func TestAServerThatDoesNotCullAnswersWakesWith501(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Docker Engine")
	}
	t.Parallel()
	e := newEnv(t)
	err := e.client(e.aliceToken).Wake(ctx(t), "web")
	wantStatus(t, err, http.StatusNotImplemented)
}
