package reconciler

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"

	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/schema"
)

// imageResolver turns the image field of wm.yaml into a reference an
// engine can pull, applying the registry policy of the server config and
// the ownership of the students' images: under the registry's host, every
// path but the admins' public ones is a student project's image, usable
// only by the project's owner, or by anyone as shared/<owner>/<repo> once
// the project says "share: true". The same rule holds for containers, pods
// and SIFs, which all resolve here.
type imageResolver struct {
	registry string   // where "self" images live
	allowed  []string // registry prefixes references may come from
	public   []string // paths under registry every student may use
	// repo looks up a repo's recorded state by key; ownerRepos lists an
	// owner's (for shared/<owner>/<repo>, whose repo may sit below
	// groups, and for the owner's own projects).
	repo       func(key string) (core.RepoState, bool, error)
	ownerRepos func(owner string) ([]core.RepoState, error)
}

// resolve returns the reference for field (a path such as
// "containers.web.image") of repo at revision rev.
func (ir imageResolver) resolve(repo Repo, rev, field, image string) (string, error) {
	switch {
	case image == schema.ImageSelf:
		if ir.registry == "" {
			return "", stalled(core.NoRegistry, "%s: %q needs the server config's registry.host, which is not set: ask the admins", field, image)
		}
		return fmt.Sprintf("%s/%s:%s", ir.registry, strings.ToLower(repo.Key), rev), nil
	case strings.HasPrefix(image, schema.SharedImagePrefix):
		other, err := ir.sharedRepo(strings.TrimPrefix(image, schema.SharedImagePrefix))
		if err != nil {
			return "", err
		}
		switch {
		case other == nil || !other.ImageShared:
			return "", stalled(core.ImageNotShared, "%s: %s is not shared: the repo does not exist or its wm.yaml does not say \"share: true\"", field, image)
		case other.AppliedRevision == "":
			return "", waiting(core.SharedImageNotBuilt, "%s: %s has no rolled-out commit yet", field, image)
		}
		return fmt.Sprintf("%s/%s:%s", ir.registry, strings.ToLower(other.Key), other.AppliedRevision), nil
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", stalled(core.InvalidImage, "%s: %s is not an image reference", field, schema.Quote(image))
	}
	named = reference.TagNameOnly(named)
	ref := named.String()
	if !ir.allows(ref) {
		return "", stalled(core.ImageNotAllowed, "%s: %s is not from an allowed registry (allowed: %s)", field, ref, strings.Join(ir.allowedList(), ", "))
	}
	if path, ok := ir.underRegistry(named.Name()); ok {
		if err := ir.mayUse(repo, field, path); err != nil {
			return "", err
		}
	}
	return ref, nil
}

// underRegistry returns the repository path of name below the students'
// registry, and false when name lives elsewhere.
func (ir imageResolver) underRegistry(name string) (string, bool) {
	if ir.registry == "" {
		return "", false
	}
	rest, ok := strings.CutPrefix(name, strings.TrimSuffix(ir.registry, "/")+"/")
	return rest, ok && rest != ""
}

// mayUse checks that repo's owner may name the image at path below the
// students' registry directly: an admins' public path, or the image of a
// project of the same owner. Anyone else's image, shared or not, is only
// ever reached through shared/<owner>/<repo>, which checks "share: true".
func (ir imageResolver) mayUse(repo Repo, field, path string) error {
	for _, pub := range ir.public {
		if prefix := strings.Trim(pub, "/") + "/"; strings.HasPrefix(path, prefix) {
			return nil
		}
	}
	if path == strings.ToLower(repo.Key) {
		return nil
	}
	// Keys keep GitLab's case; image paths are lower-case.
	mine, err := ir.ownerRepos(repo.Owner)
	if err != nil {
		return err
	}
	for _, other := range mine {
		if strings.ToLower(other.Key) == path {
			return nil
		}
	}
	return stalled(core.ImageNotYours, "%s: %s/%s is another project's image: use %q for this repo's own image, or %sOWNER/REPO for an image its owner shares", field, ir.registry, path, schema.ImageSelf, schema.SharedImagePrefix)
}

// sharedRepo finds the repo "<owner>/<repo>" names: a repo keyed so
// (folder sources), or one whose key ends in "/<owner>/<repo>" (a GitLab
// project below the students' groups) and that <owner> owns. It returns
// nil when there is none; two such repos in different groups are
// ambiguous, and the reference must then give the full project path.
func (ir imageResolver) sharedRepo(rest string) (*core.RepoState, error) {
	if st, ok, err := ir.repo(rest); err != nil || ok {
		if !ok {
			return nil, err
		}
		return &st, nil
	}
	owner, _, found := strings.Cut(rest, "/")
	if !found {
		return nil, nil
	}
	theirs, err := ir.ownerRepos(owner)
	if err != nil {
		return nil, err
	}
	var match *core.RepoState
	for i := range theirs {
		if !strings.HasSuffix(strings.ToLower(theirs[i].Key), "/"+rest) {
			continue
		}
		if match != nil {
			return nil, stalled(core.ImageAmbiguous, "%s%s names both %s and %s: give the full project path, %s%s", schema.SharedImagePrefix, rest, match.Key, theirs[i].Key, schema.SharedImagePrefix, theirs[i].Key)
		}
		match = &theirs[i]
	}
	return match, nil
}

// allows reports whether ref starts with an allowed registry prefix, whole
// path segments only ("reg:5000/team" allows "reg:5000/team/x", not
// "reg:5000/teamx").
func (ir imageResolver) allows(ref string) bool {
	for _, prefix := range ir.allowedList() {
		if rest, ok := strings.CutPrefix(ref, strings.TrimSuffix(prefix, "/")); ok && rest != "" && rest[0] == '/' {
			return true
		}
	}
	return false
}

func (ir imageResolver) allowedList() []string {
	list := append([]string(nil), ir.allowed...)
	if ir.registry != "" {
		list = append(list, ir.registry)
	}
	return list
}
