package reconciler

import (
	"errors"
	"testing"

	"github.com/whalemountain/wm/reconciler/store"
)

func TestImageResolution(t *testing.T) {
	repos := map[string]store.RepoState{
		"bob/tools":  {Key: "bob/tools", ImageShared: true, AppliedRevision: "b0b"},
		"carol/priv": {Key: "carol/priv", ImageShared: false, AppliedRevision: "c4"},
		"dave/new":   {Key: "dave/new", ImageShared: true},
	}
	ir := imageResolver{
		registry: "registry.example.edu:5000",
		allowed:  []string{"docker.io/library", "ghcr.io/course/"},
		shared: func(key string) (store.RepoState, bool, error) {
			r, ok := repos[key]
			return r, ok, nil
		},
	}
	alice := Repo{Key: "alice/Web", Owner: "alice"}
	for _, tc := range []struct {
		name, image, want, reason string
	}{
		{"self is the registry image of the project at the commit", "self", "registry.example.edu:5000/alice/web:abc123", ""},
		{"a shared image resolves to its repo's rolled-out commit", "shared/bob/tools", "registry.example.edu:5000/bob/tools:b0b", ""},
		{"an image that is not shared is refused", "shared/carol/priv", "", "ImageNotShared"},
		{"an unknown shared repo is refused", "shared/erin/x", "", "ImageNotShared"},
		{"a shared image not rolled out yet is waited for", "shared/dave/new", "", "SharedImageNotBuilt"},
		{"an official Docker Hub image is allowed by docker.io/library", "redis:7", "docker.io/library/redis:7", ""},
		{"a reference without a tag means latest", "python", "docker.io/library/python:latest", ""},
		{"another Docker Hub user is not allowed", "mallory/miner:1", "", "ImageNotAllowed"},
		{"a prefix allows whole path segments only", "ghcr.io/coursework/x:1", "", "ImageNotAllowed"},
		{"a prefix with a slash allows below it", "ghcr.io/course/x:1", "ghcr.io/course/x:1", ""},
		{"the configured registry is always allowed", "registry.example.edu:5000/ta/grader:2", "registry.example.edu:5000/ta/grader:2", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ir.resolve(alice, "abc123", "containers.web.image", tc.image)
			if tc.reason == "" {
				if err != nil || got != tc.want {
					t.Errorf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			var pe *PassError
			if !errors.As(err, &pe) || pe.Reason != tc.reason {
				t.Errorf("got %q, %v; want reason %s", got, err, tc.reason)
			}
		})
	}
}

func TestSelfWithoutARegistryIsAnAdminProblem(t *testing.T) {
	_, err := imageResolver{}.resolve(Repo{Key: "a/b"}, "1", "containers.web.image", "self")
	if o, reason := Classify(err); o != Stalled || reason != "NoRegistry" {
		t.Errorf("got %v %s (%v)", o, reason, err)
	}
}
