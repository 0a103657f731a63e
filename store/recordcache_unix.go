//go:build unix

package store

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// mapCacheMemory returns size bytes of anonymous memory, outside the Go
// heap: the kernel gives the pages as they are first written, so a cache
// costs only what it has filled.
func mapCacheMemory(size int) ([]byte, error) {
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("record cache: map %d bytes: %w", size, err)
	}
	return mem, nil
}

// unmapCacheMemory gives back what mapCacheMemory returned.
func unmapCacheMemory(mem []byte) error {
	if mem == nil {
		return nil
	}
	if err := unix.Munmap(mem); err != nil {
		return fmt.Errorf("record cache: unmap: %w", err)
	}
	return nil
}
