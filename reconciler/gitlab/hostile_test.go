package gitlab_test

// Students are hostile to each other. Each test here is one way a student,
// or someone who learnt the webhook secret, could try to reach another
// student's containers or speak with WhaleMountain's voice in GitLab, and
// asserts that nothing of anyone else's is touched and that the refusal
// says why.

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/core"
	"github.com/whalemountain/wm/reconciler/docker"
	"github.com/whalemountain/wm/reconciler/gitlab"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/schema"
)

// removals lists the containers the fake engine was asked to remove.
func removals(f *docker.Fake) []string {
	var out []string
	for _, c := range f.Mutations() {
		if strings.HasPrefix(c.Method, "Remove") || c.Method == "Stop" {
			out = append(out, c.Method+" "+c.Arg)
		}
	}
	return out
}

// Class 1: a delivery is news to check, never an order.

func TestAForgedSystemHookForALiveProjectRetiresNothingAndSaysGitLabContradictsIt(t *testing.T) {
	for _, tc := range []struct {
		name, event, old string
	}{
		{"a forged destroy", "project_destroy", ""},
		{"a forged rename", "project_rename", "students/alice/web"},
		{"a forged transfer", "project_transfer", "students/alice/web"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := gitlabtest.New(t, token)
			p := studentProject(t, g, "students/alice/web")
			fake := docker.NewFake("h1")
			s := newStack(t, fake, g)
			s.rollOut(p)
			fake.ResetCalls()

			// Whoever knows the shared secret can post this; the project is
			// alive and where it was.
			if resp := s.post("System Hook", gitlabtest.SystemHook(tc.event, p, tc.old), nil); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("delivery answered %s", resp.Status)
			}
			line := s.logged("system hook contradicted by GitLab", "students/alice/web", tc.event)
			if !strings.Contains(line, "nothing is retired") {
				t.Errorf("the refusal does not say what happens: %s", line)
			}
			time.Sleep(200 * time.Millisecond) // a retirement would have begun by now
			if _, ok := s.container(core.ObjectName("alice", "web")); !ok || len(removals(fake)) != 0 {
				t.Errorf("a forged %s removed alice's container: %v", tc.event, removals(fake))
			}
			if _, ok, _ := s.store.Repo("students/alice/web"); !ok {
				t.Error("a forged delivery dropped alice's state")
			}
		})
	}
}

func TestASystemHookGitLabCannotConfirmRetiresNothingAndSaysGitLabCouldNotBeAsked(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/alice/web")
	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	s.rollOut(p)
	fake.ResetCalls()
	g.SetDown(true)
	s.post("System Hook", gitlabtest.SystemHook("project_destroy", p, ""), nil)
	s.logged("system hook not confirmed", "GitLab could not be asked", "nothing is retired", "students/alice/web")
	time.Sleep(200 * time.Millisecond)
	if _, ok := s.container(core.ObjectName("alice", "web")); !ok || len(removals(fake)) != 0 {
		t.Errorf("an unconfirmed destroy removed alice's container: %v", removals(fake))
	}
}

func TestADestroyGitLabConfirmsRetiresOnlyThatProject(t *testing.T) {
	g := gitlabtest.New(t, token)
	alice := studentProject(t, g, "students/alice/web")
	bob := studentProject(t, g, "students/bob/web")
	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	s.rollOut(alice)
	s.rollOut(bob)
	g.Delete(t, alice.Path())
	s.post("System Hook", gitlabtest.SystemHook("project_destroy", alice, ""), nil)
	eventually(t, "alice's container is retired", func() bool {
		_, ok := s.container(core.ObjectName("alice", "web"))
		return !ok
	})
	s.logged("GitLab confirms the project left its path", "students/alice/web")
	if _, ok := s.container(core.ObjectName("bob", "web")); !ok {
		t.Error("bob's container went with alice's project")
	}
}

