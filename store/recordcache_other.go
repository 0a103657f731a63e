//go:build !unix

package store

// mapCacheMemory returns size bytes from the Go heap, where the system
// has no anonymous mappings for the cache.
func mapCacheMemory(size int) ([]byte, error) { return make([]byte, size), nil }

// unmapCacheMemory leaves mem to the garbage collector.
func unmapCacheMemory([]byte) error { return nil }
