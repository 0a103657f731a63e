//go:build linux

package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadgerAdvisesRandomReads checks that every memory mapping of the
// store's value log and tables carries the kernel's random-read advice
// ("rr" in /proc/self/smaps VmFlags), so that a page fault in them reads
// one page rather than the disk's read-ahead around it.
func TestBadgerAdvisesRandomReads(t *testing.T) {
	dir := t.TempDir()
	b, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(t), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	// adviseLoop runs at once after the open; poll for its effect.
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, missing, err := storeMappingsWithout(real+string(filepath.Separator), "rr")
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 && len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d mappings of the store's .vlog and .sst files, these without random-read advice: %v", n, missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storeMappingsWithout returns how many of this process's mappings of
// .vlog and .sst files under prefix there are, and those whose VmFlags in
// /proc/self/smaps lack flag.
func storeMappingsWithout(prefix, flag string) (int, []string, error) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, nil, err
	}
	n, missing, current := 0, []string(nil), ""
	for line := range strings.SplitSeq(string(smaps), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 6 && strings.Contains(f[0], "-") && strings.HasPrefix(f[5], prefix) &&
			(strings.HasSuffix(f[5], ".vlog") || strings.HasSuffix(f[5], ".sst")):
			current = f[5]
			n++
		case len(f) >= 1 && strings.Contains(f[0], "-") && len(f) >= 5 && !strings.HasSuffix(f[0], ":"):
			current = "" // another mapping's header
		case len(f) >= 1 && f[0] == "VmFlags:" && current != "":
			found := false
			for _, fl := range f[1:] {
				found = found || fl == flag
			}
			if !found {
				missing = append(missing, fmt.Sprintf("%s (%s)", current, strings.Join(f[1:], " ")))
			}
			current = ""
		}
	}
	return n, missing, nil
}
