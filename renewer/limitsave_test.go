package renewer

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// TestLimitsSurviveRestart: the renewer saves what its Limiter spends in
// the store within a second, and a renewer started afresh on the reopened
// store (a restart) holds its orders to what the first one spent: the
// third name of a 2-per-hour account waits for the bucket instead of
// getting a fresh burst.
func TestLimitsSurviveRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	open := func() *store.Badger {
		st, err := store.OpenBadger(dir, store.BadgerOptions{Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	limits := ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 2, Per: 2 * time.Hour}}
	start := func(st store.Store) (*Renewer, *scriptedIssuer, *ratelimit.Limiter, func()) {
		lim, err := ratelimit.NewLimiter(limits, nil)
		if err != nil {
			t.Fatal(err)
		}
		iss := &scriptedIssuer{life: 90 * 24 * time.Hour, notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }}
		r, err := New(Config{Workers: 2, IdleWait: 50 * time.Millisecond, Seed: 3, CAs: []CA{{Issuer: iss, Limiter: lim}}}, st, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		return r, iss, lim, func() {
			cancel()
			<-done
		}
	}

	st := open()
	addPending(t, st, time.Now(), "a.example.test", "b.example.org")
	_, iss, _, stop := start(st)
	waitFor(t, 10*time.Second, "two names issued", func() bool {
		return getDomain(t, st, "a.example.test").State == store.StateValid && getDomain(t, st, "b.example.org").State == store.StateValid
	})
	// Saved within a second, without waiting for the shutdown: a crash
	// would keep it too.
	scope := "ca:1"
	waitFor(t, 3*time.Second, "the spent bucket saved", func() bool {
		bs, err := st.RateBuckets(context.Background(), scope)
		return err == nil && slices.ContainsFunc(bs, func(b store.RateBucket) bool {
			return b.Limit == string(ratelimit.LimitNewOrders) && b.Full.After(time.Now().Add(limits.NewOrders.Per-time.Minute))
		})
	})
	stop()
	if n := iss.orderCount(); n != 2 {
		t.Fatalf("first run: %d orders, want 2", n)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = open()
	t.Cleanup(func() { st.Close() })
	addPending(t, st, time.Now(), "c.example.net")
	var lim *ratelimit.Limiter
	_, iss, lim, stop = start(st)
	defer stop()
	waitFor(t, 10*time.Second, "the third name held back", func() bool {
		d := getDomain(t, st, "c.example.net")
		return d.State == store.StatePending && d.NextAttempt.After(time.Now().Add(50*time.Minute))
	})
	if n := iss.orderCount(); n != 0 {
		t.Fatalf("after the restart: %d orders, want none (the bucket was spent before it)", n)
	}
	if b := lim.Bucket(ratelimit.LimitNewOrders, ""); b.Tokens >= 1 || b.Available.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("restored new-orders bucket: %.2f tokens, next at %v; want empty for about an hour", b.Tokens, b.Available)
	}
}

// flakyStore fails PutRateBuckets with err while fails is above zero.
type flakyStore struct {
	store.Store
	fails atomic.Int32
	err   error
	puts  atomic.Int32
}

func (f *flakyStore) PutRateBuckets(ctx context.Context, scope string, bs []store.RateBucket) error {
	f.puts.Add(1)
	if f.fails.Add(-1) >= 0 {
		return f.err
	}
	return f.Store.PutRateBuckets(ctx, scope, bs)
}

// TestSaveLimits: a save that fails keeps the buckets for the next one; a
// bucket the store refuses as invalid is dropped rather than retried for
// ever; the saver saves once more when it stops.
func TestSaveLimits(t *testing.T) {
	ctx := context.Background()
	st := &flakyStore{Store: openStore(t), err: errors.New("disk full")}
	lim, err := ratelimit.NewLimiter(ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 5, Per: time.Hour}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour}
	r, err := New(Config{CAs: []CA{{Issuer: iss, Limiter: lim}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	saved := func() []store.RateBucket {
		t.Helper()
		bs, err := st.RateBuckets(ctx, "ca:1")
		if err != nil {
			t.Fatal(err)
		}
		return bs
	}
	pending := make([]map[savedBucket]store.RateBucket, 1)

	if !lim.Reserve([]string{"a.example.com"}, ratelimit.OrderNew).OK {
		t.Fatal("no token for the first order")
	}
	st.fails.Store(1)
	r.saveLimits(ctx, pending)
	if bs := saved(); len(bs) != 0 {
		t.Fatalf("after a failed save the store holds %+v", bs)
	}
	r.saveLimits(ctx, pending) // nothing changed since: the kept buckets go
	if bs := saved(); len(bs) != 3 {
		t.Fatalf("after the retry the store holds %+v, want the 3 buckets of the first order", bs)
	}

	lim.Reserve([]string{"b.example.com"}, ratelimit.OrderNew)
	st.fails.Store(1)
	st.err = fmt.Errorf("bad key: %w", store.ErrInvalid)
	r.saveLimits(ctx, pending)
	puts := st.puts.Load()
	r.saveLimits(ctx, pending)
	if st.puts.Load() != puts {
		t.Errorf("buckets the store refused as invalid were sent again")
	}

	// Stopping saves what was spent since the last tick.
	if !lim.Reserve([]string{"c.example.com"}, ratelimit.OrderNew).OK {
		t.Fatal("no token for the third order")
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.saveLimitsEvery(sctx, time.Hour)
	}()
	cancel()
	<-done
	var got bool
	for _, b := range saved() {
		if b.Key == "c.example.com" {
			got = true
		}
	}
	if !got {
		t.Errorf("the last save at stop did not write the last order's buckets: %+v", saved())
	}
}

// TestRunOnce: a second Run while one runs returns an error at once.
func TestRunOnce(t *testing.T) {
	r, err := New(Config{IdleWait: 10 * time.Millisecond, CAs: []CA{{Issuer: &scriptedIssuer{}}}}, openStore(t), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	waitFor(t, 5*time.Second, "the first Run to start", func() bool { return r.running.Load() })
	if err := r.Run(ctx); err == nil || !strings.Contains(err.Error(), "while it runs") {
		t.Errorf("second Run = %v, want an error", err)
	}
	cancel()
	<-done
	if err := r.Run(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after the first one ended = %v, want it to run (and stop: its context is done)", err)
	}
}
