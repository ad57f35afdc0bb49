package gitlab

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"
	"k8s.io/client-go/util/workqueue"

	"github.com/whalemountain/wm/reconciler"
	"github.com/whalemountain/wm/reconciler/webhook"
	"github.com/whalemountain/wm/schema"
)

// Loop is what Service needs of the reconcile loop; *reconciler.Loop is one.
type Loop interface {
	TriggerRevision(key, rev string) bool
	Rediscover()
	Known(key string) bool
}

// Planner is what Service needs of the reconciler.
type Planner interface {
	Plan(ctx context.Context, repo reconciler.Repo) (reconciler.Result, error)
	Retire(ctx context.Context, repo reconciler.Repo) (reconciler.Result, error)
}

// mrKey names one merge request.
type mrKey struct {
	project string // path_with_namespace, lower case
	iid     int64
}

// Service runs WhaleMountain's side of GitLab: it keeps the list of
// discovered projects, turns webhook events into work, posts plans on
// merge requests and retires repos GitLab says are gone. It implements
// webhook.Dispatcher without ever blocking: the work is done by Run.
type Service struct {
	client   *Client
	cfg      schema.GitLabSource
	quota    schema.Quota
	log      *slog.Logger
	reporter *Reporter

	mu       sync.Mutex
	rec      Planner
	loop     Loop
	projects map[string]Project // by key
	byID     map[int64]string   // project id → key
	refused  map[string]string  // key → why GitLab did not confirm its owner
	listed   time.Time
	stale    bool

	jobs   chan func(context.Context)
	plans  workqueue.TypedInterface[mrKey]
	runCtx context.Context
}

var _ webhook.Dispatcher = (*Service)(nil)

// NewService returns the GitLab service; Connect must be called before
// Run or Dispatch.
func NewService(client *Client, cfg schema.GitLabSource, quota schema.Quota, log *slog.Logger) *Service {
	s := &Service{
		client: client, cfg: cfg, quota: quota, log: log,
		projects: map[string]Project{}, byID: map[int64]string{}, refused: map[string]string{}, stale: true,
		jobs:   make(chan func(context.Context), 256),
		plans:  workqueue.NewTyped[mrKey](),
		runCtx: context.Background(),
	}
	s.reporter = NewReporter(client, cfg.DashboardURL, s.path, log)
	return s
}

// Reporter is the commit status reporter to give the reconciler.
func (s *Service) Reporter() *Reporter { return s.reporter }

// Connect gives the service the reconciler it plans and retires with and
// the loop webhooks trigger. (They are built after the service, since the
// reconciler reports through the service's Reporter.)
func (s *Service) Connect(rec Planner, l Loop) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rec, s.loop = rec, l
}

func (s *Service) path(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.projects[key]
	return p.Path, ok
}

