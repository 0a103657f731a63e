package store

import (
	"context"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestBadgerRateBuckets: what Badger adds to the contract (the suite,
// storetest, checks the rest): each record expires (a Badger TTL) a second
// after its bucket is full, so that compaction drops it without a sweep of
// ours; buckets survive a reopen; a record this code did not write is
// skipped, and the scope's other buckets still come back.
func TestBadgerRateBuckets(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	dir := t.TempDir()
	s := openTestBadger(t, dir, clock)
	now := clock.Now()
	a := []RateBucket{
		{Limit: "new_orders_per_account", Full: now.Add(3 * time.Hour)},
		{Limit: "certificates_per_registered_domain", Key: "example.com", Full: now.Add(time.Hour)},
	}
	// Badger counts a TTL from the real time of the write, which a loaded
	// machine may put seconds after the test clock's.
	before := time.Now()
	if err := s.PutRateBuckets(ctx, "acct-a", a); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	err := s.db.View(func(txn *badger.Txn) error {
		for _, rb := range a {
			item, err := txn.Get(bucketKey("acct-a", rb.Limit, rb.Key))
			if err != nil {
				return err
			}
			ttl := rb.Full.Sub(now) + time.Second
			lo, hi := uint64(before.Add(ttl).Unix()), uint64(after.Add(ttl).Unix())+1
			if got := item.ExpiresAt(); got < lo || got > hi {
				t.Errorf("%s %s expires at %d, want %d to %d (a second past full)", rb.Limit, rb.Key, got, lo, hi)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check := func(step string, want ...RateBucket) {
		t.Helper()
		got, err := s.RateBuckets(ctx, "acct-a")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: RateBuckets = %+v, want %+v", step, got, want)
		}
		for i := range got {
			if got[i].Limit != want[i].Limit || got[i].Key != want[i].Key || !got[i].Full.Equal(want[i].Full) {
				t.Fatalf("%s: RateBuckets = %+v, want %+v", step, got, want)
			}
		}
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestBadger(t, dir, clock)
	check("after a reopen", a[1], a[0])

	err = s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(key(prefixBucket, "acct-a\x00junk"), []byte("x")); err != nil {
			return err
		}
		return txn.Set(bucketKey("acct-a", "zz", ""), []byte("short"))
	})
	if err != nil {
		t.Fatal(err)
	}
	check("with malformed records", a[1], a[0])
}