func TestADestroyNamingAnotherStudentsPathUnderAnUnknownIDRetiresNothing(t *testing.T) {
	g := gitlabtest.New(t, token)
	bob := studentProject(t, g, "students/bob/web")
	mallory := studentProject(t, g, "students/mallory/web")
	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	s.rollOut(bob)
	// mallory's own project is really deleted, and she rewrites the
	// delivery to name bob's path: the id is what is checked.
	g.Delete(t, mallory.Path())
	body := strings.Replace(string(gitlabtest.SystemHook("project_destroy", mallory, "")), `"students/mallory/web"`, `"students/bob/web"`, 1)
	fake.ResetCalls()
	s.post("System Hook", []byte(body), nil)
	time.Sleep(500 * time.Millisecond) // a retirement would have begun by now
	if _, ok := s.container(core.ObjectName("bob", "web")); !ok || len(removals(fake)) != 0 {
		t.Errorf("a delivery naming bob's path removed bob's container: %v", removals(fake))
	}
}

// Class 2: the owner a path names must hold the project in GitLab.

func TestAProjectAtAnotherStudentsPathThatTheyDoNotHoldIsNotRunAsThemAndTheRefusalSaysWhy(t *testing.T) {
	g := gitlabtest.New(t, token)
	alice := studentProject(t, g, "students/alice/web")
	g.AddUser(t, "bob")
	// mallory may create groups under students: she makes students/bob.
	g.AddGroup(t, "students/bob")
	g.AddMember(t, "students/bob", "mallory", gitlabtest.Owner)
	forged := g.AddProject(t, "students/bob/x", gitlabtest.CreatedBy("mallory"))
	// A project under the name of an account that does not exist, and one
	// where bob is only a reporter.
	ghost := g.AddProject(t, "students/ghost/x", gitlabtest.CreatedBy("mallory"))
	g.AddMember(t, "students/ghost", "mallory", gitlabtest.Owner)
	g.AddGroup(t, "students/carol")
	g.AddMember(t, "students/carol", "mallory", gitlabtest.Owner)
	g.AddMember(t, "students/carol", "carol", gitlabtest.Reporter, "mallory")
	reporter := g.AddProject(t, "students/carol/x", gitlabtest.CreatedBy("mallory"))

	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	var shas []string
	for _, p := range []*gitlabtest.Project{forged, ghost, reporter} {
		sha := p.Commit(t, "main", wmYAML("evil"), "run as someone else")
		s.ci(p.Path(), sha)
		shas = append(shas, sha)
	}
	s.rollOut(alice) // a listing that saw every project
	for _, want := range [][]string{
		{"project refused", "students/bob/x", "not run as bob", "the GitLab account bob is not a member of the project"},
		{"project refused", "students/ghost/x", "there is no GitLab account ghost"},
		{"project refused", "students/carol/x", "carol has Reporter (20) access to the project, less than Developer (30)"},
	} {
		s.logged(want...)
	}
	// Its webhooks are refused too.
	s.post("Push Hook", gitlabtest.PushHook(forged, "refs/heads/main", strings.Repeat("0", 40), shas[0]), nil)
	s.logged("push to a refused project ignored", "students/bob/x")
	time.Sleep(300 * time.Millisecond)
	for _, name := range []string{core.ObjectName("bob", "web"), core.ObjectName("ghost", "web"), core.ObjectName("carol", "web")} {
		if _, ok := s.container(name); ok {
			t.Errorf("%s runs: a project not held by its owner was reconciled", name)
		}
	}
	for i, p := range []*gitlabtest.Project{forged, ghost, reporter} {
		if st := g.Statuses(p.Path(), shas[i]); len(st) != 0 {
			t.Errorf("%s got statuses: %+v", p.Path(), st)
		}
	}
	if _, ok := s.container(core.ObjectName("alice", "web")); !ok {
		t.Error("alice's own project was not rolled out")
	}
}

func TestAProjectWhoseOwnerNoLongerHoldsItIsRetiredAtTheNextListing(t *testing.T) {
	g := gitlabtest.New(t, token)
	g.AddUser(t, "bob")
	g.AddGroup(t, "students/bob")
	g.AddMember(t, "students/bob", "mallory", gitlabtest.Owner)
	g.AddMember(t, "students/bob", "bob", gitlabtest.Developer, "mallory")
	p := g.AddProject(t, "students/bob/web", gitlabtest.CreatedBy("mallory"))
	fake := docker.NewFake("h1")
	s := newStack(t, fake, g)
	s.rollOut(p)
	// bob leaves (or is removed from) the group mallory made for him.
	g.AddMember(t, "students/bob", "bob", gitlabtest.Guest, "mallory")
	s.svc.Rediscover()
	s.logged("project refused", "students/bob/web", "Guest (10) access")
	eventually(t, "the refused project's container is retired", func() bool {
		_, ok := s.container(core.ObjectName("bob", "web"))
		return !ok
	})
}

