package postgres_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/jackc/pgx/v5"
)

// TestUpdateRateBucketsAtomic: hosts that update one bucket at the same
// moment, each reading it and writing it a second later, never lose an
// update (each read sees the write before it); a bucket fn removes is
// gone, a write outside the locked buckets is refused, and fn's error
// writes nothing.
func TestUpdateRateBucketsAtomic(t *testing.T) {
	url := pgtest.New(t)
	c := ctx(t)
	hosts := []*postgres.Store{openURL(t, url, nil), openURL(t, url, nil), openURL(t, url, nil)}
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	keys := []store.RateBucket{{Limit: "new_orders_per_account"}, {Limit: "certificates_per_exact_set", Key: "a.example.com"}}
	const perHost = 20
	var wg sync.WaitGroup
	errs := make(chan error, len(hosts)*perHost)
	for _, h := range hosts {
		wg.Go(func() {
			for range perHost {
				errs <- h.UpdateRateBuckets(c, "account:x", keys, func(have []store.RateBucket) ([]store.RateBucket, error) {
					full := start
					for _, b := range have {
						if b.Limit == "new_orders_per_account" {
							full = b.Full
						}
					}
					return []store.RateBucket{{Limit: "new_orders_per_account", Full: full.Add(time.Second)}}, nil
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := hosts[0]
	read := func() time.Time {
		t.Helper()
		var got time.Time
		if err := st.UpdateRateBuckets(c, "account:x", keys[:1], func(have []store.RateBucket) ([]store.RateBucket, error) {
			if len(have) == 1 {
				got = have[0].Full
			}
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got, want := read(), start.Add(time.Duration(len(hosts)*perHost)*time.Second); !got.Equal(want) {
		t.Fatalf("after %d concurrent updates the bucket is full at %v; want %v (an update was lost)", len(hosts)*perHost, got, want)
	}

	boom := errors.New("boom")
	if err := st.UpdateRateBuckets(c, "account:x", keys, func([]store.RateBucket) ([]store.RateBucket, error) {
		return []store.RateBucket{{Limit: "new_orders_per_account", Full: start}}, boom
	}); !errors.Is(err, boom) {
		t.Fatalf("fn's error: got %v", err)
	}
	if err := st.UpdateRateBuckets(c, "account:x", keys[:1], func([]store.RateBucket) ([]store.RateBucket, error) {
		return []store.RateBucket{{Limit: "authorization_failures_per_identifier", Key: "b.example.com", Full: start}}, nil
	}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("a write outside the locked buckets: got %v, want ErrInvalid", err)
	}
	if got, want := read(), start.Add(time.Duration(len(hosts)*perHost)*time.Second); !got.Equal(want) {
		t.Fatalf("a failed update wrote: full at %v, want %v", got, want)
	}
	if err := st.UpdateRateBuckets(c, "account:x", keys[:1], func([]store.RateBucket) ([]store.RateBucket, error) {
		return []store.RateBucket{{Limit: "new_orders_per_account"}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := read(); !got.IsZero() {
		t.Fatalf("a removed bucket reads full at %v", got)
	}
	if err := st.UpdateRateBuckets(c, "", keys, nil); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("empty scope: got %v, want ErrInvalid", err)
	}
}

// TestLockAccountExcludes: while one host holds an account's lock another
// host cannot take it (it waits until its context ends); once released,
// it can. Another account's lock is free meanwhile.
func TestLockAccountExcludes(t *testing.T) {
	url := pgtest.New(t)
	c := ctx(t)
	a, b := openURL(t, url, nil), openURL(t, url, nil)
	unlock, err := a.LockAccount(c, "acct1")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(c, 300*time.Millisecond)
	_, err = b.LockAccount(short, "acct1")
	cancel()
	if err == nil {
		t.Fatal("a second host took an account lock that is held")
	}
	other, err := b.LockAccount(c, "acct2")
	if err != nil {
		t.Fatalf("another account's lock: %v", err)
	}
	other()
	unlock()
	again, err := b.LockAccount(c, "acct1")
	if err != nil {
		t.Fatalf("the released lock: %v", err)
	}
	again()

	// A wait cut off by its context is the one way a session lock could
	// stay behind on a pooled connection (granted as the wait was
	// cancelled): after it, and the holder's unlock, a third host takes
	// the lock without waiting on anyone, and once it lets go no
	// advisory lock of the account class is left, granted or waited for.
	unlock, err = a.LockAccount(c, "acct1")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel = context.WithTimeout(c, 300*time.Millisecond)
	_, err = b.LockAccount(short, "acct1")
	cancel()
	if err == nil {
		t.Fatal("a second host took an account lock that is held")
	}
	unlock()
	third, err := openURL(t, url, nil).LockAccount(c, "acct1")
	if err != nil {
		t.Fatalf("a third host, after a cancelled wait and the unlock: %v", err)
	}
	third()
	conn, err := pgx.Connect(c, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// A connection closed by the client ends its session soon after, not
	// at once: poll (on a loaded machine, for long).
	var left int
	for {
		if err := conn.QueryRow(c, `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND objsubid = 2 AND classid::bigint = $1`, int64(0x61636374)).Scan(&left); err != nil {
			t.Fatalf("pg_locks: %v", err)
		}
		if left == 0 {
			break
		}
		select {
		case <-c.Done():
			t.Fatalf("%d advisory locks of the account class left after every host let go", left)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
