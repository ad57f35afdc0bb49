package gitlab_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/fault"
	"github.com/whalemountain/wm/reconciler/gitlab"
	"github.com/whalemountain/wm/reconciler/gitlab/gitlabtest"
	"github.com/whalemountain/wm/schema"
)

// noticeKey is the key the semester's warning uses.
const noticeKey = "semester-end-2026-07-31"

// notifier is a Service that has listed GitLab once and knows
// students/alice/web, the repo of its tests.
type notifier struct {
	svc  *gitlab.Service
	repo reconciler.Repo
}

func (n notifier) notify(key, title, body string) error {
	return n.svc.Notify(context.Background(), n.repo, key, title, body)
}

// newNotifier lists g with a Service whose client waits a millisecond
// between retries, and returns it with the repo of students/alice/web,
// which must have a wm.yaml.
func newNotifier(t *testing.T, g *gitlabtest.GitLab, opts ...gitlab.ServiceOption) notifier {
	t.Helper()
	cfg := schema.GitLabSource{URL: g.URL(), Groups: []string{"students"}, OwnerSegment: 1, OwnerCheck: gitlab.OwnerCheckNone}
	fast := gl.WithCustomBackoff(func(time.Duration, time.Duration, int, *http.Response) time.Duration { return time.Millisecond })
	client, err := gitlab.New(cfg, token, slog.New(slog.DiscardHandler), fast)
	if err != nil {
		t.Fatal(err)
	}
	svc := gitlab.NewService(client, cfg, schema.Quota{}, slog.New(slog.DiscardHandler), opts...)
	repos, err := svc.Repos()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range repos {
		if r.Key == "students/alice/web" {
			return notifier{svc, r}
		}
	}
	t.Fatalf("students/alice/web is not listed: %v", repos)
	return notifier{}
}

// aliceWeb adds students/alice/web with a wm.yaml.
func aliceWeb(t *testing.T, g *gitlabtest.GitLab, opts ...gitlabtest.ProjectOption) *gitlabtest.Project {
	t.Helper()
	p := g.AddProject(t, "students/alice/web", opts...)
	p.Commit(t, "main", wmYAML("dev"), "init")
	return p
}

func TestANoticeIsAnIssueWithTheLabelTitleAndBodyUnderAHiddenMarker(t *testing.T) {
	g := gitlabtest.New(t, token)
	p := aliceWeb(t, g)
	n := newNotifier(t, g)
	body := "The semester ends on 2026-07-31.\n\nCopy out what you need (`wm cp`)."
	if err := n.notify(noticeKey, "WhaleMountain: what students/alice/web runs stops after 2026-07-31", body); err != nil {
		t.Fatal(err)
	}
	issues := g.Issues(p.Path())
	if len(issues) != 1 {
		t.Fatalf("%d issues, want 1", len(issues))
	}
	is := issues[0]
	if is.Title != "WhaleMountain: what students/alice/web runs stops after 2026-07-31" ||
		is.Description != "<!-- whalemountain:semester-end-2026-07-31 -->\n\n"+body ||
		len(is.Labels) != 1 || is.Labels[0] != gitlab.NotifyLabel || gitlab.NotifyLabel != "whalemountain" ||
		is.State != "opened" || is.Author.Username != g.BotUsername() {
		t.Fatalf("issue %+v", is)
	}
	if got := g.UnimplementedRequests(); len(got) != 0 {
		t.Fatalf("unimplemented requests %v", got)
	}
}

