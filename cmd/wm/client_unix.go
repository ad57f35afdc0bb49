//go:build unix

package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/whalemountain/wm/reconciler/access"
)

// watchResize sends the terminal fd's new size on each SIGWINCH until ctx
// is done.
func watchResize(ctx context.Context, fd int) <-chan access.Resize {
	ch := make(chan access.Resize, 1)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGWINCH)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				if w, h, err := term.GetSize(fd); err == nil {
					select {
					case ch <- access.Resize{Rows: uint(h), Cols: uint(w)}:
					default:
					}
				}
			}
		}
	}()
	return ch
}
