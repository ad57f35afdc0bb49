package gitlab

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
// webhook.Dispatcher without ever blocking: the work is done by Run, each
// job within a deadline (WithJobTimeout).
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
	// relist holds a listing Rediscover asked for and Run has not started
	// yet: any number of requests collapse into it.
	relist chan struct{}

	jobTimeout    time.Duration // set at construction
	shutdownGrace time.Duration // set at construction

	// extension approvals (extension.go), set at construction
	extLabel   string   // semester.extensionLabel; "" approves nothing
	adminGroup string   // access.gitlabAdminGroup
	admins     []string // access.admins
}

var _ webhook.Dispatcher = (*Service)(nil)

// DefaultJobTimeout and DefaultShutdownGrace are a new Service's job
// deadline and shutdown grace: the defaults of the server config's
// poll.passTimeout and poll.shutdownGrace, which bound a pass of the loop
// the same way (a merge request's plan is a pass up to the apply, plus a
// few GitLab requests).
const (
	DefaultJobTimeout    = reconciler.DefaultPassTimeout
	DefaultShutdownGrace = reconciler.DefaultShutdownGrace
)

// RediscoverGap is the least time between two listings of GitLab that
// Rediscover asked for: the shortest discoverInterval the server config
// allows, so that webhooks never have GitLab listed more often than the
// most eager polling would.
const RediscoverGap = 10 * time.Second

// ServiceOption sets an optional parameter of NewService.
type ServiceOption func(*Service)

// WithJobTimeout sets the deadline of each job the service runs, the plan
// of a merge request or the work of one webhook event, GitLab requests
// included: a hung GitLab API or a hung plan holds the service no longer;
// the job ends with an error, logged, and the next one runs. 0 is no
// deadline. The default is DefaultJobTimeout; a server gives the server
// config's poll.passTimeout, as for its loop's passes.
func WithJobTimeout(d time.Duration) ServiceOption {
	return func(s *Service) { s.jobTimeout = max(0, d) }
}

// WithShutdownGrace sets how long the jobs under way when Run's context
// ends may go on before they are cancelled. The default is
// DefaultShutdownGrace; a server gives the server config's
// poll.shutdownGrace, as for its loop.
func WithShutdownGrace(d time.Duration) ServiceOption {
	return func(s *Service) { s.shutdownGrace = max(0, d) }
}

// WithExtensions has Extension honour the merge requests an admin
// labelled label (the server config's semester.extensionLabel). Admins are
// the members of adminGroup (access.gitlabAdminGroup), directly or through
// a parent group, and the GitLab accounts named in admins
// (access.admins). Without it, or with label "", Extension approves
// nothing.
func WithExtensions(label, adminGroup string, admins []string) ServiceOption {
	return func(s *Service) {
		s.extLabel, s.adminGroup, s.admins = label, adminGroup, slices.Clone(admins)
	}
}

