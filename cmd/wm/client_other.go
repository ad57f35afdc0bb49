//go:build !unix

package main

import (
	"context"

	"github.com/whalemountain/wm/reconciler/access"
)

// watchResize is not offered where there is no SIGWINCH: the terminal
// keeps its first size.
func watchResize(context.Context, int) <-chan access.Resize { return nil }
