package reconciler

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"

	"github.com/whalemountain/wm/reconciler/store"
	"github.com/whalemountain/wm/schema"
)

// imageResolver turns the image field of wm.yaml into a reference an
// engine can pull, applying the registry policy of the server config.
type imageResolver struct {
	registry string   // where "self" images live
	allowed  []string // registry prefixes references may come from
	// shared looks up another repo's recorded state, for shared/ images.
	shared func(key string) (store.RepoState, bool, error)
}

// resolve returns the reference for field (a path such as
// "containers.web.image") of repo at revision rev.
func (ir imageResolver) resolve(repo Repo, rev, field, image string) (string, error) {
	switch {
	case image == schema.ImageSelf:
		if ir.registry == "" {
			return "", stalled("NoRegistry", "%s: %q needs the server config's registry.host, which is not set: ask the admins", field, image)
		}
		return fmt.Sprintf("%s/%s:%s", ir.registry, strings.ToLower(repo.Key), rev), nil
	case strings.HasPrefix(image, schema.SharedImagePrefix):
		key := strings.TrimPrefix(image, schema.SharedImagePrefix)
		other, ok, err := ir.shared(key)
		if err != nil {
			return "", err
		}
		switch {
		case !ok || !other.ImageShared:
			return "", stalled("ImageNotShared", "%s: %s is not shared: the repo %s does not exist or its wm.yaml does not say \"share: true\"", field, image, key)
		case other.AppliedRevision == "":
			return "", waiting("SharedImageNotBuilt", "%s: %s has no rolled-out commit yet", field, image)
		}
		return fmt.Sprintf("%s/%s:%s", ir.registry, strings.ToLower(key), other.AppliedRevision), nil
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", stalled("InvalidImage", "%s: %q is not an image reference: %v", field, image, err)
	}
	named = reference.TagNameOnly(named)
	ref := named.String()
	if !ir.allows(ref) {
		return "", stalled("ImageNotAllowed", "%s: %s is not from an allowed registry (allowed: %s)", field, ref, strings.Join(ir.allowedList(), ", "))
	}
	return ref, nil
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
