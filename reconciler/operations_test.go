package reconciler

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/schema"
)

// semesterWorld is a world whose semester ends on 2026-12-15 for
// everyone, and on 2026-12-05 for the group cs101.
func semesterWorld(t *testing.T, cleanupAfter time.Duration) *world {
	return newWorld(t, func(c *schema.ServerConfig) {
		c.Schedules.TimeZone = "UTC"
		c.Semester = &schema.Semester{
			End:          "2026-12-15",
			Groups:       []schema.SemesterGroup{{Group: "cs101", End: "2026-12-05"}},
			WarnBefore:   schema.Duration(7 * 24 * time.Hour),
			CleanupAfter: schema.Duration(cleanupAfter),
		}
	})
}

func TestTheSemesterEnd(t *testing.T) {
	day := func(d, h int) time.Time { return time.Date(2026, 12, d, h, 0, 0, 0, time.UTC) }
	tests := []struct {
		name        string
		key         string
		wmYAML      string
		now         time.Time
		wantRunning bool
		wantMessage string
	}{
		{"before the end and its warning, it runs with nothing said", "alice/web", webV1, day(1, 12), true, ""},
		{"within warnBefore of the end, the status warns", "alice/web", webV1, day(9, 12), true, "everything stops after 2026-12-15 (the semester's end)"},
		{"on the last day it still runs", "alice/web", webV1, day(15, 23), true, "stops after 2026-12-15"},
		{"after the end everything is stopped and nothing deleted", "alice/web", webV1, day(16, 0), false, "expired on 2026-12-15 (the semester's end): everything is stopped, nothing was deleted"},
		{"a group's own end comes first for its students", "cs101/alice/web", webV1, day(6, 0), false, "expired on 2026-12-05 (the semester's end)"},
		{"a student's expires: brings the end forward", "alice/web", webV1 + "expires: 2026-12-02\n", day(3, 0), false, "expired on 2026-12-02 (expires: in wm.yaml)"},
		{"a student's expires: never puts the end off", "alice/web", webV1 + "expires: 2027-06-30\n", day(16, 0), false, "expired on 2026-12-15 (the semester's end)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := semesterWorld(t, 0)
			owner := strings.Split(tt.key, "/")[0]
			if strings.HasPrefix(tt.key, "cs101/") {
				owner = "alice"
			}
			repo := w.push(tt.key, tt.wmYAML)
			repo.Owner = owner
			w.now = day(1, 0)
			w.mustReconcile(repo)
			w.now = tt.now
			res := w.mustReconcile(repo)
			c, _, ok := w.container("alice_web")
			if !ok {
				t.Fatal("the container was deleted")
			}
			if c.Running != tt.wantRunning {
				t.Errorf("running %v, want %v", c.Running, tt.wantRunning)
			}
			if tt.wantMessage == "" && strings.Contains(res.Message, "stops") || !strings.Contains(res.Message, tt.wantMessage) {
				t.Errorf("message %q, want it to say %q", res.Message, tt.wantMessage)
			}
			st, _, _ := w.store.Repo(tt.key)
			if wantReason := map[bool]core.Reason{true: core.Applied, false: core.Expired}[tt.wantRunning]; st.Condition(core.Ready).Reason != wantReason {
				t.Errorf("reason %s, want %s", st.Condition(core.Ready).Reason, wantReason)
			}
		})
	}
}

