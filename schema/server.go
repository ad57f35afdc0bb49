package schema

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ServerConfig is the admins' configuration of one WhaleMountain server.
// Relative paths in it are resolved against the folder of the config file.
type ServerConfig struct {
	// Instance names this WhaleMountain among others sharing a Docker
	// Engine or a cluster (production beside staging, a demo beside a
	// test): every object it makes carries it, and it lists, changes and
	// prunes only its own. A DNS label; default DefaultInstance ("wm"),
	// which also owns what was made before instances existed.
	Instance string `yaml:"instance"`
	// StateDir holds the state store and the git caches.
	StateDir string `yaml:"stateDir"`
	// ArtifactsDir holds built artifacts such as SIF files.
	ArtifactsDir string `yaml:"artifactsDir"`
	// Listen is the public address `wm serve` listens on, host:port:
	// POST /hooks/gitlab, GET /healthz, /livez, /readyz and
	// GET /artifacts/ only.
	Listen string `yaml:"listen"`
	// TLS, when set, makes the public listener speak HTTPS with its
	// certificate; without it, a reverse proxy in front holds one.
	TLS *TLS `yaml:"tls,omitempty"`
	// AdminListen is where `wm serve` serves what has no authentication
	// (the status API, /metrics): a unix socket, written
	// unix:///run/wm/admin.sock or as a path, or a host:port that is not a
	// wildcard. Default: unix://<stateDir>/admin.sock.
	AdminListen string `yaml:"adminListen"`
	// AdminGroup, when set, is the group whose members may connect to the
	// admin socket (mode 0660); otherwise only wm's own user may (0600).
	AdminGroup string `yaml:"adminGroup"`
	// RateLimit bounds how often one client may call the public listener.
	RateLimit RateLimit `yaml:"rateLimit"`
	// TrustedProxies are the reverse proxies (IP addresses or CIDR
	// prefixes) whose X-Forwarded-For names the client; from anyone else
	// the header is ignored. Default: none.
	TrustedProxies []string `yaml:"trustedProxies"`
	// Poll says how often sources are looked at.
	Poll Poll `yaml:"poll"`
	// Sources say where the students' repos are.
	Sources Sources `yaml:"sources"`
	// Docker lists the Docker hosts containers run on.
	Docker Docker `yaml:"docker"`
	// Kubernetes, when set, enables GPU pods in a namespace per student.
	Kubernetes *Kubernetes `yaml:"kubernetes,omitempty"`
	// Registry is where CI pushes the students' images.
	Registry Registry `yaml:"registry"`
	// Policy bounds what any one student may have.
	Policy Policy `yaml:"policy"`
	// Webhook configures `POST /hooks/gitlab`.
	Webhook Webhook `yaml:"webhook"`
	// SIF configures the Singularity image builds.
	SIF SIFConfig `yaml:"sif"`
	// Artifacts configures who may download artifacts from wm serve.
	Artifacts Artifacts `yaml:"artifacts"`
	// Access configures the students' API on the public listener
	// (/api/v1): identities, admins and what one student may hold open.
	Access Access `yaml:"access"`
	// Schedules run the periodic jobs: resync, semester, idle culling and
	// clean-up.
	Schedules Schedules `yaml:"schedules"`
	// Semester, when set, ends what students run on a date.
	Semester *Semester `yaml:"semester,omitempty"`
	// Culling, when set, stops GPU containers that sit idle.
	Culling *Culling `yaml:"culling,omitempty"`
	// Log says how wm logs: text or JSON lines, from which level.
	Log Log `yaml:"log"`
	// HA, when set, makes wm serve one of several replicas of which the
	// holder of a Kubernetes Lease alone reconciles (ha.go).
	HA *HA `yaml:"ha,omitempty"`
	// Dashboard, when set, serves the web dashboard with GitLab login on
	// the public listener (dashboard.go).
	Dashboard *Dashboard `yaml:"dashboard,omitempty"`
}

// Log configures the log every command writes on standard error.
type Log struct {
	// Format is text (key=value lines, for people and journald) or json
	// (one object a line, for a log collector); default text.
	Format string `yaml:"format"`
	// Level is the least severe level written: debug, info (default),
	// warn or error. -v writes debug whatever it says.
	Level string `yaml:"level"`
}

// Access configures the access API (package reconciler/access): who a
// request speaks for, who is an admin, and the bounds of each student's
// streams and sessions.
type Access struct {
	// IdentityTTL is how long an identity GitLab confirmed for a token is
	// believed without asking GitLab again, also while GitLab cannot be
	// reached; default 1m, from 1s to 1h.
	IdentityTTL Duration `yaml:"identityTTL"`
	// GitLabAdminGroup, when set, is the full path of a GitLab group whose
	// members (directly or through a parent group) are admins. It needs
	// sources.gitlab, whose token must be able to read the group's members.
	GitLabAdminGroup string `yaml:"gitlabAdminGroup"`
	// Admins are GitLab usernames that are admins, besides the group's.
	Admins []string `yaml:"admins,omitempty"`
	// MaxSessions is how many exec sessions and followed log streams one
	// account may hold open at once; default 4.
	MaxSessions int `yaml:"maxSessions"`
	// IdleTimeout closes a followed log stream or an exec session that
	// moved no byte for this long; default 15m.
	IdleTimeout Duration `yaml:"idleTimeout"`
	// MaxCopySize bounds the bytes of one copy into or out of a
	// container; default 1Gi.
	MaxCopySize string `yaml:"maxCopySize"`
	// AllowedOrigins are the origins (scheme://host[:port]) whose pages
	// may open an exec WebSocket, besides the server's own; a request
	// with no Origin (a CLI) is always let through.
	AllowedOrigins []string `yaml:"allowedOrigins,omitempty"`
}

