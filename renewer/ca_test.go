package renewer

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/dnstest"
	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// multiEnv is a renewer over a real Badger store with several fakeCAs
// and a fake clock.
type multiEnv struct {
	st    *store.Badger
	clock *fakeClock
	cas   []*fakeCA
	lims  []*ratelimit.Limiter
	r     *Renewer
}

// newMultiEnv makes one fakeCA per entry of limits (nil: no Limiter),
// named a, b, c…, in that order of preference.
func newMultiEnv(t *testing.T, cfg Config, limits ...*ratelimit.LimitsConfig) *multiEnv {
	t.Helper()
	e := &multiEnv{st: openStore(t), clock: newFakeClock(time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC))}
	for i, lc := range limits {
		name := string(rune('a' + i))
		ca := newFakeCA("https://"+name+".example/dir", e.clock)
		var lim *ratelimit.Limiter
		if lc != nil {
			var err error
			if lim, err = ratelimit.NewLimiter(*lc, e.clock.Now); err != nil {
				t.Fatal(err)
			}
		}
		e.cas, e.lims = append(e.cas, ca), append(e.lims, lim)
		cfg.CAs = append(cfg.CAs, CA{Name: name, Issuer: ca, Limiter: lim, OffersARI: true, CAIdentities: []string{name + ".example"}})
	}
	cfg.Now, cfg.Seed = e.clock.Now, 17
	var err error
	if e.r, err = New(cfg, e.st, discardLogger()); err != nil {
		t.Fatal(err)
	}
	return e
}

// orders returns how many orders each CA received.
func (e *multiEnv) orders() []int {
	n := make([]int, len(e.cas))
	for i, ca := range e.cas {
		n[i] = len(ca.orderList())
	}
	return n
}

func (e *multiEnv) servedBy(t *testing.T, name string) string {
	t.Helper()
	c, err := e.st.LookupCertificate(context.Background(), name)
	if err != nil {
		return ""
	}
	return c.Origin
}

func acmeErr(kind ErrorKind, problem, detail string) *ACMEError {
	e := &ACMEError{Name: "x", Kind: kind, Detail: detail}
	if problem != "" {
		e.Problem = problemNS + problem
	}
	if kind == KindRateLimited {
		e.Wait = time.Hour
	}
	return e.judge()
}

// TestFailoverDecisions: what a failure at the first CA means for the
// second. A failure of the CA's own (network, 5xx, rateLimited, its
// policy, CAA) moves the name on to the next CA for this attempt; a
// failure of the name (DNS, a failed validation) does not, since another
// CA would fail the same way.
func TestFailoverDecisions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc    string
		err     error
		want    []int  // orders at a and b
		servedB bool   // b's certificate serves the name
		lastErr string // substring of LastError when the name failed
	}{
		{desc: "CA unreachable", err: acmeErr(KindTransient, "", `Post "https://a.example/new-order": dial tcp: connection refused`), want: []int{1, 1}, servedB: true},
		{desc: "CA answers 503", err: acmeErr(KindTransient, "serverInternal", "try later"), want: []int{1, 1}, servedB: true},
		{desc: "CA rate limit", err: acmeErr(KindRateLimited, "rateLimited", "too many new orders (300) from this account"), want: []int{1, 1}, servedB: true},
		{desc: "CA policy refuses the name", err: acmeErr(KindPermanent, "rejectedIdentifier", "high-risk name"), want: []int{1, 1}, servedB: true},
		{desc: "CAA forbids the CA", err: acmeErr(KindPermanent, "caa", "CAA record forbids issuance"), want: []int{1, 1}, servedB: true},
		{desc: "name does not resolve", err: acmeErr(KindPermanent, "dns", "NXDOMAIN looking up A"), want: []int{1, 0}, lastErr: "NXDOMAIN"},
		{desc: "validation fails", err: acmeErr(KindPermanent, "unauthorized", "invalid response from http://x/.well-known/acme-challenge/t: 404"), want: []int{1, 0}, lastErr: "404"},
		{desc: "connection refused during validation", err: acmeErr(KindPermanent, "connection", "connection refused"), want: []int{1, 0}, lastErr: "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			e := newMultiEnv(t, Config{}, nil, nil)
			e.cas[0].fail(tc.err)
			const name = "www.example.test"
			addPending(t, e.st, e.clock.Now(), name)
			e.r.process(context.Background(), name, false)
			if got := e.orders(); got[0] != tc.want[0] || got[1] != tc.want[1] {
				t.Fatalf("orders at a, b = %v, want %v", got, tc.want)
			}
			d := getDomain(t, e.st, name)
			if tc.servedB {
				if d.State != store.StateValid || e.servedBy(t, name) != e.cas[1].dir || d.Failures != 0 {
					t.Fatalf("domain %+v served by %q, want valid from b", d, e.servedBy(t, name))
				}
				return
			}
			if d.State != store.StateFailing || !strings.Contains(d.LastError, tc.lastErr) {
				t.Fatalf("domain state %s, last error %q; want failing with %q", d.State, d.LastError, tc.lastErr)
			}
		})
	}
}

