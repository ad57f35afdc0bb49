package schema

import (
	"fmt"
	"strings"
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

// Error formats the problem as "file:line:col: path: message", the form
// editors and compilers use, so terminals make it clickable.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
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