func TestTheCreatorCheckRefusesAProjectSomeoneElseCreatedEvenWithTheOwnerAddedAsAMember(t *testing.T) {
	g := gitlabtest.New(t, token)
	// mallory made students/bob and added bob as a developer: membership
	// alone would pass.
	g.AddGroup(t, "students/bob")
	g.AddMember(t, "students/bob", "mallory", gitlabtest.Owner)
	g.AddMember(t, "students/bob", "bob", gitlabtest.Developer, "mallory")
	g.AddProject(t, "students/bob/x", gitlabtest.CreatedBy("mallory")).Commit(t, "main", wmYAML("x"), "init")
	g.AddProject(t, "students/bob/mine", gitlabtest.CreatedBy("bob")).Commit(t, "main", wmYAML("x"), "init")
	cfg := schema.GitLabSource{URL: g.URL(), Groups: []string{"students"}, OwnerSegment: 1, OwnerCheck: gitlab.OwnerCheckCreator, OwnerMinAccessLevel: 30}
	client, err := gitlab.New(cfg, token, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	projects, skipped, err := client.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(projects) != 1 || projects[0].Path != "students/bob/mine" {
		t.Errorf("discovered %+v", projects)
	}
	if len(skipped) != 1 || !skipped[0].Refused || skipped[0].Reason != "students/bob/x: not run as bob: the project was not created by the GitLab account bob" {
		t.Errorf("skipped %+v", skipped)
	}
	if u := g.UnimplementedRequests(); len(u) != 0 {
		t.Errorf("used endpoints the double does not implement: %v", u)
	}
}

// Class 3: what a student wrote is echoed inert.

// injection is a wm.yaml whose container name closes a code fence, pings
// everyone, links away and tries a quick action as WhaleMountain.
const injection = "version: 1\ncontainers:\n  \"x\\n```\\n@all [click](http://x)\\n/merge\\n<b>hi</b>\":\n    image: self\n"

func TestAnInjectedWmYAMLKeyIsEchoedInertInThePlanNoteAndTheStatus(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/alice/web")
	s := newStack(t, docker.NewFake("h1"), g)
	s.rollOut(p)
	head := p.Commit(t, "feature", map[string]string{"Dockerfile": "FROM busybox\n", "wm.yaml": injection}, "boom")
	mr := g.OpenMergeRequest(t, p.Path(), "feature", "main")
	s.post("Merge Request Hook", gitlabtest.MergeRequestHook(mr, "open"), nil)
	var body string
	eventually(t, "the plan note", func() bool {
		for _, n := range g.Notes(p.Path(), mr.IID()) {
			if strings.HasPrefix(n.Body, gitlab.PlanMarker) {
				body = n.Body
				return true
			}
		}
		return false
	})

	// The exact structure: header, the problem as an indented code block
	// (every line four spaces in), the closing sentence; nothing else.
	head12 := head[:12]
	prefix := gitlab.PlanMarker + "\n### WhaleMountain plan for `" + head12 + "`\n\n**This commit cannot be rolled out** (Stalled, ValidationFailed):\n\n"
	suffix := "\nNothing is applied from a merge request.\n"
	if !strings.HasPrefix(body, prefix) || !strings.HasSuffix(body, suffix) {
		t.Fatalf("note structure:\n%s", body)
	}
	block := strings.TrimSuffix(strings.TrimPrefix(body, prefix), suffix)
	for line := range strings.Lines(block) {
		if !strings.HasPrefix(line, "    ") {
			t.Errorf("a line of the problem is outside the code block: %q", line)
		}
	}
	// Whether the schema quotes the key or not, each dangerous part is
	// echoed, and only inside the block.
	for _, part := range []string{"```", "@all [click](http://x)", "/merge", "<b>hi</b>"} {
		if !strings.Contains(block, part) {
			t.Errorf("the problem does not show %q:\n%s", part, block)
		}
		if strings.Count(body, part) != strings.Count(block, part) {
			t.Errorf("%q appears outside the code block:\n%s", part, body)
		}
	}
	// Outside the block, no line of the note is the student's.
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "/") || strings.HasPrefix(line, "```") || strings.HasPrefix(line, "<") && !strings.HasPrefix(line, gitlab.PlanMarker) {
			t.Errorf("a live line in the note: %q", line)
		}
	}

	var plan string
	eventually(t, "the failed plan status", func() bool {
		for _, st := range g.Statuses(p.Path(), head) {
			if st.Name == gitlab.PlanStatusName && st.Status == "failed" {
				plan = st.Description
				return true
			}
		}
		return false
	})
	if strings.ContainsAny(plan, "\n\r") || len([]rune(plan)) > 255 {
		t.Errorf("the plan status is not one line of at most 255 characters: %q", plan)
	}
}

