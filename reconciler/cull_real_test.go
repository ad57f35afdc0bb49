package reconciler

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/gitsource"
	"github.com/whalemountain/wm/schema"
)

// On a real engine that starts GPU containers (the second one), idle
// culling measures real CPU time: of two students' one-GPU containers,
// the one that sleeps is culled and stopped by its repo's next pass, the
// one that computes is left alone; a new commit wakes the culled one, and
// so does a wake once it is culled again. The idle time is seconds here
// (set in code: the server config's least is a minute) so that the test
// runs on the real clock.
func TestOnARealEngineAnIdleGPUContainerIsCulledAndAPushOrAWakeBringsItBack(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the second Docker Engine (ci/docker2-up)")
	}
	t.Parallel()
	b := newGPUBlade(t)
	b.cfg.Schedules = schema.Schedules{TimeZone: "UTC", IdleCull: "* * * * *"}
	b.cfg.Culling = &schema.Culling{After: schema.Duration(3 * time.Second), BelowCPUShare: 0.05}
	rec, err := New(b.cfg, gitsource.New(filepath.Join(b.root, "cache")), []core.Engine{b.eng}, b.st)
	if err != nil {
		t.Fatal(err)
	}
	idleOwner, busyOwner := b.d.Owner(t), b.d.Owner(t)
	idle := b.push(t, idleOwner, oneGPU)
	busy := b.push(t, busyOwner, "version: 1\ncontainers:\n  train: {image: "+multiHostImage+", gpus: 1, memory: 32Mi, cpus: 0.5, command: [sh, -c, 'while :; do :; done']}\n")
	for _, repo := range []Repo{idle, busy} {
		if res, err := b.pass(t, rec, repo); err != nil || !res.Ready {
			t.Fatalf("pass of %s: %v %s", repo.Key, err, res.Message)
		}
	}
	idleName, busyName := core.ObjectName(idleOwner, "train"), core.ObjectName(busyOwner, "train")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// measureUntilCulled measures every second until culling returns
	// the idle repo, and fails if it returns the busy one.
	measureUntilCulled := func(t *testing.T) {
		t.Helper()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			repos, err := rec.CullIdle(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range repos {
				if r == busy.Key {
					t.Fatalf("the busy container was culled")
				}
			}
			if len(repos) == 1 && repos[0] == idle.Key {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the idle container was not culled within a minute")
			}
		}
	}
	running := func(name string) bool { return b.gpuOf(t, name).running }

	measureUntilCulled(t)
	res, err := b.pass(t, rec, idle)
	if err != nil || running(idleName) || !running(busyName) {
		t.Fatalf("after the pass: %v; idle running %v, busy running %v", err, running(idleName), running(busyName))
	}
	if st, _, _ := b.st.Repo(idle.Key); st.Condition(core.Ready).Reason != core.Culled {
		t.Errorf("reason %s, message %q", st.Condition(core.Ready).Reason, res.Message)
	}
	// Passes of the same commit leave it stopped; a new commit wakes it.
	if _, err := b.pass(t, rec, idle); err != nil || running(idleName) {
		t.Fatalf("a pass of the same commit: %v, running %v", err, running(idleName))
	}
	idle = b.push(t, idleOwner, oneGPU+"# a new commit\n")
	if _, err := b.pass(t, rec, idle); err != nil || !running(idleName) {
		t.Fatalf("a new commit did not wake it: %v, running %v", err, running(idleName))
	}
	// Culled again, a wake brings it back.
	measureUntilCulled(t)
	if _, err := b.pass(t, rec, idle); err != nil || running(idleName) {
		t.Fatalf("culled again: %v, running %v", err, running(idleName))
	}
	if _, err := rec.Wake(busyOwner, "train"); err == nil {
		t.Error("a container that was not culled was woken")
	}
	if key, err := rec.Wake(idleOwner, "train"); err != nil || key != idle.Key {
		t.Fatalf("wake = %q, %v", key, err)
	}
	if _, err := b.pass(t, rec, idle); err != nil || !running(idleName) || !running(busyName) {
		t.Fatalf("after the wake: %v; idle running %v, busy running %v", err, running(idleName), running(busyName))
	}
}