func TestANoticeIsPostedOncePerKey(t *testing.T) {
	for _, c := range []struct {
		name string
		// steps notify, and shape GitLab as students would.
		steps func(t *testing.T, n notifier, g *gitlabtest.GitLab, p *gitlabtest.Project)
		// want is the issues' states, by iid.
		want []string
	}{
		{
			name: "the same key again makes nothing new",
			steps: func(t *testing.T, n notifier, _ *gitlabtest.GitLab, _ *gitlabtest.Project) {
				mustNotify(t, n, noticeKey, "ends", "body")
				mustNotify(t, n, noticeKey, "ends, said again", "another body")
			},
			want: []string{"opened"},
		},
		{
			name: "the same key after the student closed its issue makes nothing new",
			steps: func(t *testing.T, n notifier, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				mustNotify(t, n, noticeKey, "ends", "body")
				g.CloseIssue(t, p.Path(), 1, "alice")
				mustNotify(t, n, noticeKey, "ends", "body")
			},
			want: []string{"closed"},
		},
		{
			name: "another key makes another issue",
			steps: func(t *testing.T, n notifier, _ *gitlabtest.GitLab, _ *gitlabtest.Project) {
				mustNotify(t, n, noticeKey, "ends", "body")
				mustNotify(t, n, "semester-end-2027-02-15", "ends", "body")
			},
			want: []string{"opened", "opened"},
		},
		{
			name: "the issue is found past the first page of the project's labelled issues",
			steps: func(t *testing.T, n notifier, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				mustNotify(t, n, noticeKey, "ends", "body")
				for i := range 150 {
					g.AddIssue(t, p.Path(), "alice", fmt.Sprintf("note %d", i), "<!-- whalemountain:other -->", "whalemountain")
				}
				mustNotify(t, n, noticeKey, "ends", "body")
			},
			want: append([]string{"opened"}, repeat("opened", 150)...),
		},
		{
			name: "a labelled issue with another key's marker, or the marker without the label, does not count",
			steps: func(t *testing.T, n notifier, g *gitlabtest.GitLab, p *gitlabtest.Project) {
				g.AddIssue(t, p.Path(), "alice", "mine", "<!-- whalemountain:semester-end-2026-07-3 -->", "whalemountain")
				g.AddIssue(t, p.Path(), "alice", "copied", "<!-- whalemountain:semester-end-2026-07-31 -->")
				mustNotify(t, n, noticeKey, "ends", "body")
			},
			want: []string{"opened", "opened", "opened"},
		},
		{
			name: "notices of one key at once make one issue",
			steps: func(t *testing.T, n notifier, _ *gitlabtest.GitLab, _ *gitlabtest.Project) {
				var wg sync.WaitGroup
				for range 8 {
					wg.Go(func() {
						if err := n.notify(noticeKey, "ends", "body"); err != nil {
							t.Error(err)
						}
					})
				}
				wg.Wait()
			},
			want: []string{"opened"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := gitlabtest.New(t, token)
			p := aliceWeb(t, g)
			c.steps(t, newNotifier(t, g), g, p)
			var got []string
			for _, is := range g.Issues(p.Path()) {
				got = append(got, is.State)
			}
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Fatalf("issues %v, want %v", got, c.want)
			}
		})
	}
}

