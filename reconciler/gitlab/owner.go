package gitlab

import (
	"fmt"
	"strings"

	"github.com/whalemountain/wm/schema"
)

// OwnerOf derives the owner of a project from its path: the segment-th
// path segment below group, lower-cased. With group "students" and segment
// 1, "students/alice/web" and "students/alice/ml/train" are alice's. A
// project with too few segments below the group ("students/web") has no
// owner, and neither has one whose segment is not an account name.
func OwnerOf(group, project string, segment int) (string, error) {
	rest, ok := strings.CutPrefix(strings.ToLower(project), strings.ToLower(strings.Trim(group, "/"))+"/")
	if !ok {
		return "", fmt.Errorf("%s is not under the group %s", project, group)
	}
	parts := strings.Split(rest, "/")
	// The last part is the project itself, never an owner.
	if len(parts) <= segment {
		return "", fmt.Errorf("%s has no owner: it needs %d folder(s) below %s before the project", project, segment, group)
	}
	owner := parts[segment-1]
	if msg := schema.AccountProblem(owner); msg != "" {
		return "", fmt.Errorf("%s: the owner segment %s", project, msg)
	}
	return owner, nil
}
