package reconciler

import (
	"archive/tar"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/schema"
)

// On a real engine, with a clock set past the semester's end: the
// container stops and everything else stays (the container, its volume
// and what was written in it); the clock set back before the end (an
// extension, say) starts it again with the volume as it was.
func TestOnARealEngineTheSemesterEndStopsEverythingAndDeletesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the second Docker Engine (ci/docker2-up)")
	}
	t.Parallel()
	b := newGPUBlade(t)
	b.cfg.Schedules = schema.Schedules{TimeZone: "Europe/Berlin", Semester: "0 * * * *"}
	b.cfg.Semester = &schema.Semester{End: "2027-02-15", WarnBefore: schema.Duration(7 * 24 * time.Hour)}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2027, 2, 15, 23, 0, 0, 0, berlin) // the last day's last hour
	rec, err := New(b.cfg, gitsource.New(filepath.Join(b.root, "cache")), []core.Engine{b.eng}, b.st, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	owner := b.d.Owner(t)
	repo := b.push(t, owner, "version: 1\ncontainers:\n  web:\n    image: "+multiHostImage+"\n    memory: 32Mi\n    volumes: {data: /data}\n    command: [sh, -c, 'date >> /data/log; exec sleep 3600']\n")
	name := core.ObjectName(owner, "web")
	res, err := b.pass(t, rec, repo)
	if err != nil || !res.Ready {
		t.Fatalf("pass on the last day: %v %s", err, res.Message)
	}
	before, err := b.d.Client(t).ContainerInspect(context.Background(), name)
	if err != nil || !before.State.Running {
		t.Fatalf("before the end: %+v, %v", before, err)
	}

	now = time.Date(2027, 2, 16, 0, 0, 1, 0, berlin) // just past the end, in the configured zone
	res, err = b.pass(t, rec, repo)
	if err != nil {
		t.Fatal(err)
	}
	after, err := b.d.Client(t).ContainerInspect(context.Background(), name)
	if err != nil || after.State.Running || after.ID != before.ID {
		t.Fatalf("after the end: %+v, %v; want the same container, stopped", after, err)
	}
	vols, err := b.eng.ListVolumes(context.Background())
	if err != nil || len(vols) != 1 {
		t.Errorf("volumes after the end: %v, %v; want the data volume kept", vols, err)
	}
	if st, _, _ := b.st.Repo(repo.Key); st.Condition(core.Ready).Reason != core.Expired {
		t.Errorf("reason %s, message %q", st.Condition(core.Ready).Reason, res.Message)
	}

	now = time.Date(2027, 2, 15, 12, 0, 0, 0, berlin) // back before the end
	if res, err := b.pass(t, rec, repo); err != nil || !res.Ready {
		t.Fatalf("pass before the end again: %v %s", err, res.Message)
	}
	again, err := b.d.Client(t).ContainerInspect(context.Background(), name)
	if err != nil || !again.State.Running || again.ID != before.ID {
		t.Fatalf("started again: %+v, %v; want the same container running", again.State, err)
	}
	// Its volume kept what the first start wrote: the second start adds
	// a line to it.
	rc, _, err := b.d.Client(t).CopyFromContainer(context.Background(), name, "/data/log")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(tr)
	if lines := strings.Count(string(data), "\n"); lines != 2 {
		t.Errorf("the volume's log has %q; want both starts' lines", data)
	}
}