func TestWhatStaysExpiredPastTheCleanUpIsRemovedAndItsVolumesKept(t *testing.T) {
	w := semesterWorld(t, 30*24*time.Hour)
	repo := w.push("alice/web", "version: 1\ncontainers:\n  web:\n    image: self\n    volumes: {data: /data}\n")
	w.now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w.mustReconcile(repo)
	// Others' containers, so that one removal stays under the prune limit.
	w.mustReconcile(w.push("bob/web", "version: 1\ncontainers:\n  a: {image: self}\n  b: {image: self}\n"))
	w.now = time.Date(2027, 1, 14, 0, 0, 0, 0, time.UTC) // 30 days after the end, less a day
	w.mustReconcile(repo)
	if _, _, ok := w.container("alice_web"); !ok {
		t.Fatal("removed before the clean-up time")
	}
	w.now = time.Date(2027, 1, 15, 0, 0, 1, 0, time.UTC)
	res := w.mustReconcile(repo)
	if _, _, ok := w.container("alice_web"); ok {
		t.Error("the container stayed past the clean-up time")
	}
	if !strings.Contains(res.Message, "were removed") {
		t.Errorf("message %q", res.Message)
	}
	vols, err := w.hosts[0].ListVolumes(context.Background())
	if err != nil || len(vols) != 1 {
		t.Errorf("volumes %v, %v: want the data volume kept", vols, err)
	}
}

// cullWorld is a world with idle culling after an hour under 5% CPU.
func cullWorld(t *testing.T) *world {
	return newWorld(t, func(c *schema.ServerConfig) {
		c.Schedules = schema.Schedules{TimeZone: "UTC", IdleCull: "*/10 * * * *"}
		c.Culling = &schema.Culling{After: schema.Duration(time.Hour), BelowCPUShare: 0.05}
	})
}

const gpuWeb = "version: 1\ncontainers:\n  train:\n    image: self\n    gpus: 1\n    cpus: 2\n  web:\n    image: self\n"

func TestAnIdleGPUContainerIsCulledAndANewCommitWakesIt(t *testing.T) {
	w := cullWorld(t)
	repo := w.push("alice/ml", gpuWeb)
	w.mustReconcile(repo)
	h := w.hosts[0]
	cull := func(cpu time.Duration, wantRepos int) {
		t.Helper()
		h.SetCPUTime("alice_train", cpu)
		repos, err := w.rec.CullIdle(context.Background())
		if err != nil || len(repos) != wantRepos {
			t.Fatalf("at %v: cull %v, %v; want %d repos", w.now, repos, err, wantRepos)
		}
		w.now = w.now.Add(30 * time.Minute)
	}
	// 2 CPUs for 30 minutes is 3600 CPU-seconds; 5% of it is 180.
	cull(0, 0)                // first measurement
	cull(100*time.Second, 0)  // idle for 30 minutes
	cull(2000*time.Second, 0) // busy: starts afresh
	cull(2100*time.Second, 0) // idle for 30 minutes
	if c, _, _ := w.container("alice_train"); !c.Running {
		t.Fatal("culled before an hour of idleness")
	}
	cull(2200*time.Second, 1) // idle for an hour: culled
	res := w.mustReconcile(repo)
	train, _, _ := w.container("alice_train")
	web, _, _ := w.container("alice_web")
	if train.Running || !web.Running {
		t.Errorf("after the pass: train running %v, web running %v; want train stopped only", train.Running, web.Running)
	}
	st, _, _ := w.store.Repo("alice/ml")
	if st.Condition(core.Ready).Reason != core.Culled || !strings.Contains(res.Message, "train was stopped") || !strings.Contains(res.Message, "wm wake train") {
		t.Errorf("reason %s, message %q", st.Condition(core.Ready).Reason, res.Message)
	}
	// Passes of the same commit keep it stopped.
	w.mustReconcile(repo)
	if c, _, _ := w.container("alice_train"); c.Running {
		t.Error("a pass of the same commit started the culled container")
	}
	// A new commit wakes it.
	w.push("alice/ml", gpuWeb+"# a new commit\n")
	w.mustReconcile(repo)
	if c, _, _ := w.container("alice_train"); !c.Running {
		t.Error("a new commit did not wake the culled container")
	}
	if st, _, _ := w.store.Repo("alice/ml"); st.Condition(core.Ready).Reason != core.Applied {
		t.Errorf("reason after waking %s", st.Condition(core.Ready).Reason)
	}
}

