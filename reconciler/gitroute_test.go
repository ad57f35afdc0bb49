package reconciler

import (
	"context"
	"testing"
)

// namedSource answers Head with its own name.
type namedSource string

func (n namedSource) Head(context.Context, string, string) (string, error) { return string(n), nil }
func (n namedSource) ReadFile(context.Context, string, string, string, string, int64) ([]byte, error) {
	return []byte(n), nil
}

func TestTheGitRouterSendsEachURLToItsSource(t *testing.T) {
	g := GitRouter{Routes: []GitRoute{{"https://gitlab.example.edu/", namedSource("gitlab")}}, Default: namedSource("plain")}
	for url, want := range map[string]string{
		"https://gitlab.example.edu/students/alice/web.git": "gitlab",
		"https://gitlab.example.edu.evil.test/x.git":        "plain",
		"file:///srv/git/alice/web":                         "plain",
	} {
		if got, _ := g.Head(context.Background(), url, "main"); got != want {
			t.Errorf("%s went to %s, want %s", url, got, want)
		}
		if got, _ := g.ReadFile(context.Background(), url, "main", "x", "wm.yaml", 1); string(got) != want {
			t.Errorf("%s read from %s, want %s", url, got, want)
		}
	}
}