// Repos lists the discovered projects as repos, listing GitLab again when
// the last listing is older than the discover interval. When GitLab cannot
// be listed the error is returned, and the loop keeps the repos it knows.
func (s *Service) Repos() ([]reconciler.Repo, error) {
	s.mu.Lock()
	due := s.stale || time.Since(s.listed) >= s.cfg.DiscoverInterval.Std()
	ctx := s.runCtx
	s.mu.Unlock()
	if due {
		if err := s.refresh(ctx); err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repos := make([]reconciler.Repo, 0, len(s.projects))
	for _, p := range s.projects {
		repos = append(repos, p.Repo())
	}
	return repos, nil
}

// refresh lists GitLab and takes the result for the truth. A project seen
// under a new path (same id: renamed or transferred) has its old repo
// retired first, so that its containers move to the new owner or name; so
// has a known project whose owner GitLab no longer confirms. Projects
// refused for their owner are logged as a warning when first refused.
func (s *Service) refresh(ctx context.Context) error {
	projects, skipped, err := s.client.Discover(ctx)
	if err != nil {
		return err
	}
	var gone []Project
	next := make(map[string]Project, len(projects))
	byID := make(map[int64]string, len(projects))
	refused := map[string]string{}
	s.mu.Lock()
	for _, p := range projects {
		key := p.Repo().Key
		if old, ok := s.byID[p.ID]; ok && old != key {
			gone = append(gone, s.projects[old])
		}
		next[key], byID[p.ID] = p, key
	}
	for _, sk := range skipped {
		if !sk.Refused {
			s.log.Debug("project skipped", "why", sk.Reason)
			continue
		}
		key := strings.ToLower(sk.Path)
		refused[key] = sk.Reason
		if s.refused[key] != sk.Reason {
			s.log.Warn("project refused: its owner is not confirmed by GitLab; it is not reconciled", "project", sk.Path, "why", sk.Reason)
		}
		if old, ok := s.byID[sk.ID]; ok {
			gone = append(gone, s.projects[old])
		}
	}
	s.mu.Unlock()
	for _, old := range gone {
		s.retire(ctx, old)
	}
	s.mu.Lock()
	s.projects, s.byID, s.refused, s.listed, s.stale = next, byID, refused, time.Now(), false
	s.mu.Unlock()
	return nil
}

// Refused lists the projects the last listing refused because GitLab did
// not confirm the owner their path names, by key, with the reason.
func (s *Service) Refused() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.refused)
}

// retire removes what a project that GitLab says is gone had applied.
func (s *Service) retire(ctx context.Context, p Project) {
	res, err := s.rec.Retire(ctx, p.Repo())
	if err != nil {
		s.log.Warn("retiring a moved or deleted repo failed", "repo", p.Repo().Key, "err", err)
		return
	}
	s.log.Info("retired", "repo", p.Repo().Key, "result", res.Message)
}

// Dispatch takes a webhook event; it never blocks.
func (s *Service) Dispatch(_ context.Context, e any) {
	switch e := e.(type) {
	case webhook.Push:
		if !e.OnDefaultBranch() || e.Deleted() {
			return
		}
		key := strings.ToLower(e.Project)
		s.enqueue(func(ctx context.Context) { s.push(ctx, key, e.After) })
	case webhook.MergeRequest:
		if e.WantsPlan() {
			s.plans.Add(mrKey{strings.ToLower(e.Project), int64(e.IID)})
		}
	case webhook.ProjectChange:
		s.enqueue(func(ctx context.Context) { s.projectChanged(ctx, e) })
	}
}

func (s *Service) enqueue(job func(context.Context)) {
	select {
	case s.jobs <- job:
	default:
		s.log.Warn("webhook work queue full; the next poll will catch up")
	}
}

// push says the commit is queued and triggers the repo's pass, which
// looks again shortly when the commit is not visible yet.
func (s *Service) push(ctx context.Context, key, sha string) {
	s.mu.Lock()
	l := s.loop
	_, known := s.projects[key]
	why, refused := s.refused[key]
	s.mu.Unlock()
	if refused {
		s.log.Info("push to a refused project ignored", "project", key, "why", why)
		return
	}
	if !known {
		// A new project, or one that just got its wm.yaml.
		s.Rediscover()
	}
	if l.TriggerRevision(key, sha) {
		s.reporter.Pending(ctx, key, sha)
	}
}