// TestFailoverLimits: the first CA's limiter holds a first order back (its
// new-orders bucket is empty), so the second CA takes it without a request
// to the first. When every CA's limits hold it back the name waits for the
// earliest, without a failure.
func TestFailoverLimits(t *testing.T) {
	t.Parallel()
	one := &ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 1, Per: time.Hour}}
	e := newMultiEnv(t, Config{}, one, one)
	ctx := context.Background()
	addPending(t, e.st, e.clock.Now(), "a.example.test", "b.example.test", "c.example.test")
	for _, n := range []string{"a.example.test", "b.example.test", "c.example.test"} {
		e.r.process(ctx, n, false)
	}
	if got := e.orders(); got[0] != 1 || got[1] != 1 {
		t.Fatalf("orders at a, b = %v, want one each", got)
	}
	if e.servedBy(t, "b.example.test") != e.cas[1].dir {
		t.Fatalf("b.example.test is served by %q, want CA b", e.servedBy(t, "b.example.test"))
	}
	d := getDomain(t, e.st, "c.example.test")
	if wait := d.NextAttempt.Sub(e.clock.Now()); d.State != store.StatePending || d.Failures != 0 || wait < time.Hour || wait > time.Hour+time.Minute {
		t.Fatalf("c.example.test: state %s, failures %d, next attempt in %s; want pending, no failure, when a bucket refills (1h)", d.State, d.Failures, wait)
	}
	st := e.r.CAStatus()
	if st[0].Counts.Deferred != 2 || st[1].Counts.Deferred != 1 || st[0].Counts.Issued != 1 {
		t.Fatalf("CA counts %+v, %+v; want a deferred twice, b once", st[0].Counts, st[1].Counts)
	}
}

// TestFailoverPreflightCAA: the pre-flight runs for each CA with its own
// CAA identities. A CAA record that allows only the second CA moves the
// name there without an order at the first; one that allows no CA, or a
// name that does not resolve, refuses it for all.
func TestFailoverPreflightCAA(t *testing.T) {
	t.Parallel()
	dnsSrv := dnstest.Start(t, dnstest.Options{})
	for _, n := range []string{"only-b.example.test", "none.example.test"} {
		dnsSrv.SetA(n, netip.MustParseAddr("127.0.0.1"))
	}
	dnsSrv.SetCAA("only-b.example.test", dnstest.CAA{Tag: "issue", Value: "b.example"})
	dnsSrv.SetCAA("none.example.test", dnstest.CAA{Tag: "issue", Value: ";"})
	pf := preflightOn(t, dnsSrv, "127.0.0.1")
	e := newMultiEnv(t, Config{Preflight: pf}, nil, nil)
	ctx := context.Background()
	addPending(t, e.st, e.clock.Now(), "only-b.example.test", "none.example.test", "nx.example.test")

	e.r.process(ctx, "only-b.example.test", false)
	if got := e.orders(); got[0] != 0 || got[1] != 1 || e.servedBy(t, "only-b.example.test") != e.cas[1].dir {
		t.Fatalf("orders at a, b = %v, served by %q; want one at b", got, e.servedBy(t, "only-b.example.test"))
	}
	for name, want := range map[string]string{"none.example.test": "forbids issuance by any CA", "nx.example.test": "does not resolve"} {
		e.r.process(ctx, name, false)
		d := getDomain(t, e.st, name)
		if d.State != store.StateFailing || !strings.Contains(d.LastError, want) || len(d.Attempts) != 1 || d.Attempts[0].Outcome != "refused" {
			t.Errorf("%s: %+v; want failing, refused, with %q", name, d, want)
		}
	}
	if got := e.orders(); got[0] != 0 || got[1] != 1 {
		t.Fatalf("orders at a, b = %v after the refusals, want no more", got)
	}
	if st := e.r.CAStatus(); st[0].Counts.Refused != 3 || st[1].Counts.Refused != 1 {
		t.Fatalf("refusals at a, b = %d, %d; want 3 (every name) and 1 (none.example.test; nx stopped at a)", st[0].Counts.Refused, st[1].Counts.Refused)
	}
}