func TestAWakeBringsACulledContainerBackAndOnlyItsOwnerCanWakeIt(t *testing.T) {
	w := cullWorld(t)
	repo := w.push("alice/ml", gpuWeb)
	w.mustReconcile(repo)
	for i := range 4 {
		w.hosts[0].SetCPUTime("alice_train", time.Duration(i)*time.Second)
		if _, err := w.rec.CullIdle(context.Background()); err != nil {
			t.Fatal(err)
		}
		w.now = w.now.Add(time.Hour)
	}
	w.mustReconcile(repo)
	if c, _, _ := w.container("alice_train"); c.Running {
		t.Fatal("not culled")
	}
	if _, err := w.rec.Wake("bob", "train"); !errors.Is(err, ErrNotCulled) {
		t.Errorf("bob wakes alice's train: %v", err)
	}
	if _, err := w.rec.Wake("alice", "web"); !errors.Is(err, ErrNotCulled) {
		t.Errorf("waking a container that was not culled: %v", err)
	}
	key, err := w.rec.Wake("alice", "train")
	if err != nil || key != "alice/ml" {
		t.Fatalf("wake = %q, %v", key, err)
	}
	w.mustReconcile(repo)
	if c, _, _ := w.container("alice_train"); !c.Running {
		t.Error("the woken container is not running after its pass")
	}
}

func TestContainersWithoutAGPUAreNeverCulled(t *testing.T) {
	w := cullWorld(t)
	repo := w.push("alice/web", webV1)
	w.mustReconcile(repo)
	for range 5 {
		if repos, err := w.rec.CullIdle(context.Background()); err != nil || len(repos) != 0 {
			t.Fatalf("cull %v, %v", repos, err)
		}
		w.now = w.now.Add(time.Hour)
	}
}

// notices records what a Notifier was asked to say, by repo and key.
type notices struct {
	sent map[string]string // "<repo> <key>" → title
	fail error
}

func (n *notices) Notify(_ context.Context, repo Repo, key, title, _ string) error {
	if n.fail != nil {
		return n.fail
	}
	if n.sent == nil {
		n.sent = map[string]string{}
	}
	n.sent[repo.Key+" "+key] = title
	return nil
}

func TestStudentsAreWarnedOnceBeforeTheirSemesterEnds(t *testing.T) {
	w := semesterWorld(t, 0)
	w.now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, key := range []string{"alice/web", "cs101/bob/web"} {
		repo := w.push(key, "version: 1\n")
		if strings.HasPrefix(key, "cs101/") {
			repo.Owner = "bob"
		}
		w.mustReconcile(repo)
	}
	n := &notices{}
	run := func(now time.Time) {
		t.Helper()
		if err := w.rec.SemesterNotices(context.Background(), n, now); err != nil {
			t.Fatal(err)
		}
	}
	run(time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)) // more than a week before either end
	if len(n.sent) != 0 {
		t.Fatalf("warned too early: %v", n.sent)
	}
	run(time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)) // a week before cs101's end
	run(time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)) // again: nothing new
	if len(n.sent) != 1 || n.sent["cs101/bob/web semester-end-2026-12-05"] == "" {
		t.Fatalf("sent %v, want cs101's warning only", n.sent)
	}
	run(time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC))
	if len(n.sent) != 2 || !strings.Contains(n.sent["alice/web semester-end-2026-12-15"], "stops after 2026-12-15") {
		t.Errorf("sent %v, want alice's warning too", n.sent)
	}
	run(time.Date(2026, 12, 16, 0, 0, 0, 0, time.UTC)) // past the end: no more warnings
	if len(n.sent) != 2 {
		t.Errorf("sent %v after the end", n.sent)
	}
}

func TestAWarningThatFailsIsTriedAgainAtTheNextRun(t *testing.T) {
	w := semesterWorld(t, 0)
	w.now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w.mustReconcile(w.push("alice/web", "version: 1\n"))
	n := &notices{fail: errors.New("GitLab is down")}
	now := time.Date(2026, 12, 10, 0, 0, 0, 0, time.UTC)
	if err := w.rec.SemesterNotices(context.Background(), n, now); err == nil || !strings.Contains(err.Error(), "alice/web") {
		t.Fatalf("err %v, want one naming the repo", err)
	}
	n.fail = nil
	if err := w.rec.SemesterNotices(context.Background(), n, now.Add(time.Hour)); err != nil || len(n.sent) != 1 {
		t.Errorf("sent %v, %v after GitLab came back", n.sent, err)
	}
}

