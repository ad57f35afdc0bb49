package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// compiledSchema compiles wm.schema.json with format assertions on, as a
// strict editor would.
func compiledSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(JSONSchema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource("wm.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("wm.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// schemaVerdict converts a YAML file to JSON as an editor's YAML language
// server does and validates it; a file that cannot be converted (syntax,
// duplicate keys, excessive aliases) is invalid for the schema too.
func schemaVerdict(s *jsonschema.Schema, data []byte) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

// TestSchemaAgreesWithTheParserOnTheCorpus is what keeps wm.schema.json
// equal to the Go rules: every good file and example is valid for both,
// every bad file is invalid for both, except the few a JSON Schema cannot
// express, which say why in a "# schema-cannot-tell:" first line.
func TestSchemaAgreesWithTheParserOnTheCorpus(t *testing.T) {
	s := compiledSchema(t)
	good, bad := corpus(t)
	for _, path := range good {
		data, _ := os.ReadFile(path)
		if err := schemaVerdict(s, data); err != nil {
			t.Errorf("%s: parser accepts, schema refuses: %v", path, err)
		}
	}
	cannotTell := 0
	for _, path := range bad {
		data, _ := os.ReadFile(path)
		err := schemaVerdict(s, data)
		if bytes.HasPrefix(data, []byte("# schema-cannot-tell:")) {
			cannotTell++
			if err != nil {
				t.Errorf("%s is marked schema-cannot-tell but the schema refuses it: remove the mark", path)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: parser refuses, schema accepts", path)
		}
	}
	if cannotTell > 6 {
		t.Errorf("%d bad files are beyond the schema: the schema is drifting from the rules", cannotTell)
	}
}

// TestSchemaNamesEveryFieldOfTheGoTypes walks the Go types and the schema
// side by side: a field added to one and not the other fails here.
func TestSchemaNamesEveryFieldOfTheGoTypes(t *testing.T) {
	var root map[string]any
	if err := json.Unmarshal(JSONSchema, &root); err != nil {
		t.Fatal(err)
	}
	defs := root["$defs"].(map[string]any)
	resolve := func(node map[string]any) map[string]any {
		if ref, ok := node["$ref"].(string); ok {
			return defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
		}
		return node
	}
	for _, tc := range []struct {
		name   string
		goType reflect.Type
		schema map[string]any
	}{
		{"wm.yaml", reflect.TypeFor[File](), root},
		{"image", reflect.TypeFor[Image](), root["properties"].(map[string]any)["image"].(map[string]any)},
		{"container", reflect.TypeFor[Container](), defs["container"].(map[string]any)},
		{"pod", reflect.TypeFor[Pod](), defs["pod"].(map[string]any)},
		{"sif", reflect.TypeFor[SIF](), defs["sif"].(map[string]any)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := resolve(tc.schema)
			var inSchema []string
			for k := range s["properties"].(map[string]any) {
				inSchema = append(inSchema, k)
			}
			inGo := fieldsOf(tc.goType).names
			slices.Sort(inSchema)
			slices.Sort(inGo)
			if !slices.Equal(inSchema, inGo) {
				t.Errorf("fields differ\n  schema: %v\n  go:     %v", inSchema, inGo)
			}
			if s["additionalProperties"] != false {
				t.Errorf("schema allows unknown fields; the parser does not")
			}
			var required []string
			list, _ := s["required"].([]any)
			for _, r := range list {
				required = append(required, r.(string))
			}
			var goRequired []string
			for i := range tc.goType.NumField() {
				sf := tc.goType.Field(i)
				if !strings.Contains(sf.Tag.Get("yaml"), "omitempty") {
					goRequired = append(goRequired, yamlName(sf))
				}
			}
			if !slices.Equal(required, goRequired) {
				t.Errorf("required fields differ: schema %v, go (fields without omitempty) %v", required, goRequired)
			}
		})
	}
}

// TestAFractionWhereAWholeNumberGoesIsRefusedByBothAtTheSameField: the
// parser and the schema (so the editor) refuse 8000.7, 0.5 and 1.5 alike,
// at the same field, rather than the parser cutting them.
func TestAFractionWhereAWholeNumberGoesIsRefusedByBothAtTheSameField(t *testing.T) {
	s := compiledSchema(t)
	for _, tc := range []struct{ file, path, pointer string }{
		{"port-fraction", "containers.web.ports[0]", "/containers/web/ports/0"},
		{"gpus-fraction", "pods.p.gpus", "/pods/p/gpus"},
		{"version-fraction", "version", "/version"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile("testdata/bad/" + tc.file + ".yaml")
			if err != nil {
				t.Fatal(err)
			}
			_, err = Parse("wm.yaml", bytes.NewReader(data))
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != 1 || errs[0].Path != tc.path || !strings.HasSuffix(errs[0].Message, "is not a whole number") {
				t.Errorf("parser: %v", err)
			}
			var verr *jsonschema.ValidationError
			if !errors.As(schemaVerdict(s, data), &verr) {
				t.Fatalf("the schema accepts %s", tc.file)
			}
			var at []string
			var walk func(e *jsonschema.ValidationError)
			walk = func(e *jsonschema.ValidationError) {
				if len(e.Causes) == 0 {
					at = append(at, "/"+strings.Join(e.InstanceLocation, "/"))
				}
				for _, c := range e.Causes {
					walk(c)
				}
			}
			walk(verr)
			if !slices.Contains(at, tc.pointer) {
				t.Errorf("the schema refuses at %v, not at %s", at, tc.pointer)
			}
		})
	}
}
