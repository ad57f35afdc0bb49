package docker_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
)

// These tests cover what only the Fake has: the hooks tests of callers use.

func TestFakeLogsCallsAndSeparatesMutations(t *testing.T) {
	t.Parallel()
	f := docker.NewFake("fake")
	f.AddImage(image)
	s := spec(t, "alice", "web")
	if _, err := f.ListManaged(ctx(t)); err != nil {
		t.Fatal(err)
	}
	create(t, f, s)
	inspect(t, f, s.Name)
	if err := f.Stop(ctx(t), s.Name, time.Second); err != nil {
		t.Fatal(err)
	}
	_, _ = f.Inspect(ctx(t), "alice-missing")

	wantCalls := []docker.Call{
		{Method: "ListManaged"}, {Method: "Create", Arg: s.Name}, {Method: "Inspect", Arg: s.Name},
		{Method: "Stop", Arg: s.Name}, {Method: "Inspect", Arg: "alice-missing"},
	}
	if got := f.Calls(); !slices.Equal(got, wantCalls) {
		t.Errorf("Calls() = %v, want %v", got, wantCalls)
	}
	wantMutations := []docker.Call{{Method: "Create", Arg: s.Name}, {Method: "Stop", Arg: s.Name}}
	if got := f.Mutations(); !slices.Equal(got, wantMutations) {
		t.Errorf("Mutations() = %v, want %v", got, wantMutations)
	}
	f.ResetCalls()
	if got := f.Calls(); len(got) != 0 {
		t.Errorf("after ResetCalls, Calls() = %v", got)
	}
}

func TestFakeFailOnFailsAMethodUntilHealed(t *testing.T) {
	t.Parallel()
	f := docker.NewFake("fake")
	f.AddImage(image)
	s := spec(t, "alice", "web")
	create(t, f, s)
	boom := errors.New("daemon on fire")
	f.FailOn("Remove", boom)
	if err := f.Remove(ctx(t), s.Name); !errors.Is(err, boom) {
		t.Fatalf("Remove = %v, want %v", err, boom)
	}
	inspect(t, f, s.Name) // still there
	f.FailOn("Remove", nil)
	if err := f.Remove(ctx(t), s.Name); err != nil {
		t.Fatal(err)
	}
}

func TestFakeAlterSimulatesWhatTheHostDoes(t *testing.T) {
	t.Parallel()
	f := docker.NewFake("fake")
	f.AddImage(image)
	s := spec(t, "alice", "web")
	create(t, f, s)
	if err := f.Alter(s.Name, func(c *core.Container) {
		c.Running, c.State, c.ExitCode, c.RestartCount, c.Health = false, "exited", 137, 4, "unhealthy"
	}); err != nil {
		t.Fatal(err)
	}
	c := inspect(t, f, s.Name)
	if c.Running || c.State != "exited" || c.ExitCode != 137 || c.RestartCount != 4 || c.Health != "unhealthy" {
		t.Errorf("inspect = %+v, want the altered state", c)
	}
	if len(f.Mutations()) != 1 {
		t.Errorf("Alter counted as a mutation: %v", f.Mutations())
	}
}

func TestFakeSpecReturnsACopyOfWhatWasCreated(t *testing.T) {
	t.Parallel()
	f := docker.NewFake("fake")
	f.AddImage(image)
	s := spec(t, "alice", "web")
	s.Env = map[string]string{"A": "1"}
	create(t, f, s)
	got, ok := f.Spec(s.Name)
	if !ok || got.Hash() != s.Hash() {
		t.Fatalf("Spec() = %+v, %v; want the created spec", got, ok)
	}
	got.Env["A"] = "changed"
	if again, _ := f.Spec(s.Name); again.Env["A"] != "1" {
		t.Errorf("Spec() shares its env with the Fake")
	}
	if _, ok := f.Spec("alice-missing"); ok {
		t.Errorf("Spec() of a missing container reported ok")
	}
}
