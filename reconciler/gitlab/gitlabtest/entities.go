package gitlabtest

import (
	"slices"
	"strings"
	"time"
)

// The types below are GitLab's API entities (lib/api/entities), with the
// fields GitLab sends in the order it sends them. Fields a real instance
// fills from features the double does not model (issues, CI, licences)
// carry GitLab's values for a project that does not use them.

// iso formats a time the way GitLab's API does: UTC, milliseconds, Z.
func iso(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// isoPtr is iso for a nullable time.
func isoPtr(t *time.Time) *string {
	if t == nil {
		return nil
	}
	s := iso(*t)
	return &s
}

type userBasicEntity struct {
	ID        int     `json:"id"`
	Username  string  `json:"username"`
	Name      string  `json:"name"`
	State     string  `json:"state"`
	Locked    bool    `json:"locked"`
	AvatarURL *string `json:"avatar_url"`
	WebURL    string  `json:"web_url"`
}

func (g *GitLab) userBasic(u *user) userBasicEntity {
	return userBasicEntity{
		ID: u.id, Username: u.username, Name: u.name, State: "active",
		WebURL: g.URL() + "/" + u.username,
	}
}

type currentUserEntity struct {
	userBasicEntity
	CreatedAt        string  `json:"created_at"`
	Bio              string  `json:"bio"`
	Location         string  `json:"location"`
	PublicEmail      *string `json:"public_email"`
	Bot              bool    `json:"bot"`
	LastSignInAt     *string `json:"last_sign_in_at"`
	ConfirmedAt      string  `json:"confirmed_at"`
	LastActivityOn   *string `json:"last_activity_on"`
	Email            string  `json:"email"`
	ProjectsLimit    int     `json:"projects_limit"`
	CanCreateGroup   bool    `json:"can_create_group"`
	CanCreateProject bool    `json:"can_create_project"`
	TwoFactorEnabled bool    `json:"two_factor_enabled"`
	External         bool    `json:"external"`
	PrivateProfile   bool    `json:"private_profile"`
}

type namespaceEntity struct {
	ID        int     `json:"id"`
	Name      string  `json:"name"`
	Path      string  `json:"path"`
	Kind      string  `json:"kind"`
	FullPath  string  `json:"full_path"`
	ParentID  *int    `json:"parent_id"`
	AvatarURL *string `json:"avatar_url"`
	WebURL    string  `json:"web_url"`
}

func (g *GitLab) namespaceLocked(gr *Group) namespaceEntity {
	e := namespaceEntity{
		ID: gr.id, Name: gr.name, Path: gr.path, Kind: "group",
		FullPath: gr.fullPathLocked(), WebURL: g.URL() + "/groups/" + gr.fullPathLocked(),
	}
	if gr.parent != nil {
		e.ParentID = &gr.parent.id
	}
	return e
}

// basicProjectEntity is Entities::BasicProjectDetails, what simple=true
// lists: note that it has neither archived nor visibility.
type basicProjectEntity struct {
	ID                int             `json:"id"`
	Description       *string         `json:"description"`
	Name              string          `json:"name"`
	NameWithNamespace string          `json:"name_with_namespace"`
	Path              string          `json:"path"`
	PathWithNamespace string          `json:"path_with_namespace"`
	CreatedAt         string          `json:"created_at"`
	DefaultBranch     string          `json:"default_branch"`
	TagList           []string        `json:"tag_list"`
	Topics            []string        `json:"topics"`
	SSHURLToRepo      string          `json:"ssh_url_to_repo"`
	HTTPURLToRepo     string          `json:"http_url_to_repo"`
	WebURL            string          `json:"web_url"`
	ReadmeURL         *string         `json:"readme_url"`
	ForksCount        int             `json:"forks_count"`
	AvatarURL         *string         `json:"avatar_url"`
	StarCount         int             `json:"star_count"`
	LastActivityAt    string          `json:"last_activity_at"`
	Namespace         namespaceEntity `json:"namespace"`
}

// projectEntity is Entities::Project, what a full list and a single
// project return.
type projectEntity struct {
	basicProjectEntity
	ContainerRegistryImagePrefix              string            `json:"container_registry_image_prefix"`
	Links                                     map[string]string `json:"_links"`
	PackagesEnabled                           bool              `json:"packages_enabled"`
	EmptyRepo                                 bool              `json:"empty_repo"`
	Archived                                  bool              `json:"archived"`
	Visibility                                string            `json:"visibility"`
	ResolveOutdatedDiffDiscussions            bool              `json:"resolve_outdated_diff_discussions"`
	RepositoryObjectFormat                    string            `json:"repository_object_format"`
	IssuesEnabled                             bool              `json:"issues_enabled"`
	MergeRequestsEnabled                      bool              `json:"merge_requests_enabled"`
	WikiEnabled                               bool              `json:"wiki_enabled"`
	JobsEnabled                               bool              `json:"jobs_enabled"`
	SnippetsEnabled                           bool              `json:"snippets_enabled"`
	ContainerRegistryEnabled                  bool              `json:"container_registry_enabled"`
	ServiceDeskEnabled                        bool              `json:"service_desk_enabled"`
	CanCreateMergeRequestIn                   bool              `json:"can_create_merge_request_in"`
	IssuesAccessLevel                         string            `json:"issues_access_level"`
	RepositoryAccessLevel                     string            `json:"repository_access_level"`
	MergeRequestsAccessLevel                  string            `json:"merge_requests_access_level"`
	ForkingAccessLevel                        string            `json:"forking_access_level"`
	WikiAccessLevel                           string            `json:"wiki_access_level"`
	BuildsAccessLevel                         string            `json:"builds_access_level"`
	SnippetsAccessLevel                       string            `json:"snippets_access_level"`
	PagesAccessLevel                          string            `json:"pages_access_level"`
	ContainerRegistryAccessLevel              string            `json:"container_registry_access_level"`
	EmailsEnabled                             bool              `json:"emails_enabled"`
	SharedRunnersEnabled                      bool              `json:"shared_runners_enabled"`
	LFSEnabled                                bool              `json:"lfs_enabled"`
	CreatorID                                 int               `json:"creator_id"`
	ImportStatus                              string            `json:"import_status"`
	OpenIssuesCount                           int               `json:"open_issues_count"`
	DescriptionHTML                           string            `json:"description_html"`
	UpdatedAt                                 string            `json:"updated_at"`
	CIConfigPath                              *string           `json:"ci_config_path"`
	PublicJobs                                bool              `json:"public_jobs"`
	SharedWithGroups                          []any             `json:"shared_with_groups"`
	OnlyAllowMergeIfPipelineSucceeds          bool              `json:"only_allow_merge_if_pipeline_succeeds"`
	AllowMergeOnSkippedPipeline               *bool             `json:"allow_merge_on_skipped_pipeline"`
	RequestAccessEnabled                      bool              `json:"request_access_enabled"`
	OnlyAllowMergeIfAllDiscussionsAreResolved bool              `json:"only_allow_merge_if_all_discussions_are_resolved"`
	RemoveSourceBranchAfterMerge              bool              `json:"remove_source_branch_after_merge"`
	PrintingMergeRequestLinkEnabled           bool              `json:"printing_merge_request_link_enabled"`
	MergeMethod                               string            `json:"merge_method"`
	SquashOption                              string            `json:"squash_option"`
	AutocloseReferencedIssues                 bool              `json:"autoclose_referenced_issues"`
	MarkedForDeletionAt                       *string           `json:"marked_for_deletion_at"`
	MarkedForDeletionOn                       *string           `json:"marked_for_deletion_on"`
	Permissions                               *permissionsJSON  `json:"permissions,omitempty"`
}

// permissionsJSON is what GET /projects/:id adds: the token's owner is an
// owner (50) of every group and a member of no project.
type permissionsJSON struct {
	ProjectAccess any            `json:"project_access"`
	GroupAccess   map[string]int `json:"group_access"`
}

// sortedTopics returns topics the way GitLab lists them: by name.
func sortedTopics(topics []string) []string {
	out := append([]string{}, topics...)
	slices.Sort(out)
	return out
}

func (g *GitLab) basicProjectLocked(p *Project, branch string) basicProjectEntity {
	full := p.fullPathLocked()
	host := strings.TrimPrefix(strings.TrimPrefix(g.URL(), "http://"), "https://")
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	return basicProjectEntity{
		ID:                p.id,
		Name:              p.name,
		NameWithNamespace: p.namespace.fullNameLocked() + " / " + p.name,
		Path:              p.path,
		PathWithNamespace: full,
		CreatedAt:         iso(p.created),
		DefaultBranch:     branch,
		TagList:           sortedTopics(p.topics),
		Topics:            sortedTopics(p.topics),
		SSHURLToRepo:      "git@" + host + ":" + full + ".git",
		HTTPURLToRepo:     g.URL() + "/" + full + ".git",
		WebURL:            g.URL() + "/" + full,
		LastActivityAt:    iso(p.lastActivity),
		Namespace:         g.namespaceLocked(p.namespace),
	}
}

func (g *GitLab) projectLocked(p *Project, single bool) projectEntity {
	branch, empty := p.defaultBranch()
	api := g.URL() + "/api/v4/projects/" + itoa(p.id)
	e := projectEntity{
		basicProjectEntity:           g.basicProjectLocked(p, branch),
		ContainerRegistryImagePrefix: strings.TrimPrefix(g.URL(), "http://") + "/" + p.fullPathLocked(),
		Links: map[string]string{
			"self":           api,
			"issues":         api + "/issues",
			"merge_requests": api + "/merge_requests",
			"repo_branches":  api + "/repository/branches",
			"labels":         api + "/labels",
			"events":         api + "/events",
			"members":        api + "/members",
			"cluster_agents": api + "/cluster_agents",
		},
		PackagesEnabled:          true,
		EmptyRepo:                empty,
		Archived:                 p.archived,
		Visibility:               p.visibility,
		RepositoryObjectFormat:   "sha1",
		IssuesEnabled:            true,
		MergeRequestsEnabled:     true,
		WikiEnabled:              true,
		JobsEnabled:              true,
		SnippetsEnabled:          true,
		ContainerRegistryEnabled: true,
		CanCreateMergeRequestIn:  true,
		IssuesAccessLevel:        "enabled", RepositoryAccessLevel: "enabled",
		MergeRequestsAccessLevel: "enabled", ForkingAccessLevel: "enabled",
		WikiAccessLevel: "enabled", BuildsAccessLevel: "enabled",
		SnippetsAccessLevel: "enabled", PagesAccessLevel: "private",
		ContainerRegistryAccessLevel:    "enabled",
		EmailsEnabled:                   true,
		SharedRunnersEnabled:            true,
		LFSEnabled:                      true,
		CreatorID:                       p.creator.id,
		ImportStatus:                    "none",
		UpdatedAt:                       iso(p.updated),
		SharedWithGroups:                []any{},
		RequestAccessEnabled:            true,
		PrintingMergeRequestLinkEnabled: true,
		MergeMethod:                     "merge",
		SquashOption:                    "default_off",
		AutocloseReferencedIssues:       true,
	}
	if single {
		e.Permissions = &permissionsJSON{GroupAccess: map[string]int{"access_level": 50, "notification_level": 3}}
	}
	return e
}

type groupEntity struct {
	ID                             int             `json:"id"`
	WebURL                         string          `json:"web_url"`
	Name                           string          `json:"name"`
	Path                           string          `json:"path"`
	Description                    string          `json:"description"`
	Visibility                     string          `json:"visibility"`
	ShareWithGroupLock             bool            `json:"share_with_group_lock"`
	RequireTwoFactorAuthentication bool            `json:"require_two_factor_authentication"`
	TwoFactorGracePeriod           int             `json:"two_factor_grace_period"`
	ProjectCreationLevel           string          `json:"project_creation_level"`
	AutoDevopsEnabled              *bool           `json:"auto_devops_enabled"`
	SubgroupCreationLevel          string          `json:"subgroup_creation_level"`
	EmailsDisabled                 bool            `json:"emails_disabled"`
	EmailsEnabled                  bool            `json:"emails_enabled"`
	MentionsDisabled               *bool           `json:"mentions_disabled"`
	LFSEnabled                     bool            `json:"lfs_enabled"`
	DefaultBranch                  *string         `json:"default_branch"`
	DefaultBranchProtection        int             `json:"default_branch_protection"`
	AvatarURL                      *string         `json:"avatar_url"`
	RequestAccessEnabled           bool            `json:"request_access_enabled"`
	FullName                       string          `json:"full_name"`
	FullPath                       string          `json:"full_path"`
	CreatedAt                      string          `json:"created_at"`
	ParentID                       *int            `json:"parent_id"`
	OrganizationID                 int             `json:"organization_id"`
	SharedRunnersSetting           string          `json:"shared_runners_setting"`
	LDAPCN                         *string         `json:"ldap_cn"`
	LDAPAccess                     *int            `json:"ldap_access"`
	MarkedForDeletionOn            *string         `json:"marked_for_deletion_on"`
	WikiAccessLevel                string          `json:"wiki_access_level"`
	SharedWithGroups               []any           `json:"shared_with_groups"`
	PreventSharingOutsideHierarchy bool            `json:"prevent_sharing_groups_outside_hierarchy"`
	Projects                       []projectEntity `json:"projects"`
	SharedProjects                 []any           `json:"shared_projects"`
}

// groupLocked is Entities::GroupDetail with its deprecated projects list:
// the group's own projects, not its subgroups', at most 100.
func (g *GitLab) groupLocked(gr *Group) groupEntity {
	e := groupEntity{
		ID: gr.id, WebURL: g.URL() + "/groups/" + gr.fullPathLocked(),
		Name: gr.name, Path: gr.path, Visibility: "private",
		ProjectCreationLevel: "developer", SubgroupCreationLevel: "maintainer",
		EmailsEnabled: true, LFSEnabled: true, DefaultBranchProtection: 2,
		RequestAccessEnabled: true, FullName: gr.fullNameLocked(), FullPath: gr.fullPathLocked(),
		CreatedAt: iso(gr.created), OrganizationID: 1, SharedRunnersSetting: "enabled",
		WikiAccessLevel: "enabled", SharedWithGroups: []any{},
		Projects: []projectEntity{}, SharedProjects: []any{},
	}
	if gr.parent != nil {
		e.ParentID = &gr.parent.id
	}
	for _, p := range g.sortedProjectsLocked() {
		if p.namespace == gr && len(e.Projects) < 100 {
			e.Projects = append(e.Projects, g.projectLocked(p, false))
		}
	}
	return e
}

type commitEntity struct {
	ID               string            `json:"id"`
	ShortID          string            `json:"short_id"`
	CreatedAt        string            `json:"created_at"`
	ParentIDs        []string          `json:"parent_ids"`
	Title            string            `json:"title"`
	Message          string            `json:"message"`
	AuthorName       string            `json:"author_name"`
	AuthorEmail      string            `json:"author_email"`
	AuthoredDate     string            `json:"authored_date"`
	CommitterName    string            `json:"committer_name"`
	CommitterEmail   string            `json:"committer_email"`
	CommittedDate    string            `json:"committed_date"`
	Trailers         map[string]string `json:"trailers"`
	ExtendedTrailers map[string]string `json:"extended_trailers"`
	WebURL           string            `json:"web_url"`
}

func (g *GitLab) commitLocked(p *Project, c commitData) commitEntity {
	return commitEntity{
		ID: c.id, ShortID: c.id[:8], CreatedAt: c.committed.Format("2006-01-02T15:04:05.000-07:00"),
		ParentIDs: append([]string{}, c.parents...), Title: c.title(), Message: c.message,
		AuthorName: c.authorName, AuthorEmail: c.authorEmail,
		AuthoredDate:  c.authored.Format("2006-01-02T15:04:05.000-07:00"),
		CommitterName: c.committerName, CommitterEmail: c.committerEmail,
		CommittedDate: c.committed.Format("2006-01-02T15:04:05.000-07:00"),
		Trailers:      map[string]string{}, ExtendedTrailers: map[string]string{},
		WebURL: g.URL() + "/" + p.fullPathLocked() + "/-/commit/" + c.id,
	}
}

type branchEntity struct {
	Name               string       `json:"name"`
	Commit             commitEntity `json:"commit"`
	Merged             bool         `json:"merged"`
	Protected          bool         `json:"protected"`
	DevelopersCanPush  bool         `json:"developers_can_push"`
	DevelopersCanMerge bool         `json:"developers_can_merge"`
	CanPush            bool         `json:"can_push"`
	Default            bool         `json:"default"`
	WebURL             string       `json:"web_url"`
}

type commitStatusEntity struct {
	ID           int             `json:"id"`
	SHA          string          `json:"sha"`
	Ref          string          `json:"ref"`
	Status       string          `json:"status"`
	Name         string          `json:"name"`
	TargetURL    *string         `json:"target_url"`
	Description  *string         `json:"description"`
	CreatedAt    string          `json:"created_at"`
	StartedAt    *string         `json:"started_at"`
	FinishedAt   *string         `json:"finished_at"`
	AllowFailure bool            `json:"allow_failure"`
	Coverage     *float64        `json:"coverage"`
	PipelineID   int             `json:"pipeline_id"`
	Author       userBasicEntity `json:"author"`
}

func (g *GitLab) commitStatusLocked(s *commitStatus) commitStatusEntity {
	return commitStatusEntity{
		ID: s.id, SHA: s.sha, Ref: s.ref, Status: s.status, Name: s.name,
		TargetURL: s.targetURL, Description: s.description,
		CreatedAt: iso(s.created), StartedAt: isoPtr(s.started), FinishedAt: isoPtr(s.finished),
		Coverage: s.coverage, PipelineID: s.pipelineID, Author: g.userBasic(s.author),
	}
}

type noteEntity struct {
	ID              int             `json:"id"`
	Type            *string         `json:"type"`
	Body            string          `json:"body"`
	Attachment      *string         `json:"attachment"`
	Author          userBasicEntity `json:"author"`
	CreatedAt       string          `json:"created_at"`
	UpdatedAt       string          `json:"updated_at"`
	System          bool            `json:"system"`
	NoteableID      int             `json:"noteable_id"`
	NoteableType    string          `json:"noteable_type"`
	ProjectID       int             `json:"project_id"`
	Resolvable      bool            `json:"resolvable"`
	Confidential    bool            `json:"confidential"`
	Internal        bool            `json:"internal"`
	Imported        bool            `json:"imported"`
	ImportedFrom    string          `json:"imported_from"`
	NoteableIID     int             `json:"noteable_iid"`
	CommandsChanges map[string]any  `json:"commands_changes"`
}

func (g *GitLab) noteEntityLocked(mr *MergeRequest, n *note) noteEntity {
	return noteEntity{
		ID: n.id, Body: n.body, Author: g.userBasic(n.author),
		CreatedAt: iso(n.created), UpdatedAt: iso(n.updated),
		NoteableID: mr.id, NoteableType: "MergeRequest", ProjectID: mr.project.id,
		ImportedFrom: "none", NoteableIID: mr.iid, CommandsChanges: map[string]any{},
	}
}

type mergeRequestEntity struct {
	ID                          int               `json:"id"`
	IID                         int               `json:"iid"`
	ProjectID                   int               `json:"project_id"`
	Title                       string            `json:"title"`
	Description                 string            `json:"description"`
	State                       string            `json:"state"`
	CreatedAt                   string            `json:"created_at"`
	UpdatedAt                   string            `json:"updated_at"`
	MergedBy                    any               `json:"merged_by"`
	MergeUser                   any               `json:"merge_user"`
	MergedAt                    any               `json:"merged_at"`
	ClosedBy                    any               `json:"closed_by"`
	ClosedAt                    any               `json:"closed_at"`
	TargetBranch                string            `json:"target_branch"`
	SourceBranch                string            `json:"source_branch"`
	UserNotesCount              int               `json:"user_notes_count"`
	Upvotes                     int               `json:"upvotes"`
	Downvotes                   int               `json:"downvotes"`
	Author                      userBasicEntity   `json:"author"`
	Assignees                   []any             `json:"assignees"`
	Assignee                    any               `json:"assignee"`
	Reviewers                   []any             `json:"reviewers"`
	SourceProjectID             int               `json:"source_project_id"`
	TargetProjectID             int               `json:"target_project_id"`
	Labels                      []string          `json:"labels"`
	Draft                       bool              `json:"draft"`
	Imported                    bool              `json:"imported"`
	ImportedFrom                string            `json:"imported_from"`
	WorkInProgress              bool              `json:"work_in_progress"`
	Milestone                   any               `json:"milestone"`
	MergeWhenPipelineSucceeds   bool              `json:"merge_when_pipeline_succeeds"`
	MergeStatus                 string            `json:"merge_status"`
	DetailedMergeStatus         string            `json:"detailed_merge_status"`
	MergeAfter                  any               `json:"merge_after"`
	SHA                         string            `json:"sha"`
	MergeCommitSHA              any               `json:"merge_commit_sha"`
	SquashCommitSHA             any               `json:"squash_commit_sha"`
	DiscussionLocked            any               `json:"discussion_locked"`
	ShouldRemoveSourceBranch    any               `json:"should_remove_source_branch"`
	ForceRemoveSourceBranch     bool              `json:"force_remove_source_branch"`
	PreparedAt                  string            `json:"prepared_at"`
	Reference                   string            `json:"reference"`
	References                  map[string]string `json:"references"`
	WebURL                      string            `json:"web_url"`
	TimeStats                   map[string]any    `json:"time_stats"`
	Squash                      bool              `json:"squash"`
	SquashOnMerge               bool              `json:"squash_on_merge"`
	TaskCompletionStatus        map[string]int    `json:"task_completion_status"`
	HasConflicts                bool              `json:"has_conflicts"`
	BlockingDiscussionsResolved bool              `json:"blocking_discussions_resolved"`
	Subscribed                  bool              `json:"subscribed"`
	ChangesCount                *string           `json:"changes_count"`
	LatestBuildStartedAt        any               `json:"latest_build_started_at"`
	LatestBuildFinishedAt       any               `json:"latest_build_finished_at"`
	FirstDeployedToProduction   any               `json:"first_deployed_to_production_at"`
	Pipeline                    any               `json:"pipeline"`
	HeadPipeline                any               `json:"head_pipeline"`
	DiffRefs                    map[string]string `json:"diff_refs"`
	MergeError                  any               `json:"merge_error"`
	FirstContribution           bool              `json:"first_contribution"`
	User                        map[string]bool   `json:"user"`
}

func (g *GitLab) mergeRequestLocked(mr *MergeRequest) mergeRequestEntity {
	mr.refreshLocked()
	p := mr.project
	full := p.fullPathLocked()
	var target, base, changes string
	if v := mr.versions[len(mr.versions)-1]; mr.merged != nil {
		target, base, changes = v.start, v.base, itoa(v.realSize) // what it merged
	} else {
		target, _ = p.resolveCommit("refs/heads/" + mr.target)
		base = p.mergeBase(target, mr.sha)
		changes = itoa(p.changedPaths(base, mr.sha))
	}
	e := mergeRequestEntity{
		ID: mr.id, IID: mr.iid, ProjectID: p.id, Title: mr.title, State: mr.stateLocked(),
		CreatedAt: iso(mr.created), UpdatedAt: iso(mr.updated),
		TargetBranch: mr.target, SourceBranch: mr.source, UserNotesCount: len(mr.notes),
		Author: g.userBasic(mr.author), Assignees: []any{}, Reviewers: []any{},
		SourceProjectID: p.id, TargetProjectID: p.id, Labels: append([]string{}, mr.labels...),
		ImportedFrom: "none", MergeStatus: "can_be_merged", DetailedMergeStatus: "mergeable",
		SHA: mr.sha, PreparedAt: iso(mr.created),
		Reference: "!" + itoa(mr.iid),
		References: map[string]string{
			"short": "!" + itoa(mr.iid), "relative": "!" + itoa(mr.iid),
			"full": full + "!" + itoa(mr.iid),
		},
		WebURL: g.URL() + "/" + full + "/-/merge_requests/" + itoa(mr.iid),
		TimeStats: map[string]any{
			"time_estimate": 0, "total_time_spent": 0,
			"human_time_estimate": nil, "human_total_time_spent": nil,
		},
		TaskCompletionStatus:        map[string]int{"count": 0, "completed_count": 0},
		BlockingDiscussionsResolved: true,
		ChangesCount:                &changes,
		DiffRefs: map[string]string{
			"base_sha": base, "head_sha": mr.sha, "start_sha": target,
		},
		User: map[string]bool{"can_merge": true},
	}
	if m := mr.merged; m != nil {
		by := g.userBasic(m.by)
		e.MergedBy, e.MergeUser, e.MergedAt = by, by, iso(m.at)
		e.DetailedMergeStatus = "not_open"
		if m.mergeCommit != "" {
			e.MergeCommitSHA = m.mergeCommit
		}
		if m.squashCommit != "" {
			e.SquashCommitSHA, e.Squash, e.SquashOnMerge = m.squashCommit, true, true
		}
		e.User = map[string]bool{"can_merge": false}
	}
	return e
}