// TestFailoverAllFail: both CAs fail for reasons of their own, and the
// name's last error has both failures. When both were unavailable the
// failure is theirs: the name waits for them (30 s, the rest a CA that
// keeps failing starts with, plus up to caDownSpread) and its failure
// count does not grow; when one refused the name it backs off.
func TestFailoverAllFail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc     string
		second   *ACMEError
		failures int
		wait     time.Duration // at least; at most wait + caDownSpread when failures is 0
	}{
		{desc: "both unavailable", second: acmeErr(KindTransient, "serverInternal", "database down"), failures: 0, wait: caRestMin},
		{desc: "one refused the name", second: acmeErr(KindPermanent, "rejectedIdentifier", "database down"), failures: 1, wait: 54 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			e := newMultiEnv(t, Config{}, nil, nil)
			e.cas[0].fail(acmeErr(KindTransient, "", "connection refused"))
			e.cas[1].fail(tc.second)
			addPending(t, e.st, e.clock.Now(), "x.example.test")
			e.r.process(context.Background(), "x.example.test", false)
			d := getDomain(t, e.st, "x.example.test")
			if d.State != store.StateFailing || d.Failures != tc.failures ||
				!strings.Contains(d.LastError, "at a: ") || !strings.Contains(d.LastError, "at b: ") || !strings.Contains(d.LastError, "database down") {
				t.Fatalf("domain %+v; want failing with both CAs' errors, %d failures", d, tc.failures)
			}
			wait := d.NextAttempt.Sub(e.clock.Now())
			if wait < tc.wait || tc.failures == 0 && wait > tc.wait+caDownSpread {
				t.Fatalf("next attempt in %v, want %v or a little more", wait, tc.wait)
			}
		})
	}
}

// TestRenewalGoesToIssuingCA: a certificate the second CA issued (the
// first failed then) is renewed at the second CA first, naming it as
// replaced, although the first CA comes first for new names.
func TestRenewalGoesToIssuingCA(t *testing.T) {
	t.Parallel()
	e := newMultiEnv(t, Config{}, nil, nil)
	ctx := context.Background()
	const name = "www.example.test"
	e.cas[0].fail(acmeErr(KindTransient, "", "connection refused"))
	addPending(t, e.st, e.clock.Now(), name)
	e.r.process(ctx, name, false)
	first, err := e.st.LookupCertificate(ctx, name)
	if err != nil || first.Origin != e.cas[1].dir {
		t.Fatalf("first certificate %v (%v), want one from b", first, err)
	}
	e.r.process(ctx, name, true) // renew now
	orders := e.cas[1].orderList()
	if len(orders) != 2 || len(e.cas[0].orderList()) != 1 {
		t.Fatalf("orders at a, b = %v, want the renewal at b", e.orders())
	}
	if o := orders[1]; o.Replaces == nil || o.Replaces.Serial != first.Serial || o.NoReplaces {
		t.Fatalf("renewal at b %+v, want it to replace serial %s", o.Order, first.Serial)
	}
	// The same certificate renewed by a CA that did not issue it names
	// nothing: a's account does not know it.
	e.cas[1].fail(acmeErr(KindTransient, "", "connection refused"))
	e.r.process(ctx, name, true)
	if o := e.cas[0].orderList(); len(o) != 2 || o[1].Replaces != nil {
		t.Fatalf("orders at a %+v, want a second one that replaces nothing", o)
	}
}

