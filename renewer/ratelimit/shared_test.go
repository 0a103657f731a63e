package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/clocktest"
	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/jackc/pgx/v5"
)

// fleetHost is one host of a test fleet: its own connection pool to the
// shared database, its own clock, its own Limiter.
type fleetHost struct {
	clock *clocktest.Clock
	lim   *ratelimit.Limiter
}

// newFleet returns n hosts sharing the buckets of one account in the
// database at url, each Limiter made when its clock says start plus its
// index in hours (so that no two share a start), then every clock set to
// at.
func newFleet(t testing.TB, url string, n int, cfg ratelimit.LimitsConfig, start, at time.Time) []*fleetHost {
	t.Helper()
	hosts := make([]*fleetHost, n)
	for i := range hosts {
		clock := clocktest.New(start.Add(time.Duration(i) * time.Hour))
		st, err := postgres.Open(context.Background(), postgres.Options{
			URL: url, Clock: clock.Now,
			Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		lim, err := ratelimit.NewSharedLimiter(cfg, clock.Now, st, "account:fleet")
		if err != nil {
			t.Fatal(err)
		}
		hosts[i] = &fleetHost{clock: clock, lim: lim}
	}
	for _, h := range hosts {
		h.clock.Set(at)
	}
	return hosts
}

// TestSharedLimiterOneBudget: three hosts, each with its own Limiter and
// clock (set to the same time, the Limiters made hours apart), spend one
// budget in PostgreSQL: reserving all at once they never take more than
// the burst; a refund on one host is room for another; a certificate not
// issued gives its tokens back to all; a rateLimited answer seen by one
// holds back every host until the CA's Retry-After; failed validations
// charged on one host hold the name back on another, and a valid one
// clears them for all.
func TestSharedLimiterOneBudget(t *testing.T) {
	url := pgtest.New(t)
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	now := start.Add(5 * time.Hour)
	const burst = 7
	cfg := ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: burst, Per: time.Hour}}
	hosts := newFleet(t, url, 3, cfg, start, now)

	var ok atomic.Int32
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			for j := range 2 * burst {
				r := h.lim.Reserve([]string{fmt.Sprintf("n%d-%d.example%d.com", i, j, j)}, ratelimit.OrderNew)
				if r.Err != nil {
					t.Error(r.Err)
				}
				if r.OK {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := ok.Load(); got != burst {
		t.Fatalf("three hosts reserving %d orders each took %d tokens; want the burst, %d", 2*burst, got, burst)
	}
	for i, h := range hosts {
		if b := h.lim.Bucket(ratelimit.LimitNewOrders, ""); b.Tokens != 0 {
			t.Errorf("host %d sees %.2f new-order tokens; want 0", i+1, b.Tokens)
		}
	}

	// A refund on host 1 is one order's room on host 2, and no more.
	a, b, c := hosts[0].lim, hosts[1].lim, hosts[2].lim
	if err := a.Refund([]string{"n0-0.example0.com"}, ratelimit.OrderNew); err != nil {
		t.Fatal(err)
	}
	if r := b.Reserve([]string{"refunded.example.org"}, ratelimit.OrderNew); !r.OK {
		t.Fatalf("host 2 after host 1's refund: %+v; want OK", r)
	}
	r := c.Reserve([]string{"late.example.org"}, ratelimit.OrderNew)
	if r.OK || r.Limit != ratelimit.LimitNewOrders || !r.At.Equal(now.Add(time.Hour/burst)) {
		t.Fatalf("host 3 after the refunded token went: %+v; want held back by %s until the next token at %v", r, ratelimit.LimitNewOrders, now.Add(time.Hour/burst))
	}

	// Not issued on host 2: the exact set's token comes back for host 3.
	set := ratelimit.LimitCertsPerExactSet
	if got := c.Bucket(set, "refunded.example.org").Tokens; got != 4 {
		t.Fatalf("exact-set tokens after host 2's order: %.2f; want 4", got)
	}
	if err := b.NotIssued([]string{"refunded.example.org"}, ratelimit.OrderNew); err != nil {
		t.Fatal(err)
	}
	if got := c.Bucket(set, "refunded.example.org").Tokens; got != 5 {
		t.Fatalf("exact-set tokens seen by host 3 after host 2's not issued: %.2f; want 5", got)
	}

	// Host 3 hears rateLimited: every host waits for the Retry-After.
	for _, h := range hosts {
		h.clock.Advance(time.Hour)
	}
	if id, err := c.RateLimited([]string{"x.example.net"}, "too many new orders (300) from this account", 2*time.Hour); err != nil || id != ratelimit.LimitNewOrders {
		t.Fatalf("RateLimited: %s, %v", id, err)
	}
	r = a.Reserve([]string{"after.example.net"}, ratelimit.OrderNew)
	if want := now.Add(3 * time.Hour); r.OK || !r.At.Equal(want) {
		t.Fatalf("host 1 after host 3's rateLimited: %+v; want held back until %v", r, want)
	}

	// Failed validations charged on host 1 hold the name back on host 2
	// (5 an hour by default); a valid one on host 3 clears the
	// consecutive count for all.
	for range 5 {
		if err := a.AuthzFailed("bad.example.com"); err != nil {
			t.Fatal(err)
		}
	}
	if ok, _ := b.FailuresAllowed("bad.example.com"); ok {
		t.Fatal("host 2 allows a name host 1 failed five times in a minute")
	}
	if err := c.AuthzValid("bad.example.com"); err != nil {
		t.Fatal(err)
	}
	if got := b.Bucket(ratelimit.LimitConsecutiveAuthzFailures, "bad.example.com").Tokens; got != 1152 {
		t.Fatalf("consecutive failures after host 3's valid authorization: %.0f tokens; want full (1152)", got)
	}

	// The status is the fleet's, on every host.
	for i, h := range hosts {
		for _, s := range h.lim.Status() {
			if s.Limit == ratelimit.LimitNewOrders && (len(s.Buckets) != 1 || s.Buckets[0].Tokens != 0 || s.Blocked != 1) {
				t.Errorf("host %d status of %s: %+v; want the drained bucket", i+1, s.Limit, s)
			}
		}
		if h.lim.Changes() != nil {
			t.Errorf("host %d: a shared Limiter has changes to save", i+1)
		}
	}
}

// TestSharedLimiterWaitsOnlyInTheStore: an operation of a shared Limiter
// that waits for buckets another host holds locked holds back nothing
// else on its own host (the store's locks make each operation atomic; the
// Limiter adds no lock of its own around them), and FailuresAllowed,
// which decides nothing, reads without waiting for the lock at all.
func TestSharedLimiterWaitsOnlyInTheStore(t *testing.T) {
	url := pgtest.New(t)
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	lim := newFleet(t, url, 1, ratelimit.LimitsConfig{}, now, now)[0].lim
	for range 5 {
		if err := lim.AuthzFailed("bad.example.com"); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	other, err := postgres.Open(ctx, postgres.Options{URL: url, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	// Another host holds bad.example.com's buckets locked until release.
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	otherDone := make(chan error, 1)
	go func() {
		keys := []store.RateBucket{
			{Limit: string(ratelimit.LimitAuthzFailures), Key: "bad.example.com"},
			{Limit: string(ratelimit.LimitConsecutiveAuthzFailures), Key: "bad.example.com"},
		}
		// The fleet's buckets of the account "account:fleet" (fleetScope).
		otherDone <- other.UpdateRateBuckets(ctx, "fleet:account:fleet", keys, func([]store.RateBucket) ([]store.RateBucket, error) {
			once.Do(func() { close(held) })
			<-release
			return nil, nil
		})
	}()
	<-held
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	waiting := make(chan error, 1)
	go func() { waiting <- lim.AuthzFailed("bad.example.com") }()
	for {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		select {
		case err := <-waiting:
			t.Fatalf("AuthzFailed of a name another host holds locked returned at once: %v", err)
		case <-ctx.Done():
			t.Fatal("AuthzFailed never waited for the buckets another host holds")
		case <-time.After(20 * time.Millisecond):
		}
	}

	// This host's AuthzFailed waits in the database: another name's
	// operation goes through meanwhile, and a read sees the five failures.
	if err := lim.AuthzFailed("good.example.com"); err != nil {
		t.Fatalf("another name while one waits for a lock: %v", err)
	}
	select {
	case err := <-waiting:
		t.Fatalf("the waiting AuthzFailed ended (%v) before another name's went through: the host's operations queue behind one another", err)
	default:
	}
	if ok, _ := lim.FailuresAllowed("bad.example.com"); ok {
		t.Fatal("FailuresAllowed of a name failed five times, its buckets locked by another host: allowed (it waited for the lock and gave up)")
	}
	close(release)
	if err := <-otherDone; err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; err != nil {
		t.Fatalf("the AuthzFailed that waited: %v", err)
	}
}

// TestSharedLimiterOldHosts: the fleet's buckets are apart from the ones
// a Limiter of one host saves for the same account. What a host spent
// before the upgrade counts for the fleet from the first Sweep; a host
// still on the previous version, saving its own copy as it always did
// (the Renewer's save: Changes, then PutRateBuckets under the account's
// scope), cannot hand the fleet back the tokens the fleet spent.
func TestSharedLimiterOldHosts(t *testing.T) {
	url := pgtest.New(t)
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	cfg := ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 5, Per: time.Hour}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	oldClock := clocktest.New(now)
	st, err := postgres.Open(ctx, postgres.Options{URL: url, Clock: oldClock.Now, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	old, err := ratelimit.NewLimiter(cfg, oldClock.Now)
	if err != nil {
		t.Fatal(err)
	}
	spend := func(n int, prefix string) {
		t.Helper()
		for i := range n {
			if r := old.Reserve([]string{fmt.Sprintf("%s%d.example.com", prefix, i)}, ratelimit.OrderNew); !r.OK {
				t.Fatalf("the old host's order %d: %+v", i, r)
			}
		}
		if err := st.PutRateBuckets(ctx, "account:fleet", old.Changes()); err != nil {
			t.Fatal(err)
		}
	}
	spend(3, "before")

	lim := newFleet(t, url, 1, cfg, now, now)[0].lim
	if err := lim.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if r := lim.Reserve([]string{fmt.Sprintf("fleet%d.example.com", i)}, ratelimit.OrderNew); !r.OK {
			t.Fatalf("the fleet's order %d of the 2 the old host left: %+v", i, r)
		}
	}
	if r := lim.Reserve([]string{"fleet2.example.com"}, ratelimit.OrderNew); r.OK {
		t.Fatal("the fleet took a token the host spent before the upgrade")
	}

	// The old host, on its own budget, spends one more and saves: it
	// has spent 4 of 5 as it sees it; the fleet has spent 5.
	spend(1, "after")
	if r := lim.Reserve([]string{"fleet3.example.com"}, ratelimit.OrderNew); r.OK {
		t.Fatal("an old host's save gave the fleet back the tokens it spent")
	}
	if err := lim.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if r := lim.Reserve([]string{"fleet4.example.com"}, ratelimit.OrderNew); r.OK {
		t.Fatal("after the sweep merged the old host's save, the fleet took a token it had spent")
	}
}

// downStore is a shared store whose database cannot be reached.
type downStore struct{}

var errDown = fmt.Errorf("postgres: %w", store.ErrUnavailable)

func (downStore) UpdateRateBuckets(context.Context, string, []store.RateBucket, func([]store.RateBucket) ([]store.RateBucket, error)) error {
	return errDown
}
func (downStore) RateBuckets(context.Context, string) ([]store.RateBucket, error) {
	return nil, errDown
}
func (downStore) PutRateBuckets(context.Context, string, []store.RateBucket) error { return errDown }

// TestSharedLimiterStoreDown: when the fleet's database cannot be reached
// no order is let through: Reserve fails with the store's error (so the
// renewer rests, as for any store failure) instead of spending a budget
// nobody can record.
func TestSharedLimiterStoreDown(t *testing.T) {
	clock := clocktest.New(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	lim, err := ratelimit.NewSharedLimiter(ratelimit.LimitsConfig{}, clock.Now, downStore{}, "account:x")
	if err != nil {
		t.Fatal(err)
	}
	r := lim.Reserve([]string{"a.example.com"}, ratelimit.OrderNew)
	if r.OK || !errors.Is(r.Err, store.ErrUnavailable) {
		t.Fatalf("Reserve with the database down: %+v; want not OK, an error wrapping store.ErrUnavailable", r)
	}
	if lim.Status() != nil {
		t.Error("Status with the database down is not nil")
	}
	if err := lim.Refund([]string{"a.example.com"}, ratelimit.OrderNew); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Refund with the database down: %v", err)
	}
	if _, err := ratelimit.NewSharedLimiter(ratelimit.LimitsConfig{}, clock.Now, nil, "account:x"); err == nil {
		t.Error("NewSharedLimiter accepted a nil store")
	}
}

// BenchmarkSharedReserve measures reservations per second against
// PostgreSQL: each iteration is one Reserve of a new single-name order
// (five buckets locked, read and written in one transaction), from four
// hosts at once.
func BenchmarkSharedReserve(b *testing.B) {
	url := pgtest.New(b)
	now := time.Now()
	cfg := ratelimit.LimitsConfig{
		NewOrders:                ratelimit.Limit{Burst: 1 << 30, Per: time.Hour},
		CertsPerRegisteredDomain: ratelimit.Limit{Burst: 1 << 30, Per: time.Hour},
	}
	hosts := newFleet(b, url, 4, cfg, now, now)
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/len(hosts) + 1
	for i, h := range hosts {
		wg.Go(func() {
			for j := range per {
				if r := h.lim.Reserve([]string{fmt.Sprintf("b%d-%d.example.com", i, j)}, ratelimit.OrderNew); !r.OK {
					b.Errorf("reserve: %+v", r)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "reservations/s")
}

// BenchmarkSharedReserveOneHost measures reservations per second of one
// host's shared Limiter with 8 orders reserving at once (new single-name
// orders, each one transaction): they wait for one another only in the
// database, on the account-wide buckets every new order needs.
func BenchmarkSharedReserveOneHost(b *testing.B) {
	url := pgtest.New(b)
	now := time.Now()
	cfg := ratelimit.LimitsConfig{
		NewOrders:                ratelimit.Limit{Burst: 1 << 30, Per: time.Hour},
		CertsPerRegisteredDomain: ratelimit.Limit{Burst: 1 << 30, Per: time.Hour},
	}
	h := newFleet(b, url, 1, cfg, now, now)[0]
	const workers = 8
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/workers + 1
	for i := range workers {
		wg.Go(func() {
			for j := range per {
				if r := h.lim.Reserve([]string{fmt.Sprintf("w%d-%d.example.com", i, j)}, ratelimit.OrderNew); !r.OK {
					b.Errorf("reserve: %+v", r)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "reservations/s")
}
