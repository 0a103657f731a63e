package store

import (
	"context"
	"fmt"
	"testing"
)

func TestSize(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	b, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(t), Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := b.PutCertificate(context.Background(), testCert(clock, fmt.Sprintf("n%d.example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Closing flushed the memtable into a table on disk.
	b = openTestBadger(t, dir, clock)
	lsm, vlog := b.Size()
	if lsm <= 0 || vlog <= 0 {
		t.Fatalf("Size() = %d, %d; want both positive after writes and a reopen", lsm, vlog)
	}
}
