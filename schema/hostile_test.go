package schema

import (
	"bytes"
	"errors"
	"fmt"
	"go.yaml.in/yaml/v3"
	"math"
	"runtime"
	"strings"
	"testing"

	goyaml "github.com/goccy/go-yaml"
	goparser "github.com/goccy/go-yaml/parser"
)

// MaxParseAlloc is what one parse of the worst input may allocate.
const maxParseAlloc = 64 << 20

// hostileInput is a file written to make the reader work hard, as large
// as the size limit allows.
type hostileInput struct {
	name string
	data []byte
}

// fill repeats unit after head until the file would pass MaxFileSize-len(tail),
// then appends tail.
func fill(head, unit func(i int) string, tail string) []byte {
	var b strings.Builder
	b.WriteString(head(0))
	for i := 0; ; i++ {
		u := unit(i)
		if b.Len()+len(u)+len(tail) > MaxFileSize {
			break
		}
		b.WriteString(u)
	}
	b.WriteString(tail)
	return []byte(b.String())
}

func constant(s string) func(int) string { return func(int) string { return s } }

// hostileInputs are the worst inputs known for the reader, each at the size
// limit: deep nesting, many keys, long flow sequences, syntax errors at the
// end and many aliases.
func hostileInputs() []hostileInput {
	envKey := func(i int) string { return fmt.Sprintf("      K%d: v\n", i) }
	var in []hostileInput
	add := func(name string, data []byte) { in = append(in, hostileInput{name, data}) }
	add("deep flow nesting", fill(constant("version: 1\nx: "), constant("["), ""))
	add("deep flow nesting of mappings", fill(constant("version: 1\nx: "), constant("{a: "), ""))
	add("deep flow nesting hidden behind quoted brackets", fill(constant("version: 1\nx: "), constant(`["]", `), ""))
	add("deep block sequence nesting on one line", fill(constant("version: 1\nx: \n"), constant("- "), "x\n"))
	add("deep block mapping nesting", fill(constant("version: 1\n"), func(i int) string { return strings.Repeat(" ", i) + "a:\n" }, ""))
	add("deep block mapping nesting and a syntax error at the end", fill(constant("version: 1\n"), func(i int) string { return strings.Repeat(" ", i) + "a:\n" }, "]\n"))
	add("many keys", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    env:\n"), envKey, ""))
	add("many keys and a syntax error at the end", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    env:\n"), envKey, "   ports: [1\n"))
	add("many keys and a bad indent at the end", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    env:\n"), envKey, " x: y\n"))
	add("many top-level keys and a syntax error at the end", fill(constant("version: 1\n"), func(i int) string { return fmt.Sprintf("k%d: v\n", i) }, "x: [1\n"))
	add("many invalid keys", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    env:\n"), func(i int) string { return fmt.Sprintf("      %d: v\n", i) }, ""))
	add("long flow sequence", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    ports: ["), constant("1,"), "1]\n"))
	add("long flow sequence and a syntax error at the end", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    ports: ["), constant("1,"), "\n: :"))
	add("long flow sequence over many lines and a syntax error at the end", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    command: [\n"), constant("      a,\n"), "      ]]\n"))
	add("long block sequence and a syntax error at the end", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    command:\n"), constant("      - a\n"), "     - b\n"))
	add("many aliases", fill(constant("version: 1\nx:\n- &a0 [x]\n"), func(i int) string { return fmt.Sprintf("- &a%d [*a%d, *a%d]\n", i+1, i, i) }, ""))
	add("many aliases of a large anchor", fill(constant("version: 1\nx: &a ["+strings.Repeat("x,", 2000)+"x]\ny:\n"), constant("- *a\n"), ""))
	add("long plain scalar and a syntax error at the end", fill(constant("version: 1\nimage:\n  description: a\n"), constant("    b\n"), "  ]\n"))
	add("long double-quoted scalar unterminated", fill(constant("version: 1\nimage:\n  description: \""), constant("ab "), ""))
	add("one long line", fill(constant("version: 1\nimage:\n  description: "), constant("a"), "\n"))
	return in
}

func TestEveryHostileInputIsAtTheSizeLimitAndRefusedOrParsed(t *testing.T) {
	for _, in := range hostileInputs() {
		if len(in.data) > MaxFileSize || len(in.data) < MaxFileSize-1024 {
			t.Errorf("%s: %d bytes, want within 1 KiB of %d", in.name, len(in.data), MaxFileSize)
		}
	}
}

// TestParsingAnyInputAllocatesAtMost64MiB holds the memory half of the
// parser's cost bound; BenchmarkParseHostile measures the time half.
func TestParsingAnyInputAllocatesAtMost64MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("parses every hostile input")
	}
	for _, in := range hostileInputs() {
		t.Run(in.name, func(t *testing.T) {
			for _, parse := range []struct {
				kind string
				run  func() error
			}{
				{"wm.yaml", func() error { _, err := Parse("wm.yaml", bytes.NewReader(in.data)); return err }},
				{"server config", func() error { _, err := ParseServer("wm-server.yaml", bytes.NewReader(in.data), "/"); return err }},
			} {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				err := parse.run()
				runtime.ReadMemStats(&after)
				if got := after.TotalAlloc - before.TotalAlloc; got > maxParseAlloc {
					t.Errorf("%s: parsing allocated %d MiB, more than %d MiB", parse.kind, got>>20, maxParseAlloc>>20)
				}
				for _, line := range strings.Split(fmt.Sprint(err), "\n")[:1] {
					t.Logf("%s: %.200s", parse.kind, line)
				}
			}
		})
	}
}

// TestASyntaxErrorInALargeFileIsPlacedAsInTheWholeFile checks that showing
// goccy only a window of a large file places its syntax error where goccy
// places it in the whole file, with the same message.
func TestASyntaxErrorInALargeFileIsPlacedAsInTheWholeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("parses large files with goccy")
	}
	envKey := func(i int) string { return fmt.Sprintf("      K%d: v\n", i) }
	half := func(tail string) []byte {
		var b strings.Builder
		b.WriteString("version: 1\ncontainers:\n  web:\n    image: self\n    env:\n")
		for i := 0; b.Len() < MaxFileSize/2-64; i++ {
			b.WriteString(envKey(i))
		}
		b.WriteString(tail)
		return []byte(b.String())
	}
	inputs := []hostileInput{
		{"a bad line in the middle of many keys", append(half("     BAD: [1\n"), half("")[len("version: 1\n"):]...)},
		{"a bad indent in the middle of many keys", append(half("   x: y\n"), half("")[len("version: 1\ncontainers:\n  web:\n    image: self\n    env:\n"):]...)},
		{"a tab in the middle of many keys", append(half("\tx: y\n"), half("")[len("version: 1\ncontainers:\n  web:\n    image: self\n    env:\n"):]...)},
		{"a bad sequence item under a long command", fill(constant("version: 1\ncontainers:\n  web:\n    image: self\n    command:\n"), constant("    - a\n"), "   - b\n")},
	}
	for _, in := range hostileInputs() {
		// Beyond a window: a 64 KiB line, and 360 ancestor lines.
		if strings.Contains(in.name, "syntax error") && !strings.Contains(in.name, "long flow sequence and") && !strings.Contains(in.name, "deep") {
			inputs = append(inputs, in)
		}
	}
	for _, in := range inputs {
		t.Run(in.name, func(t *testing.T) {
			var se *goyaml.SyntaxError
			if _, err := goparser.ParseBytes(in.data, 0); !errors.As(err, &se) {
				t.Fatalf("goccy finds no syntax error in the whole file: %v", err)
			}
			want := newError("wm.yaml", se.Token.Position.Line, se.Token.Position.Column, "", "not valid YAML: "+hint(se.Message, in.data, se.Token.Position.Line)).Error()
			_, err := Parse("wm.yaml", bytes.NewReader(in.data))
			if got := fmt.Sprint(err); got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// BenchmarkParseHostile parses each hostile input; every one must stay
// under 100 ms (ns/op) and 64 MiB (B/op). Beside each, the baseline:
// yaml.v3 alone decoding the same bytes into a node tree, the least any
// YAML parser here costs, so the ratio of the two is what our checks add:
//
//	go test ./schema -run '^$' -bench ParseHostile -benchmem
func BenchmarkParseHostile(b *testing.B) {
	for _, in := range hostileInputs() {
		name := strings.ReplaceAll(in.name, " ", "_")
		b.Run(name+"/wm", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in.data)))
			for b.Loop() {
				Parse("wm.yaml", bytes.NewReader(in.data))
			}
		})
		b.Run(name+"/yaml.v3-baseline", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in.data)))
			for b.Loop() {
				var n yaml.Node
				_ = yaml.Unmarshal(in.data, &n)
			}
		})
	}
}

// hostileText is what a student may write to make an error message say
// more than it should: a newline, a Markdown code fence, a mention and a
// link, a line separator, a bidi override and a terminal escape.
const hostileText = "x\n```\n@all [click](https://evil.example/)\u2028\u202e\x1b[2J\r\t"

func TestEveryErrorIsOneBoundedLineWhateverTheStudentWrote(t *testing.T) {
	long := strings.Repeat("é", 5000)
	for _, tc := range []struct {
		name string
		yaml string
	}{
		{"a hostile env name", "version: 1\ncontainers:\n  web:\n    image: self\n    env: {%q: v}\n"},
		{"a hostile container name", "version: 1\ncontainers:\n  %q: {image: self}\n"},
		{"a hostile unknown field", "version: 1\n%q: 1\n"},
		{"a hostile unknown field of a container", "version: 1\ncontainers:\n  web: {image: self, %q: 1}\n"},
		{"a hostile volume name", "version: 1\ncontainers:\n  web: {image: self, volumes: {%q: /data}}\n"},
		{"a hostile volume path", "version: 1\ncontainers:\n  web: {image: self, volumes: {data: %q}}\n"},
		{"a hostile system volume path", "version: 1\ncontainers:\n  web: {image: self, volumes: {data: %q}}\n"},
		{"a hostile image", "version: 1\ncontainers:\n  web: {image: %q}\n"},
		{"a hostile upper-case image", "version: 1\ncontainers:\n  web: {image: %q}\n"},
		{"a hostile user", "version: 1\ncontainers:\n  web: {image: self, user: %q}\n"},
		{"a hostile memory", "version: 1\npods:\n  p: {image: self, memory: %q}\n"},
		{"a hostile cpus", "version: 1\npods:\n  p: {image: self, cpus: %q}\n"},
		{"a hostile port", "version: 1\ncontainers:\n  web: {image: self, ports: [%q]}\n"},
		{"a hostile state", "version: 1\ncontainers:\n  web: {image: self, state: %q}\n"},
		{"a hostile restart", "version: 1\npods:\n  p: {image: self, restart: %q}\n"},
		{"a hostile expiry", "version: 1\nexpires: %q\n"},
		{"a hostile anchor", "version: 1\nimage: *%s\n"},
		{"a hostile merge", "version: 1\ncontainers:\n  web: {<<: {%q: 1}}\n"},
		{"a hostile duplicate key", "version: 1\ncontainers:\n  web: {image: self, env: {%[1]q: a, %[1]q: b}}\n"},
	} {
		for _, text := range []struct{ name, s string }{
			{"short", hostileText},
			{"long", long + hostileText},
			{"system path", "/proc/" + hostileText},
			{"upper case", "Evil/" + hostileText},
		} {
			t.Run(tc.name+" ("+text.name+")", func(t *testing.T) {
				data := tc.yaml
				if strings.Contains(data, "%") {
					data = fmt.Sprintf(tc.yaml, text.s)
				}
				_, err := Parse("wm.yaml", strings.NewReader(data))
				var list Errors
				if !errors.As(err, &list) {
					t.Fatalf("want Errors, got %v", err)
				}
				if lines := strings.Split(err.Error(), "\n"); len(lines) != len(list) {
					t.Errorf("%d errors print as %d lines:\n%s", len(list), len(lines), err)
				}
				for _, e := range list {
					checkOneLine(t, e)
				}
			})
		}
	}
}

// checkOneLine fails unless e prints as one line of bounded length with
// nothing a terminal or a Markdown renderer could take as a line break.
func checkOneLine(t *testing.T, e *Error) {
	t.Helper()
	for _, s := range []string{e.Error(), e.File, e.Path, e.Message} {
		if strings.ContainsAny(s, "\n\r\t\x1b\u0085\u2028\u2029\u202e") {
			t.Errorf("error holds a line break or control character: %q", s)
		}
	}
	if n := len([]rune(e.Error())); n > maxErrorLength {
		t.Errorf("error is %d characters long, more than %d: %.200s", n, maxErrorLength, e.Error())
	}
}

// maxErrorLength bounds one printed error in characters: a file name, a
// field path and a message, each repeating at most a bounded part of what
// the student wrote.
const maxErrorLength = 1024

func TestAKeyThatIsNotAPlainNameIsQuotedInThePathAndStillPlaced(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"an env name with a dot",
			"version: 1\ncontainers:\n  web:\n    image: self\n    env:\n      A.B: x\n",
			`wm.yaml:6:7: containers.web.env["A.B"]: "A.B" is not an environment variable name: use letters, digits and '_', not starting with a digit`},
		{"a container name with a bracket",
			"version: 1\ncontainers:\n  web[0]:\n    image: \"nope:\"\n",
			`wm.yaml:3:3: containers["web[0]"]: "web[0]" is not a valid name: use lower-case letters, digits and '-', starting and ending with a letter or digit` + "\n" +
				`wm.yaml:4:12: containers["web[0]"].image: "nope:" is not an image reference: invalid reference format`},
		{"a volume name with a quote and a newline",
			"version: 1\ncontainers:\n  web:\n    image: self\n    volumes:\n      \"a\\\"\\n\": data\n",
			`wm.yaml:6:7: containers.web.volumes["a\"\n"]: "a\"\n" is not a valid volume name: use lower-case letters, digits and '-', starting and ending with a letter or digit` + "\n" +
				`wm.yaml:6:16: containers.web.volumes["a\"\n"]: "data" is not an absolute path without ".."`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("wm.yaml", strings.NewReader(tc.yaml))
			if got := fmt.Sprint(err); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestAFileWithThousandsOfProblemsReportsTheFirstFewAndHowManyMore(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\ncontainers:\n  web:\n    image: self\n")
	for i := range 1000 {
		fmt.Fprintf(&b, "    bad%d: x\n", i)
	}
	_, err := Parse("wm.yaml", strings.NewReader(b.String()))
	var list Errors
	if !errors.As(err, &list) || len(list) != maxErrors {
		t.Fatalf("want %d errors, got %d", maxErrors, len(list))
	}
	if got, want := list[len(list)-1].Error(), fmt.Sprintf("wm.yaml: %d more problems not shown", 1000-maxErrors+1); got != want {
		t.Errorf("last error: got %q, want %q", got, want)
	}
}

// container returns a wm.yaml with one container "web" whose fields are
// the given lines, each indented under it; its errors are on line 5 on.
func container(fields ...string) string {
	return "version: 1\ncontainers:\n  web:\n    image: self\n    " + strings.Join(fields, "\n    ") + "\n"
}

// pod is container for a pod "p".
func pod(fields ...string) string {
	return "version: 1\npods:\n  p:\n    image: self\n    " + strings.Join(fields, "\n    ") + "\n"
}

func TestEveryNumberAndSizeIsBoundedAndAWrongOneRefused(t *testing.T) {
	many := func(n int, format string) string {
		items := make([]string, n)
		for i := range items {
			items[i] = fmt.Sprintf(format, i+1)
		}
		return strings.Join(items, ", ")
	}
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"cpus small enough to round to no limit", container("cpus: 0.0000001"),
			"wm.yaml:5:11: containers.web.cpus: 1e-07 is less than the least a workload can have, 0.01 CPUs"},
		{"cpus below the least", pod("cpus: 0.009"),
			"wm.yaml:5:11: pods.p.cpus: 0.009 is less than the least a workload can have, 0.01 CPUs"},
		{"cpus above the most", container("cpus: 65"),
			"wm.yaml:5:11: containers.web.cpus: 65 is more than the most a workload can have, 64 CPUs"},
		{"cpus of a billion", container("cpus: 1e9"),
			"wm.yaml:5:11: containers.web.cpus: 1e+09 is more than the most a workload can have, 64 CPUs"},
		{"cpus finer than a thousandth", container("cpus: 0.0105"),
			"wm.yaml:5:11: containers.web.cpus: 0.0105 has more than 3 decimals: CPUs are counted in thousandths"},
		{"cpus not a number", container("cpus: .nan"),
			`wm.yaml:5:11: containers.web.cpus: NaN is not a CPU count: use a number such as 0.5 or 2`},
		{"cpus infinite", container("cpus: .inf"),
			`wm.yaml:5:11: containers.web.cpus: +Inf is not a CPU count: use a number such as 0.5 or 2`},
		{"memory above the most", container("memory: 2Ti"),
			`wm.yaml:5:13: containers.web.memory: "2Ti" is more than the most memory a workload can have, 1Ti`},
		{"memory that overflows", pod("memory: 9999999Ei"),
			`wm.yaml:5:13: pods.p.memory: "9999999Ei" is more than the most memory a workload can have, 1Ti`},
		{"memory in bytes above the most", pod("memory: 1099511627777"),
			`wm.yaml:5:13: pods.p.memory: "1099511627777" is more than the most memory a workload can have, 1Ti`},
		{"a port that is not whole", container("ports: [8000.7]"),
			`wm.yaml:5:13: containers.web.ports[0]: 8000.7 is not a whole number`},
		{"a version that is not whole", "version: 1.5\n",
			`wm.yaml:1:10: version: 1.5 is not a whole number`},
		{"gpus that are not whole", pod("gpus: 0.5"),
			`wm.yaml:5:11: pods.p.gpus: 0.5 is not a whole number`},
		{"a number too large for a whole number", pod("gpus: 1e30"),
			`wm.yaml:5:11: pods.p.gpus: "1e30" is not a whole number`},
		{"too many ports", container("ports: [" + many(17, "%d") + "]"),
			"wm.yaml:5:5: containers.web.ports: 17 entries is more than the limit of 16"},
		{"too many env entries", container("env: {" + many(65, "K%d: v") + "}"),
			"wm.yaml:5:5: containers.web.env: 65 entries is more than the limit of 64"},
		{"too many volumes", container("volumes: {" + many(17, "v%[1]d: /v%[1]d") + "}"),
			"wm.yaml:5:5: containers.web.volumes: 17 entries is more than the limit of 16"},
		{"too many command words", pod("command: [" + many(129, "a%d") + "]"),
			"wm.yaml:5:5: pods.p.command: 129 entries is more than the limit of 128"},
		{"too many entrypoint words", container("entrypoint: [" + many(129, "a%d") + "]"),
			"wm.yaml:5:5: containers.web.entrypoint: 129 entries is more than the limit of 128"},
		{"a long command word", container("command: [" + strings.Repeat("a", 4097) + "]"),
			"wm.yaml:5:15: containers.web.command[0]: is 4097 characters long, more than 4096"},
		{"a long env value", pod("env: {A: " + strings.Repeat("é", 4097) + "}"),
			"wm.yaml:5:14: pods.p.env.A: is 4097 characters long, more than 4096"},
		{"a long env name", pod("env: {" + strings.Repeat("A", 129) + ": v}"),
			`wm.yaml:5:11: pods.p.env["` + strings.Repeat("A", 61) + `..."]: is 129 characters long, more than 128`},
		{"a long workdir", pod("workdir: /" + strings.Repeat("a", 1024)),
			"wm.yaml:5:14: pods.p.workdir: is 1025 characters long, more than 1024"},
		{"a long volume path", container("volumes: {data: /" + strings.Repeat("a", 1024) + "}"),
			"wm.yaml:5:21: containers.web.volumes.data: is 1025 characters long, more than 1024"},
		{"a long user", container("user: " + strings.Repeat("a", 65)),
			"wm.yaml:5:11: containers.web.user: is 65 characters long, more than 64"},
		{"a long image", "version: 1\ncontainers:\n  web:\n    image: shared/bob/" + strings.Repeat("a", 512) + "\n",
			"wm.yaml:4:12: containers.web.image: is 523 characters long, more than 512"},
		{"an expiry before 2000", "version: 1\nexpires: 1999-12-31\n",
			`wm.yaml:2:10: expires: "1999-12-31" is not between 2000-01-01 and 2099-12-31`},
		{"an expiry after 2099", "version: 1\nexpires: 2100-01-01\n",
			`wm.yaml:2:10: expires: "2100-01-01" is not between 2000-01-01 and 2099-12-31`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("wm.yaml", strings.NewReader(tc.yaml))
			if got := fmt.Sprint(err); got != tc.want {
				t.Errorf("got\n%.300s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestTheBoundsAreTheOnesDocumented(t *testing.T) {
	// The reconciler relies on these; the README and wm.schema.json say them.
	if MinCPUs != 0.01 || MaxCPUs != 64 || CPUDecimals != 3 || MinMemory != 6<<20 || MaxMemoryBytes != 1<<40 ||
		MaxGPUs != 8 || MaxPortsPerContainer != 16 || MaxVolumesPerContainer != 16 || MaxEnv != 64 ||
		MaxEnvNameLength != 128 || MaxEnvValueLength != 4096 || MaxArgs != 128 || MaxArgLength != 4096 ||
		MaxPathLength != 1024 || MaxUserLength != 64 || MaxImageLength != 512 || MaxDescriptionLength != 500 {
		t.Error("a bound changed: change README.md and wm.schema.json with it, then this test")
	}
	// The whole of one owner's memory, summed over the most workloads a
	// file may declare, fits an int64 ten thousand times over.
	if uint64(MaxMemoryBytes)*uint64(MaxContainers+MaxPods)*10_000 > math.MaxInt64 {
		t.Error("memory sums can overflow")
	}
}

func TestEnvNamesThatSteerTheContainerRuntimeAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"all GPUs through NVIDIA_VISIBLE_DEVICES", container("env: {NVIDIA_VISIBLE_DEVICES: all}"),
			`wm.yaml:5:11: containers.web.env.NVIDIA_VISIBLE_DEVICES: is read by the NVIDIA container runtime, which would give the container GPUs or driver features it was not given: ask for GPUs with gpus`},
		{"driver capabilities in a pod", pod("env:", "  NVIDIA_DRIVER_CAPABILITIES: all"),
			`wm.yaml:6:7: pods.p.env.NVIDIA_DRIVER_CAPABILITIES: is read by the NVIDIA container runtime, which would give the container GPUs or driver features it was not given: ask for GPUs with gpus`},
		{"a requirement override", pod("env: {NVIDIA_DISABLE_REQUIRE: 1, NVIDIA_REQUIRE_CUDA: x}"),
			"wm.yaml:5:11: pods.p.env.NVIDIA_DISABLE_REQUIRE: is read by the NVIDIA container runtime, which would give the container GPUs or driver features it was not given: ask for GPUs with gpus\n" +
				"wm.yaml:5:38: pods.p.env.NVIDIA_REQUIRE_CUDA: is read by the NVIDIA container runtime, which would give the container GPUs or driver features it was not given: ask for GPUs with gpus"},
		{"MIG devices in lower case", container("env: {nvidia_mig_config_devices: all}"),
			`wm.yaml:5:11: containers.web.env.nvidia_mig_config_devices: is read by the NVIDIA container runtime, which would give the container GPUs or driver features it was not given: ask for GPUs with gpus`},
		{"AMD GPUs", container("env: {AMD_VISIBLE_DEVICES: all}"),
			`wm.yaml:5:11: containers.web.env.AMD_VISIBLE_DEVICES: is read by the AMD container runtime, which would give the container GPUs it was not given: ask for GPUs with gpus`},
		{"Habana accelerators", pod("env: {HABANA_VISIBLE_DEVICES: all}"),
			`wm.yaml:5:11: pods.p.env.HABANA_VISIBLE_DEVICES: is read by the Habana container runtime, which would give the container accelerators it was not given`},
		{"Ascend accelerators", pod("env: {ASCEND_VISIBLE_DEVICES: 0}"),
			`wm.yaml:5:11: pods.p.env.ASCEND_VISIBLE_DEVICES: is read by the Ascend container runtime, which would give the container accelerators it was not given`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("wm.yaml", strings.NewReader(tc.yaml))
			if got := fmt.Sprint(err); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
	for _, fine := range []string{"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "AMD_LOG_LEVEL", "NVIDIA", "MY_NVIDIA_TOKEN", "SINGULARITYENV_X", "APPTAINERENV_X"} {
		if _, err := Parse("wm.yaml", strings.NewReader(container("env: {"+fine+": x}"))); err != nil {
			t.Errorf("%s is refused: %v", fine, err)
		}
	}
}

func TestAHostileFileNameIsEscapedAndCutToo(t *testing.T) {
	for _, name := range []string{hostileText, strings.Repeat("\x00", 5000), strings.Repeat("é", 5000) + hostileText} {
		_, err := Parse(name, strings.NewReader("version: 2\n"))
		var list Errors
		if !errors.As(err, &list) || len(list) != 1 {
			t.Fatalf("want one error, got %v", err)
		}
		checkOneLine(t, list[0])
	}
}

func TestQuoteGivesOneShortLineOfAnyText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"web", `"web"`},
		{hostileText, `"x\n` + "```" + `\n@all [click](https://evil.example/)\u2028\u202e\x1b[2J\r\t"`},
		{strings.Repeat("a", 100), `"` + strings.Repeat("a", 61) + `..."`},
		{strings.Repeat("é", 100), `"` + strings.Repeat("é", 61) + `..."`},
		{"\xff\xfe", `"\xff\xfe"`},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%.20q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
