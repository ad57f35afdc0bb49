package reconciler

import (
	"errors"
	"strings"
	"testing"

	"github.com/whalemountain/wm/reconciler/core"
)

func TestImageResolution(t *testing.T) {
	repos := map[string]core.RepoState{
		"bob/tools":  {Key: "bob/tools", Owner: "bob", ImageShared: true, AppliedRevision: "b0b"},
		"carol/priv": {Key: "carol/priv", Owner: "carol", ImageShared: false, AppliedRevision: "c4"},
		"dave/new":   {Key: "dave/new", Owner: "dave", ImageShared: true},
		"alice/Lib":  {Key: "alice/Lib", Owner: "alice"},
		// GitLab projects are keyed by their full path below the groups.
		"students/erin/course/proj": {Key: "students/erin/course/proj", Owner: "erin", ImageShared: true, AppliedRevision: "e1"},
		"students/frank/x":          {Key: "students/frank/x", Owner: "frank", ImageShared: true, AppliedRevision: "f1"},
		"staff/frank/x":             {Key: "staff/frank/x", Owner: "frank", ImageShared: true, AppliedRevision: "f2"},
		// A project whose path merely ends like another owner's.
		"students/mallory/erin/course/proj": {Key: "students/mallory/erin/course/proj", Owner: "mallory", ImageShared: true, AppliedRevision: "m1"},
	}
	ir := imageResolver{
		registry: "registry.example.edu:5000",
		allowed:  []string{"docker.io/library", "ghcr.io/course/"},
		public:   []string{"library/"},
		repo: func(key string) (core.RepoState, bool, error) {
			r, ok := repos[key]
			return r, ok, nil
		},
		ownerRepos: func(owner string) ([]core.RepoState, error) {
			var theirs []core.RepoState
			for _, k := range sortedKeys(repos) {
				if repos[k].Owner == owner {
					theirs = append(theirs, repos[k])
				}
			}
			return theirs, nil
		},
	}
	alice := Repo{Key: "alice/Web", Owner: "alice"}
	for _, tc := range []struct {
		name, image, want string
		reason            core.Reason
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
		{"the admins' public paths of the registry are open to all", "registry.example.edu:5000/library/cuda:12", "registry.example.edu:5000/library/cuda:12", ""},
		{"the owner's own image may be named by tag", "registry.example.edu:5000/alice/web:v2", "registry.example.edu:5000/alice/web:v2", ""},
		{"the owner's other project may be named in lower case", "registry.example.edu:5000/alice/lib:1", "registry.example.edu:5000/alice/lib:1", ""},
		{"another student's unshared image by tag is refused", "registry.example.edu:5000/carol/priv:c4", "", "ImageNotYours"},
		{"another student's image as latest is refused", "registry.example.edu:5000/carol/priv", "", "ImageNotYours"},
		{"another student's image by digest is refused", "registry.example.edu:5000/carol/priv@sha256:" + strings.Repeat("a", 64), "", "ImageNotYours"},
		{"even a shared image is reached only through shared/", "registry.example.edu:5000/bob/tools:b0b", "", "ImageNotYours"},
		{"a path of no known project is refused", "registry.example.edu:5000/ta/grader:2", "", "ImageNotYours"},
		{"a GitLab project resolves as shared/<owner>/<repo> below its group", "shared/erin/course/proj", "registry.example.edu:5000/students/erin/course/proj:e1", ""},
		{"the same owner and repo in two groups is ambiguous", "shared/frank/x", "", "ImageAmbiguous"},
		{"the full project path still resolves", "shared/staff/frank/x", "registry.example.edu:5000/staff/frank/x:f2", ""},
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
