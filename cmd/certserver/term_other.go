//go:build !linux

package main

import "io"

// isTerminal reports false: progress bars are drawn on Linux only.
func isTerminal(io.Writer) bool { return false }
