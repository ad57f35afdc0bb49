package dockertest

import (
	"net"
	"sync"
	"testing"
)

// handedOut are the host ports FreePorts returned in this process; none is
// returned twice, so parallel tests never collide with each other.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePorts returns n distinct TCP ports that were free on all addresses a
// moment ago: the kernel picks them (listen on :0), so parallel test
// processes are very unlikely to get the same ones.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatalf("dockertest: find a free port: %v", err)
		}
		// Holding every listener until the end keeps the n ports distinct.
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			ports = append(ports, port)
		}
	}
	return ports
}
