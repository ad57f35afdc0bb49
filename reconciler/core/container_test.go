package core

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"testing"
)

// baseSpec is a spec with every field set.
func baseSpec() ContainerSpec {
	return ContainerSpec{
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
		change func(s *ContainerSpec)
	}{
		{"a changed image recreates", func(s *ContainerSpec) { s.Image = "registry.example/alice/web:2" }},
		{"a changed entrypoint recreates", func(s *ContainerSpec) { s.Entrypoint = []string{"/other"} }},
		{"a changed command recreates", func(s *ContainerSpec) { s.Command = []string{"serve"} }},
		{"a changed env value recreates", func(s *ContainerSpec) { s.Env = map[string]string{"A": "1", "B": "2", "C": "3", "D": "4", "E": "6"} }},
		{"an added env variable recreates", func(s *ContainerSpec) {
			s.Env = map[string]string{"A": "1", "B": "2", "C": "3", "D": "4", "E": "5", "F": ""}
		}},
		{"a changed host port recreates", func(s *ContainerSpec) { s.Ports = []PortBinding{{8080, 30003}, {9090, 30002}} }},
		{"a removed port recreates", func(s *ContainerSpec) { s.Ports = s.Ports[:1] }},
		{"a changed volume recreates", func(s *ContainerSpec) { s.Mounts = []Mount{{"alice-other", "/data"}, {"alice-cache", "/cache"}} }},
		{"a changed mount target recreates", func(s *ContainerSpec) { s.Mounts = []Mount{{"alice-data", "/srv/data"}, {"alice-cache", "/cache"}} }},
		{"a changed workdir recreates", func(s *ContainerSpec) { s.Workdir = "/" }},
		{"a changed user recreates", func(s *ContainerSpec) { s.User = "0" }},
		{"changed GPUs recreate", func(s *ContainerSpec) { s.GPUs = 2 }},
		{"changed CPUs recreate", func(s *ContainerSpec) { s.NanoCPUs = 1_000_000_000 }},
		{"changed memory recreates", func(s *ContainerSpec) { s.MemoryBytes = 1 << 30 }},
		{"a changed process limit recreates", func(s *ContainerSpec) { s.PidsLimit = 512 }},
		{"a changed network recreates", func(s *ContainerSpec) { s.Network = "wm-bob" }},
		{"a changed repo recreates", func(s *ContainerSpec) { s.Repo = "alice/other" }},
		{"a command moved into the entrypoint recreates", func(s *ContainerSpec) {
			s.Entrypoint, s.Command = []string{"/entry", "serve"}, []string{"--port", "8080"}
		}},
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
		change func(s *ContainerSpec)
	}{
		{"stopping does not recreate", func(s *ContainerSpec) { s.Running = false }},
		{"ports in another order do not recreate", func(s *ContainerSpec) { slices.Reverse(s.Ports) }},
		{"mounts in another order do not recreate", func(s *ContainerSpec) { slices.Reverse(s.Mounts) }},
		{"env built in another order does not recreate", func(s *ContainerSpec) {
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
		a := ContainerSpec{Name: "a_b", Owner: "a", LocalName: "b", Image: "x", Network: "wm-a"}
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
	t.Run("every field of ContainerSpec is either hashed or Running", func(t *testing.T) {
		// A field added to ContainerSpec must be added to canonicalSpec (or here,
		// with a reason): a change to it would otherwise not recreate.
		hashed := map[string]string{"MemoryBytes": "Memory"}
		canon := reflect.TypeFor[canonicalSpec]()
		for f := range reflect.TypeFor[ContainerSpec]().Fields() {
			name := f.Name
			if h, ok := hashed[name]; ok {
				name = h
			}
			if _, ok := canon.FieldByName(name); !ok && f.Name != "Running" {
				t.Errorf("ContainerSpec.%s is not in the hash", f.Name)
			}
		}
	})
}

func TestFieldsAddedLaterChangeNoHashWhileUnset(t *testing.T) {
	t.Parallel()
	// The hash of baseSpec before GPUDevices and ShmBytes existed: an
	// upgrade must not recreate the containers that do not use them.
	const before = "657fb002f8aa83cc521b2f3a7d50c185e54c2a5b4afa6ee46a9a3e5f485537ce"
	if got := baseSpec().Hash(); got != before {
		t.Errorf("Hash() = %s, want %s as before", got, before)
	}
	s := baseSpec()
	s.GPUDevices = []string{"3"}
	if s.Hash() == before {
		t.Error("the GPU devices given do not change the hash: a container would keep another GPU")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		change func(s *ContainerSpec)
		ok     bool
	}{
		{"a complete spec is valid", func(s *ContainerSpec) {}, true},
		{"a name that is not owner_localname is refused", func(s *ContainerSpec) { s.Name = "bob_web" }, false},
		{"the legacy owner-localname is refused for a container", func(s *ContainerSpec) { s.Name = "alice-web" }, false},
		{"an owner's volume under its legacy name is accepted", func(s *ContainerSpec) { s.Mounts = []Mount{{"alice-data", "/data"}} }, true},
		{"a missing owner is refused", func(s *ContainerSpec) { s.Owner, s.Name = "", "-web" }, false},
		{"a missing image is refused", func(s *ContainerSpec) { s.Image = "" }, false},
		{"a missing network is refused", func(s *ContainerSpec) { s.Network = "" }, false},
		{"another owner's volume is refused", func(s *ContainerSpec) { s.Mounts = []Mount{{"bob_data", "/data"}} }, false},
		{"a volume named only by the owner prefix is refused", func(s *ContainerSpec) { s.Mounts = []Mount{{"alice_", "/data"}} }, false},
		{"a relative mount target is refused", func(s *ContainerSpec) { s.Mounts = []Mount{{"alice-data", "data"}} }, false},
		{"two mounts on one target are refused", func(s *ContainerSpec) { s.Mounts = []Mount{{"alice-a", "/data"}, {"alice-b", "/data/"}} }, false},
		{"a port out of range is refused", func(s *ContainerSpec) { s.Ports = []PortBinding{{8080, 70000}} }, false},
		{"one host port bound twice is refused", func(s *ContainerSpec) { s.Ports = []PortBinding{{8080, 30001}, {9090, 30001}} }, false},
		{"one guest port bound twice is refused", func(s *ContainerSpec) { s.Ports = []PortBinding{{8080, 30001}, {8080, 30002}} }, false},
		{"negative limits are refused", func(s *ContainerSpec) { s.MemoryBytes = -1 }, false},
		{"an env name with = is refused", func(s *ContainerSpec) { s.Env = map[string]string{"A=B": "c"} }, false},
		{"one device per GPU is valid", func(s *ContainerSpec) { s.GPUs, s.GPUDevices = 2, []string{"1", "GPU-8f6c"} }, true},
		{"fewer devices than GPUs are refused", func(s *ContainerSpec) { s.GPUs, s.GPUDevices = 2, []string{"1"} }, false},
		{"one device given twice is refused", func(s *ContainerSpec) { s.GPUs, s.GPUDevices = 2, []string{"1", "1"} }, false},
		{"a device holding the label separator is refused", func(s *ContainerSpec) { s.GPUs, s.GPUDevices = 1, []string{"1,2"} }, false},
		{"a /dev/shm within the memory limit is valid", func(s *ContainerSpec) { s.ShmBytes = s.MemoryBytes }, true},
		{"a /dev/shm above the memory limit is refused", func(s *ContainerSpec) { s.ShmBytes = s.MemoryBytes + 1 }, false},
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
