package schema

import (
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize is the largest file, wm.yaml or server config, that is read:
// 64 KiB is far more than any real file needs and keeps a hostile one cheap.
const MaxFileSize = 64 << 10

// maxNodes bounds the YAML nodes visited while decoding, each expansion of
// an alias counted again, so a "billion laughs" document fails after a few
// thousand steps instead of exhausting memory.
const maxNodes = 10000

// pos is a 1-based line and column in a file.
type pos struct{ line, col int }

// positions remembers where each field path was found while decoding, so
// that validation, which works on typed values, can still point at lines.
type positions struct {
	root  pos
	value map[string]pos // where the value of a path starts
	key   map[string]pos // where the key naming a path stands
}

// at returns the position of path, or of its nearest ancestor that was in
// the file (a missing required field is reported where its parent is).
// With key set it prefers the key's position, which is where a bad name is.
func (p *positions) at(path string, key bool) pos {
	for {
		if key {
			if q, ok := p.key[path]; ok {
				return q
			}
		}
		if q, ok := p.value[path]; ok {
			return q
		}
		if q, ok := p.key[path]; ok {
			return q
		}
		if path == "" {
			return p.root
		}
		path = parentPath(path)
		key = false
	}
}

// parentPath strips the last segment of a field path:
// "a.b[2]" → "a.b", "a.b" → "a", `a["x.y"]` → "a", "a" → "".
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if strings.HasSuffix(path, `"]`) {
		// A quoted key escapes every '"' it holds, so `["` only starts one.
		i = strings.LastIndex(path, `["`)
	}
	if i < 0 {
		return ""
	}
	return path[:i]
}

// plainKey matches the map keys a path shows as they are; any other key,
// which may hold dots, brackets, line breaks or a whole paragraph, is shown
// quoted and cut: `env["A.B"]`.
var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// joinPath appends a field or map key to a path.
func joinPath(path, key string) string {
	if !plainKey.MatchString(key) {
		return path + "[" + quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

// decoder walks a yaml.Node tree into a Go value strictly, collecting every
// problem instead of stopping at the first.
type decoder struct {
	file    string
	budget  int
	aborted bool
	errs    Errors
	pos     *positions
}

// decodeStrict reads one YAML document of at most MaxFileSize bytes from r
// into out (a pointer to a struct) and returns where every field was, with
// every problem found. Problems of the input as a whole (unreadable, too
// big, not YAML) come back alone, since nothing else can be said then.
func decodeStrict(file string, r io.Reader, out any) (*positions, Errors) {
	p := &positions{root: pos{1, 1}, value: map[string]pos{}, key: map[string]pos{}}
	whole := func(line int, format string, args ...any) Errors {
		return Errors{newError(file, line, 0, "", fmt.Sprintf(format, args...))}
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return p, whole(0, "cannot read: %v", err)
	}
	if len(data) > MaxFileSize {
		return p, whole(0, "file is larger than %d KiB", MaxFileSize>>10)
	}
	in := &countingReader{data: data}
	dec := yaml.NewDecoder(in)
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return p, whole(0, "file is empty")
		}
		return p, Errors{syntaxError(file, data, in.n, err)}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return p, Errors{syntaxError(file, data, in.n, err)}
	default:
		return p, Errors{newError(file, extra.Line, extra.Column, "", "only one YAML document is allowed, found a second one")}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	p.root = pos{root.Line, root.Column}
	d := &decoder{file: file, budget: maxNodes, pos: p}
	if isNull(root) {
		return p, whole(root.Line, "file has no content")
	}
	d.walk(root, reflect.ValueOf(out).Elem(), "")
	if d.aborted {
		// Only the abort matters: what was decoded before it is partial.
		return p, d.errs[len(d.errs)-1:]
	}
	return p, d.errs
}

// fail records a problem at node n for path.
func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, newError(d.file, n.Line, n.Column, path, fmt.Sprintf(format, args...)))
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// walk decodes node n into v, which must be settable.
func (d *decoder) walk(n *yaml.Node, v reflect.Value, path string) {
	if d.aborted {
		return
	}
	if _, seen := d.pos.value[path]; !seen {
		d.pos.value[path] = pos{n.Line, n.Column}
	}
	for n.Kind == yaml.AliasNode {
		d.budget--
		n = n.Alias
	}
	d.budget--
	if d.budget < 0 {
		d.aborted = true
		// An empty path makes this a whole-file problem: nothing else is said.
		d.fail(n, "", "document has more than %d YAML nodes, counting each use of an alias again (at %s)", maxNodes, path)
		return
	}
	if isNull(n) {
		return // an empty value leaves the field at its zero value
	}
	t := v.Type()
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		d.leaf(n, v, path)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		elem := reflect.New(t.Elem())
		d.walk(n, elem.Elem(), path)
		v.Set(elem)
	case reflect.Struct:
		d.walkStruct(n, v, path)
	case reflect.Map:
		d.walkMap(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "must be a list, not %s", describe(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.walk(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		v.Set(s)
	default:
		d.leaf(n, v, path)
	}
}

// leaf decodes a scalar with yaml.v3's own resolution rules (so "1.5",
// "0x10" and "true" mean what YAML says) and rewrites its errors.
func (d *decoder) leaf(n *yaml.Node, v reflect.Value, path string) {
	t := v.Type()
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "must be %s, not %s", kindName(t), describe(n))
		return
	}
	if isWhole(t) && n.ShortTag() == "!!float" {
		// yaml.v3 cuts 8000.7 to 8000 when it decodes it into an int.
		var f float64
		if err := n.Decode(&f); err == nil && f != math.Trunc(f) {
			d.fail(n, path, "%s is not a whole number", strconv.FormatFloat(f, 'g', -1, 64))
			return
		}
	}
	tmp := reflect.New(t)
	if err := n.Decode(tmp.Interface()); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) || !reflect.PointerTo(t).Implements(unmarshalerType) {
			d.fail(n, path, "%s is not %s", quote(n.Value), kindName(t))
		} else {
			d.fail(n, path, "%v", err)
		}
		return
	}
	v.Set(tmp.Elem())
}

