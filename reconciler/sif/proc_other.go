//go:build !linux

package sif

import "os/exec"

// inOwnGroup leaves cmd as exec.CommandContext made it (killed when its
// context ends): SIF builds run on Linux, and the binaries for other
// systems only need to compile.
func inOwnGroup(*exec.Cmd) {}
