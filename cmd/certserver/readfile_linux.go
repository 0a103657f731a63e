package main

import (
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// readSmallFile returns the contents of the file name in the directory
// dir (path names it in errors; without dir, path is opened), like
// os.ReadFile, with the fewest system calls and the least path walking:
// openat from dir, read until the end into *scratch, close. os.ReadFile
// also stats the file and registers it with the network poller, which
// doubles the system calls of an import that reads two small files per
// certificate; opening from the lineage's parent directory spares the
// kernel a walk of the whole path for each file. The contents are copied
// out of *scratch, which is grown as needed and reused by the next call.
func readSmallFile(dir *os.File, name, path string, scratch *[]byte) ([]byte, error) {
	dirfd := unix.AT_FDCWD
	if dir != nil {
		dirfd = int(dir.Fd())
	} else {
		name = path
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if cap(*scratch) < 16<<10 {
		*scratch = make([]byte, 0, 16<<10)
	}
	buf := (*scratch)[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
			*scratch = buf
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return append([]byte(nil), buf...), nil
		}
		buf = buf[:len(buf)+n]
	}
}
