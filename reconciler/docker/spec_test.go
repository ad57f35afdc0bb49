package docker

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
)

// baseSpec is a spec with every field set.
func baseSpec() Spec {
	return Spec{
		Name: "alice_web", Owner: "alice", Repo: "alice/web", LocalName: "web",
		Image:      "registry.example/alice/web@sha256:" + fmt.Sprintf("%064d", 1),
		Entrypoint: []string{"/entry"},
		Command:    []string{"serve", "--port", "8080"},
		Env:        map[string]string{"A": "1", "B": "2", "C": "3", "D": "4", "E": "5"},
		Ports:      []PortBinding{{Guest: 8080, Host: 30001}, {Guest: 9090, Host: 30002}},
		Mounts:     []Mount{{Volume: "alice_data", Target: "/data"}, {Volume: "alice_cache", Target: "/cache"}},
		Workdir:    "/srv", User: "1000:1000",
		GPUs: 1, NanoCPUs: 1_500_000_000, MemoryBytes: 512 << 20, PidsLimit: 256,
		Running: true,
		Network: "wm-alice",
	}
}

func TestHash(t *testing.T) {
	t.Parallel()
	base := baseSpec()
	changes := []struct {
		name   string
		change func(s *Spec)
	}{
		{"a changed image recreates", func(s *Spec) { s.Image = "registry.example/alice/web:2" }},
		{"a changed entrypoint recreates", func(s *Spec) { s.Entrypoint = []string{"/other"} }},
		{"a changed command recreates", func(s *Spec) { s.Command = []string{"serve"} }},
		{"a changed env value recreates", func(s *Spec) { s.Env = map[string]string{"A": "1", "B": "2", "C": "3", "D": "4", "E": "6"} }},
		{"an added env variable recreates", func(s *Spec) { s.Env = map[string]string{"A": "1", "B": "2", "C": "3", "D": "4", "E": "5", "F": ""} }},
		{"a changed host port recreates", func(s *Spec) { s.Ports = []PortBinding{{8080, 30003}, {9090, 30002}} }},
		{"a removed port recreates", func(s *Spec) { s.Ports = s.Ports[:1] }},
		{"a changed volume recreates", func(s *Spec) { s.Mounts = []Mount{{"alice-other", "/data"}, {"alice-cache", "/cache"}} }},
		{"a changed mount target recreates", func(s *Spec) { s.Mounts = []Mount{{"alice-data", "/srv/data"}, {"alice-cache", "/cache"}} }},
		{"a changed workdir recreates", func(s *Spec) { s.Workdir = "/" }},
		{"a changed user recreates", func(s *Spec) { s.User = "0" }},
		{"changed GPUs recreate", func(s *Spec) { s.GPUs = 2 }},
		{"changed CPUs recreate", func(s *Spec) { s.NanoCPUs = 1_000_000_000 }},
		{"changed memory recreates", func(s *Spec) { s.MemoryBytes = 1 << 30 }},
		{"a changed process limit recreates", func(s *Spec) { s.PidsLimit = 512 }},
		{"a changed network recreates", func(s *Spec) { s.Network = "wm-bob" }},
		{"a changed repo recreates", func(s *Spec) { s.Repo = "alice/other" }},
		{"a command moved into the entrypoint recreates", func(s *Spec) { s.Entrypoint, s.Command = []string{"/entry", "serve"}, []string{"--port", "8080"} }},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			s := baseSpec()
			c.change(&s)
			if s.Hash() == base.Hash() {
				t.Errorf("hash unchanged: %s", s.Hash())
			}
		})
	}

	same := []struct {
		name   string
		change func(s *Spec)
	}{
		{"stopping does not recreate", func(s *Spec) { s.Running = false }},
		{"ports in another order do not recreate", func(s *Spec) { slices.Reverse(s.Ports) }},
		{"mounts in another order do not recreate", func(s *Spec) { slices.Reverse(s.Mounts) }},
		{"env built in another order does not recreate", func(s *Spec) {
			s.Env = map[string]string{}
			for _, k := range []string{"E", "C", "A", "D", "B"} {
				s.Env[k] = base.Env[k]
			}
		}},
	}
	for _, c := range same {
		t.Run(c.name, func(t *testing.T) {
			s := baseSpec()
			c.change(&s)
			if s.Hash() != base.Hash() {
				t.Errorf("hash changed")
			}
		})
	}

	t.Run("nil and empty lists, maps and the default process limit hash alike", func(t *testing.T) {
		a := Spec{Name: "a_b", Owner: "a", LocalName: "b", Image: "x", Network: "wm-a"}
		b := a
		b.Entrypoint, b.Command, b.Env, b.Ports, b.Mounts = []string{}, []string{}, map[string]string{}, []PortBinding{}, []Mount{}
		b.PidsLimit = DefaultPidsLimit
		if a.Hash() != b.Hash() {
			t.Errorf("hashes differ")
		}
	})
	t.Run("the hash is hex SHA-256 and the same on every call", func(t *testing.T) {
		h := base.Hash()
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(h) {
			t.Errorf("hash %q is not 64 hex digits", h)
		}
		for range 100 {
			if base.Hash() != h {
				t.Fatal("hash changed between calls")
			}
		}
	})
	t.Run("every field of Spec is either hashed or Running", func(t *testing.T) {
		// A field added to Spec must be added to canonicalSpec (or here,
		// with a reason): a change to it would otherwise not recreate.
		hashed := map[string]string{"MemoryBytes": "Memory"}
		canon := reflect.TypeFor[canonicalSpec]()
		for f := range reflect.TypeFor[Spec]().Fields() {
			name := f.Name
			if h, ok := hashed[name]; ok {
				name = h
			}
			if _, ok := canon.FieldByName(name); !ok && f.Name != "Running" {
				t.Errorf("Spec.%s is not in the hash", f.Name)
			}
		}
	})
}

