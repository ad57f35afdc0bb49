package schema

import (
	"strings"
	"testing"
	"time"
)

// haBase is a config ha can run with: a cluster, and an admin socket of
// each replica's own.
const haBase = "kubernetes: {kubeconfig: k}\nadminListen: unix:///run/wm/admin.sock\n"

func TestHADefaultsAreClientGosAndTheLeaseIsNamedAfterTheInstance(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		want         HA
	}{
		{"an ha section with a namespace only takes 15s/10s/2s and <instance>-leader",
			haBase + "ha: {leaseNamespace: whalemountain}\n",
			HA{LeaseNamespace: "whalemountain", LeaseName: "wm-leader", LeaseDuration: Duration(15 * time.Second), RenewDeadline: Duration(10 * time.Second), RetryPeriod: Duration(2 * time.Second)}},
		{"another instance has a Lease of its own",
			haBase + "instance: staging\nha: {leaseNamespace: whalemountain}\n",
			HA{LeaseNamespace: "whalemountain", LeaseName: "staging-leader", LeaseDuration: Duration(15 * time.Second), RenewDeadline: Duration(10 * time.Second), RetryPeriod: Duration(2 * time.Second)}},
		{"what the file says is kept, short test timings included",
			haBase + "ha: {leaseNamespace: ns, leaseName: wm.lock, identity: replica-a, leaseDuration: 5s, renewDeadline: 3s, retryPeriod: 1s}\n",
			HA{LeaseNamespace: "ns", LeaseName: "wm.lock", Identity: "replica-a", LeaseDuration: Duration(5 * time.Second), RenewDeadline: Duration(3 * time.Second), RetryPeriod: Duration(time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseServer("s.yaml", strings.NewReader(tc.config), "/etc/wm")
			if err != nil {
				t.Fatal(err)
			}
			if c.HA == nil || *c.HA != tc.want {
				t.Errorf("got %+v\nwant %+v", c.HA, tc.want)
			}
		})
	}
	if c, err := ParseServer("s.yaml", strings.NewReader(haBase), "/etc/wm"); err != nil || c.HA != nil {
		t.Errorf("without an ha section: %+v, %v", c.HA, err)
	}
}

func TestBadHASettingsNameLineAndField(t *testing.T) {
	for _, tc := range []struct {
		name, config, want string
	}{
		{"ha needs a cluster to keep its Lease in",
			"adminListen: unix:///run/wm/admin.sock\nha: {leaseNamespace: ns}\n",
			`s.yaml:2:1: ha: needs kubernetes: the Lease is kept in its cluster, reached with kubernetes.kubeconfig`},
		{"the Lease's namespace is required",
			haBase + "ha: {leaseName: wm}\n",
			`s.yaml:3:5: ha.leaseNamespace: is required with ha: the namespace the Lease is kept in, such as the one wm runs in`},
		{"the Lease's namespace is a namespace name",
			haBase + "ha: {leaseNamespace: Whale_Mountain}\n",
			`s.yaml:3:22: ha.leaseNamespace: "Whale_Mountain" is not a namespace name`},
		{"the Lease's name is an object name",
			haBase + "ha: {leaseNamespace: ns, leaseName: \"wm leader\"}\n",
			`s.yaml:3:37: ha.leaseName: "wm leader" is not a Lease name: lower-case letters, digits, '-' and '.'`},
		{"an identity has no spaces",
			haBase + "ha: {leaseNamespace: ns, identity: \"a b\"}\n",
			`s.yaml:3:36: ha.identity: "a b" is not an identity: at most 253 characters, no spaces or control characters`},
		{"the retry period is at least a second",
			haBase + "ha: {leaseNamespace: ns, retryPeriod: 100ms}\n",
			`s.yaml:3:39: ha.retryPeriod: 100ms is too short: at least 1s`},
		{"the renewal outlasts a retry's longest wait",
			haBase + "ha:\n  leaseNamespace: ns\n  renewDeadline: 2s\n  retryPeriod: 2s\n",
			`s.yaml:5:18: ha.renewDeadline: 2s must be longer than 1.2 × retryPeriod (2s), a retry's longest wait`},
		{"the lease outlasts the leader's last try to renew",
			haBase + "ha:\n  leaseNamespace: ns\n  leaseDuration: 12s\n  renewDeadline: 10s\n",
			`s.yaml:5:18: ha.leaseDuration: 12s must be longer than renewDeadline + retryPeriod (12s): a leader that cannot renew stops before another takes over`},
		{"the lease is whole seconds, as the Lease keeps it",
			haBase + "ha: {leaseNamespace: ns, leaseDuration: 15500ms}\n",
			`s.yaml:3:41: ha.leaseDuration: 15.5s is not a whole number of seconds up to 10m0s`},
		{"the default admin socket is in the shared state folder",
			"kubernetes: {kubeconfig: k}\nha: {leaseNamespace: ns}\n",
			`s.yaml:2:1: ha: the admin socket wm-state/admin.sock is in stateDir, which the replicas share: give each replica its own adminListen, such as unix:///run/wm/admin.sock`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseServer("s.yaml", strings.NewReader(tc.config), "/etc/wm")
			if err == nil || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestAHAConfigBuiltInCodeIsCheckedToo(t *testing.T) {
	c := newServerConfig()
	c.AdminListen = "127.0.0.1:9090"
	c.Kubernetes = &Kubernetes{Kubeconfig: "k", NamespacePrefix: "wm-", GPUResource: "nvidia.com/gpu"}
	c.HA = &HA{LeaseNamespace: "ns"}
	c.applyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("with the defaults: %v", err)
	}
	c.HA.RenewDeadline = c.HA.LeaseDuration
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "ha.leaseDuration: 15s must be longer than renewDeadline + retryPeriod") {
		t.Errorf("a renewal as long as the lease: %v", err)
	}
}
