//go:build !linux

package main

import "os"

// readSmallFile returns the contents of the file at path.
func readSmallFile(path string) ([]byte, error) { return os.ReadFile(path) }
