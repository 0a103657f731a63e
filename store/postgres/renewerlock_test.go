package postgres_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// lockContender is one host contending for the renewer lock.
type lockContender struct {
	store *postgres.Store
	held  atomic.Bool
	done  chan error
}

// TestRenewerLockOneHolder: two hosts contend for the fleet's renewer
// lock; exactly one holds it, and never both at once. When the holder's
// store is closed (its session ends), PostgreSQL releases the lock and the
// other host takes the role over.
func TestRenewerLockOneHolder(t *testing.T) {
	url := pgtest.New(t)
	c := ctx(t)
	var mu sync.Mutex
	holders, overlaps := 0, 0
	var cs [2]*lockContender
	for i := range cs {
		lc := &lockContender{store: openURL(t, url, nil), done: make(chan error, 1)}
		cs[i] = lc
		go func() {
			lc.done <- lc.store.HoldRenewerLock(c, func(held bool) {
				mu.Lock()
				defer mu.Unlock()
				if held {
					holders++
					if holders > 1 {
						overlaps++
					}
				} else {
					holders--
				}
				lc.held.Store(held)
			})
		}()
	}
	holder := func() (int, int) {
		n, who := 0, -1
		for i, lc := range cs {
			if lc.held.Load() {
				n, who = n+1, i
			}
		}
		return n, who
	}
	poll(t, "one contender holding the lock", func() bool { n, _ := holder(); return n == 1 })
	_, first := holder()
	other := cs[1-first]

	// The other contender asks again every few seconds while the first
	// holds: it must keep being refused. Another session of the same
	// database is refused too.
	if tryRenewerLock(t, url) {
		t.Fatal("a third session took the renewer lock while a contender held it")
	}

	if err := cs[first].store.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-cs[first].done:
		if err != nil {
			t.Errorf("HoldRenewerLock after Close: %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatal("HoldRenewerLock did not return after its store was closed")
	}
	if cs[first].held.Load() {
		t.Error("the closed store's contender still believes it holds the lock")
	}
	poll(t, "the other contender taking the lock over", other.held.Load)
	mu.Lock()
	defer mu.Unlock()
	if overlaps != 0 || holders != 1 {
		t.Errorf("holders now %d, overlaps seen %d: want exactly one holder, never two", holders, overlaps)
	}
}

// tryRenewerLock reports whether another session of the database at url
// can take the renewer lock ("renw") now; the session ends at once.
func tryRenewerLock(t *testing.T, url string) bool {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var got bool
	if err := conn.QueryRow(ctx(t), "SELECT pg_try_advisory_lock($1)", int64(0x72656e77)).Scan(&got); err != nil {
		t.Fatal(err)
	}
	return got
}

// poll waits for cond, failing t after wait.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", wait, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
