//go:build linux

package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// adviseRandom tells the kernel that this process reads its memory
// mappings of the Badger files in dir, the tables (.sst) and the value
// log (.vlog), at random (madvise MADV_RANDOM): a page fault then reads
// that page alone. Without it every fault reads the device's read-ahead
// around the page (read_ahead_kb, often 128 KiB and up to several MiB on
// virtual disks), and a lookup that misses the page cache reads that much
// to use one record; under a memory limit smaller than the store those
// reads push out the pages other lookups need. Badger has no option for
// it. Mappings that disappear meanwhile are skipped; it reports the
// first other failure.
func adviseRandom(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	prefix := abs + string(filepath.Separator)
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	var first error
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		path := f[5]
		if !strings.HasPrefix(path, prefix) || !(strings.HasSuffix(path, ".sst") || strings.HasSuffix(path, ".vlog")) {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if !ok || err1 != nil || err2 != nil || end <= start {
			continue
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_RANDOM)
		if errno != 0 && !errors.Is(errno, unix.ENOMEM) && first == nil { // ENOMEM: unmapped since
			first = fmt.Errorf("madvise %s: %w", path, errno)
		}
	}
	return first
}