// TestReplacesRefused: the CA refuses a renewal as the replacement of its
// certificate (alreadyReplaced, 409). The worker orders again at once
// without "replaces", and the name is renewed.
func TestReplacesRefused(t *testing.T) {
	t.Parallel()
	e := newMultiEnv(t, Config{}, &ratelimit.LimitsConfig{})
	ctx := context.Background()
	const name = "www.example.test"
	addPending(t, e.st, e.clock.Now(), name)
	e.r.process(ctx, name, false)
	first, err := e.st.LookupCertificate(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	refused := acmeErr(KindTransient, "alreadyReplaced", "certificate with serial "+first.Serial+" already has a replacement order")
	refused.refusedAsReplacement()
	e.cas[0].fail(refused)
	e.clock.Advance(time.Hour) // a new serial
	e.r.process(ctx, name, true)
	orders := e.cas[0].orderList()
	if len(orders) != 3 || orders[1].NoReplaces || orders[1].Replaces == nil || !orders[2].NoReplaces || orders[2].Replaces == nil {
		t.Fatalf("orders %+v; want the first, a renewal naming the certificate, then one without replaces", orders)
	}
	d := getDomain(t, e.st, name)
	if c, _ := e.st.LookupCertificate(ctx, name); d.State != store.StateValid || d.Failures != 0 || c.Serial == first.Serial {
		t.Fatalf("after the plain renewal: %+v, want valid with a new certificate", d)
	}
	// The refusal was not a failed validation: the name's failure buckets
	// are untouched.
	if b := e.lims[0].Bucket(ratelimit.LimitAuthzFailures, name); b.Tokens != float64(b.Burst) {
		t.Fatalf("authorization failures bucket %+v, want full", b)
	}

	// Refused again, and this time the plain order (a renewal, which needs
	// an exact-set token) must wait: the name waits without a failure, and
	// its next order goes without "replaces" straight away.
	second, _ := e.st.LookupCertificate(ctx, name)
	for e.lims[0].Bucket(ratelimit.LimitCertsPerExactSet, name).Tokens >= 1 {
		e.lims[0].Reserve([]string{name}, ratelimit.OrderRenewal)
	}
	e.cas[0].fail(refused)
	e.clock.Advance(time.Hour)
	e.r.process(ctx, name, true)
	d = getDomain(t, e.st, name)
	if n := len(e.cas[0].orderList()); n != 4 || d.State != store.StateValid || d.Failures != 0 || !d.NextAttempt.After(e.clock.Now().Add(30*time.Hour)) {
		t.Fatalf("%d orders, domain %+v; want 4 and the name valid, waiting about 34h for the exact-set bucket", n, d)
	}
	e.clock.Set(d.NextAttempt)
	e.r.process(ctx, name, true)
	orders = e.cas[0].orderList()
	if len(orders) != 5 || !orders[4].NoReplaces || orders[4].Replaces == nil || orders[4].Replaces.Serial != second.Serial {
		t.Fatalf("orders %+v; want a fifth, without replaces, for serial %s", orders[3:], second.Serial)
	}
}

// TestSpreadDistribution: SelectSpread shares first orders among CAs in
// proportion to the room left in their new-orders buckets. Two CAs
// without limits take turns; a CA with 200 orders of room gets about
// twice the orders of one with 100.
func TestSpreadDistribution(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("no limits: turns", func(t *testing.T) {
		e := newMultiEnv(t, Config{Selection: SelectSpread}, nil, nil)
		for i := range 10 {
			name := "n" + string(rune('a'+i)) + ".example.test"
			addPending(t, e.st, e.clock.Now(), name)
			e.r.process(ctx, name, false)
			want := e.cas[i%2].dir
			if got := e.servedBy(t, name); got != want {
				t.Fatalf("order %d went to %s, want %s (turns)", i, got, want)
			}
		}
	})
	t.Run("by room", func(t *testing.T) {
		// Only the new-orders buckets limit: every name is under one
		// registered domain, whose limit is off.
		off := ratelimit.Limit{Burst: -1}
		e := newMultiEnv(t, Config{Selection: SelectSpread},
			&ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 200, Per: 3 * time.Hour}, CertsPerRegisteredDomain: off},
			&ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 100, Per: 3 * time.Hour}, CertsPerRegisteredDomain: off})
		var names []string
		for i := range 90 {
			names = append(names, "n"+string(rune('a'+i%26))+string(rune('a'+i/26))+".example.test")
		}
		addPending(t, e.st, e.clock.Now(), names...)
		for _, n := range names {
			e.r.process(ctx, n, false)
		}
		got := e.orders()
		if got[0]+got[1] != 90 || got[0] < 55 || got[0] > 65 {
			t.Fatalf("orders at a (room 200), b (room 100) = %v, want about 60 and 30", got)
		}
		t.Logf("orders: a %d, b %d; room left: a %.0f, b %.0f", got[0], got[1],
			e.lims[0].Bucket(ratelimit.LimitNewOrders, "").Tokens, e.lims[1].Bucket(ratelimit.LimitNewOrders, "").Tokens)
	})
	t.Run("no room: the other CA", func(t *testing.T) {
		e := newMultiEnv(t, Config{Selection: SelectSpread},
			&ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 1, Per: 3 * time.Hour}}, nil)
		e.lims[0].Reserve([]string{"used.example.test"}, ratelimit.OrderNew)
		for i := range 5 {
			name := "m" + string(rune('a'+i)) + ".example.test"
			addPending(t, e.st, e.clock.Now(), name)
			e.r.process(ctx, name, false)
		}
		if got := e.orders(); got[0] != 0 || got[1] != 5 {
			t.Fatalf("orders at a (no room), b = %v, want all at b", got)
		}
	})
}

