package pebbletest

import (
	"os/exec"
	"syscall"
)

// setParentDeathSignal makes the kernel kill pebble when the test binary
// dies without running its cleanups (a panic in another goroutine, a
// timeout, SIGKILL), so no CA outlives its test.
func setParentDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
