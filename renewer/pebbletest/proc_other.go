//go:build !linux

package pebbletest

import "os/exec"

// setParentDeathSignal does nothing where the kernel offers no parent-death
// signal: pebble is stopped by t.Cleanup only.
func setParentDeathSignal(*exec.Cmd) {}
