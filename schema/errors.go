package schema

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Error is one problem found in a file, placed at a line and column and
// named by the path of the field it concerns.
type Error struct {
	// File is the name the file was read under, as the user gave it.
	File string `json:"file"`
	// Line and Column are 1-based; Column is 0 when the YAML parser could
	// only tell the line (syntax errors).
	Line   int `json:"line"`
	Column int `json:"column"`
	// Path is the field path, such as "containers.web.ports[1]"; empty for
	// problems with the file as a whole.
	Path string `json:"path,omitempty"`
	// Message says what is wrong in words a student understands.
	Message string `json:"message"`
}

// newError makes an Error whose every part is one line of bounded length,
// whatever the file held: its fields go as they are into terminals, JSON
// and GitLab notes.
func newError(file string, line, column int, path, message string) *Error {
	return &Error{File: oneLine(file, maxPathLength), Line: line, Column: column, Path: oneLine(path, maxPathLength), Message: oneLine(message, maxMessageLength)}
}

// Bounds, in characters, on the parts of an error that may repeat what a
// student wrote. A printed error stays under 1 KiB.
const (
	// maxQuoted is how much of one value or key an error quotes.
	maxQuoted = 64
	// maxPathLength bounds a file name or a field path.
	maxPathLength = 256
	// maxMessageLength bounds a message.
	maxMessageLength = 480
)

// Error formats the problem as "file:line:col: path: message", the form
// editors and compilers use, so terminals make it clickable. It is always
// one line: line breaks and other control characters are escaped.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(oneLine(e.File, maxPathLength))
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(oneLine(e.Path, maxPathLength))
		b.WriteString(": ")
	}
	b.WriteString(oneLine(e.Message, maxMessageLength))
	return b.String()
}

// String is Error: one line.
func (e *Error) String() string { return e.Error() }

// quote returns s as a double-quoted Go string literal, cut to maxQuoted
// characters with "..." at the end: newlines, tabs, control characters,
// invalid UTF-8 and Unicode line separators and format characters (such as
// bidi overrides) come out escaped ("\n", "\u2028"), so a value or key
// repeated in an error can neither break the line nor pass for something
// else.
func quote(s string) string {
	return strconv.Quote(truncate(s, maxQuoted))
}

// Quote is quote for other packages' messages that repeat what a student
// wrote (an image reference, a name): one line, at most 64 characters of s.
func Quote(s string) string { return quote(s) }

// truncate cuts s to at most n characters, the last three "..." when cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	i, count := 0, 0
	for i = range s {
		if count == n-3 {
			break
		}
		count++
	}
	return s[:i] + "..."
}

// oneLine escapes in s what is not printable, as quote does but leaving
// quotes and backslashes alone, then cuts it to at most n characters: the
// last defence of the one line, one problem rule, and of the length of an
// error, for text that reached it unquoted (a file name, a parser's
// message) or quoted more than once.
func oneLine(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() <= 4*n; {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case strconv.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return truncate(b.String(), n)
}

// Errors is every problem found in one file, in the order of the file.
// A nil Errors means the file is valid.
type Errors []*Error

// Error joins the problems one per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find a single *Error inside.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// orNil returns nil for an empty list, so a valid file yields a nil error
// and not a non-nil interface holding an empty slice.
func (es Errors) orNil() error {
	if len(es) == 0 {
		return nil
	}
	return es
}
