package certserver

import (
	"io/fs"
	"strconv"
	"syscall"
)

func itoa(i int) string { return strconv.Itoa(i) }

// fileGID returns the group ID of a file.
func fileGID(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Gid)
	}
	return -1
}