// TestCARests: a CA whose orders fail three times in a row for reasons of
// its own goes behind the others for a while (30 s, doubling), so that
// names do not wait for its timeouts; once the rest is over it is tried
// first again.
func TestCARests(t *testing.T) {
	t.Parallel()
	e := newMultiEnv(t, Config{}, nil, nil)
	ctx := context.Background()
	down := acmeErr(KindTransient, "", "i/o timeout")
	e.cas[0].fail(down, down, down)
	for i := range 4 {
		name := "n" + string(rune('a'+i)) + ".example.test"
		addPending(t, e.st, e.clock.Now(), name)
		e.r.process(ctx, name, false)
		if e.servedBy(t, name) != e.cas[1].dir {
			t.Fatalf("%s not served by b", name)
		}
	}
	if got := e.orders(); got[0] != 3 || got[1] != 4 {
		t.Fatalf("orders at a, b = %v, want 3 (then a rests) and 4", got)
	}
	st := e.r.CAStatus()[0]
	if st.FailureStreak != 3 || st.RestingUntil.Sub(e.clock.Now()) != 30*time.Second || st.Counts.Failed != 3 {
		t.Fatalf("status of a %+v, want 3 failures in a row, resting 30s", st)
	}
	e.clock.Advance(31 * time.Second)
	addPending(t, e.st, e.clock.Now(), "later.example.test")
	e.r.process(ctx, "later.example.test", false)
	if e.servedBy(t, "later.example.test") != e.cas[0].dir {
		t.Fatalf("after the rest, the name went to %q, want a", e.servedBy(t, "later.example.test"))
	}
	if st := e.r.CAStatus()[0]; st.FailureStreak != 0 || !st.RestingUntil.IsZero() {
		t.Fatalf("status of a after a success: %+v, want the streak ended", st)
	}
}

// TestNewRefusesBadCAs: the CAs' configuration is checked.
func TestNewRefusesBadCAs(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	clock := newFakeClock(time.Now())
	a, b := newFakeCA("https://a.example/dir", clock), newFakeCA("https://a.example/dir", clock)
	tests := []struct {
		desc string
		cfg  Config
	}{
		{desc: "CA without issuer", cfg: Config{CAs: []CA{{Name: "x"}}}},
		{desc: "two CAs with one name", cfg: Config{CAs: []CA{{Issuer: a}, {Issuer: b}}}},
		{desc: "two CAs with one directory", cfg: Config{CAs: []CA{{Name: "a", Issuer: a}, {Name: "b", Issuer: b}}}},
		{desc: "unknown selection", cfg: Config{CAs: []CA{{Issuer: a}}, Selection: "random"}},
		{desc: "nothing to order from"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := New(tc.cfg, st, discardLogger()); err == nil {
				t.Error("New accepted it")
			}
		})
	}
	c := newFakeCA("https://c.example/dir", clock)
	if _, err := New(Config{CAs: []CA{{Issuer: a}, {Name: "c", Issuer: c}}, Selection: SelectSpread}, st, discardLogger()); err != nil {
		t.Errorf("New refused two named CAs: %v", err)
	}
}

