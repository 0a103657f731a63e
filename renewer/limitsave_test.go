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

	"github.com/certserver/certserver/store"
)

// TestLimiterChangesRestore: Changes hands out every bucket written since
// the last call, once; a new Limiter given them back holds the account to
// what the old one spent; full buckets, unknown limits and times from a
// clock that jumped are handled.
func TestLimiterChangesRestore(t *testing.T) {
	cfg := LimitsConfig{NewOrders: Limit{Burst: 3, Per: 3 * time.Hour}, AuthzFailures: Limit{Burst: 5, Per: time.Hour}}
	old, clock := newTestLimiter(t, cfg)
	if c := old.Changes(); c != nil {
		t.Fatalf("Changes of a new Limiter = %+v, want none", c)
	}
	for range 3 {
		if r := old.Reserve([]string{"a.example.com"}, OrderNew); !r.OK {
			t.Fatalf("Reserve within the burst: %+v", r)
		}
	}
	old.AuthzFailed("b.example.com")
	old.AuthzValid("c.example.com") // no bucket: no change
	changes := old.Changes()
	keys := make([]string, 0, len(changes))
	for _, c := range changes {
		keys = append(keys, c.Limit+"/"+c.Key)
	}
	slices.Sort(keys)
	want := []string{
		"authorization_failures_per_identifier/b.example.com",
		"certificates_per_exact_set/a.example.com",
		"certificates_per_registered_domain/example.com",
		"consecutive_authorization_failures_per_identifier/b.example.com",
		"new_orders_per_account/",
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("Changes = %v, want %v", keys, want)
	}
	for _, c := range changes {
		if c.Limit == string(LimitNewOrders) && !c.Full.Equal(clock.Now().Add(3*time.Hour)) {
			t.Errorf("new orders bucket full at %v, want %v (three of three spent)", c.Full, clock.Now().Add(3*time.Hour))
		}
	}
	if c := old.Changes(); c != nil {
		t.Fatalf("second Changes = %+v, want none", c)
	}

	// A consecutive-failures bucket that a valid authorization empties is
	// a change to "full now", so that its saved copy goes.
	old.AuthzValid("b.example.com")
	if c := old.Changes(); len(c) != 1 || c[0].Limit != string(LimitConsecutiveAuthzFailures) || c[0].Full.After(clock.Now()) {
		t.Fatalf("Changes after AuthzValid = %+v, want the consecutive bucket full now", c)
	}

	// A restart an hour later: the new Limiter starts where the old one
	// is, one token refilled.
	clock.Advance(time.Hour)
	restarted, err := NewLimiter(cfg, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	restarted.Restore(changes)
	if c := restarted.Changes(); c != nil {
		t.Fatalf("Changes after Restore = %+v, want none (restoring is not a change)", c)
	}
	if r := restarted.Reserve([]string{"d.example.net"}, OrderNew); !r.OK {
		t.Fatalf("first order after the restart: %+v, want the refilled token", r)
	}
	r := restarted.Reserve([]string{"e.example.net"}, OrderNew)
	if r.OK || r.Limit != LimitNewOrders || !r.At.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("second order after the restart: %+v, want held back an hour by %s", r, LimitNewOrders)
	}
	if ok, _ := restarted.FailuresAllowed("b.example.com"); !ok {
		t.Error("one failure of five restored: FailuresAllowed = false")
	}
	if b := restarted.Bucket(LimitAuthzFailures, "b.example.com"); b.Tokens != 5 {
		t.Errorf("failure bucket an hour after one failure of 5/h: %v tokens, want 5 (full)", b.Tokens)
	}

	// Full buckets, unknown limits, account-wide limits with a key,
	// keyed limits without one and limits now unlimited are skipped; a
	// clock that jumped is cut to the horizon, and the cut is a change
	// (the saved copy is mended); a later time already held wins.
	fresh, err := NewLimiter(LimitsConfig{NewOrders: cfg.NewOrders, OrderRequests: Limit{Burst: -1}}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	fresh.Restore([]store.RateBucket{
		{Limit: string(LimitNewOrders), Full: now.Add(-time.Minute)},
		{Limit: "no_such_limit", Key: "x", Full: now.Add(time.Hour)},
		{Limit: string(LimitNewOrders), Key: "x", Full: now.Add(time.Hour)},
		{Limit: string(LimitOrderRequests), Full: now.Add(time.Hour)}, // unlimited now
		{Limit: string(LimitAuthzFailures), Key: "", Full: now.Add(time.Hour)},
		{Limit: string(LimitCertsPerRegisteredDomain), Key: "example.org", Full: now.Add(400 * 24 * time.Hour)},
	})
	if st := fresh.Bucket(LimitNewOrders, ""); st.Tokens != 3 {
		t.Errorf("a saved bucket full already: %v tokens, want 3", st.Tokens)
	}
	if r := fresh.Reserve([]string{"a.example.net"}, OrderNew); !r.OK {
		t.Errorf("a limit now unlimited still holds orders back: %+v", r)
	}
	for _, s := range fresh.Status() {
		if s.Limit != LimitCertsPerRegisteredDomain && s.Limit != LimitNewOrders && s.Limit != LimitCertsPerExactSet && s.Tracked != 0 {
			t.Errorf("%s tracks %d buckets after skipped restores", s.Limit, s.Tracked)
		}
	}
	wantFull := now.Add(LetsEncryptLimits().CertsPerRegisteredDomain.Per + restoreHorizon)
	if st := fresh.Bucket(LimitCertsPerRegisteredDomain, "example.org"); !st.Full.Equal(wantFull) {
		t.Errorf("a time 400 days out: full at %v, want cut to %v", st.Full, wantFull)
	}
	var mended bool
	for _, c := range fresh.Changes() {
		if c.Limit == string(LimitCertsPerRegisteredDomain) && c.Key == "example.org" && c.Full.Equal(wantFull) {
			mended = true
		}
	}
	if !mended {
		t.Error("the cut bucket is not among the changes: its saved copy would stay 400 days out")
	}
	fresh.Restore([]store.RateBucket{{Limit: string(LimitCertsPerRegisteredDomain), Key: "example.org", Full: now.Add(time.Hour)}})
	if st := fresh.Bucket(LimitCertsPerRegisteredDomain, "example.org"); !st.Full.Equal(wantFull) {
		t.Errorf("an earlier saved time replaced a later one held: full at %v, want %v", st.Full, wantFull)
	}
}

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
	limits := LimitsConfig{NewOrders: Limit{Burst: 2, Per: 2 * time.Hour}}
	start := func(st store.Store) (*Renewer, *scriptedIssuer, *Limiter, func()) {
		lim, err := NewLimiter(limits, nil)
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
			return b.Limit == string(LimitNewOrders) && b.Full.After(time.Now().Add(limits.NewOrders.Per-time.Minute))
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
	var lim *Limiter
	_, iss, lim, stop = start(st)
	defer stop()
	waitFor(t, 10*time.Second, "the third name held back", func() bool {
		d := getDomain(t, st, "c.example.net")
		return d.State == store.StatePending && d.NextAttempt.After(time.Now().Add(50*time.Minute))
	})
	if n := iss.orderCount(); n != 0 {
		t.Fatalf("after the restart: %d orders, want none (the bucket was spent before it)", n)
	}
	if b := lim.Bucket(LimitNewOrders, ""); b.Tokens >= 1 || b.Available.Before(time.Now().Add(50*time.Minute)) {
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
	lim, err := NewLimiter(LimitsConfig{NewOrders: Limit{Burst: 5, Per: time.Hour}}, nil)
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
	pending := make([]map[savedKey]store.RateBucket, 1)

	if !lim.Reserve([]string{"a.example.com"}, OrderNew).OK {
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

	lim.Reserve([]string{"b.example.com"}, OrderNew)
	st.fails.Store(1)
	st.err = fmt.Errorf("bad key: %w", store.ErrInvalid)
	r.saveLimits(ctx, pending)
	puts := st.puts.Load()
	r.saveLimits(ctx, pending)
	if st.puts.Load() != puts {
		t.Errorf("buckets the store refused as invalid were sent again")
	}

	// Stopping saves what was spent since the last tick.
	if !lim.Reserve([]string{"c.example.com"}, OrderNew).OK {
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
