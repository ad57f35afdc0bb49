package schema

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the .err golden files of testdata/bad from the parser's output")

// corpus lists the wm.yaml files every rule is checked against: the good
// and bad files of testdata, and every example.
func corpus(t testing.TB) (good, bad []string) {
	t.Helper()
	good, _ = filepath.Glob("testdata/good/*.yaml")
	bad, _ = filepath.Glob("testdata/bad/*.yaml")
	examples, _ := filepath.Glob("../examples/*/wm.yaml")
	if len(good) < 5 || len(bad) < 30 || len(examples) < 3 {
		t.Fatalf("corpus too small: %d good, %d bad, %d examples", len(good), len(bad), len(examples))
	}
	return append(good, examples...), bad
}

func parseFile(t testing.TB, path string) (*File, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Parse(path, f)
}

func TestGoodFilesAndExamplesParse(t *testing.T) {
	good, _ := corpus(t)
	for _, path := range good {
		t.Run(path, func(t *testing.T) {
			f, err := parseFile(t, path)
			if err != nil {
				t.Fatalf("want valid, got:\n%v", err)
			}
			if err := f.Validate(); err != nil {
				t.Errorf("parsed file does not validate again: %v", err)
			}
		})
	}
}

// TestBadFilesGiveTheirExactErrors compares every bad file's errors with
// its golden .err file, one error a line, file name and position included.
func TestBadFilesGiveTheirExactErrors(t *testing.T) {
	_, bad := corpus(t)
	for _, path := range bad {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, err := parseFile(t, path)
			var list Errors
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("want Errors, got %v", err)
			}
			for _, e := range list {
				if e.File != path || e.Message == "" {
					t.Errorf("error without file or message: %#v", e)
				}
			}
			golden := strings.TrimSuffix(path, ".yaml") + ".err"
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("%v (run go test ./schema -run BadFiles -update and review the result)", rerr)
			}
			if got != string(want) {
				t.Errorf("errors differ from %s\ngot:\n%swant:\n%s", golden, got, want)
			}
		})
	}
}

func TestEveryGoldenFileHasItsBadFile(t *testing.T) {
	goldens, _ := filepath.Glob("testdata/bad/*.err")
	for _, g := range goldens {
		if _, err := os.Stat(strings.TrimSuffix(g, ".err") + ".yaml"); err != nil {
			t.Errorf("%s has no .yaml beside it", g)
		}
	}
}

func TestFuzzSeedsCoverTheCorpus(t *testing.T) {
	good, bad := corpus(t)
	if n := len(fuzzSeeds(t)); n != len(good)+len(bad) {
		t.Errorf("fuzz seeds: %d, corpus: %d", n, len(good)+len(bad))
	}
}

func fuzzSeeds(t testing.TB) [][]byte {
	good, bad := corpus(t)
	var seeds [][]byte
	for _, p := range append(good, bad...) {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, data)
	}
	return seeds
}

// FuzzParse checks that no input makes the parser panic or allocate more
// than its bound, that every problem is one line placed in the file, and
// that whatever parses validates again. `go test` runs the seed corpus
// (every testdata file and example, and the hostile inputs);
// `go test -fuzz FuzzParse ./schema` explores further.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	for _, in := range hostileInputs() {
		f.Add(in.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		file, err := Parse("fuzz.yaml", bytes.NewReader(data))
		runtime.ReadMemStats(&after)
		if got := after.TotalAlloc - before.TotalAlloc; got > maxParseAlloc {
			t.Fatalf("parsing allocated %d MiB, more than %d MiB", got>>20, maxParseAlloc>>20)
		}
		if err == nil {
			if verr := file.Validate(); verr != nil {
				t.Fatalf("parsed but does not validate: %v", verr)
			}
			return
		}
		var list Errors
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error is not Errors: %T %v", err, err)
		}
		if len(list) > maxErrors {
			t.Fatalf("%d errors, more than %d", len(list), maxErrors)
		}
		for _, e := range list {
			if e.File != "fuzz.yaml" || e.Message == "" || e.Line < 0 || e.Column < 0 {
				t.Fatalf("malformed error: %#v", e)
			}
			checkOneLine(t, e)
		}
	})
}