// TestARIFromDirectory: a CA configured as offering renewal information
// whose directory does not advertise it is not taken at its word: a
// renewal there is an ordinary renewal, charged to the exact-set limit
// (here one certificate a week, spent by the first order, so it waits),
// and CAStatus says the CA offers no ARI. Where the directory advertises
// it, the same renewal is exempt and goes at once.
func TestARIFromDirectory(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		desc      string
		noARI     bool
		wantOrder bool
	}{
		{desc: "directory advertises renewal information", wantOrder: true},
		{desc: "directory without renewal information", noARI: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st := openStore(t)
			clock := newFakeClock(time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC))
			ca := newFakeCA("https://ca.example/dir", clock)
			ca.noARI = tc.noARI
			lim, err := ratelimit.NewLimiter(ratelimit.LimitsConfig{CertsPerExactSet: ratelimit.Limit{Burst: 1, Per: 7 * 24 * time.Hour}}, clock.Now)
			if err != nil {
				t.Fatal(err)
			}
			r, err := New(Config{Now: clock.Now, Seed: 3, CAs: []CA{{Issuer: ca, Limiter: lim, OffersARI: true}}}, st, discardLogger())
			if err != nil {
				t.Fatal(err)
			}
			const name = "www.example.test"
			addPending(t, st, clock.Now(), name)
			r.process(context.Background(), name, false)
			clock.Advance(time.Hour)
			r.process(context.Background(), name, true) // renew now
			if got := len(ca.orderList()) == 2; got != tc.wantOrder {
				t.Fatalf("%d orders; want the renewal sent: %v", len(ca.orderList()), tc.wantOrder)
			}
			if st := r.CAStatus()[0]; st.OffersARI == tc.noARI || (st.Counts.Deferred == 1) != tc.noARI {
				t.Errorf("CAStatus: offers ARI %v, deferred %d", st.OffersARI, st.Counts.Deferred)
			}
		})
	}
}

// TestCAAWaitsForHeldCA: a name whose CAA allows only the second CA, while
// that CA's new-orders bucket is empty (a long enrollment), waits for the
// bucket without a failure: the first CA's refusal is no failure of the
// name, and days of waiting in line must not add up to giving it up.
func TestCAAWaitsForHeldCA(t *testing.T) {
	t.Parallel()
	dnsSrv := dnstest.Start(t, dnstest.Options{})
	for _, n := range []string{"first.only-b.example.test", "second.only-b.example.test"} {
		dnsSrv.SetA(n, netip.MustParseAddr("127.0.0.1"))
	}
	dnsSrv.SetCAA("only-b.example.test", dnstest.CAA{Tag: "issue", Value: "b.example"})
	pf := preflightOn(t, dnsSrv, "127.0.0.1")
	e := newMultiEnv(t, Config{Preflight: pf}, nil, &ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 1, Per: time.Hour}})
	ctx := context.Background()
	addPending(t, e.st, e.clock.Now(), "first.only-b.example.test", "second.only-b.example.test")
	e.r.process(ctx, "first.only-b.example.test", false) // spends b's token
	e.r.process(ctx, "second.only-b.example.test", false)
	if got := e.orders(); got[0] != 0 || got[1] != 1 {
		t.Fatalf("orders at a, b = %v; want one at b", got)
	}
	d := getDomain(t, e.st, "second.only-b.example.test")
	wait := d.NextAttempt.Sub(e.clock.Now())
	if d.State != store.StatePending || d.Failures != 0 || !d.FailingSince.IsZero() || wait < time.Hour || wait > time.Hour+time.Minute {
		t.Fatalf("held back at b, refused by a: %+v (next attempt in %v); want pending, no failure, about an hour (b's next token)", d, wait)
	}
	e.clock.Set(d.NextAttempt)
	e.r.process(ctx, "second.only-b.example.test", false)
	if got := e.orders(); got[1] != 2 || e.servedBy(t, "second.only-b.example.test") != e.cas[1].dir {
		t.Fatalf("after b's token came back: orders %v; want the second at b", got)
	}
}