func mustNotify(t *testing.T, n notifier, key, title, body string) {
	t.Helper()
	if err := n.notify(key, title, body); err != nil {
		t.Fatal(err)
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func TestANoticeThatCannotBePostedIsAClassifiedErrorNamingTheProject(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, c := range []struct {
		name    string
		project []gitlabtest.ProjectOption
		// before shapes GitLab once the service has listed it.
		before func(g *gitlabtest.GitLab)
		ctx    func() context.Context
		repo   string // the repo's key when not students/alice/web's
		key    string // noticeKey when ""
		kind   error  // the error's fault kind; nil for none
		is     error  // another error the error must match
		says   []string
	}{
		{
			name:    "a project with issues disabled is refused",
			project: []gitlabtest.ProjectOption{gitlabtest.IssuesDisabled()},
			kind:    fault.Refused,
			says:    []string{"notify students/alice/web: create an issue in students/alice/web", "issues disabled", "403"},
		},
		{
			name:   "a GitLab that is down is unreachable",
			before: func(g *gitlabtest.GitLab) { g.SetDown(true) },
			kind:   fault.Unreachable,
			is:     gitlab.ErrUnreachable,
			says:   []string{"notify students/alice/web: read the issues of students/alice/web", "503"},
		},
		{
			name: "a GitLab that hangs is unreachable at the job deadline",
			before: func(g *gitlabtest.GitLab) {
				g.Hang(func(req string) bool { return strings.HasSuffix(req, "/issues") })
			},
			kind: fault.Unreachable,
			is:   context.DeadlineExceeded,
			says: []string{"notify students/alice/web: GitLab did not answer within 300ms"},
		},
		{
			name: "a caller that gave up gets its context's error, of no kind",
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			is:   context.Canceled,
			says: []string{"notify students/alice/web"},
		},
		{
			name: "a repo GitLab did not list is not found",
			repo: "students/bob/web",
			kind: fault.NotFound,
			says: []string{"notify students/bob/web: GitLab's last listing has no such project"},
		},
		{
			name: "a key that could end the hidden marker early is invalid",
			key:  "semester--end -->",
			kind: fault.Invalid,
			says: []string{"notify students/alice/web:", "is not a notice key"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := gitlabtest.New(t, token)
			aliceWeb(t, g, c.project...)
			n := newNotifier(t, g, gitlab.WithJobTimeout(timeout))
			if c.before != nil {
				c.before(g)
			}
			ctx, repo, key := context.Background(), n.repo, noticeKey
			if c.ctx != nil {
				ctx = c.ctx()
			}
			if c.repo != "" {
				repo.Key = c.repo
			}
			if c.key != "" {
				key = c.key
			}
			start := time.Now()
			err := n.svc.Notify(ctx, repo, key, "ends", "body")
			if err == nil {
				t.Fatal("no error")
			}
			if got := fault.Of(err); got != c.kind {
				t.Errorf("kind %v, want %v: %v", got, c.kind, err)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("%v does not match %v", err, c.is)
			}
			for _, s := range c.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q does not say %q", err, s)
				}
			}
			if d := time.Since(start); d > timeout+5*time.Second {
				t.Errorf("Notify returned after %v, long past its deadline (%v)", d, timeout)
			}
			if got := g.Issues("students/alice/web"); len(got) != 0 {
				t.Errorf("issues %+v", got)
			}
		})
	}
}

func TestANoticeIsHeldToGitLabsLimits(t *testing.T) {
	const marker = "<!-- whalemountain:semester-end-2026-07-31 -->\n\n"
	long := strings.Repeat("é", 1<<20) // 2 MiB, past the limit in characters as in bytes
	for _, c := range []struct {
		name            string
		title, body     string
		wantTitle       string
		wantDescription string
	}{
		{
			name:      "a title past 255 characters is cut to 255, the cut marked",
			title:     strings.Repeat("é", 300),
			body:      "body",
			wantTitle: strings.Repeat("é", 254) + "…", wantDescription: marker + "body",
		},
		{
			name:      "a title on several lines is made one",
			title:     "semester\nends\t soon\u202e",
			body:      "body",
			wantTitle: "semester ends soon", wantDescription: marker + "body",
		},
		{
			name:      "a body past the description's 1,048,576 characters is cut to fit them, the cut marked",
			title:     "ends",
			body:      long,
			wantTitle: "ends",
			wantDescription: marker +
				long[:2*((1<<20)-utf8.RuneCountInString(marker)-1)] + "…",
		},
		{
			name:      "a body of exactly what fits is posted whole",
			title:     "ends",
			body:      long[:2*((1<<20)-utf8.RuneCountInString(marker))],
			wantTitle: "ends",
			wantDescription: marker +
				long[:2*((1<<20)-utf8.RuneCountInString(marker))],
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := gitlabtest.New(t, token)
			p := aliceWeb(t, g)
			mustNotify(t, newNotifier(t, g), noticeKey, c.title, c.body)
			issues := g.Issues(p.Path())
			if len(issues) != 1 {
				t.Fatalf("%d issues, want 1", len(issues))
			}
			if issues[0].Title != c.wantTitle {
				t.Errorf("title %q, want %q", issues[0].Title, c.wantTitle)
			}
			if d := issues[0].Description; d != c.wantDescription {
				t.Errorf("description of %d characters ending %q, want %d ending %q",
					utf8.RuneCountInString(d), d[max(0, len(d)-12):],
					utf8.RuneCountInString(c.wantDescription), c.wantDescription[max(0, len(c.wantDescription)-12):])
			}
		})
	}
}
