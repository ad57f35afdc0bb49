package gitlab

import "testing"

func TestOwnerAndNameGiveWhatSharedImagesName(t *testing.T) {
	for _, tc := range []struct {
		group, project string
		segment        int
		owner, name    string
	}{
		{"students", "students/alice/web", 1, "alice", "web"},
		{"students", "students/Alice/ML/train", 1, "alice", "ml/train"},
		{"cs", "cs/2026/bob/web", 2, "bob", "web"},
		{"students", "students/bob/bob/x", 1, "bob", "bob/x"},
	} {
		owner, name, err := OwnerAndName(tc.group, tc.project, tc.segment)
		if owner != tc.owner || name != tc.name || err != nil {
			t.Errorf("%s: %q, %q, %v", tc.project, owner, name, err)
		}
	}
}

func TestOwnerOf(t *testing.T) {
	for _, tc := range []struct {
		name, group, project string
		segment              int
		want                 string
		fails                bool
	}{
		{"the first segment below the group is the owner", "students", "students/alice/web", 1, "alice", false},
		{"deeper projects belong to the same owner", "students", "students/alice/ml/train", 1, "alice", false},
		{"a nested group is matched whole", "cs/2026", "cs/2026/bob/web", 1, "bob", false},
		{"a later segment can be chosen", "cs", "cs/2026/bob/web", 2, "bob", false},
		{"paths are compared and owners given in lower case", "Students", "students/Alice/web", 1, "alice", false},
		{"a project directly under the group has no owner", "students", "students/web", 1, "", true},
		{"a project outside the group has no owner", "students", "staff/alice/web", 1, "", true},
		{"a group that only prefixes the path does not match", "stud", "students/alice/web", 1, "", true},
		{"an owner that is not an account name is refused", "students", "students/alice.smith/web", 1, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := OwnerOf(tc.group, tc.project, tc.segment)
			if got != tc.want || (err != nil) != tc.fails {
				t.Errorf("got %q, %v", got, err)
			}
		})
	}
}
