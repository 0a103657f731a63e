package store

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestBadgerCertChangesSurviveRestart: the history is written with the
// records, so a restart keeps the epoch and the history and a reader's
// cursor stays good. (The suite, storetest, checks what each write lists.)
func TestBadgerCertChangesSurviveRestart(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	dir := t.TempDir()
	b := openTestBadger(t, dir, clock)
	start, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	if len(start.Next.Epoch) != 16 || start.Next.Version != 0 {
		t.Fatalf("a new store: cursor %+v, want an epoch of 16 hex digits at version 0", start.Next)
	}
	for range 2 { // a new record, then its replacement: one change
		if err := b.PutCertificate(ctx, testCert(clock, "www.example.com")); err != nil {
			t.Fatal(err)
		}
	}
	cur, err := b.CertChanges(ctx, start.Next)
	if err != nil || cur.Reset || len(cur.Names) != 1 {
		t.Fatalf("before the restart: %+v, %v; want www.example.com", cur, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTestBadger(t, dir, clock)
	if err := b.PutCertificate(ctx, testCert(clock, "www.example.com")); err != nil {
		t.Fatal(err)
	}
	got, err := b.CertChanges(ctx, cur.Next)
	if err != nil || got.Reset || !slices.Equal(got.Names, []string{"www.example.com"}) || got.Next.Epoch != start.Next.Epoch {
		t.Fatalf("after a restart: %+v, %v; want www.example.com in epoch %s", got, err, start.Next.Epoch)
	}
	if got, err := b.CertChanges(ctx, start.Next); err != nil || got.Reset || len(got.Names) != 1 {
		t.Fatalf("from before the restart's first write: %+v, %v; want www.example.com once", got, err)
	}
}

func TestBadgerCertChangesBounded(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	first, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	// MaxChangeWrites writes of one name each, then one more.
	write := func(n int) {
		t.Helper()
		err := b.update(ctx, func(txn *badger.Txn) error {
			for range n {
				if err := recordChange(txn, []string{"churn.example.com"}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	write(MaxChangeWrites)
	if got, _ := b.CertChanges(ctx, first.Next); got.Reset || !slices.Equal(got.Names, []string{"churn.example.com"}) {
		t.Fatalf("exactly MaxChangeWrites behind: %+v, want churn.example.com", got)
	}
	write(1)
	if got, _ := b.CertChanges(ctx, first.Next); !got.Reset {
		t.Fatalf("one write more than kept: %+v, want a reset", got)
	}
	txn := b.db.NewTransaction(false)
	defer txn.Discard()
	if _, err := txn.Get(changeKey(1)); err == nil {
		t.Errorf("the oldest write is still stored past the bound")
	}

	// One write of more than MaxChanges names is kept as a reset.
	many := make([]string, MaxChanges+1)
	for i := range many {
		many[i] = "m" + strconv.Itoa(i) + ".example.com"
	}
	before, _ := b.CertChanges(ctx, Cursor{})
	if err := b.update(ctx, func(txn *badger.Txn) error { return recordChange(txn, many) }); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.CertChanges(ctx, before.Next); !got.Reset || got.Next.Version != before.Next.Version+1 {
		t.Fatalf("one write of %d names: %+v, want a reset at the next version", len(many), got)
	}
}

// TestBadgerPutCertificatesOneEntry: a batch is one write of the history
// (MaxChangeWrites counts writes), however many certificates it replaces.
func TestBadgerPutCertificatesOneEntry(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	cs := make([]*Certificate, 1000)
	for i := range cs {
		cs[i] = testCert(clock, "r"+strconv.Itoa(i)+".test")
	}
	if err := b.PutCertificates(ctx, cs); err != nil {
		t.Fatal(err)
	}
	poll, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutCertificates(ctx, cs); err != nil {
		t.Fatal(err)
	}
	got, err := b.CertChanges(ctx, poll.Next)
	if err != nil {
		t.Fatal(err)
	}
	if got.Reset || len(got.Names) != 1000 || got.Next.Version != poll.Next.Version+1 {
		t.Fatalf("a batch replacing 1,000 certificates: reset %v, %d names, version %d; want 1,000 names at version %d",
			got.Reset, len(got.Names), got.Next.Version, poll.Next.Version+1)
	}
}
