package schema

import (
	"path/filepath"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// HA runs `wm serve` as one of several replicas of which only one, the
// holder of a Kubernetes Lease (client-go's leader election), opens the
// state store and reconciles; the others wait, ready to take over. The
// replicas share one stateDir (ReadWriteMany storage, or one host), which
// the leader alone holds open. Without a cluster, there is no ha: one
// instance runs under systemd, which restarts it.
type HA struct {
	// LeaseNamespace is the namespace of the Lease; required. wm's account
	// needs get, create and update on leases (coordination.k8s.io) there.
	LeaseNamespace string `yaml:"leaseNamespace"`
	// LeaseName names the Lease; default "<instance>-leader".
	LeaseName string `yaml:"leaseName"`
	// Identity names this replica in the Lease; default <hostname>_<pid>
	// (a pod's hostname is its name). Two replicas with one identity
	// would both lead: set it only in a config no other replica reads.
	Identity string `yaml:"identity"`

	// The timing of client-go's leader election, its usual defaults.

	// LeaseDuration is how long the others wait after the leader's last
	// renewal before one takes over; default 15s, whole seconds (the
	// Lease keeps seconds).
	LeaseDuration Duration `yaml:"leaseDuration"`
	// RenewDeadline is how long the leader tries to renew before it gives
	// up and stops; default 10s.
	RenewDeadline Duration `yaml:"renewDeadline"`
	// RetryPeriod is the time between two tries to take or renew the
	// Lease; default 2s.
	RetryPeriod Duration `yaml:"retryPeriod"`
}

// The bounds of the leader election's timing.
const (
	// MinHARetryPeriod keeps replicas from asking the apiserver more than
	// once a second.
	MinHARetryPeriod = time.Second
	// MaxHALeaseDuration bounds how long the replicas may go without a
	// leader when one dies.
	MaxHALeaseDuration = 10 * time.Minute
	// haJitter is client-go's leaderelection.JitterFactor: a retry waits
	// up to this many retry periods, and the renewal must allow one.
	haJitter = 1.2
)

// applyDefaults fills in client-go's usual timing and the Lease's name;
// instance is the config's (DefaultInstance when "").
func (h *HA) applyDefaults(instance string) {
	if h == nil {
		return
	}
	if instance == "" {
		instance = DefaultInstance
	}
	if h.LeaseName == "" {
		h.LeaseName = instance + "-leader"
	}
	for _, d := range []struct {
		field *Duration
		def   time.Duration
	}{{&h.LeaseDuration, 15 * time.Second}, {&h.RenewDeadline, 10 * time.Second}, {&h.RetryPeriod, 2 * time.Second}} {
		if *d.field == 0 {
			*d.field = Duration(d.def)
		}
	}
}

// validate checks the Lease's names and the ordering of the timing that
// keeps two replicas from ever leading at once: a leader gives up at the
// latest retryPeriod + renewDeadline after its last renewal and stops at
// once, before another may take over, leaseDuration after it.
func (h *HA) validate(report reporter, c *ServerConfig) {
	if h == nil {
		return
	}
	if c.Kubernetes == nil {
		report("ha", true, "needs kubernetes: the Lease is kept in its cluster, reached with kubernetes.kubeconfig")
	}
	if h.LeaseNamespace == "" {
		report("ha.leaseNamespace", false, "is required with ha: the namespace the Lease is kept in, such as the one wm runs in")
	} else if errs := validation.IsDNS1123Label(h.LeaseNamespace); len(errs) > 0 {
		report("ha.leaseNamespace", false, "%s is not a namespace name", quote(h.LeaseNamespace))
	}
	if errs := validation.IsDNS1123Subdomain(h.LeaseName); len(errs) > 0 {
		report("ha.leaseName", false, "%s is not a Lease name: lower-case letters, digits, '-' and '.'", quote(h.LeaseName))
	}
	if id := h.Identity; id != "" && (len(id) > 253 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r == 0x7f })) {
		report("ha.identity", false, "%s is not an identity: at most 253 characters, no spaces or control characters", quote(id))
	}
	ld, rd, rp := h.LeaseDuration.Std(), h.RenewDeadline.Std(), h.RetryPeriod.Std()
	if rp < MinHARetryPeriod {
		report("ha.retryPeriod", false, "%v is too short: at least %v", rp, MinHARetryPeriod)
	}
	if rd <= time.Duration(haJitter*float64(rp)) {
		report("ha.renewDeadline", false, "%v must be longer than 1.2 × retryPeriod (%v), a retry's longest wait", rd, rp)
	}
	switch {
	case ld%time.Second != 0 || ld > MaxHALeaseDuration:
		report("ha.leaseDuration", false, "%v is not a whole number of seconds up to %v", ld, MaxHALeaseDuration)
	case ld <= rd+rp:
		report("ha.leaseDuration", false, "%v must be longer than renewDeadline + retryPeriod (%v): a leader that cannot renew stops before another takes over", ld, rd+rp)
	}
	if sock := c.AdminSocket(); sock != "" && c.StateDir != "" && inFolder(c.StateDir, sock) {
		report("ha", true, "the admin socket %s is in stateDir, which the replicas share: give each replica its own adminListen, such as unix:///run/wm/admin.sock", sock)
	}
}

// inFolder reports whether path is dir or inside it; both are taken as
// they are written, relative or not.
func inFolder(dir, path string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