// projectChanged follows a system hook. A delivery is only news to check:
// whoever knows the webhook secret can send one, so it never retires
// anything by itself. The project it names (by id, the only name a path
// change keeps) is looked up in GitLab, and only when GitLab answers that
// the project is gone (404) or lives at another path is its old repo
// retired; any other answer, or none, changes nothing and is logged.
// GitLab is listed again either way.
func (s *Service) projectChanged(ctx context.Context, e webhook.ProjectChange) {
	defer s.Rediscover()
	claimed := ""
	switch e.EventName {
	case "project_destroy":
		claimed = e.Project
	case "project_rename", "project_transfer":
		claimed = e.OldProject
	default:
		return
	}
	s.mu.Lock()
	var p Project
	var ok bool
	if e.ProjectID != 0 {
		p, ok = s.projects[s.byID[int64(e.ProjectID)]]
	} else {
		p, ok = s.projects[strings.ToLower(claimed)]
	}
	s.mu.Unlock()
	if !ok {
		return // not a project WhaleMountain runs
	}
	where, now, err := s.client.Locate(ctx, p)
	switch {
	case err != nil:
		s.log.Warn("system hook not confirmed: GitLab could not be asked; nothing is retired",
			"event", e.EventName, "project", p.Path, "err", err)
		return
	case where == Here:
		s.log.Warn("system hook contradicted by GitLab: the project is still at its path; nothing is retired",
			"event", e.EventName, "project", p.Path, "claimed", claimed)
		return
	}
	s.mu.Lock()
	key := p.Repo().Key
	if cur, still := s.projects[key]; still && cur.ID == p.ID {
		delete(s.projects, key)
		delete(s.byID, p.ID)
	} else {
		ok = false // retired meanwhile by a listing
	}
	s.mu.Unlock()
	if ok {
		s.log.Info("GitLab confirms the project left its path", "event", e.EventName, "project", p.Path, "now", now)
		s.retire(ctx, p)
	}
}

// Rediscover lists GitLab again now and has the loop pick up the result.
func (s *Service) Rediscover() {
	s.mu.Lock()
	s.stale = true
	l := s.loop
	s.mu.Unlock()
	l.Rediscover()
}

// Run does the work webhooks ask for until ctx is done.
func (s *Service) Run(ctx context.Context) {
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() {
		for s.planNext(ctx) {
		}
	})
	go func() {
		<-ctx.Done()
		s.plans.ShutDownWithDrain()
	}()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case job := <-s.jobs:
			job(context.WithoutCancel(ctx))
		}
	}
}

// planNext plans one merge request.
func (s *Service) planNext(ctx context.Context) bool {
	k, shutdown := s.plans.Get()
	if shutdown {
		return false
	}
	defer s.plans.Done(k)
	if err := s.planMR(context.WithoutCancel(ctx), k); err != nil {
		s.log.Warn("merge request not planned", "project", k.project, "iid", k.iid, "err", err)
	}
	return true
}

// planMR computes what merging the MR would change and writes it in the
// MR's plan note and its whalemountain/plan status. Nothing is applied.
func (s *Service) planMR(ctx context.Context, k mrKey) error {
	s.mu.Lock()
	p, ok := s.projects[k.project]
	s.mu.Unlock()
	if !ok {
		return nil // not a student repo WhaleMountain knows
	}
	mr, err := s.client.GetMergeRequest(ctx, p.Path, k.iid)
	if err != nil || mr.State != "opened" || mr.SHA == "" {
		return err
	}
	repo := p.Repo()
	repo.Branch, repo.Revision = mr.SourceBranch, mr.SHA
	if mr.SourceProjectID != p.ID {
		if repo.URL, err = s.client.ProjectHTTPURL(ctx, mr.SourceProjectID); err != nil {
			return err
		}
	}
	res, perr := s.rec.Plan(ctx, repo)
	res.Revision = mr.SHA
	if err := s.client.UpsertNote(ctx, p.Path, k.iid, PlanMarker, RenderPlan(res, perr, p.DefaultBranch, s.quota)); err != nil {
		return err
	}
	state, desc := planStatus(res, perr)
	return s.client.SetStatus(ctx, p.Path, mr.SHA, PlanStatusName, state, desc, "")
}

// planStatus is the whalemountain/plan status of a plan.
func planStatus(res reconciler.Result, err error) (gl.BuildStateValue, string) {
	if err == nil {
		n := len(res.Plan.Actions)
		if n == 0 {
			return StateSuccess, "plan: no changes"
		}
		return StateSuccess, fmt.Sprintf("plan: %d change(s) on merge, see the plan note", n)
	}
	state, desc := StatusOf(res, err)
	if state == StateRunning {
		state = StateFailed
	}
	return state, "plan: " + desc
}
