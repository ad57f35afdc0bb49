package schema

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEmbeddedDefaultsRunEverythingLocally(t *testing.T) {
	t.Setenv("DOCKER_HOST", "")
	c, err := DefaultServerConfig("/srv/wm")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"instance", c.Instance, "wm"},
		{"state dir", c.StateDir, "/srv/wm/wm-state"},
		{"artifacts dir", c.ArtifactsDir, "/srv/wm/wm-state/artifacts"},
		{"repo folder", c.Sources.Dirs[0].Root, "/srv/wm/repos"},
		{"branch", c.Sources.Dirs[0].Branch, "main"},
		{"docker host", c.Docker.Hosts, []DockerHost{{Name: "local", Endpoint: "unix:///var/run/docker.sock"}}},
		{"poll interval", c.Poll.Interval.Std(), 30 * time.Second},
		{"jitter", c.Poll.MaxJitter(), 3 * time.Second},
		{"host ports", c.Policy.HostPorts, PortRange{49152, 65535}},
		{"prune limit", c.Policy.MaxPrunePercent, 50},
		{"workload defaults", c.Policy.Defaults, Limits{CPUs: 1, Memory: "2Gi"}},
		{"registry", c.Registry, Registry{Host: "127.0.0.1:5000", Insecure: true}},
		{"quota", c.Policy.Quota, Quota{Containers: 5, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi", Ports: 20, Artifacts: "20Gi"}},
		{"kubernetes", c.Kubernetes, (*Kubernetes)(nil)},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s: got %v, want %v", ch.what, ch.got, ch.want)
		}
	}
}

func TestExplicitValuesOverrideDefaultsFieldByField(t *testing.T) {
	for _, tc := range []struct {
		name, config string
		check        func(c *ServerConfig) bool
	}{
		{"a GPU quota of 0 means no GPUs", "policy: {quota: {gpus: 0}}\n",
			func(c *ServerConfig) bool {
				return c.Policy.Quota == Quota{Containers: 5, Pods: 5, GPUs: 0, CPUs: 8, Memory: "32Gi", Ports: 20, Artifacts: "20Gi"}
			}},
		{"one quota field keeps the others' defaults", "policy: {quota: {containers: 10}}\n",
			func(c *ServerConfig) bool {
				return c.Policy.Quota == Quota{Containers: 10, Pods: 5, GPUs: 1, CPUs: 8, Memory: "32Gi", Ports: 20, Artifacts: "20Gi"}
			}},
		{"a jitter of 0 means none", "poll: {interval: 10s, jitter: 0s}\n",
			func(c *ServerConfig) bool { return c.Poll.MaxJitter() == 0 }},
		{"an unset jitter is a tenth of the interval", "poll: {interval: 10s}\n",
			func(c *ServerConfig) bool { return c.Poll.MaxJitter() == time.Second }},
		{"a prune limit of 0 is kept", "policy: {maxPrunePercent: 0}\n",
			func(c *ServerConfig) bool { return c.Policy.MaxPrunePercent == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseServer("s.yaml", strings.NewReader(tc.config), "/etc/wm")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("got %+v", c)
			}
		})
	}
}

func TestDefaultsTakeTheDockerHostFromTheEnvironment(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
	c, err := DefaultServerConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Docker.Hosts[0].Endpoint; got != "unix:///run/user/1000/docker.sock" {
		t.Errorf("endpoint %q", got)
	}
}

func TestRelativePathsResolveAgainstTheConfigFilesFolder(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "etc", "wm.yaml")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `stateDir: state
webhook: {secretFile: secret, signingTokenFile: signing}
registry: {host: "127.0.0.1:5000", username: ci, passwordFile: ../pw}
kubernetes: {kubeconfig: kube/config}
sources:
  gitlab: {url: "https://gitlab.example.edu/", tokenFile: gitlab-token, groups: [students]}
  repos:
    - {url: ../git/alice-web.git, owner: alice}
    - {url: "https://gitlab.example.edu/bob/ml.git", owner: bob, branch: trunk}
`
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(dir, "etc")
	for _, ch := range []struct{ what, got, want string }{
		{"state dir", c.StateDir, filepath.Join(etc, "state")},
		{"artifacts default under state", c.ArtifactsDir, filepath.Join(etc, "state", "artifacts")},
		{"secret", c.Webhook.SecretFile, filepath.Join(etc, "secret")},
		{"password", c.Registry.PasswordFile, filepath.Join(dir, "pw")},
		{"kubeconfig", c.Kubernetes.Kubeconfig, filepath.Join(etc, "kube", "config")},
		{"local repo becomes a file URL", c.Sources.Repos[0].URL, "file://" + filepath.Join(dir, "git", "alice-web.git")},
		{"remote repo untouched", c.Sources.Repos[1].URL, "https://gitlab.example.edu/bob/ml.git"},
		{"project from owner and URL", c.Sources.Repos[0].Project, "alice/alice-web"},
		{"branch default", c.Sources.Repos[0].Branch, "main"},
		{"branch given", c.Sources.Repos[1].Branch, "trunk"},
		{"namespace prefix default", c.Kubernetes.NamespacePrefix, "wm-"},
		{"gitlab token", c.Sources.GitLab.TokenFile, filepath.Join(etc, "gitlab-token")},
		{"gitlab url without a trailing slash", c.Sources.GitLab.URL, "https://gitlab.example.edu"},
		{"signing token", c.Webhook.SigningTokenFile, filepath.Join(etc, "signing")},
		{"gpu resource default", c.Kubernetes.GPUResource, "nvidia.com/gpu"},
	} {
		if ch.got != ch.want {
			t.Errorf("%s: got %q, want %q", ch.what, ch.got, ch.want)
		}
	}
}

