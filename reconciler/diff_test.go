package reconciler

import (
	"fmt"
	"slices"
	"testing"

	"github.com/whalemountain/wm/reconciler/core"
)

func spec(name string, running bool, env string) core.ContainerSpec {
	return core.ContainerSpec{Name: core.ObjectName("alice", name), Owner: "alice", Repo: "alice/web", LocalName: name,
		Image: "r/alice/web:1", Env: map[string]string{"MODE": env}, Running: running,
		Ports: []core.PortBinding{{Guest: 80, Host: 50000}}}
}

func live(host string, s core.ContainerSpec, running bool) Live {
	return Live{Host: host, Container: core.Container{Name: s.Name, Running: running, Managed: true,
		Owner: s.Owner, Repo: s.Repo, LocalName: s.LocalName, SpecHash: s.Hash()}}
}

// renamed is l under another engine name, its labels unchanged.
func renamed(l Live, name string) Live {
	l.Name = name
	return l
}

func describe(p Plan) []string {
	var out []string
	for _, a := range p.Actions {
		out = append(out, fmt.Sprintf("%s %s@%s", a.Kind, a.Name, a.Host))
	}
	return out
}

func TestDiff(t *testing.T) {
	web, db := spec("web", true, "dev"), spec("db", true, "dev")
	for _, tc := range []struct {
		name      string
		desired   []Desired
		live      []Live
		want      []string
		unchanged int
	}{
		{"a declared container that does not exist is created",
			[]Desired{{"h1", web}}, nil, []string{"create alice_web@h1"}, 0},
		{"a container that matches is left alone",
			[]Desired{{"h1", web}}, []Live{live("h1", web, true)}, nil, 1},
		{"changed env recreates the container",
			[]Desired{{"h1", spec("web", true, "prod")}}, []Live{live("h1", web, true)}, []string{"recreate alice_web@h1"}, 0},
		{"a container asked to stop is stopped, not recreated",
			[]Desired{{"h1", spec("web", false, "dev")}}, []Live{live("h1", web, true)}, []string{"stop alice_web@h1"}, 0},
		{"a stopped container asked to run is started",
			[]Desired{{"h1", web}}, []Live{live("h1", web, false)}, []string{"start alice_web@h1"}, 0},
		{"a container nothing declares is removed",
			nil, []Live{live("h1", web, true)}, []string{"remove alice_web@h1"}, 0},
		{"a container placed on another host is recreated there",
			[]Desired{{"h2", web}}, []Live{live("h1", web, true)}, []string{"recreate alice_web@h2"}, 0},
		{"the same name on two hosts keeps one and removes the other",
			[]Desired{{"h1", web}}, []Live{live("h1", web, true), live("h2", web, true)}, []string{"remove alice_web@h2"}, 1},
		{"a container made under the legacy name is recreated under the new one",
			[]Desired{{"h1", web}}, []Live{renamed(live("h1", web, true), "alice-web")}, []string{"recreate alice_web@h1"}, 0},
		{"a container set aside during a recreation pairs with nothing and goes",
			[]Desired{{"h1", web}}, []Live{live("h1", web, true), renamed(live("h1", web, false), "alice_web-wm-old")}, []string{"remove alice_web-wm-old@h1"}, 1},
		{"another owner's container whose legacy name looks alike is not ours to pair",
			[]Desired{{"h1", web}}, []Live{renamed(live("h1", web, true), "alice-x-web")}, []string{"create alice_web@h1", "remove alice-x-web@h1"}, 0},
		{"creations come before removals, each in name order",
			[]Desired{{"h1", web}, {"h1", db}}, []Live{live("h1", spec("old", true, "dev"), true), live("h1", spec("aaa", true, "dev"), true)},
			[]string{"create alice_db@h1", "create alice_web@h1", "remove alice_aaa@h1", "remove alice_old@h1"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Diff(tc.desired, tc.live)
			if got := describe(p); !slices.Equal(got, tc.want) || p.Unchanged != tc.unchanged {
				t.Errorf("got %v (unchanged %d), want %v (unchanged %d)", got, p.Unchanged, tc.want, tc.unchanged)
			}
		})
	}
}

func TestDiffPodsAndSIFsUseTheSameVerbs(t *testing.T) {
	hash := func(p core.PodSpec) string { return p.Image }
	train := core.PodSpec{Name: "train", Image: "r/a:2"}
	for _, tc := range []struct {
		name string
		plan Plan
		want []string
		same int
	}{
		{"a declared pod that does not exist is created",
			DiffPods([]core.PodSpec{train}, hash, nil), []string{"create pod train"}, 0},
		{"a pod whose hash matches is left alone",
			DiffPods([]core.PodSpec{train}, hash, []core.Pod{{Name: "train", Hash: "r/a:2"}}), nil, 1},
		{"a changed pod is recreated",
			DiffPods([]core.PodSpec{train}, hash, []core.Pod{{Name: "train", Hash: "r/a:1"}}), []string{"recreate pod train"}, 0},
		{"a pod nothing declares is removed",
			DiffPods(nil, hash, []core.Pod{{Name: "old"}}), []string{"remove pod old"}, 0},
		{"a new SIF is created",
			DiffSIFs(map[string]string{"env": "r/a:2"}, nil), []string{"create sif env"}, 0},
		{"a SIF built from the same image is left alone",
			DiffSIFs(map[string]string{"env": "r/a:2"}, []core.SIFStatus{{Name: "env", Image: "r/a:2"}}), nil, 1},
		{"a SIF of a new image is rebuilt",
			DiffSIFs(map[string]string{"env": "r/a:2"}, []core.SIFStatus{{Name: "env", Image: "r/a:1"}}), []string{"recreate sif env"}, 0},
		{"a SIF nothing declares is removed",
			DiffSIFs(nil, []core.SIFStatus{{Name: "env", Image: "r/a:1"}}), []string{"remove sif env"}, 0},
		{"merged plans create before they remove, whatever the kind",
			Diff(nil, []Live{live("h1", spec("web", true, "dev"), true)}).Merge(DiffPods([]core.PodSpec{train}, hash, nil)).Merge(DiffSIFs(nil, []core.SIFStatus{{Name: "env"}})),
			[]string{"create pod train", "remove container alice_web", "remove sif env"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, a := range tc.plan.Actions {
				got = append(got, fmt.Sprintf("%s %s %s", a.Kind, a.Resource, a.Name))
			}
			if !slices.Equal(got, tc.want) || tc.plan.Unchanged != tc.same {
				t.Errorf("got %v (unchanged %d), want %v (unchanged %d)", got, tc.plan.Unchanged, tc.want, tc.same)
			}
		})
	}
}
