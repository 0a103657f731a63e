//go:build !linux

package store

// adviseRandom does nothing where memory mappings cannot be listed.
func adviseRandom(string) error { return nil }