// validate checks the access API's settings.
func (a *Access) validate(report reporter, gitlab bool) {
	if t := a.IdentityTTL.Std(); t < time.Second || t > time.Hour {
		report("access.identityTTL", false, "%v is not between 1s and 1h", t)
	}
	if a.GitLabAdminGroup != "" && !gitlab {
		report("access.gitlabAdminGroup", false, "needs sources.gitlab: admins are found among the group's GitLab members")
	}
	for i, name := range a.Admins {
		if msg := AccountProblem(name); msg != "" {
			report(fmt.Sprintf("access.admins[%d]", i), false, "%s", msg)
		}
	}
	if n := a.MaxSessions; n < 1 || n > 100 {
		report("access.maxSessions", false, "%d is not between 1 and 100", n)
	}
	if t := a.IdleTimeout.Std(); t < 10*time.Second || t > 24*time.Hour {
		report("access.idleTimeout", false, "%v is not between 10s and 24h", t)
	}
	checkSize(report, "access.maxCopySize", a.MaxCopySize, 1<<20)
	for i, o := range a.AllowedOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "" {
			report(fmt.Sprintf("access.allowedOrigins[%d]", i), false, "%s is not an origin such as https://wm.example.edu", quote(o))
		}
	}
}

// SIFConfig configures the builds of Singularity images.
type SIFConfig struct {
	// Compression of the squashfs: gzip (default), lz4, zstd or xz.
	Compression string `yaml:"compression"`
	// Timeout bounds one build; default 10m.
	Timeout Duration `yaml:"timeout"`
	// Concurrency is how many builds run at once; default 2.
	Concurrency int `yaml:"concurrency"`
	// GracePeriod is how long a SIF no longer declared is kept before it
	// is removed; default 168h (a week).
	GracePeriod Duration `yaml:"gracePeriod"`
	// SharedDir, when set, receives a copy of every SIF as
	// <sharedDir>/<owner>/<name>.sif (the blade servers mount it).
	SharedDir string `yaml:"sharedDir"`
	// TempDir holds each build's unpacked image and squashfs; a tmpfs
	// such as /dev/shm makes builds much faster where memory allows.
	// Default: the system's temporary folder.
	TempDir string `yaml:"tempDir"`
	// MaxUnpackedSize bounds the bytes of the files one build unpacks
	// into TempDir; default 8Gi. An image past it is refused, and nothing
	// of its build is kept.
	MaxUnpackedSize string `yaml:"maxUnpackedSize"`
	// MaxFiles bounds the files, folders and links one build unpacks (the
	// image's layers may hold twice as many entries); default 500000.
	MaxFiles int `yaml:"maxFiles"`
	// MaxCompressedSize bounds the bytes of an image's layers as stored
	// (as downloaded); default 4Gi.
	MaxCompressedSize string `yaml:"maxCompressedSize"`
}

// Artifacts configures downloads of artifacts (SIF files).
type Artifacts struct {
	// TokensFile holds one "TOKEN OWNER" pair a line; the owner "*" marks
	// an admin, who may download every artifact. Without it, downloads are
	// off.
	TokensFile string `yaml:"tokensFile"`
}

// RateLimit is a token bucket per client of the public listener.
type RateLimit struct {
	// Rate is the requests per second one client may make on average; 0
	// turns the limit off. Default 5.
	Rate float64 `yaml:"rate"`
	// Burst is how many requests one client may make at once. Default 20.
	Burst int `yaml:"burst"`
}

// AdminSocket returns the path of the admin unix socket, or "" when
// AdminListen is a host:port.
func (c *ServerConfig) AdminSocket() string {
	if p, ok := strings.CutPrefix(c.AdminListen, "unix://"); ok {
		return p
	}
	if strings.Contains(c.AdminListen, "/") {
		return c.AdminListen
	}
	return ""
}

// Poll sets the polling of sources.
type Poll struct {
	// Interval between two looks at one repo.
	Interval Duration `yaml:"interval"`
	// Jitter is the largest random delay added to each interval, so that
	// hundreds of repos are not all asked at the same instant; default a
	// tenth of the interval, 0 for none.
	Jitter *Duration `yaml:"jitter"`
	// Concurrency is how many repos are looked at at once.
	Concurrency int `yaml:"concurrency"`
	// PassTimeout is the deadline of one pass of one repo: a hung Docker
	// daemon or apiserver never holds a worker longer.
	PassTimeout Duration `yaml:"passTimeout"`
	// ShutdownGrace is how long the passes under way at SIGTERM may go on
	// before they are cancelled.
	ShutdownGrace Duration `yaml:"shutdownGrace"`
}

// Sources lists where students' repos come from.
type Sources struct {
	// Repos is a static list of repos.
	Repos []RepoSource `yaml:"repos,omitempty"`
	// Dirs are folders laid out as <root>/<owner>/<repo>, each repo a git
	// repository; the owner is the first folder under the root.
	Dirs []DirSource `yaml:"dirs,omitempty"`
	// GitLab discovers every project with a wm.yaml under some groups.
	GitLab *GitLabSource `yaml:"gitlab,omitempty"`
}

