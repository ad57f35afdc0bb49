package sif

import (
	"os/exec"
	"syscall"
)

// inOwnGroup runs cmd in its own process group, killed with the group
// when its context ends, and killed when wm dies.
func inOwnGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
