package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// TestRateBuckets: buckets are kept per scope until they are full again,
// rewritten in place, removed when written full, survive a reopen, and
// bad input is refused with nothing written.
func TestRateBuckets(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	dir := t.TempDir()
	s := openTestBadger(t, dir, clock)
	now := clock.Now()
	a := []RateBucket{
		{Limit: "new_orders_per_account", Full: now.Add(3 * time.Hour)},
		{Limit: "certificates_per_registered_domain", Key: "example.com", Full: now.Add(time.Hour)},
		{Limit: "certificates_per_exact_set", Key: "a.example.com,b.example.com", Full: now.Add(2 * time.Minute)},
		{Limit: "authorization_failures_per_identifier", Key: "a.example.com", Full: now.Add(-time.Second)}, // full: not kept
	}
	if err := s.PutRateBuckets(ctx, "acct-a", a); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRateBuckets(ctx, "acct-b", []RateBucket{{Limit: "new_orders_per_account", Full: now.Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	check := func(scope string, want ...RateBucket) {
		t.Helper()
		got, err := s.RateBuckets(ctx, scope)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			got[i].Full = got[i].Full.UTC()
		}
		for i := range want {
			want[i].Full = want[i].Full.UTC()
		}
		if len(got) != len(want) || len(want) > 0 && !reflect.DeepEqual(got, want) {
			t.Fatalf("RateBuckets(%s) = %+v, want %+v", scope, got, want)
		}
	}
	check("acct-a", a[2], a[1], a[0]) // key order

	// Each record expires (Badger TTL) a second after its bucket is full,
	// so compaction drops it without a sweep of ours.
	err := s.db.View(func(txn *badger.Txn) error {
		for _, rb := range a[:3] {
			item, err := txn.Get(bucketKey("acct-a", rb.Limit, rb.Key))
			if err != nil {
				return err
			}
			want := uint64(rb.Full.Add(time.Second).Unix())
			if got := item.ExpiresAt(); got < want-1 || got > want+1 {
				t.Errorf("%s %s expires at %d, want %d", rb.Limit, rb.Key, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	check("acct-b", RateBucket{Limit: "new_orders_per_account", Full: now.Add(time.Minute)})
	check("acct") // a prefix of another scope holds nothing

	// Rewritten later, and one written full (removed).
	a[0].Full = now.Add(4 * time.Hour)
	a[1].Full = now
	if err := s.PutRateBuckets(ctx, "acct-a", a[:2]); err != nil {
		t.Fatal(err)
	}
	check("acct-a", a[2], a[0])

	// Full again with time: gone.
	clock.Advance(2 * time.Minute)
	check("acct-a", a[0])

	// Kept across a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestBadger(t, dir, clock)
	check("acct-a", a[0])

	// Bad input changes nothing.
	for _, tc := range []struct {
		scope string
		b     RateBucket
	}{
		{"", RateBucket{Limit: "x", Full: now.Add(time.Hour)}},
		{"a\x00b", RateBucket{Limit: "x", Full: now.Add(time.Hour)}},
		{"acct-a", RateBucket{Limit: "", Full: now.Add(time.Hour)}},
		{"acct-a", RateBucket{Limit: "x\x00", Full: now.Add(time.Hour)}},
		{"acct-a", RateBucket{Limit: "x", Key: "k\x00", Full: now.Add(time.Hour)}},
	} {
		err := s.PutRateBuckets(ctx, tc.scope, []RateBucket{{Limit: "ok", Full: now.Add(time.Hour)}, tc.b})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("PutRateBuckets(%q, %+v) = %v, want ErrInvalid", tc.scope, tc.b, err)
		}
	}
	check("acct-a", a[0])

	// A record this code did not write (no separator, a short value) is
	// skipped; the scope's other buckets still come back.
	err = s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(key(prefixBucket, "acct-a\x00junk"), []byte("x")); err != nil {
			return err
		}
		return txn.Set(bucketKey("acct-a", "zz", ""), []byte("short"))
	})
	if err != nil {
		t.Fatal(err)
	}
	check("acct-a", a[0])
	if _, err := s.RateBuckets(ctx, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("RateBuckets(\"\") = %v, want ErrInvalid", err)
	}
}

// TestRateBucketsMany: more buckets than one write batch holds.
func TestRateBucketsMany(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	bs := make([]RateBucket, 2*bucketBatch+7)
	for i := range bs {
		bs[i] = RateBucket{Limit: "authorization_failures_per_identifier", Key: fmt.Sprintf("n%05d.example.com", i), Full: clock.Now().Add(time.Hour)}
	}
	if err := s.PutRateBuckets(ctx, "acct", bs); err != nil {
		t.Fatal(err)
	}
	got, err := s.RateBuckets(ctx, "acct")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(bs) || got[0].Key != bs[0].Key || got[len(got)-1].Key != bs[len(bs)-1].Key {
		t.Fatalf("RateBuckets: %d buckets, want %d", len(got), len(bs))
	}
}