func TestLabelsNameTheOwnerRepoNameHashAndLimits(t *testing.T) {
	t.Parallel()
	s := baseSpec()
	want := map[string]string{
		LabelManagedBy: ManagedByValue, LabelOwner: "alice", LabelRepo: "alice/web",
		LabelName: "web", LabelSpecHash: s.Hash(), LabelGPUs: strconv.Itoa(s.GPUs),
		LabelNanoCPUs: "1500000000", LabelMemory: strconv.Itoa(512 << 20),
	}
	if got := s.Labels(); !reflect.DeepEqual(got, want) {
		t.Errorf("Labels() = %v, want %v", got, want)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		change func(s *Spec)
		ok     bool
	}{
		{"a complete spec is valid", func(s *Spec) {}, true},
		{"a name that is not owner_localname is refused", func(s *Spec) { s.Name = "bob_web" }, false},
		{"the legacy owner-localname is refused for a container", func(s *Spec) { s.Name = "alice-web" }, false},
		{"an owner's volume under its legacy name is accepted", func(s *Spec) { s.Mounts = []Mount{{"alice-data", "/data"}} }, true},
		{"a missing owner is refused", func(s *Spec) { s.Owner, s.Name = "", "-web" }, false},
		{"a missing image is refused", func(s *Spec) { s.Image = "" }, false},
		{"a missing network is refused", func(s *Spec) { s.Network = "" }, false},
		{"another owner's volume is refused", func(s *Spec) { s.Mounts = []Mount{{"bob_data", "/data"}} }, false},
		{"a volume named only by the owner prefix is refused", func(s *Spec) { s.Mounts = []Mount{{"alice_", "/data"}} }, false},
		{"a relative mount target is refused", func(s *Spec) { s.Mounts = []Mount{{"alice-data", "data"}} }, false},
		{"two mounts on one target are refused", func(s *Spec) { s.Mounts = []Mount{{"alice-a", "/data"}, {"alice-b", "/data/"}} }, false},
		{"a port out of range is refused", func(s *Spec) { s.Ports = []PortBinding{{8080, 70000}} }, false},
		{"one host port bound twice is refused", func(s *Spec) { s.Ports = []PortBinding{{8080, 30001}, {9090, 30001}} }, false},
		{"one guest port bound twice is refused", func(s *Spec) { s.Ports = []PortBinding{{8080, 30001}, {8080, 30002}} }, false},
		{"negative limits are refused", func(s *Spec) { s.MemoryBytes = -1 }, false},
		{"an env name with = is refused", func(s *Spec) { s.Env = map[string]string{"A=B": "c"} }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := baseSpec()
			c.change(&s)
			err := s.Validate()
			if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalidSpec)) {
				t.Errorf("Validate() = %v, want ok %v", err, c.ok)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		err       error
		notFound  error
		byMessage func(string) error
		want      error
	}{
		{"a daemon not-found is the call's not-found class", fmt.Errorf("No such container: x: %w", cerrdefs.ErrNotFound), ErrNotFound, nil, ErrNotFound},
		{"a daemon not-found on create is image-not-found", fmt.Errorf("No such image: x: %w", cerrdefs.ErrNotFound), ErrImageNotFound, nil, ErrImageNotFound},
		{"a daemon conflict is a conflict", fmt.Errorf("name in use: %w", cerrdefs.ErrConflict), ErrNotFound, nil, ErrConflict},
		{"a taken host port is port-in-use", errors.New("driver failed programming external connectivity: Bind for 0.0.0.0:30001 failed: port is already allocated"), ErrNotFound, startMessage, ErrPortInUse},
		{"a registry's manifest unknown is image-not-found", errors.New("manifest for r/x:1 not found: manifest unknown: manifest unknown"), ErrImageNotFound, registryMessage, ErrImageNotFound},
		{"Docker Hub's pull access denied is image-not-found", errors.New("pull access denied for nope, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"), ErrImageNotFound, registryMessage, ErrImageNotFound},
		{"a registry's authentication required is unauthorized", errors.New("unauthorized: authentication required"), ErrImageNotFound, registryMessage, ErrUnauthorized},
		{"a refused connection to a registry is unreachable", errors.New(`Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused`), ErrImageNotFound, registryMessage, ErrUnreachable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := classify(c.err, c.notFound, c.byMessage)
			if !errors.Is(got, c.want) || !errors.Is(got, c.err) || got.Error() != c.err.Error() {
				t.Errorf("classify(%v) = %v, want %v, wrapping the original", c.err, got, c.want)
			}
		})
	}
	t.Run("an unknown error stays unclassified", func(t *testing.T) {
		err := errors.New("something else")
		if got := classify(err, ErrNotFound, registryMessage); got != err {
			t.Errorf("classify = %#v, want the error itself", got)
		}
	})
}
