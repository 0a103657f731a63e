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
// kernel a walk of the whole path for each file, and where a short read
// is the end of the file (dir.shortReadEnds) the read that would return
// nothing is not made. The contents are copied out of *scratch, which is
// grown as needed and reused by the next call.
//
// Files under dir are opened with O_NOATIME, so that reading them does not
// change their inodes (an access time written back, and journalled, for
// each file the first time it is read after it changed): the kernel allows
// it to the files' owner (certbot's files are root's, and so is the import
// that reads them) or a process with CAP_FOWNER. The first open it refuses
// with EPERM is made again without it, and so are all later ones under dir.
func readSmallFile(dir *liveDir, name, path string, scratch *[]byte) ([]byte, error) {
	dirfd, shortEnds := unix.AT_FDCWD, false
	if dir != nil {
		dirfd, shortEnds = int(dir.f.Fd()), dir.shortReadEnds
	} else {
		name = path
	}
	flags := unix.O_RDONLY | unix.O_CLOEXEC
	if dir != nil && !dir.atimeRefused {
		flags |= unix.O_NOATIME
	}
	fd, err := unix.Openat(dirfd, name, flags, 0)
	for err == unix.EINTR || (err == unix.EPERM && flags&unix.O_NOATIME != 0) {
		if err == unix.EPERM {
			dir.atimeRefused, flags = true, flags&^unix.O_NOATIME
		}
		fd, err = unix.Openat(dirfd, name, flags, 0)
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
		want := cap(buf) - len(buf)
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		buf = buf[:len(buf)+n]
		if n == 0 || (shortEnds && n < want) {
			return append([]byte(nil), buf...), nil
		}
	}
}

// shortReadEnds reports whether dir is on a file system whose reads of a
// regular file return less than asked only at the end of the file: the
// local ones certbot directories live on (ext4, XFS, Btrfs, tmpfs), which
// read through the page cache and stop short only at the file's size.
// Network and FUSE file systems may stop anywhere, and are read to a read
// that returns nothing.
func shortReadEnds(dir *os.File) bool {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(dir.Fd()), &st); err != nil {
		return false
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC:
		return true
	}
	return false
}