func TestTheExampleServerConfigIsValid(t *testing.T) {
	c, err := LoadServer("../examples/server/wm-server.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Docker.Hosts) == 0 || c.StateDir == "" || !filepath.IsAbs(c.StateDir) {
		t.Errorf("example config incomplete: %+v", c)
	}
}

func TestBadServerConfigsNameLineAndField(t *testing.T) {
	for _, tc := range []struct {
		name, config, want string
	}{
		{"an unknown field is refused with a suggestion", "statedir: x\n",
			`s.yaml:1:1: statedir: unknown field (did you mean "stateDir"?)`},
		{"a duration needs a unit", "poll:\n  interval: 30\n",
			`s.yaml:2:13: poll.interval: "30" is not a duration: use a number and a unit such as 30s, 5m or 1h`},
		{"jitter cannot exceed the interval", "poll: {interval: 10s, jitter: 1m}\n",
			`s.yaml:1:31: poll.jitter: 1m0s must be between 0 and the interval (10s)`},
		{"a repo needs an owner", "sources:\n  repos:\n    - url: file:///git/a\n",
			`s.yaml:3:7: sources.repos[0].owner: is required`},
		{"an owner is an account name", "sources:\n  repos:\n    - {url: file:///git/a, owner: Alice}\n",
			`s.yaml:3:35: sources.repos[0].owner: "Alice" is not an account name: use at most 40 lower-case letters, digits and '-'`},
		{"git over ssh is not supported", "sources:\n  repos:\n    - {url: \"ssh://git@h/a.git\", owner: a}\n",
			`s.yaml:3:13: sources.repos[0].url: "ssh://git@h/a.git": scheme "ssh" is not supported: use file://, http://, https:// or a local path`},
		{"docker host names are unique", "docker:\n  hosts:\n    - {name: a, endpoint: unix:///a}\n    - {name: a, endpoint: unix:///b}\n",
			`s.yaml:4:14: docker.hosts[1].name: "a" is already the name of docker.hosts[0]`},
		{"a docker endpoint needs a scheme", "docker:\n  hosts:\n    - {name: a, endpoint: /var/run/docker.sock}\n",
			`s.yaml:3:27: docker.hosts[0].endpoint: "/var/run/docker.sock" is not a Docker endpoint such as unix:///var/run/docker.sock or tcp://host:2376`},
		{"host ports stay above 1024", "policy:\n  hostPorts: {from: 80, to: 90}\n",
			`s.yaml:2:14: policy.hostPorts: 80-90 is not a port range within 1024-65535`},
		{"a registry has no scheme", "registry: {host: \"http://r:5000\"}\n",
			`s.yaml:1:18: registry.host: "http://r:5000" is not a registry such as registry.example.edu:5000 (no scheme)`},
		{"kubernetes needs a kubeconfig", "kubernetes: {namespacePrefix: wm-}\n",
			`s.yaml:1:13: kubernetes.kubeconfig: is required when kubernetes is set`},
		{"the gpu resource is an extended resource", "kubernetes: {kubeconfig: k, gpuResource: gpu}\n",
			`s.yaml:1:42: kubernetes.gpuResource: "gpu" is not an extended resource name such as nvidia.com/gpu`},
		{"quota memory is a quantity", "policy: {quota: {memory: lots}}\n",
			`s.yaml:1:26: policy.quota.memory: "lots" is not a memory size: use a number and a unit such as 512Mi, 2Gi or 1G`},
		{"the prune limit is a percentage", "policy: {maxPrunePercent: 150}\n",
			`s.yaml:1:27: policy.maxPrunePercent: 150 is not a percentage (0-100)`},
		{"a gitlab source needs its url, token and groups", "sources:\n  gitlab: {url: gitlab.example.edu}\n",
			"s.yaml:2:11: sources.gitlab.tokenFile: is required: a file holding an access token\n" +
				"s.yaml:2:11: sources.gitlab.groups: is required: the groups whose projects are students' repos\n" +
				`s.yaml:2:17: sources.gitlab.url: "gitlab.example.edu" is not a GitLab URL such as https://gitlab.example.edu`},
		{"a gitlab group is a path", "sources:\n  gitlab: {url: \"https://g\", tokenFile: t, groups: [/students/]}\n",
			`s.yaml:2:53: sources.gitlab.groups[0]: "/students/" is not a group path such as students/2026`},
		{"an instance is a DNS label", "instance: Staging_1\n",
			`s.yaml:1:11: instance: "Staging_1" is not an instance name: use at most 40 lower-case letters, digits and '-'`},
		{"tls needs its key too", "tls: {certFile: wm.crt}\n",
			`s.yaml:1:6: tls.keyFile: is required when tls is set: the certificate's private key, PEM`},
		{"listen is host and port", "listen: localhost\n",
			`s.yaml:1:9: listen: "localhost" is not host:port, such as 127.0.0.1:8080`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseServer("s.yaml", strings.NewReader(tc.config), "/etc/wm")
			if err == nil || err.Error() != tc.want {
				t.Errorf("got  %v\nwant %s", err, tc.want)
			}
		})
	}
}