// GitLabSource is the department GitLab.
type GitLabSource struct {
	// URL is GitLab's base URL, such as https://gitlab.example.edu.
	URL string `yaml:"url"`
	// TokenFile holds an access token with read_api and read_repository
	// (and api, to post commit statuses and merge request notes).
	TokenFile string `yaml:"tokenFile"`
	// Groups are the full paths of the groups whose projects (subgroups
	// included) are students' repos.
	Groups []string `yaml:"groups"`
	// Topic, when set, keeps only projects with this topic.
	Topic string `yaml:"topic"`
	// OwnerSegment says which path segment below the group is the owner:
	// 1 (the default) makes "students/alice/web" alice's. Projects with
	// too few segments, or whose segment is not an account name, are
	// skipped and reported.
	OwnerSegment int `yaml:"ownerSegment"`
	// OwnerCheck is how the owner a path names is confirmed against
	// GitLab before the project is reconciled: "membership" (the default:
	// a GitLab account of that name exists and holds the project with at
	// least OwnerMinAccessLevel, directly or through its groups),
	// "creator" (membership, and that account created the project), or
	// "none" (the path alone, for a GitLab where nobody can create groups
	// or projects at another student's path). Projects that fail are
	// skipped and reported, never reconciled.
	OwnerCheck string `yaml:"ownerCheck"`
	// OwnerMinAccessLevel is the least GitLab access level the owner must
	// hold on the project: 30 (Developer, the default), 40 (Maintainer)
	// or 50 (Owner).
	OwnerMinAccessLevel int `yaml:"ownerMinAccessLevel"`
	// DiscoverInterval is how often the groups are listed again.
	DiscoverInterval Duration `yaml:"discoverInterval"`
	// DashboardURL, when set, is the target of commit statuses:
	// <dashboardURL>/repos/<project path>.
	DashboardURL string `yaml:"dashboardURL"`
}

// RepoSource is one repo of the static list.
type RepoSource struct {
	// URL is a file://, http:// or https:// git URL, or a local path.
	URL string `yaml:"url"`
	// Owner is the student the repo belongs to: everything it declares is
	// theirs, named and labelled with this account.
	Owner string `yaml:"owner"`
	// Branch is the branch rolled out; default "main".
	Branch string `yaml:"branch"`
	// Project is the project path used for the image name of "self"
	// (<registry>/<project>:<sha>); default <owner>/<last URL segment>.
	Project string `yaml:"project"`
}

// DirSource is a folder of repos, one folder per owner.
type DirSource struct {
	// Root is the folder; default branch of its repos is Branch.
	Root string `yaml:"root"`
	// Branch is the branch rolled out; default "main".
	Branch string `yaml:"branch"`
}

// Docker lists Docker hosts.
type Docker struct {
	// Hosts are the Docker Engines containers are placed on.
	Hosts []DockerHost `yaml:"hosts"`
}

// DockerHost is one Docker Engine.
type DockerHost struct {
	// Name identifies the host in labels and status; a DNS label.
	Name string `yaml:"name"`
	// Endpoint is the Engine's address: unix:///var/run/docker.sock, or
	// tcp://host:2376 with TLS (tcp:// without TLS only on a loopback
	// address). ssh://, http:// and https:// are refused
	// (ParseDockerEndpoint says why).
	Endpoint string `yaml:"endpoint"`
	// TLS is the CA, client certificate and key of a tcp:// endpoint.
	TLS *DockerTLS `yaml:"tls"`
	// GPUs is how many GPUs the host has, for placement.
	GPUs int `yaml:"gpus"`
	// GPUDevices names the host's GPUs as the NVIDIA runtime knows them:
	// indexes ("0", "1", ...) or UUIDs ("GPU-8f6c..."), as nvidia-smi -L
	// prints them. Unset, they are "0" to gpus-1. Set, there must be gpus
	// of them (gpus may then be left out).
	GPUDevices []string `yaml:"gpuDevices"`
	// GPUSharing lets WhaleMountain give one GPU to several containers
	// (the least shared first); by default each GPU serves one running
	// container.
	GPUSharing bool `yaml:"gpuSharing"`
}

// MaxGPUsPerHost bounds a host's GPUs in the server config.
const MaxGPUsPerHost = 64

