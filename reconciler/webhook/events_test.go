package webhook

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestPushTellsBranchDefaultBranchAndDeletion(t *testing.T) {
	const sha = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
	tests := []struct {
		name      string
		push      Push
		branch    string
		onDefault bool
		deleted   bool
	}{
		{"a push to the default branch is on it",
			Push{Ref: "refs/heads/main", DefaultBranch: "main", After: sha}, "main", true, false},
		{"a push to another branch is not on the default branch",
			Push{Ref: "refs/heads/feature", DefaultBranch: "main", After: sha}, "feature", false, false},
		{"a branch name may hold slashes",
			Push{Ref: "refs/heads/alice/fix-1", DefaultBranch: "alice/fix-1", After: sha}, "alice/fix-1", true, false},
		{"a tag has no branch and is never on the default branch",
			Push{Ref: "refs/tags/main", DefaultBranch: "main", After: sha}, "", false, false},
		{"a ref that is not a branch has no branch",
			Push{Ref: "refs/merge-requests/1/head", DefaultBranch: "main", After: sha}, "", false, false},
		{"an unknown default branch matches nothing",
			Push{Ref: "refs/heads/main", After: sha}, "main", false, false},
		{"a push whose after is all zeros deleted the branch",
			Push{Ref: "refs/heads/old", DefaultBranch: "main", Before: sha, After: strings.Repeat("0", 40)}, "old", false, true},
		{"a deletion in a SHA-256 repository has 64 zeros",
			Push{Ref: "refs/heads/old", After: strings.Repeat("0", 64)}, "old", false, true},
		{"a new branch has a zero before but is not deleted",
			Push{Ref: "refs/heads/new", Before: strings.Repeat("0", 40), After: sha}, "new", false, false},
		{"an empty after is not a deletion",
			Push{Ref: "refs/heads/main"}, "main", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.push.Branch(); got != tt.branch {
				t.Errorf("Branch() = %q, want %q", got, tt.branch)
			}
			if got := tt.push.OnDefaultBranch(); got != tt.onDefault {
				t.Errorf("OnDefaultBranch() = %v, want %v", got, tt.onDefault)
			}
			if got := tt.push.Deleted(); got != tt.deleted {
				t.Errorf("Deleted() = %v, want %v", got, tt.deleted)
			}
		})
	}
}

func TestMergeRequestsArePlannedOnOpenReopenAndUpdate(t *testing.T) {
	for action, want := range map[string]bool{
		"open": true, "reopen": true, "update": true,
		"close": false, "merge": false, "approved": false, "unapproved": false,
		"approval": false, "unapproval": false, "": false,
	} {
		if got := (MergeRequest{Action: action}).WantsPlan(); got != want {
			t.Errorf("WantsPlan() for action %q = %v, want %v", action, got, want)
		}
	}
}

func TestDecodePrefersTopLevelIDsAndFallsBack(t *testing.T) {
	tests := []struct {
		name   string
		header string
		body   string
		want   any
	}{
		{"a push without project_id takes project.id", "Push Hook",
			`{"ref":"refs/heads/main","project":{"id":7,"path_with_namespace":"a/b"}}`,
			Push{ProjectID: 7, Project: "a/b", Ref: "refs/heads/main"}},
		{"a push with only a path is enough", "Push Hook",
			`{"ref":"refs/heads/main","project":{"path_with_namespace":"a/b"}}`,
			Push{Project: "a/b", Ref: "refs/heads/main"}},
		{"a merge request without project.id takes target_project_id", "Merge Request Hook",
			`{"project":{"path_with_namespace":"a/b"},"object_attributes":{"iid":3,"target_project_id":9,"action":"open"}}`,
			MergeRequest{ProjectID: 9, Project: "a/b", IID: 3, Action: "open"}},
		{"a system push named only by object_kind is a push", "System Hook",
			`{"object_kind":"push","ref":"refs/heads/main","project_id":4}`,
			Push{ProjectID: 4, Ref: "refs/heads/main"}},
		{"unknown fields are ignored", "Push Hook",
			`{"ref":"refs/heads/main","project_id":4,"brand_new_field":{"x":[1,2,3]}}`,
			Push{ProjectID: 4, Ref: "refs/heads/main"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := decode(tt.header, []byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decoded %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestDecodeErrorsSayWhatIsWrongWithoutTheBody(t *testing.T) {
	tests := []struct {
		name string
		body string
		want string
	}{
		{"a syntax error gives its offset", `{"ref": x}`, "bad payload: invalid JSON at byte 9"},
		{"a wrong type names the field", `{"ref":"refs/heads/a","project_id":"15"}`, "bad payload: project_id: want int"},
		{"an array is not an object", `[]`, "bad payload: not a JSON object"},
		{"a missing ref is named", `{"project_id":15}`, "bad payload: missing ref"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decode("Push Hook", []byte(tt.body))
			if !errors.Is(err, errBadPayload) {
				t.Fatalf("error %v is not errBadPayload", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
}