func TestAProblemThatClosesFencesMentionsAndQuickActsIsRenderedAsOneInertCodeBlock(t *testing.T) {
	// Raw newlines and a carriage return, as a message quoting the file
	// verbatim would have them.
	problem := errors.New("wm.yaml:3:3: containers.x\n```\n@all [click](http://x)\r/merge\n<b>hi</b>: bad \x1b[31mname\n\n#1 \u202e~~~")
	got := gitlab.RenderPlan(reconciler.Result{Revision: "0123456789abcdef"}, problem, "main", schema.Quota{})
	want := gitlab.PlanMarker + "\n" +
		"### WhaleMountain plan for `0123456789ab`\n" +
		"\n" +
		"**This commit cannot be rolled out** (Transient, TransientError):\n" +
		"\n" +
		"    wm.yaml:3:3: containers.x\n" +
		"    ```\n" +
		"    @all [click](http://x) /merge\n" +
		"    <b>hi</b>: bad  [31mname\n" +
		"    \n" +
		"    #1 ~~~\n" +
		"\n" +
		"Nothing is applied from a merge request.\n"
	if got != want {
		t.Errorf("note:\n%s\nwant:\n%s", got, want)
	}
}

func TestANoteCopyingThePlanMarkerIsNeverEditedByWhaleMountain(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := studentProject(t, g, "students/alice/web")
	s := newStack(t, docker.NewFake("h1"), g)
	s.rollOut(p)
	head := p.Commit(t, "feature", wmYAML("prod"), "prod")
	mr := g.OpenMergeRequest(t, p.Path(), "feature", "main")
	fakeBody := gitlab.PlanMarker + "\nmallory's words, to be signed by WhaleMountain"
	planted := g.AddNote(t, p.Path(), mr.IID(), "mallory", fakeBody)
	s.post("Merge Request Hook", gitlabtest.MergeRequestHook(mr, "open"), nil)
	eventually(t, "WhaleMountain's own plan note", func() bool {
		for _, n := range g.Notes(p.Path(), mr.IID()) {
			if n.Author.Username == g.BotUsername() && strings.Contains(n.Body, head[:12]) {
				return true
			}
		}
		return false
	})
	for _, n := range g.Notes(p.Path(), mr.IID()) {
		if n.ID == planted.ID && n.Body != fakeBody {
			t.Errorf("mallory's note was edited:\n%s", n.Body)
		}
	}
}

func TestStatusTextIsOneLineOfPlainTextWithinGitLabsLimit(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"newlines and carriage returns become spaces", "a\nb\r\nc\rd", "a b c d"},
		{"control characters become spaces", "a\x00\x1b[31mb\tc", "a [31mb c"},
		{"bidi overrides and zero-width characters are dropped", "ok\u202egnp.exe\u200b!", "okgnp.exe!"},
		{"a long text is cut at 255 with a mark", strings.Repeat("é", 200), strings.Repeat("é", 126) + "..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gitlab.StatusText(tc.in); got != tc.want || len(got) > 255 {
				t.Errorf("got %q", got)
			}
		})
	}
}
