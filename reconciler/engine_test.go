package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/docker/dockertest"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/reconciler/gitsource/gittest"
	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// TestOnTheRealEngineOverSmartHTTP drives the whole pass against the local
// Docker Engine and repos served by git http-backend, as a student's
// pushes would: create, change, stop, break, remove, and a name that is
// not ours. Each step builds on the one before.
func TestOnTheRealEngineOverSmartHTTP(t *testing.T) {
	eng := dockertest.Engine(t)
	owner, other := dockertest.Owner(t), dockertest.Owner(t)
	root := t.TempDir()
	base := gittest.Serve(t, filepath.Join(root, "git"))
	from := dockertest.FreePorts(t, 1)[0]
	const registry = "wm-e2e.test:5000"

	cfg, err := schema.ParseServer("e2e.yaml", strings.NewReader(fmt.Sprintf(`
registry: {host: %q}
policy:
  hostPorts: {from: %d, to: %d}
  maxPrunePercent: 100
docker:
  hosts: [{name: local, endpoint: %q}]
`, registry, from, from+50, dockertest.Endpoint())), root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(root, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := New(cfg, gitsource.New(filepath.Join(root, "cache")), []core.Engine{eng}, st)
	if err != nil {
		t.Fatal(err)
	}

	repos := map[string]*gittest.Repo{}
	// push commits wm.yaml to <who>/web and builds the image CI would.
	push := func(who, wmYAML string) Repo {
		t.Helper()
		r, ok := repos[who]
		if !ok {
			r = gittest.NewRepo(t, filepath.Join(root, "git", who, "web.git"))
			repos[who] = r
		}
		sha := r.Commit(t, "main", map[string]string{"wm.yaml": wmYAML, "Dockerfile": "FROM busybox\n"}, "push")
		dockertest.BusyboxImage(t, fmt.Sprintf("%s/%s/web:%s", registry, who, sha))
		return Repo{Key: who + "/web", Owner: who, URL: base + "/" + who + "/web.git", Branch: "main"}
	}
	pass := func(repo Repo) (Result, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		res, err := rec.Reconcile(ctx, repo)
		if errors.Is(err, core.ErrPortInUse) {
			// The range is in the machine's ephemeral ports, and another
			// suite's client took one just allocated: the pass set it
			// aside, and the next chooses another, as the loop's would.
			res, err = rec.Reconcile(ctx, repo)
		}
		return res, err
	}
	inspect := func(name string) (core.Container, bool) {
		t.Helper()
		c, err := eng.Inspect(context.Background(), name)
		return c, err == nil
	}
	// The container appends $MODE to a log in its volume and serves the
	// volume over HTTP, so one GET shows the env and the volume's history.
	web := func(mode, extra string) string {
		return fmt.Sprintf(`version: 1
containers:
  web:
    image: self
    command: ["sh", "-c", "echo $MODE >> /data/log && exec httpd -f -p 8000 -h /data"]
    env: {MODE: %s}
    ports: [8000]
    volumes: {data: /data}
    memory: 32Mi
%s`, mode, extra)
	}
	get := func(port int) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/log", port))
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return string(body)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET :%d/log: %v", port, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	name := owner + "_web"
	repo := push(owner, web("dev", ""))
	var hostPort int

	t.Run("a push creates the container with its env, port and volume", func(t *testing.T) {
		res, err := pass(repo)
		if err != nil || !res.Ready {
			t.Fatalf("pass: %+v, %v", res, err)
		}
		c, ok := inspect(name)
		if !ok || !c.Running || len(c.Ports) != 1 || c.Ports[0].Guest != 8000 {
			t.Fatalf("container: %+v", c)
		}
		hostPort = c.Ports[0].Host
		if hostPort < from || hostPort > from+50 {
			t.Errorf("host port %d outside the policy range", hostPort)
		}
		if got := get(hostPort); got != "dev\n" {
			t.Errorf("served %q", got)
		}
	})

	t.Run("changed env recreates the container with the same host port and volume", func(t *testing.T) {
		before, _ := inspect(name)
		push(owner, web("prod", ""))
		res, err := pass(repo)
		if err != nil || res.Plan.Count(ActionRecreate) != 1 {
			t.Fatalf("pass: %+v, %v", res.Plan, err)
		}
		after, _ := inspect(name)
		if after.ID == before.ID || after.Ports[0].Host != hostPort {
			t.Errorf("id %s → %s, port %d → %d", before.ID[:12], after.ID[:12], hostPort, after.Ports[0].Host)
		}
		if got := get(hostPort); got != "dev\nprod\n" {
			t.Errorf("volume or env lost: served %q", got)
		}
	})

	t.Run("an invalid push keeps the running container", func(t *testing.T) {
		before, _ := inspect(name)
		push(owner, web("prod", "    gpus: 99\n"))
		_, err := pass(repo)
		if o, reason := Classify(err); o != Stalled || reason != "ValidationFailed" || !strings.Contains(err.Error(), "wm.yaml:10:11: containers.web.gpus: 99 is not a GPU count (0-8)") {
			t.Fatalf("got %v/%s: %v", o, reason, err)
		}
		if after, ok := inspect(name); !ok || after.ID != before.ID || !after.Running {
			t.Errorf("container disturbed: %+v", after)
		}
	})

	t.Run("state stopped stops the container without removing it", func(t *testing.T) {
		push(owner, web("prod", "    state: stopped\n"))
		if _, err := pass(repo); err != nil {
			t.Fatal(err)
		}
		if c, ok := inspect(name); !ok || c.Running {
			t.Errorf("container: %+v", c)
		}
	})

	t.Run("an unlabelled container with a colliding name is never touched", func(t *testing.T) {
		dockertest.AddForeign(t, owner+"_mine")
		push(owner, web("prod", "  mine: {image: self}\n"))
		_, err := pass(repo)
		if o, reason := Classify(err); o != Stalled || reason != "NameConflict" {
			t.Fatalf("got %v/%s: %v", o, reason, err)
		}
		raw, err := dockertest.Client(t).ContainerInspect(context.Background(), owner+"_mine")
		if err != nil || raw.Config.Labels[docker.LabelManagedBy] != "" {
			t.Errorf("foreign container changed: %v", err)
		}
	})

	t.Run("two owners never see each other's containers", func(t *testing.T) {
		theirs := push(other, web("theirs", ""))
		if _, err := pass(theirs); err != nil {
			t.Fatal(err)
		}
		push(other, "version: 1\n")
		res, err := pass(theirs)
		if err != nil || len(res.Plan.Actions) != 1 || res.Plan.Actions[0].Name != other+"_web" {
			t.Fatalf("plan of the other owner: %+v, %v", res.Plan, err)
		}
		if _, ok := inspect(name); !ok {
			t.Error("the first owner's container is gone")
		}
	})

	t.Run("a container removed from wm.yaml is pruned and its volume stays", func(t *testing.T) {
		push(owner, "version: 1\n")
		res, err := pass(repo)
		if err != nil || res.Plan.Count(ActionRemove) != 1 {
			t.Fatalf("pass: %+v, %v", res.Plan, err)
		}
		if _, ok := inspect(name); ok {
			t.Error("container still there")
		}
		vols, err := eng.ListVolumes(context.Background())
		found := false
		for _, v := range vols {
			found = found || v.Name == owner+"_data"
		}
		if err != nil || !found {
			t.Errorf("volume %s_data gone: %v", owner, err)
		}
	})
}
