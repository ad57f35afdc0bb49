//go:build !unix

package sif

import (
	"archive/tar"
	"errors"
	"io"
)

// errNeedsUnix: SIF builds write files relative to open folders with
// openat(2) and friends, which only Unix systems have. wm serve, the one
// that builds, runs on Linux; the wm binaries for other systems are for
// students (validate, schema, version).
var errNeedsUnix = errors.New("SIF builds need Linux")

func (x *extractor) file(string, *tar.Header, io.Reader) error { return errNeedsUnix }

func (x *extractor) symlink(string, *tar.Header) error { return errNeedsUnix }