// Devices returns the host's GPU device IDs: GPUDevices, or "0" to
// GPUs-1.
func (h DockerHost) Devices() []string {
	if len(h.GPUDevices) > 0 {
		return h.GPUDevices
	}
	out := make([]string, 0, h.GPUs)
	for i := range h.GPUs {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

// gpuDeviceID is what a GPU's ID may be: an index, or a GPU or MIG UUID.
var gpuDeviceID = regexp.MustCompile(`^([0-9]{1,3}|(GPU|MIG)-[0-9A-Za-z/-]{1,80})$`)

// Kubernetes configures the GPU pod backend.
type Kubernetes struct {
	// Kubeconfig is the file WhaleMountain talks to the cluster with.
	Kubeconfig string `yaml:"kubeconfig"`
	// NamespacePrefix starts every student namespace; default "wm-".
	NamespacePrefix string `yaml:"namespacePrefix"`
	// GPUResource is the extended resource of a GPU; default nvidia.com/gpu.
	GPUResource string `yaml:"gpuResource"`
	// UserPrefix is put before a student's account in RoleBindings, such
	// as "oidc:" when the cluster's OIDC users are prefixed.
	UserPrefix string `yaml:"userPrefix"`
	// GPUNodeSelector and GPUTolerations place pods that ask for GPUs on
	// the GPU nodes.
	GPUNodeSelector map[string]string `yaml:"gpuNodeSelector"`
	GPUTolerations  []Toleration      `yaml:"gpuTolerations"`
	// DenyDNS, when true, leaves DNS out of the egress the default-deny
	// network policy allows (by default pods may resolve names).
	DenyDNS bool `yaml:"denyDNS"`
	// DNS is the only peer the default-deny network policy lets pods send
	// DNS (port 53) to: the cluster DNS, not any address.
	DNS DNSPeer `yaml:"dns"`
	// ReservedNamespaces are namespace names no student's may ever be,
	// besides default and kube-*: where WhaleMountain itself runs, the GPU
	// operator's, monitoring. An entry ending in "*" is a prefix.
	ReservedNamespaces []string `yaml:"reservedNamespaces"`
	// PruneNamespaces lets WhaleMountain delete the namespace of a student
	// who declares no pods any more. Default false: namespaces stay.
	PruneNamespaces bool `yaml:"pruneNamespaces"`
}

// DNSPeer selects the cluster DNS pods as a NetworkPolicy peer: pods
// matching PodSelector in namespaces matching NamespaceSelector. A field
// left out takes its default from DefaultDNS.
type DNSPeer struct {
	NamespaceSelector map[string]string `yaml:"namespaceSelector"`
	PodSelector       map[string]string `yaml:"podSelector"`
}

// DefaultDNS is the cluster DNS of kubeadm, kind, k3s and most managed
// clusters: the kube-dns-labelled pods (CoreDNS) in kube-system.
func DefaultDNS() DNSPeer {
	return DNSPeer{
		NamespaceSelector: map[string]string{"kubernetes.io/metadata.name": "kube-system"},
		PodSelector:       map[string]string{"k8s-app": "kube-dns"},
	}
}

// WithDefaults returns p with each selector left out set to DefaultDNS's.
func (p DNSPeer) WithDefaults() DNSPeer {
	d := DefaultDNS()
	if p.NamespaceSelector == nil {
		p.NamespaceSelector = d.NamespaceSelector
	}
	if p.PodSelector == nil {
		p.PodSelector = d.PodSelector
	}
	return p
}

// Toleration is a Kubernetes toleration of a node taint.
type Toleration struct {
	Key      string `yaml:"key"`
	Operator string `yaml:"operator"` // Exists or Equal
	Value    string `yaml:"value"`
	Effect   string `yaml:"effect"` // NoSchedule, PreferNoSchedule, NoExecute, or empty for all
}

// Registry is the container registry CI pushes to.
type Registry struct {
	// Host is host[:port][/path], where "self" images live:
	// <host>/<project>:<sha>.
	Host string `yaml:"host"`
	// Insecure talks plain HTTP to the registry (for loopback tests).
	Insecure bool `yaml:"insecure"`
	// Username and PasswordFile are credentials for reading images.
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"passwordFile"`
	// PublicPaths are path prefixes under Host whose images every student
	// may use (the admins' base images, such as "library/"). Every other
	// path under Host is a student project's image, usable only by its
	// owner or, when shared, as shared/<owner>/<repo>.
	PublicPaths []string `yaml:"publicPaths,omitempty"`
	// KeepTagsFor, when set, lets the clean-up schedule delete the
	// registry's commit tags (40 hex digits) of the students' images
	// older than this that no repo runs or applied; 0 deletes nothing.
	KeepTagsFor Duration `yaml:"keepTagsFor"`
}

// Policy bounds what one student may have.
type Policy struct {
	// Quota is per student, over all their repos.
	Quota Quota `yaml:"quota"`
	// HostPorts is the range host ports are taken from.
	HostPorts PortRange `yaml:"hostPorts"`
	// AllowedRegistries are registry prefixes image references may come
	// from, besides Registry.Host which is always allowed.
	AllowedRegistries []string `yaml:"allowedRegistries"`
	// Defaults are the limits of a container or pod that sets none, so
	// that every workload counts against the quota.
	Defaults Limits `yaml:"defaults"`
	// MaxPrunePercent stops a pass that would remove more than this share
	// of all managed containers; it reports instead. Default 50.
	MaxPrunePercent int `yaml:"maxPrunePercent"`
	// PruneVolumes lets a prune delete the named volumes of removed
	// containers. Default false: volumes are kept.
	PruneVolumes bool `yaml:"pruneVolumes"`
}

// Quota is what one student may use at most.
type Quota struct {
	Containers int     `yaml:"containers"`
	Pods       int     `yaml:"pods"`
	GPUs       int     `yaml:"gpus"`
	CPUs       float64 `yaml:"cpus"`
	Memory     string  `yaml:"memory"`
	// Ports is how many host ports the student's containers may publish
	// together.
	Ports int `yaml:"ports"`
	// Artifacts bounds the bytes of the student's SIF files, all repos
	// together; a build that would pass it is not kept.
	Artifacts string `yaml:"artifacts"`
}

// Limits are the CPU and memory of one workload.
type Limits struct {
	CPUs   float64 `yaml:"cpus"`
	Memory string  `yaml:"memory"`
}

// PortRange is an inclusive range of ports.
type PortRange struct {
	From int `yaml:"from"`
	To   int `yaml:"to"`
}

// Webhook configures incoming GitLab webhooks.
type Webhook struct {
	// SecretFile holds the secret GitLab sends as X-Gitlab-Token.
	SecretFile string `yaml:"secretFile"`
	// SigningTokenFile, when set, holds GitLab's signing token
	// ("whsec_..."): deliveries must then also carry a valid signature.
	SigningTokenFile string `yaml:"signingTokenFile"`
}

// Duration is a time.Duration written as "30s", "5m" or "1h".
type Duration time.Duration

// UnmarshalYAML reads a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("%s is not a duration: use a number and a unit such as 30s, 5m or 1h", quote(n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes a duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Std returns the duration as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// MaxJitter is the jitter in force: the configured one, or a tenth of the
// interval when none is configured.
func (p Poll) MaxJitter() time.Duration {
	if p.Jitter == nil {
		return p.Interval.Std() / 10
	}
	return p.Jitter.Std()
}

//go:embed server-defaults.yaml
var defaultServerConfig []byte

// DefaultServerConfig returns the embedded configuration `wm` runs on when
// given none: repos under ./repos, the local Docker Engine, state in
// ./wm-state, all relative to dir.
func DefaultServerConfig(dir string) (*ServerConfig, error) {
	return ParseServer("(embedded defaults)", bytes.NewReader(defaultServerConfig), dir)
}

// LoadServer reads a server config file; its relative paths resolve
// against the file's folder.
func LoadServer(path string) (*ServerConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Errors{{File: path, Message: fmt.Sprintf("cannot open: %v", err)}}
	}
	defer f.Close()
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	return ParseServer(path, f, abs)
}

// ParseServer reads a server config from r, applies defaults, resolves
// relative paths against dir and validates it. A non-nil error is Errors.
func ParseServer(name string, r io.Reader, dir string) (*ServerConfig, error) {
	return ParseServerChecked(name, r, dir, nil)
}

// Validate checks a ServerConfig built in code; errors carry no positions.
func (c *ServerConfig) Validate() error {
	return locate("server config", &positions{}, c.validate).orNil()
}

// newServerConfig holds every default a file may override. Decoding onto
// it keeps what the file says, explicit zeros included (a GPU quota of 0
// means no GPUs, not "the default").
func newServerConfig() ServerConfig {
	return ServerConfig{
		Instance:  DefaultInstance,
		StateDir:  "wm-state",
		Listen:    "127.0.0.1:8080",
		RateLimit: RateLimit{Rate: 5, Burst: 20},
		Poll:      Poll{Interval: Duration(time.Minute), Concurrency: 4, PassTimeout: Duration(10 * time.Minute), ShutdownGrace: Duration(30 * time.Second)},
		SIF: SIFConfig{
			Compression: "gzip", Timeout: Duration(10 * time.Minute), Concurrency: 2, GracePeriod: Duration(7 * 24 * time.Hour),
			MaxUnpackedSize: "8Gi", MaxFiles: 500_000, MaxCompressedSize: "4Gi",
		},
		Policy: Policy{
			Quota:           Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi", Ports: 20, Artifacts: "20Gi"},
			Defaults:        Limits{CPUs: 1, Memory: "2Gi"},
			HostPorts:       PortRange{From: 49152, To: 65535},
			MaxPrunePercent: 50,
		},
		Access: Access{IdentityTTL: Duration(time.Minute), MaxSessions: 4, IdleTimeout: Duration(15 * time.Minute), MaxCopySize: "1Gi"},
		Log:    Log{Format: "text", Level: "info"},
	}
}

// applyDefaults fills in the defaults that depend on other fields.
func (c *ServerConfig) applyDefaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&c.ArtifactsDir, filepath.Join(c.StateDir, "artifacts"))
	def(&c.AdminListen, "unix://"+filepath.Join(c.StateDir, "admin.sock"))
	for i := range c.Sources.Repos {
		r := &c.Sources.Repos[i]
		def(&r.Branch, "main")
		if r.Project == "" && r.Owner != "" {
			r.Project = r.Owner + "/" + strings.TrimSuffix(lastSegment(r.URL), ".git")
		}
	}
	for i := range c.Sources.Dirs {
		def(&c.Sources.Dirs[i].Branch, "main")
	}
	if len(c.Docker.Hosts) == 0 {
		endpoint, tls := DockerFromEnv()
		c.Docker.Hosts = []DockerHost{{Name: "local", Endpoint: endpoint, TLS: tls}}
	}
	if g := c.Sources.GitLab; g != nil {
		if g.OwnerSegment == 0 {
			g.OwnerSegment = 1
		}
		if g.OwnerCheck == "" {
			g.OwnerCheck = "membership"
		}
		if g.OwnerMinAccessLevel == 0 {
			g.OwnerMinAccessLevel = 30
		}
		if g.DiscoverInterval == 0 {
			g.DiscoverInterval = Duration(5 * time.Minute)
		}
		g.URL = strings.TrimRight(g.URL, "/")
	}
	if c.Semester != nil && c.Semester.WarnBefore == 0 {
		c.Semester.WarnBefore = Duration(7 * 24 * time.Hour)
	}
	c.Culling.applyDefaults()
	c.HA.applyDefaults(c.Instance)
	c.Dashboard.applyDefaults()
	if k := c.Kubernetes; k != nil {
		def(&k.NamespacePrefix, "wm-")
		def(&k.GPUResource, "nvidia.com/gpu")
		k.DNS = k.DNS.WithDefaults()
	}
}

func lastSegment(u string) string {
	u = strings.TrimRight(u, "/")
	return u[strings.LastIndexAny(u, "/:")+1:]
}

// DefaultInstance is the instance of a server config that names none.
const DefaultInstance = "wm"

func (c *ServerConfig) validate(report reporter) {
	// "" (a config built in code) is DefaultInstance.
	if errs := validation.IsDNS1123Label(c.Instance); c.Instance != "" && (len(errs) > 0 || len(c.Instance) > MaxNameLength) {
		report("instance", false, "%s is not an instance name: use at most %d lower-case letters, digits and '-'", quote(c.Instance), MaxNameLength)
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		report("listen", false, "%s is not host:port, such as 127.0.0.1:8080", quote(c.Listen))
	}
	c.validateHTTP(report)
	if c.Poll.Interval.Std() < time.Second {
		report("poll.interval", false, "%v is too short: at least 1s", c.Poll.Interval.Std())
	}
	if j := c.Poll.MaxJitter(); j < 0 || j > c.Poll.Interval.Std() {
		report("poll.jitter", false, "%v must be between 0 and the interval (%v)", j, c.Poll.Interval.Std())
	}
	if c.Poll.Concurrency < 1 || c.Poll.Concurrency > 256 {
		report("poll.concurrency", false, "%d is not between 1 and 256", c.Poll.Concurrency)
	}
	if t := c.Poll.PassTimeout.Std(); t < 10*time.Second || t > 24*time.Hour {
		report("poll.passTimeout", false, "%v is not between 10s and 24h", t)
	}
	if g := c.Poll.ShutdownGrace.Std(); g < 0 || g > time.Hour {
		report("poll.shutdownGrace", false, "%v is not between 0s and 1h", g)
	}
	seenRepo := map[string]int{}
	for i, r := range c.Sources.Repos {
		p := fmt.Sprintf("sources.repos[%d]", i)
		checkRepoURL(report, p+".url", r.URL)
		ownerOK := checkOwner(report, p+".owner", r.Owner)
		if ownerOK && !validRepoPath(r.Project) {
			report(p+".project", false, "%s is not a project path such as alice/web", quote(r.Project))
		}
		key := r.URL + "#" + r.Branch
		if first, dup := seenRepo[key]; dup {
			report(p, false, "repeats sources.repos[%d] (same url and branch)", first)
		}
		seenRepo[key] = i
	}
	for i, d := range c.Sources.Dirs {
		if d.Root == "" {
			report(fmt.Sprintf("sources.dirs[%d].root", i), false, "is required")
		}
	}
	if g := c.Sources.GitLab; g != nil {
		if u, err := url.Parse(g.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			report("sources.gitlab.url", false, "%s is not a GitLab URL such as https://gitlab.example.edu", quote(g.URL))
		}
		if g.TokenFile == "" {
			report("sources.gitlab.tokenFile", false, "is required: a file holding an access token")
		}
		if len(g.Groups) == 0 {
			report("sources.gitlab.groups", false, "is required: the groups whose projects are students' repos")
		}
		for i, grp := range g.Groups {
			if grp == "" || strings.HasPrefix(grp, "/") || strings.HasSuffix(grp, "/") {
				report(fmt.Sprintf("sources.gitlab.groups[%d]", i), false, "%s is not a group path such as students/2026", quote(grp))
			}
		}
		if g.OwnerSegment < 1 || g.OwnerSegment > 10 {
			report("sources.gitlab.ownerSegment", false, "%d is not a path segment number (1-10)", g.OwnerSegment)
		}
		switch g.OwnerCheck {
		case "membership", "creator", "none":
		default:
			report("sources.gitlab.ownerCheck", false, "%s is not one of membership, creator, none", quote(g.OwnerCheck))
		}
		switch g.OwnerMinAccessLevel {
		case 30, 40, 50:
		default:
			report("sources.gitlab.ownerMinAccessLevel", false, "%d is not 30 (Developer), 40 (Maintainer) or 50 (Owner)", g.OwnerMinAccessLevel)
		}
		if g.DiscoverInterval.Std() < 10*time.Second {
			report("sources.gitlab.discoverInterval", false, "%v is too short: at least 10s", g.DiscoverInterval.Std())
		}
		if g.DashboardURL != "" {
			if u, err := url.Parse(g.DashboardURL); err != nil || u.Scheme == "" || u.Host == "" {
				report("sources.gitlab.dashboardURL", false, "%s is not a URL", quote(g.DashboardURL))
			}
		}
	}
	switch c.SIF.Compression {
	case "gzip", "lz4", "zstd", "xz":
	default:
		report("sif.compression", false, "%s is not gzip, lz4, zstd or xz", quote(c.SIF.Compression))
	}
	if c.SIF.Timeout.Std() < time.Second {
		report("sif.timeout", false, "%v is too short: at least 1s", c.SIF.Timeout.Std())
	}
	if c.SIF.Concurrency < 1 || c.SIF.Concurrency > 64 {
		report("sif.concurrency", false, "%d is not between 1 and 64", c.SIF.Concurrency)
	}
	if c.SIF.GracePeriod < 0 {
		report("sif.gracePeriod", false, "%v is negative", c.SIF.GracePeriod.Std())
	}
	checkSize(report, "sif.maxUnpackedSize", c.SIF.MaxUnpackedSize, 1<<20)
	checkSize(report, "sif.maxCompressedSize", c.SIF.MaxCompressedSize, 1<<20)
	if c.SIF.MaxFiles < 1000 || c.SIF.MaxFiles > 100_000_000 {
		report("sif.maxFiles", false, "%d is not between 1000 and 100000000", c.SIF.MaxFiles)
	}
	seenHost := map[string]int{}
	for i, h := range c.Docker.Hosts {
		p := fmt.Sprintf("docker.hosts[%d]", i)
		if msg := nameProblem(h.Name); msg != "" {
			report(p+".name", false, "%s is not a host name: %s", quote(h.Name), msg)
		} else if first, dup := seenHost[h.Name]; dup {
			report(p+".name", false, "%q is already the name of docker.hosts[%d]", h.Name, first)
		}
		seenHost[h.Name] = i
		if _, err := ParseDockerEndpoint(h.Endpoint, h.TLS); err != nil {
			var ee *EndpointError
			if errors.As(err, &ee) {
				report(p+"."+ee.Field, false, "%s", ee.Message)
			} else {
				report(p+".endpoint", false, "%v", err)
			}
		}
		if h.GPUs < 0 || h.GPUs > MaxGPUsPerHost {
			report(p+".gpus", false, "%d is not a GPU count (0-%d)", h.GPUs, MaxGPUsPerHost)
		}
		if n := len(h.GPUDevices); n > 0 {
			if h.GPUs != 0 && h.GPUs != n {
				report(p+".gpuDevices", false, "names %d GPU(s) but gpus says %d: leave gpus out, or make them agree", n, h.GPUs)
			}
			if n > MaxGPUsPerHost {
				report(p+".gpuDevices", false, "names %d GPUs; a host has at most %d", n, MaxGPUsPerHost)
			}
			seenID := map[string]int{}
			for j, id := range h.GPUDevices {
				dp := fmt.Sprintf("%s.gpuDevices[%d]", p, j)
				if !gpuDeviceID.MatchString(id) {
					report(dp, false, "%s is not a GPU index or UUID as nvidia-smi -L prints them (0, 1, GPU-8f6c...)", quote(id))
				} else if first, dup := seenID[id]; dup {
					report(dp, false, "%q is already %s.gpuDevices[%d]", id, p, first)
				}
				seenID[id] = j
			}
		}
	}
	if k := c.Kubernetes; k != nil {
		if k.Kubeconfig == "" {
			report("kubernetes.kubeconfig", false, "is required when kubernetes is set")
		}
		if errs := validation.IsDNS1123Label(k.NamespacePrefix + "x"); len(errs) > 0 || len(k.NamespacePrefix) > 20 {
			report("kubernetes.namespacePrefix", false, "%s cannot start a namespace name: use at most 20 lower-case letters, digits and '-'", quote(k.NamespacePrefix))
		}
		if strings.HasPrefix(k.NamespacePrefix, "kube-") {
			report("kubernetes.namespacePrefix", false, "%s would make every student namespace a kube-* one, which are Kubernetes' own", quote(k.NamespacePrefix))
		}
		if errs := validation.IsQualifiedName(k.GPUResource); len(errs) > 0 || !strings.Contains(k.GPUResource, "/") {
			report("kubernetes.gpuResource", false, "%s is not an extended resource name such as nvidia.com/gpu", quote(k.GPUResource))
		}
		for i, tol := range k.GPUTolerations {
			p := fmt.Sprintf("kubernetes.gpuTolerations[%d]", i)
			if tol.Operator != "" && tol.Operator != "Exists" && tol.Operator != "Equal" {
				report(p+".operator", false, "%s is not Exists or Equal", quote(tol.Operator))
			}
			switch tol.Effect {
			case "", "NoSchedule", "PreferNoSchedule", "NoExecute":
			default:
				report(p+".effect", false, "%s is not NoSchedule, PreferNoSchedule or NoExecute", quote(tol.Effect))
			}
		}
		for _, dns := range []struct {
			field string
			sel   map[string]string
		}{{"namespaceSelector", k.DNS.NamespaceSelector}, {"podSelector", k.DNS.PodSelector}} {
			for _, key := range slices.Sorted(maps.Keys(dns.sel)) {
				if value := dns.sel[key]; len(validation.IsQualifiedName(key)) > 0 || len(validation.IsValidLabelValue(value)) > 0 {
					report("kubernetes.dns."+dns.field, false, "%s: %s is not a Kubernetes label such as k8s-app: kube-dns", quote(key), quote(value))
				}
			}
		}
		for i, name := range k.ReservedNamespaces {
			if errs := validation.IsDNS1123Label(strings.TrimSuffix(name, "*") + "x"); len(errs) > 0 || name == "*" {
				report(fmt.Sprintf("kubernetes.reservedNamespaces[%d]", i), false, "%s is not a namespace name, or the start of one followed by *", quote(name))
			}
		}
	}
	if c.Registry.Host != "" {
		checkRegistry(report, "registry.host", c.Registry.Host)
	}
	if c.Registry.PasswordFile != "" && c.Registry.Username == "" {
		report("registry.username", false, "is required with registry.passwordFile")
	}
	if k := c.Registry.KeepTagsFor.Std(); k < 0 || (k > 0 && k < 24*time.Hour) || (k > 0 && c.Registry.Host == "") {
		report("registry.keepTagsFor", false, "%v is neither 0 (keep every tag) nor at least 24h with registry.host set", k)
	}
	q := c.Policy.Quota
	for _, n := range []struct {
		field string
		v     int
	}{{"containers", q.Containers}, {"pods", q.Pods}, {"gpus", q.GPUs}, {"ports", q.Ports}} {
		if n.v < 0 {
			report("policy.quota."+n.field, false, "%d is negative", n.v)
		}
	}
	if q.CPUs < 0 {
		report("policy.quota.cpus", false, "%v is negative", q.CPUs)
	}
	checkMemory(report, "policy.quota.memory", q.Memory)
	checkSize(report, "policy.quota.artifacts", q.Artifacts, 0)
	if d := c.Policy.Defaults.CPUs; d < MinCPUs || d > MaxCPUs {
		report("policy.defaults.cpus", false, "%v is not a CPU count a workload can have (%v to %v)", d, MinCPUs, MaxCPUs)
	}
	checkMemory(report, "policy.defaults.memory", c.Policy.Defaults.Memory)
	hp := c.Policy.HostPorts
	if hp.From < 1024 || hp.To > 65535 || hp.From > hp.To {
		report("policy.hostPorts", false, "%d-%d is not a port range within 1024-65535", hp.From, hp.To)
	}
	for i, pp := range c.Registry.PublicPaths {
		if strings.Trim(pp, "/") == "" || strings.Contains(pp, "..") {
			report(fmt.Sprintf("registry.publicPaths[%d]", i), false, "%s is not a path under registry.host (such as \"library/\")", quote(pp))
		}
	}
	for i, r := range c.Policy.AllowedRegistries {
		checkRegistry(report, fmt.Sprintf("policy.allowedRegistries[%d]", i), r)
	}
	if m := c.Policy.MaxPrunePercent; m < 0 || m > 100 {
		report("policy.maxPrunePercent", false, "%d is not a percentage (0-100)", m)
	}
	c.Access.validate(report, c.Sources.GitLab != nil)
	c.Schedules.validate(report)
	c.Semester.validate(report)
	if c.Semester != nil && c.Semester.ExtensionLabel != "" && c.Sources.GitLab == nil {
		report("semester.extensionLabel", false, "needs sources.gitlab: extensions are merge requests an admin labels")
	}
	c.Culling.validate(report, c.Schedules)
	c.HA.validate(report, c)
	c.Dashboard.validate(report, c.Sources.GitLab != nil)
	c.Log.validate(report)
}

// validateHTTP checks the admin listener, the rate limit and the proxies.
func (c *ServerConfig) validateHTTP(report reporter) {
	c.TLS.validate(report)
	if sock := c.AdminSocket(); sock != "" {
		// sun_path holds 108 bytes; what resolving a relative path adds
		// is checked again when wm serve listens.
		if base := filepath.Base(sock); base == "." || base == "/" || len(sock) > 100 {
			report("adminListen", false, "%s is not a socket path of at most 100 bytes, such as unix:///run/wm/admin.sock", quote(c.AdminListen))
		}
	} else if host, port, err := net.SplitHostPort(c.AdminListen); err != nil || port == "" {
		report("adminListen", false, "%s is neither a unix socket (unix:///run/wm/admin.sock) nor host:port", quote(c.AdminListen))
	} else if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		report("adminListen", false, "%s listens on every interface: the status API and metrics have no authentication, so name one address (such as 127.0.0.1) or use a unix socket", quote(c.AdminListen))
	} else if c.AdminListen == c.Listen {
		report("adminListen", false, "%s is also listen: the admin listener needs an address of its own", quote(c.AdminListen))
	}
	if c.AdminGroup != "" && c.AdminSocket() == "" {
		report("adminGroup", false, "applies to a unix socket only, and adminListen is %s", quote(c.AdminListen))
	}
	if r := c.RateLimit.Rate; r < 0 || r > 10000 {
		report("rateLimit.rate", false, "%v is not between 0 (no limit) and 10000 requests a second", r)
	}
	if b := c.RateLimit.Burst; c.RateLimit.Rate > 0 && (b < 1 || b > 100000) {
		report("rateLimit.burst", false, "%d is not between 1 and 100000", b)
	}
	for i, p := range c.TrustedProxies {
		if _, err := ParseProxy(p); err != nil {
			report(fmt.Sprintf("trustedProxies[%d]", i), false, "%s is not an IP address or prefix such as 10.0.0.0/8", quote(p))
		}
	}
}

// ParseProxy reads an entry of TrustedProxies: an IP address, or a
// prefix such as 10.0.0.0/8.
func ParseProxy(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// AccountProblem says why name cannot be a student's account, or "" when
// it can: an account ends up in container names and namespaces, so it is
// a DNS-1123 label of at most MaxNameLength characters.
func AccountProblem(name string) string {
	if name == "" {
		return "is required"
	}
	if len(name) > MaxNameLength || len(validation.IsDNS1123Label(name)) > 0 {
		return fmt.Sprintf("%s is not an account name: use at most %d lower-case letters, digits and '-'", quote(name), MaxNameLength)
	}
	return ""
}

// checkSize reports a size that is not a quantity of at least least
// bytes.
func checkSize(report reporter, p, size string, least int64) {
	q, err := resource.ParseQuantity(size)
	switch {
	case err != nil || strings.HasSuffix(size, "m"):
		report(p, false, "%s is not a size: use a number and a unit such as 500Mi, 8Gi or 10G", quote(size))
	case q.Value() < least:
		report(p, false, "%s is less than %d bytes", quote(size), least)
	}
}

// SizeBytes returns a size the config validated ("8Gi", "500M") in
// bytes, 0 when it is not one.
func SizeBytes(size string) int64 {
	q, err := resource.ParseQuantity(size)
	if err != nil {
		return 0
	}
	return q.Value()
}

// checkOwner reports an owner that is not an account name.
func checkOwner(report reporter, p, owner string) bool {
	if msg := AccountProblem(owner); msg != "" {
		report(p, false, "%s", msg)
		return false
	}
	return true
}

func checkRepoURL(report reporter, p, raw string) {
	if raw == "" {
		report(p, false, "is required")
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		report(p, false, "%s is not a URL: %v", quote(raw), err)
		return
	}
	switch u.Scheme {
	case "", "file", "http", "https":
	default:
		report(p, false, "%s: scheme %q is not supported: use file://, http://, https:// or a local path", quote(raw), u.Scheme)
	}
}

// checkRegistry accepts host[:port][/path] without a scheme.
func checkRegistry(report reporter, p, reg string) {
	host, _, _ := strings.Cut(reg, "/")
	if strings.Contains(reg, "://") || host == "" || strings.ContainsAny(reg, " @") {
		report(p, false, "%s is not a registry such as registry.example.edu:5000 (no scheme)", quote(reg))
	}
}

// resolvePaths makes every relative path absolute against dir.
func (c *ServerConfig) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.StateDir)
	abs(&c.ArtifactsDir)
	if sock := c.AdminSocket(); sock != "" {
		abs(&sock)
		c.AdminListen = "unix://" + sock
	}
	abs(&c.Webhook.SecretFile)
	if c.TLS != nil {
		abs(&c.TLS.CertFile)
		abs(&c.TLS.KeyFile)
	}
	abs(&c.Webhook.SigningTokenFile)
	abs(&c.SIF.SharedDir)
	abs(&c.SIF.TempDir)
	abs(&c.Artifacts.TokensFile)
	if c.Sources.GitLab != nil {
		abs(&c.Sources.GitLab.TokenFile)
	}
	abs(&c.Registry.PasswordFile)
	c.Dashboard.resolvePaths(abs)
	if c.Kubernetes != nil {
		abs(&c.Kubernetes.Kubeconfig)
	}
	for i := range c.Sources.Dirs {
		abs(&c.Sources.Dirs[i].Root)
	}
	for _, h := range c.Docker.Hosts {
		if t := h.TLS; t != nil {
			abs(&t.CAFile)
			abs(&t.CertFile)
			abs(&t.KeyFile)
		}
	}
	for i := range c.Sources.Repos {
		r := &c.Sources.Repos[i]
		if !strings.Contains(r.URL, "://") {
			local := r.URL
			abs(&local)
			r.URL = "file://" + filepath.ToSlash(local)
		}
	}
}