// walkStruct decodes a mapping into a struct, field names from yaml tags.
func (d *decoder) walkStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping of fields, not %s", describe(n))
		return
	}
	fields := fieldsOf(v.Type())
	d.pairs(n, path, func(k, val *yaml.Node, p string) {
		i, ok := fields.index[k.Value]
		if !ok {
			d.fail(k, p, "unknown field%s", suggest(k.Value, fields.names))
			return
		}
		d.walk(val, v.Field(i), p)
	})
}

// walkMap decodes a mapping into a map with string keys.
func (d *decoder) walkMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping, not %s", describe(n))
		return
	}
	t := v.Type()
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(t, len(n.Content)/2))
	}
	d.pairs(n, path, func(k, val *yaml.Node, p string) {
		elem := reflect.New(t.Elem()).Elem()
		d.walk(val, elem, p)
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), elem)
	})
}

// pairs visits the key/value pairs of a mapping, refusing what no strict
// reader should accept: non-scalar keys, merge keys and duplicate keys.
func (d *decoder) pairs(n *yaml.Node, path string, visit func(k, v *yaml.Node, path string)) {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		d.budget--
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "keys must be plain names, not %s", describe(k))
			continue
		}
		p := joinPath(path, k.Value)
		if k.Tag == "!!merge" {
			d.fail(k, path, "merge keys (<<) are not supported; write the fields out")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.fail(k, p, "defined twice (first on line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		d.pos.key[p] = pos{k.Line, k.Column}
		visit(k, val, p)
	}
}

// structFields maps yaml names to field indexes for one struct type.
type structFields struct {
	index map[string]int
	names []string
}

var fieldCache sync.Map // reflect.Type → *structFields

func fieldsOf(t reflect.Type) *structFields {
	if f, ok := fieldCache.Load(t); ok {
		return f.(*structFields)
	}
	f := &structFields{index: map[string]int{}}
	for i := range t.NumField() {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		f.index[name] = i
		f.names = append(f.names, name)
	}
	fieldCache.Store(t, f)
	return f
}

// yamlName is the name a struct field has in YAML, or "" when it has none.
func yamlName(sf reflect.StructField) string {
	if !sf.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	if name == "-" || name == "" {
		return ""
	}
	return name
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "must be X, not Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return quote(n.Value)
	}
}

// isWhole reports whether a Go type holds whole numbers.
func isWhole(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// kindName names what a Go type holds in words a student knows.
func kindName(t reflect.Type) string {
	if isWhole(t) {
		return "a whole number"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return "a " + t.Name()
}

// suggest returns ` (did you mean "x"?)` for the known name closest to a
// misspelt one, or the list of known names when none is close.
func suggest(got string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(got, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	return " (known fields: " + strings.Join(sorted, ", ") + ")"
}

// editDistance is the Levenshtein distance between two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
