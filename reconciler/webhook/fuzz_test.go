package webhook

import (
	"strings"
	"testing"
)

// FuzzDecode feeds the decoder GitLab's documented payloads, mutated: it
// must never panic, and what it accepts must be well formed.
func FuzzDecode(f *testing.F) {
	seeds := []struct{ header, file string }{
		{"Push Hook", "push.json"},
		{"Merge Request Hook", "merge_request_open.json"},
		{"Merge Request Hook", "merge_request_update.json"},
		{"System Hook", "system_push.json"},
		{"System Hook", "system_merge_request.json"},
		{"System Hook", "system_project_create.json"},
		{"System Hook", "system_project_destroy.json"},
		{"System Hook", "system_project_rename.json"},
		{"System Hook", "system_project_transfer.json"},
		{"System Hook", "system_project_update.json"},
		{"System Hook", "system_repository_update.json"},
		{"System Hook", "system_tag_push.json"},
		{"Tag Push Hook", "tag_push.json"},
		{"Note Hook", "note.json"},
	}
	for _, s := range seeds {
		f.Add(s.header, fixture(f, s.file))
	}
	f.Add("Push Hook", []byte(`{"ref":"refs/heads/x","project_id":1e400}`))
	f.Add("System Hook", []byte(`{"event_name":"push","object_kind":"merge_request"}`))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		e, label, err := decode(header, body)
		if err != nil {
			if e != nil {
				t.Fatalf("decode returned %#v with error %v", e, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q spans lines", err)
			}
			return
		}
		switch e := e.(type) {
		case nil:
			if label != labelOther {
				t.Fatalf("ignored delivery labelled %q", label)
			}
		case Push:
			if label != labelPush || !strings.HasPrefix(e.Ref, "refs/") || (e.ProjectID == 0 && e.Project == "") {
				t.Fatalf("accepted push %#v labelled %q", e, label)
			}
			_, _, _ = e.Branch(), e.OnDefaultBranch(), e.Deleted()
		case MergeRequest:
			if label != labelMergeRequest || e.IID == 0 || (e.ProjectID == 0 && e.Project == "") {
				t.Fatalf("accepted merge request %#v labelled %q", e, label)
			}
		case ProjectChange:
			if label != labelProject || (e.ProjectID == 0 && e.Project == "") {
				t.Fatalf("accepted project change %#v labelled %q", e, label)
			}
		default:
			t.Fatalf("decode returned a %T", e)
		}
	})
}