// NewService returns the GitLab service; Connect must be called before
// Run or Dispatch.
func NewService(client *Client, cfg schema.GitLabSource, quota schema.Quota, log *slog.Logger, opts ...ServiceOption) *Service {
	s := &Service{
		client: client, cfg: cfg, quota: quota, log: log,
		projects: map[string]Project{}, byID: map[int64]string{}, refused: map[string]string{}, stale: true,
		jobs:   make(chan func(context.Context), 256),
		plans:  workqueue.NewTyped[mrKey](),
		runCtx: context.Background(),
		relist: make(chan struct{}, 1),

		jobTimeout:    DefaultJobTimeout,
		shutdownGrace: DefaultShutdownGrace,
	}
	for _, o := range opts {
		o(s)
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
		s.push(strings.ToLower(e.Project), e.After)
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

// push triggers the repo's pass, which looks again shortly when the
// commit is not visible yet, and has a job say the commit is queued when
// it is news to the loop. It never blocks, and runs in Dispatch rather
// than as a job: GitLab may deliver a push many times (retries, a project
// hook and a system hook) and sends pushes to projects WhaleMountain does
// not run, and none of these may take the place of a new push in the
// job queue, whose overflow is dropped.
func (s *Service) push(key, sha string) {
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
		s.enqueue(func(ctx context.Context) { s.reporter.Pending(ctx, key, sha) })
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

// Rediscover has GitLab listed again and the loop pick up the result; it
// never blocks. Run lists at once when it is not listing already, and
// otherwise RediscoverGap after the listing before: the requests made in
// between collapse into one listing. A listing costs a request per
// project (its wm.yaml, its owner), and a system hook sends a push for
// every project of the instance, most of which WhaleMountain does not
// run: without this, each of those pushes would list GitLab again.
func (s *Service) Rediscover() {
	s.mu.Lock()
	s.stale = true
	s.mu.Unlock()
	select {
	case s.relist <- struct{}{}:
	default: // one is pending already
	}
}

// relistNext runs the listing Rediscover asked for, then waits
// RediscoverGap; it returns false once ctx is done.
func (s *Service) relistNext(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case <-s.relist:
	}
	s.mu.Lock()
	l := s.loop
	s.mu.Unlock()
	l.Rediscover()
	gap := time.NewTimer(RediscoverGap)
	defer gap.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-gap.C:
		return true
	}
}

// errShutdown is the cause of the jobs cancelled when the shutdown grace
// ran out.
var errShutdown = errors.New("the GitLab service shut down")

// Run does the work webhooks ask for until ctx is done: one job at a time
// for webhook events and one plan at a time for merge requests, each
// within the job deadline (WithJobTimeout), and the listings Rediscover
// asks for. Once ctx is done no new job
// starts (what is still queued is dropped: the next poll or event catches
// up); the jobs under way may go on for the shutdown grace
// (WithShutdownGrace), after which their context is cancelled; Run
// returns once they have all returned.
func (s *Service) Run(ctx context.Context) {
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	// Jobs run under their own context, so that shutdown does not cancel
	// them at once: a plan cut half-way leaves a note without its status.
	jobCtx, cancelJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancelJobs(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		for s.planNext(ctx, jobCtx) {
		}
	})
	wg.Go(func() {
		for s.jobNext(ctx, jobCtx) {
		}
	})
	wg.Go(func() {
		for s.relistNext(ctx) {
		}
	})
	<-ctx.Done()
	s.plans.ShutDown()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	grace := time.NewTimer(s.shutdownGrace)
	defer grace.Stop()
	select {
	case <-done:
	case <-grace.C:
		s.log.Warn("GitLab jobs still under way after the shutdown grace; cancelling them", "grace", s.shutdownGrace)
		cancelJobs(errShutdown)
		<-done
	}
}

// withDeadline returns the context of one job: jobCtx with the job
// deadline.
func (s *Service) withDeadline(jobCtx context.Context) (context.Context, context.CancelFunc) {
	if s.jobTimeout <= 0 {
		return context.WithCancel(jobCtx)
	}
	return context.WithTimeout(jobCtx, s.jobTimeout)
}

// endedEarly says why a job's context ended early ("at its deadline", "at
// shutdown"), or "" when it did not.
func endedEarly(ctx context.Context) string {
	switch cause := context.Cause(ctx); {
	case cause == nil:
		return ""
	case errors.Is(cause, context.DeadlineExceeded):
		return "at its deadline"
	case errors.Is(cause, errShutdown):
		return "at shutdown"
	}
	return "early"
}

// jobNext runs one webhook job under jobCtx and the job deadline; it
// returns false once ctx is done.
func (s *Service) jobNext(ctx, jobCtx context.Context) bool {
	var job func(context.Context)
	select {
	case <-ctx.Done():
		return false
	case job = <-s.jobs:
	}
	if ctx.Err() != nil {
		return false // dropped: the next poll catches up
	}
	jctx, cancel := s.withDeadline(jobCtx)
	defer cancel()
	job(jctx)
	if why := endedEarly(jctx); why != "" {
		// The job logged what it could not do; this says why.
		s.log.Warn("webhook job cancelled "+why, "timeout", s.jobTimeout)
	}
	return true
}

// planNext plans one merge request under jobCtx and the job deadline; it
// returns false once the queue shuts down. Once ctx is done, what is
// still queued is dropped.
func (s *Service) planNext(ctx, jobCtx context.Context) bool {
	k, shutdown := s.plans.Get()
	if shutdown {
		return false
	}
	defer s.plans.Done(k)
	if ctx.Err() != nil {
		return true
	}
	pctx, cancel := s.withDeadline(jobCtx)
	defer cancel()
	if err := s.planMR(pctx, k); err != nil {
		msg := "merge request not planned"
		if why := endedEarly(pctx); why != "" {
			msg += ": cancelled " + why
		}
		s.log.Warn(msg, "project", k.project, "iid", k.iid, "timeout", s.jobTimeout, "err", err)
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