func TestTheCleanUpRemovesDanglingImagesOnEveryHost(t *testing.T) {
	w := newWorld(t)
	w.hosts[0].AddDanglingImages(3)
	if err := w.rec.PruneImages(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, _, err := w.hosts[0].PruneDanglingImages(context.Background())
	if err != nil || n != 0 {
		t.Errorf("%d dangling images left, %v", n, err)
	}
}

func TestTheJobsAreThoseTheConfigSchedules(t *testing.T) {
	w := newWorld(t, func(c *schema.ServerConfig) {
		c.Schedules = schema.Schedules{TimeZone: "UTC", Resync: "@daily", IdleCull: "*/5 * * * *"}
	})
	l := NewLoop(w.rec, func() ([]Repo, error) { return nil, nil }, time.Minute, 0, 1, nil)
	jobs, err := Jobs(w.cfg, w.rec, l, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range jobs {
		names = append(names, j.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"idleCull", "resync"}) {
		t.Errorf("jobs %v", names)
	}
}

// extensions is an Extender that approves what approved says.
type extensions struct {
	approved map[string]string // repo → until
	asked    []string
}

func (x *extensions) Extension(_ context.Context, repo Repo) (string, string, int, error) {
	x.asked = append(x.asked, repo.Key)
	if until, ok := x.approved[repo.Key]; ok {
		return until, "teacher", 7, nil
	}
	return "", "", 0, nil
}

func TestAnExtensionAnAdminApprovedLetsExpiresPassTheSemesterEnd(t *testing.T) {
	w := semesterWorld(t, 0)
	w.now = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	repo := w.push("alice/web", webV1+"expires: 2027-01-31\n")
	w.mustReconcile(repo)
	if st, _, _ := w.store.Repo("alice/web"); st.ExtensionAsked != "2027-01-31" {
		t.Fatalf("extension asked %q, want the wm.yaml's date", st.ExtensionAsked)
	}
	x := &extensions{approved: map[string]string{}}
	after := time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC) // past the semester's end
	// Not approved yet: the semester's end holds.
	if err := w.rec.SemesterExtensions(context.Background(), x, after); err != nil {
		t.Fatal(err)
	}
	w.now = after
	w.mustReconcile(repo)
	if c, _, _ := w.container("alice_web"); c.Running {
		t.Fatal("running past the semester's end without an extension")
	}
	// An admin approves it: it runs again until the wm.yaml's date.
	x.approved["alice/web"] = "2027-01-31"
	if err := w.rec.SemesterExtensions(context.Background(), x, after); err != nil {
		t.Fatal(err)
	}
	res := w.mustReconcile(repo)
	if c, _, _ := w.container("alice_web"); !c.Running {
		t.Fatalf("not running with an approved extension: %s", res.Message)
	}
	// Once recorded, GitLab is not asked again.
	asked := len(x.asked)
	if err := w.rec.SemesterExtensions(context.Background(), x, after); err != nil || len(x.asked) != asked {
		t.Errorf("asked again: %v, %v", x.asked, err)
	}
	// A later date than the one approved is not honoured.
	w.push("alice/web", webV1+"expires: 2027-06-30\n")
	w.mustReconcile(repo)
	if c, _, _ := w.container("alice_web"); c.Running {
		t.Error("running on a later date than the approved extension")
	}
	// And the extension's own end stops it.
	w.push("alice/web", webV1+"expires: 2027-01-31\n")
	w.now = time.Date(2027, 2, 1, 0, 0, 1, 0, time.UTC)
	res = w.mustReconcile(repo)
	if c, _, _ := w.container("alice_web"); c.Running || !strings.Contains(res.Message, "teacher approved") {
		t.Errorf("after the extension: running %v, message %q", c.Running, res.Message)
	}
}
