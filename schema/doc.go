// Package schema holds WhaleMountain's two file contracts and everything
// needed to read them safely: the students' wm.yaml (type File, version 1)
// and the admins' server config (type ServerConfig).
//
// Both are read the same way, in the same order, by a small strict YAML
// decoder of our own on top of yaml.v3's node tree:
//
//  1. the input is read from an io.Reader up to a size cap;
//  2. it is parsed into a yaml.Node tree, which never expands aliases;
//  3. the tree is walked against the Go type: unknown fields, duplicate keys,
//     merge keys and wrong kinds are errors, alias expansion is bounded by a
//     node budget (YAML bombs fail fast), and the position of every field is
//     remembered by its path ("containers.web.ports[1]");
//  4. defaults are applied and the typed value is validated; each rule
//     reports a field path and the position is looked up from step 3.
//
// Every problem is an *Error that names the file, line, column and field
// path, and all problems of one file are returned together as Errors, so a
// student sees every mistake at once, one per line:
//
//	wm.yaml:12:7: containers.web.ports[1]: 70000 is not a port (1-65535)
//
// The JSON Schema in wm.schema.json describes the same rules for editors;
// a test keeps the two in agreement over a shared corpus in testdata/.
package schema
