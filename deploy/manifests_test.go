package deploy_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/whalemountain/wm/deploy"
)

// manifestNamespace is the namespace the manifests put wm serve in.
const manifestNamespace = "whalemountain"

// manifest is one object of deploy/kubernetes, with the file it is in.
type manifest struct {
	file string
	obj  *unstructured.Unstructured
}

// kustomization reads the resources kustomization.yaml lists.
func kustomization(t *testing.T) []string {
	t.Helper()
	raw, err := fs.ReadFile(deploy.Files, "kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" || k.APIVersion != "kustomize.config.k8s.io/v1beta1" {
		t.Fatalf("kustomization.yaml is a %s %s", k.APIVersion, k.Kind)
	}
	return k.Resources
}

// manifests reads every object of the files the kustomization lists, in
// its order.
func manifests(t *testing.T) []manifest {
	t.Helper()
	var out []manifest
	for _, file := range kustomization(t) {
		raw, err := fs.ReadFile(deploy.Files, path.Join("kubernetes", file))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", file, err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
		for {
			var m map[string]any
			err := dec.Decode(&m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if m == nil {
				continue
			}
			out = append(out, manifest{file: file, obj: &unstructured.Unstructured{Object: m}})
		}
	}
	return out
}

// find returns the one object of kind and name, failing the test when
// there is none.
func find(t *testing.T, ms []manifest, kind, name string) *unstructured.Unstructured {
	t.Helper()
	i := slices.IndexFunc(ms, func(m manifest) bool { return m.obj.GetKind() == kind && m.obj.GetName() == name })
	if i < 0 {
		t.Fatalf("no %s %s in deploy/kubernetes", kind, name)
	}
	return ms[i].obj
}

// typed converts o into out, a pointer to a typed API object.
func typed(t *testing.T, o *unstructured.Unstructured, out any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
}

// yamlFiles lists the .yaml files of deploy/kubernetes but the
// kustomization.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	entries, err := fs.ReadDir(deploy.Files, "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") && e.Name() != "kustomization.yaml" {
			out = append(out, e.Name())
		}
	}
	return out
}
