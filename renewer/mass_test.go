package renewer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// TestMassRenewalPaced: 2,000 certificates whose CA moves every renewal
// window into the past. The polls find it; then the real dispatcher
// renews all 2,000, earliest expiry first, each naming the certificate it
// replaces, at the pace of the account's OrderRequests bucket (50 a
// second, bursts of 20) and never faster: any 21 orders in a row span at
// least 20 refill intervals. The fake clock moves only when a worker
// waits for the bucket.
func TestMassRenewalPaced(t *testing.T) {
	t.Parallel()
	const (
		n     = 2000
		burst = 20
		per   = 400 * time.Millisecond // 50 a second
	)
	st := badgerStore(t)
	clock := newFakeClock(time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC))
	ca := newFakeCA("https://ca.example.test/dir", clock)
	lim, err := ratelimit.NewLimiter(ratelimit.LimitsConfig{OrderRequests: ratelimit.Limit{Burst: burst, Per: per}}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Workers: 1, IdleWait: 10 * time.Millisecond, Now: clock.Now, Seed: 3,
		CAs: []CA{{Issuer: ca, Limiter: lim, OffersARI: true}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	r.sleep = func(ctx context.Context, d time.Duration) error {
		clock.Advance(d)
		return ctx.Err()
	}

	ctx := context.Background()
	now := clock.Now()
	rnd := rand.New(rand.NewPCG(7, 8))
	notAfter := make(map[string]time.Time, n)
	var names []string
	var ds []*store.Domain
	for i := range n {
		name := fmt.Sprintf("n%04d.example%d.test", i, i%97)
		na := now.Add(time.Duration(24+rnd.IntN(50*24)) * time.Hour)
		c, err := selfSigned(name, na.Add(-90*24*time.Hour), na)
		if err != nil {
			t.Fatal(err)
		}
		c.Source, c.Origin, c.RenewAt = store.SourceACME, ca.dir, na.Add(-time.Hour)
		if err := st.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, &store.Domain{Name: name, State: store.StateValid, CertID: c.ID,
			NextAttempt: now.Add(-time.Duration(rnd.IntN(3600)) * time.Second)})
		ca.setWindow(c.ID, now.Add(-2*time.Hour), now.Add(-time.Hour))
		notAfter[name] = na
		names = append(names, name)
	}
	if _, _, err := st.AddDomains(ctx, ds); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, name := range names {
		r.process(ctx, name, false)
	}
	t.Logf("%d polls in %s", n, time.Since(start).Round(time.Millisecond))

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	waitFor(t, 5*time.Minute, "2,000 renewals", func() bool { return len(ca.orderList()) >= n && r.InFlight() == 0 })
	cancel()
	<-done
	t.Logf("%d renewals in %s", n, time.Since(start).Round(time.Millisecond))

	orders := ca.orderList()
	if len(orders) != n {
		t.Fatalf("%d orders, want %d", len(orders), n)
	}
	// A bucket of burst B refilling one token every T lets through at
	// most B + w/T orders in any span w: orders i to j, j-i+1 of them,
	// span at least (j-i+1-B)×T.
	interval := per / burst
	var got []string
	for j, o := range orders {
		if o.Replaces == nil || o.NoReplaces {
			t.Fatalf("order %d (%s) does not name the certificate it replaces", j, o.Name)
		}
		got = append(got, o.Name)
		for i := j - burst; i >= 0; i-- {
			if span := o.At.Sub(orders[i].At); span < time.Duration(j-i+1-burst)*interval {
				t.Fatalf("orders %d to %d within %s: faster than %d per %s", i, j, span, burst, per)
			}
		}
	}
	if !slices.IsSortedFunc(got, func(a, b string) int { return notAfter[a].Compare(notAfter[b]) }) {
		t.Fatal("renewals not in order of expiry")
	}
	slices.Sort(got)
	if len(slices.Compact(got)) != n {
		t.Fatal("a certificate was renewed twice")
	}
	took := orders[n-1].At.Sub(orders[0].At)
	want := time.Duration(n-burst) * (per / burst)
	if took < want || took > want+want/20 {
		t.Fatalf("the renewals took %s of the fake clock, want %s: the bucket's pace", took, want)
	}
	for _, name := range names {
		if d := getDomain(t, st, name); d.State != store.StateValid || !d.NextAttempt.After(clock.Now()) {
			t.Fatalf("%s after the renewals: %+v, want valid and scheduled ahead", name, d)
		}
	}
}

// TestImportedFleetFirstWave: 20 certbot lineages of three names each (60
// names under one registered domain) are imported and their names added;
// the account has Let's Encrypt's limits but room for only 5 new orders
// per 3 hours, as after an enrollment. At the renewal time every lineage
// is renewed at once, as one order for its three names: 20 renewals, none
// held back by the new-orders or registered-domain limits, and no order
// for a single name.
func TestImportedFleetFirstWave(t *testing.T) {
	const lineages = 20
	ctx := context.Background()
	st := badgerStore(t)
	clock := newFakeClock(time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC))
	life := 90 * 24 * time.Hour
	limits := ratelimit.LetsEncryptLimits()
	limits.NewOrders = ratelimit.Limit{Burst: 5, Per: 3 * time.Hour}
	lim, err := ratelimit.NewLimiter(limits, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	iss := &scriptedIssuer{life: life, notAfter: func() time.Time { return clock.Now().Add(life) }}
	r, err := New(Config{Now: clock.Now, Seed: 5, CAs: []CA{{Issuer: iss, Limiter: lim}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range lineages {
		set := []string{fmt.Sprintf("s%02d.fleet.example", i), fmt.Sprintf("www.s%02d.fleet.example", i), fmt.Sprintf("api.s%02d.fleet.example", i)}
		c, err := selfSigned(set[0], clock.Now().Add(-30*24*time.Hour), clock.Now().Add(life-30*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		c.Names, c.Source = set, "certbot"
		if err := st.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
		names = append(names, set...)
	}
	addPending(t, st, clock.Now(), names...)
	for _, n := range names {
		r.process(ctx, n, false)
	}
	if n := iss.orderCount(); n != 0 {
		t.Fatalf("%d orders for the imported fleet before its renewal time, want none", n)
	}

	clock.Advance(40 * 24 * time.Hour) // past every renewal time (two thirds of the lifetime, ±5%)
	for _, n := range names {
		r.process(ctx, n, false)
	}
	if n := iss.orderCount(); n != lineages {
		t.Fatalf("%d orders in the first renewal wave, want %d (one per lineage)", n, lineages)
	}
	for _, o := range iss.orders {
		if len(o.Names()) != 3 || o.Replaces == nil || !slices.Equal(o.Names(), o.Replaces.Names) {
			t.Fatalf("order for %v replacing %v, want the lineage's three names", o.Names(), o.Replaces)
		}
	}
	if b := lim.Bucket(ratelimit.LimitNewOrders, ""); b.Tokens < 5 {
		t.Errorf("the renewal wave spent %.1f new orders, want none", 5-b.Tokens)
	}
	for _, n := range names {
		if d := getDomain(t, st, n); d.State != store.StateValid || d.LastError != "" {
			t.Errorf("%s after the wave: %s %q", n, d.State, d.LastError)
		}
	}
}
