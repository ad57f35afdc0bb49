package schema

import (
	"bytes"
	"errors"
	"io"
	"regexp"
	"strconv"
	"strings"

	goyaml "github.com/goccy/go-yaml"
	golexer "github.com/goccy/go-yaml/lexer"
	goparser "github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Placing a syntax error. yaml.v3, which reads every file, tells only the
// line where the enclosing construct began, often lines above the mistake.
// goccy/go-yaml names the exact line and column of the offending token, but
// its parser costs time and memory quadratic in the tokens of a mapping and
// in the nesting of flow collections: a hostile 64 KiB file takes seconds
// and gigabytes. So goccy is only ever shown a small window of the file,
// ending where yaml.v3 stopped reading, and only when the window is shallow.
const (
	// syntaxWindow bounds the bytes goccy parses: the lines before the
	// failure, plus the less indented lines above them that give them
	// their place (the "ancestors").
	syntaxWindow = 4 << 10
	// syntaxDepth bounds the nesting (flow collections, and block
	// sequences opened on one line) of a window goccy is shown.
	syntaxDepth = 64
)

// countingReader hands its data out one byte per Read, so that after a
// yaml.v3 failure n tells how far the parser had to read: the offending
// token starts before n. yaml.v3 reads lazily, looking ahead a bounded
// amount, so n is at most a line or a token past the mistake.
type countingReader struct {
	data []byte
	n    int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n >= len(r.data) {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.data[r.n]
	r.n++
	return 1, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns a yaml.v3 parse error into an Error: at the exact
// position goccy finds in a window of the file ending at read (the bytes
// yaml.v3 had read), or else at the line yaml.v3 names, without a column.
func syntaxError(file string, data []byte, read int, err error) *Error {
	if line, col, msg, ok := placeSyntaxError(data, read); ok {
		return newError(file, line, col, "", "not valid YAML: "+hint(msg, data, line))
	}
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return newError(file, line, 0, "", "not valid YAML: "+hint(m[2], data, line))
	}
	return newError(file, 0, 0, "", "not valid YAML: "+strings.TrimPrefix(msg, "yaml: "))
}

// tabHint is what a syntax error on a line indented with a tab adds: YAML
// forbids tabs in indentation, and editors insert them unseen.
const tabHint = " (indent with spaces, not tabs)"

// hint adds the fix to a syntax error when it is plain: so far, a tab in
// the indentation of the line the error is on.
func hint(msg string, data []byte, line int) string {
	for i := 1; len(data) > 0 && i <= line; i++ {
		cur, rest, _ := bytes.Cut(data, []byte("\n"))
		if i == line {
			indent := cur[:len(cur)-len(bytes.TrimLeft(cur, " \t"))]
			if bytes.IndexByte(indent, '\t') >= 0 {
				return msg + tabHint
			}
		}
		data = rest
	}
	return msg
}

// placeSyntaxError asks goccy where the syntax error of data is, showing it
// at most syntaxWindow bytes; ok is false when the window cannot be built
// or goccy finds nothing in it.
func placeSyntaxError(data []byte, read int) (line, col int, msg string, ok bool) {
	window, lines := syntaxWindowOf(data, read)
	if window == nil {
		return 0, 0, "", false
	}
	tokens := golexer.Tokenize(string(window))
	if nesting(tokens) > syntaxDepth {
		return 0, 0, "", false
	}
	var se *goyaml.SyntaxError
	if _, err := goparser.Parse(tokens, 0); !errors.As(err, &se) || se.Token == nil {
		return 0, 0, "", false
	}
	at := se.Token.Position
	if at.Line < 1 || at.Line > len(lines) || lines[at.Line-1] == 0 {
		return 0, 0, "", false // outside the window, or on an ancestor line
	}
	return lines[at.Line-1], at.Column, se.Message, true
}

// syntaxWindowOf returns the text goccy is shown and, for each of its
// lines, the line of data it is (0 for none). A file within the window
// bound is shown whole; a larger one from a few lines before read to the
// end of the line holding read, headed by its ancestors: the nearest less
// indented lines above, each less indented than the last, so that the
// window's lines keep the block structure they have in the file. window is
// nil when no such window fits the bound.
func syntaxWindowOf(data []byte, read int) (window []byte, lines []int) {
	if len(data) <= syntaxWindow {
		n := bytes.Count(data, []byte("\n")) + 1
		lines = make([]int, n)
		for i := range lines {
			lines[i] = i + 1
		}
		return data, lines
	}
	read = min(max(read, 1), len(data))
	end := len(data)
	if i := bytes.IndexByte(data[read-1:], '\n'); i >= 0 {
		end = read + i
	}
	// Cut the tail at a line start, leaving room for the ancestors.
	start := end - syntaxWindow/2
	if start <= 0 {
		start = 0
	} else if i := bytes.IndexByte(data[start:end], '\n'); i >= 0 {
		start += i + 1
	} else {
		return nil, nil // one line longer than the window
	}
	firstLine := bytes.Count(data[:start], []byte("\n")) + 1
	ancestors, ancestorBytes := ancestorsOf(data, start, syntaxWindow-(end-start))
	if ancestorBytes < 0 {
		return nil, nil
	}
	window = make([]byte, 0, ancestorBytes+end-start+1)
	for _, a := range ancestors {
		window = append(window, a...)
		window = append(window, '\n')
		lines = append(lines, 0)
	}
	window = append(window, data[start:end]...)
	for i := range bytes.Count(data[start:end], []byte("\n")) + 1 {
		lines = append(lines, firstLine+i)
	}
	return window, lines
}

// ancestorsOf returns, in file order, the lines above offset start that
// hold the first content line at or below start in place: the nearest
// line less indented than it, the nearest less indented than that, and so
// on; a "key:" line indented like a "- item" line is its parent too. size
// is their length with newlines, or -1 when they exceed budget.
func ancestorsOf(data []byte, start, budget int) (ancestors [][]byte, size int) {
	indent, item := -1, false
	for rest := data[start:]; len(rest) > 0 && indent < 0; {
		line, next, _ := bytes.Cut(rest, []byte("\n"))
		if ind, ok := contentIndent(line); ok {
			indent, item = ind, bytes.HasPrefix(line[ind:], []byte("- "))
		}
		rest = next
	}
	for end := start; end > 0 && indent > 0; {
		lineStart := bytes.LastIndexByte(data[:end-1], '\n') + 1
		line := data[lineStart : end-1]
		end = lineStart
		ind, ok := contentIndent(line)
		if !ok {
			continue
		}
		if ind < indent || (ind == indent && item && !bytes.HasPrefix(line[ind:], []byte("- "))) {
			size += len(line) + 1
			if size > budget {
				return nil, -1
			}
			ancestors = append(ancestors, line)
			indent, item = ind, bytes.HasPrefix(line[ind:], []byte("- "))
		}
	}
	for i, j := 0, len(ancestors)-1; i < j; i, j = i+1, j-1 {
		ancestors[i], ancestors[j] = ancestors[j], ancestors[i]
	}
	return ancestors, size
}

// contentIndent returns the indentation of a line holding more than
// spaces and a comment.
func contentIndent(line []byte) (int, bool) {
	trimmed := bytes.TrimLeft(line, " ")
	if len(trimmed) == 0 || trimmed[0] == '#' || trimmed[0] == '\r' {
		return 0, false
	}
	return len(line) - len(trimmed), true
}

// nesting returns the deepest nesting of flow collections in tokens, or
// the most block sequence entries on one line, whichever is larger: what
// makes goccy's parser slow.
func nesting(tokens token.Tokens) int {
	deepest, depth, entries, line := 0, 0, 0, 0
	for _, tk := range tokens {
		switch tk.Type {
		case token.SequenceStartType, token.MappingStartType:
			depth++
			deepest = max(deepest, depth)
		case token.SequenceEndType, token.MappingEndType:
			depth = max(depth-1, 0)
		case token.SequenceEntryType, token.MappingKeyType:
			if tk.Position.Line != line {
				line, entries = tk.Position.Line, 0
			}
			entries++
			deepest = max(deepest, entries)
		}
	}
	return deepest
}
