package docker_test

import (
	"flag"
	"os"
	"strconv"
	"testing"
)

// minParallel is how many tests run at once unless -parallel says
// otherwise: the real engine's tests wait on the daemon, not on the CPU, so
// GOMAXPROCS (the default) leaves the daemon idle on small machines.
const minParallel = 4

func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if p := flag.Lookup("test.parallel"); !set && p != nil && p.Value.(flag.Getter).Get().(int) < minParallel {
		p.Value.Set(strconv.Itoa(minParallel))
	}
	os.Exit(m.Run())
}
