package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReadSmallFile: readSmallFile reads a file whole, whatever its size
// against its buffer, from a live/ directory (where a short read may end
// it) or by its path, and one read does not change what an earlier one
// returned.
func TestReadSmallFile(t *testing.T) {
	root := t.TempDir()
	f, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dirs := map[string]*liveDir{
		"by path":                     nil,
		"from live/":                  {f: f},
		"from live/, short read ends": {f: f, shortReadEnds: true},
	}
	if err := os.WriteFile(filepath.Join(root, "one"), []byte("0"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, 3000, 16<<10 - 1, 16 << 10, 16<<10 + 1, 50000} {
		want := bytes.Repeat([]byte("0123456789abcdef\n"), size/17+1)[:size]
		name := fmt.Sprintf("f%d", size)
		if err := os.WriteFile(filepath.Join(root, name), want, 0o600); err != nil {
			t.Fatal(err)
		}
		for desc, dir := range dirs {
			var scratch []byte // from its first size, to read across its end
			got, err := readSmallFile(dir, name, filepath.Join(root, name), &scratch)
			if err != nil {
				t.Fatalf("%s, %d bytes: %v", desc, size, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s, %d bytes: read %d bytes that differ", desc, size, len(got))
			}
			again, _ := readSmallFile(dir, "one", filepath.Join(root, "one"), &scratch)
			if !bytes.Equal(got, want) || string(again) != "0" {
				t.Fatalf("%s: a later read changed an earlier one's bytes", desc)
			}
		}
	}
	if _, err := readSmallFile(&liveDir{f: f}, "missing", filepath.Join(root, "missing"), new([]byte)); err == nil || !bytes.Contains([]byte(err.Error()), []byte(filepath.Join(root, "missing"))) {
		t.Errorf("missing file: err = %v, want one naming its path", err)
	}
}

// TestReadSmallFileKeepsAccessTime: reading a file from a live/ directory
// leaves its access time as it was, even where the mount options
// (relatime, the default) would update an access time older than the
// last change.
func TestReadSmallFileKeepsAccessTime(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "fullchain.pem")
	if err := os.WriteFile(path, []byte("chain"), 0o600); err != nil {
		t.Fatal(err)
	}
	mtime := time.Now().Add(-time.Minute).Truncate(time.Second)
	atime := mtime.Add(-time.Hour)
	if err := os.Chtimes(path, atime, mtime); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := &liveDir{f: f, shortReadEnds: true}
	if got, err := readSmallFile(dir, "fullchain.pem", path, new([]byte)); err != nil || string(got) != "chain" {
		t.Fatalf("readSmallFile = %q, %v", got, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if got := time.Unix(st.Atim.Unix()); !got.Equal(atime) {
		t.Errorf("access time after the read = %v, want %v as before", got, atime)
	}
	if dir.atimeRefused {
		t.Errorf("O_NOATIME refused for a file of our own")
	}
}
