package docker

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"testing"

	cerrdefs "github.com/containerd/errdefs"

	"github.com/whalemountain/wm/reconciler/core"
)

func TestLabelsNameTheOwnerRepoNameHashAndLimits(t *testing.T) {
	t.Parallel()
	s := core.ContainerSpec{
		Name: "alice_web", Owner: "alice", Repo: "alice/web", LocalName: "web", Image: "x", Network: "wm-alice",
		GPUs: 1, NanoCPUs: 1_500_000_000, MemoryBytes: 512 << 20,
	}
	want := map[string]string{
		LabelManagedBy: ManagedByValue, LabelOwner: "alice", LabelRepo: "alice/web",
		LabelName: "web", LabelSpecHash: s.Hash(), LabelGPUs: strconv.Itoa(s.GPUs),
		LabelNanoCPUs: "1500000000", LabelMemory: strconv.Itoa(512 << 20),
	}
	if got := Labels(s); !reflect.DeepEqual(got, want) {
		t.Errorf("Labels = %v, want %v", got, want)
	}
}

func TestDecodeReadsBackWhatLabelsWrote(t *testing.T) {
	t.Parallel()
	s := core.ContainerSpec{
		Name: "alice_web", Owner: "alice", Repo: "alice/web", LocalName: "web", Image: "x", Network: "wm-alice",
		GPUs: 2, NanoCPUs: 500_000_000, MemoryBytes: 64 << 20,
	}
	c := core.Container{Labels: Labels(s)}
	decode(&c)
	want := core.Container{
		Labels: c.Labels, Managed: true, Instance: core.DefaultInstance, Owner: "alice", Repo: "alice/web", LocalName: "web",
		SpecHash: s.Hash(), GPUs: 2, NanoCPUs: 500_000_000, MemoryBytes: 64 << 20, LimitsKnown: true,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decode = %+v, want %+v", c, want)
	}
	u := core.Container{Labels: map[string]string{LabelOwner: "alice"}}
	decode(&u)
	if u.Managed || u.Instance != "" || u.Owner != "alice" || u.LimitsKnown {
		t.Errorf("an unmanaged container decodes as %+v, want unmanaged, no instance", u)
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
