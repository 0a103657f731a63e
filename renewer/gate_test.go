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

// gateEnv is a renewer with a real Badger store, a real Limiter and a fake
// clock, and the scripted issuer standing in for the CA.
type gateEnv struct {
	st    *store.Badger
	clock *fakeClock
	iss   *scriptedIssuer
	lim   *ratelimit.Limiter
	r     *Renewer
}

func newGateEnv(t *testing.T, limits ratelimit.LimitsConfig, cfg Config, errs ...error) *gateEnv {
	t.Helper()
	e := &gateEnv{st: openStore(t), clock: newFakeClock(time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC))}
	life := 90 * 24 * time.Hour
	e.iss = &scriptedIssuer{errs: errs, life: life, notAfter: func() time.Time { return e.clock.Now().Add(life) }}
	lim, err := ratelimit.NewLimiter(limits, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	e.lim = lim
	// One CA: the test's issuer with this Limiter, and the CAA
	// identities a test may give in cfg.CAs[0].
	ca := CA{Issuer: e.iss, Limiter: lim}
	if len(cfg.CAs) > 0 {
		ca.CAIdentities = cfg.CAs[0].CAIdentities
	}
	cfg.Now, cfg.Seed, cfg.CAs = e.clock.Now, 11, []CA{ca}
	e.r, err = New(cfg, e.st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestGatePacesNewOrders(t *testing.T) {
	e := newGateEnv(t, ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 2, Per: time.Hour}}, Config{})
	names := []string{"a.example.test", "b.example.test", "c.example.test"}
	addPending(t, e.st, e.clock.Now(), names...)
	for _, n := range names {
		e.r.process(context.Background(), n, false)
	}
	if n := e.iss.orderCount(); n != 2 {
		t.Fatalf("%d orders sent with a burst of 2, want 2", n)
	}
	d := getDomain(t, e.st, "c.example.test")
	wait := d.NextAttempt.Sub(e.clock.Now())
	if d.State != store.StatePending || d.Failures != 0 || wait < 30*time.Minute || wait > 31*time.Minute {
		t.Fatalf("held-back name: state %s, failures %d, next attempt in %v; want pending, no failure, 30-31 min (one token per 30 min)", d.State, d.Failures, wait)
	}
	e.clock.Set(d.NextAttempt)
	e.r.process(context.Background(), "c.example.test", false)
	if n := e.iss.orderCount(); n != 3 || getDomain(t, e.st, "c.example.test").State != store.StateValid {
		t.Fatalf("after the bucket refilled: %d orders, state %s; want 3 and valid", n, getDomain(t, e.st, "c.example.test").State)
	}
}

func TestGateFailedValidationLimit(t *testing.T) {
	unauthorized := &ACMEError{Name: "bad.example.test", Kind: KindPermanent,
		Problem: "urn:ietf:params:acme:error:unauthorized", Detail: "Invalid response from http://bad.example.test/.well-known/acme-challenge/x: 404"}
	unauthorized.judge()
	e := newGateEnv(t, ratelimit.LimitsConfig{AuthzFailures: ratelimit.Limit{Burst: 2, Per: time.Hour}}, Config{}, unauthorized, unauthorized, unauthorized)
	const name = "bad.example.test"
	addPending(t, e.st, e.clock.Now(), name)
	for i := range 2 {
		e.r.process(context.Background(), name, false)
		d := getDomain(t, e.st, name)
		if d.State != store.StateFailing || d.Failures != i+1 {
			t.Fatalf("attempt %d: state %s, failures %d", i+1, d.State, d.Failures)
		}
		e.clock.Set(d.NextAttempt)
	}
	// Two failed validations within the hour: the third order waits for the
	// bucket instead of burning another failure.
	e.r.process(context.Background(), name, false)
	if n := e.iss.orderCount(); n != 2 {
		t.Fatalf("%d orders, want 2: the failed-validation limit should hold the third back", n)
	}
	d := getDomain(t, e.st, name)
	if d.Failures != 2 || !d.NextAttempt.After(e.clock.Now()) {
		t.Fatalf("held back: failures %d, next attempt %v; want 2 and later than now", d.Failures, d.NextAttempt)
	}
}

func TestGateRateLimitedAnswerDrainsBucket(t *testing.T) {
	limited := &ACMEError{Name: "a.example.test", Kind: KindRateLimited, Wait: 2 * time.Hour,
		Problem: "urn:ietf:params:acme:error:rateLimited", Detail: "too many new orders (300) from this account in the last 3h0m0s"}
	e := newGateEnv(t, ratelimit.LimitsConfig{}, Config{}, limited)
	addPending(t, e.st, e.clock.Now(), "a.example.test", "b.example.test")
	e.r.process(context.Background(), "a.example.test", false)
	e.r.process(context.Background(), "b.example.test", false)
	if n := e.iss.orderCount(); n != 1 {
		t.Fatalf("%d orders, want 1: after the CA's rateLimited answer the next order must wait", n)
	}
	d := getDomain(t, e.st, "b.example.test")
	if wait := d.NextAttempt.Sub(e.clock.Now()); wait < 2*time.Hour || wait > 2*time.Hour+time.Minute || d.Failures != 0 {
		t.Fatalf("b: next attempt in %v, failures %d; want about the CA's 2h Retry-After and no failure", wait, d.Failures)
	}
	if a := getDomain(t, e.st, "a.example.test"); a.NextAttempt.Sub(e.clock.Now()) < 2*time.Hour {
		t.Fatalf("a: next attempt in %v, want at least the CA's Retry-After", a.NextAttempt.Sub(e.clock.Now()))
	}
}

func TestGatePreflightRefusesWithoutOrdering(t *testing.T) {
	dnsSrv := dnstest.Start(t, dnstest.Options{})
	dnsSrv.SetA("shop.example.test", netip.MustParseAddr("127.0.0.1"))
	dnsSrv.SetA("free.example.test", netip.MustParseAddr("127.0.0.1"))
	dnsSrv.SetCAA("example.test", dnstest.CAA{Tag: "issue", Value: "other-ca.example"})
	dnsSrv.SetCAA("free.example.test", dnstest.CAA{Tag: "issue", Value: "our-ca.example"})
	pf := preflightOn(t, dnsSrv, "127.0.0.1")
	e := newGateEnv(t, ratelimit.LimitsConfig{}, Config{Preflight: pf, CAs: []CA{{CAIdentities: []string{"our-ca.example"}}}})
	addPending(t, e.st, e.clock.Now(), "shop.example.test", "free.example.test", "nowhere.example.test")
	for _, n := range []string{"shop.example.test", "free.example.test", "nowhere.example.test"} {
		e.r.process(context.Background(), n, false)
	}
	if n := e.iss.orderCount(); n != 1 || e.iss.orders[0].Name != "free.example.test" {
		t.Fatalf("orders %+v, want one, for free.example.test (the others fail pre-flight)", e.iss.orders)
	}
	for name, want := range map[string]string{"shop.example.test": "other-ca.example", "nowhere.example.test": "nowhere.example.test"} {
		d := getDomain(t, e.st, name)
		if d.State != store.StateFailing || !strings.Contains(d.LastError, "pre-flight") || !strings.Contains(d.LastError, want) {
			t.Errorf("%s: state %s, last error %q; want failing with a pre-flight reason naming %q", name, d.State, d.LastError, want)
		}
		if len(d.Attempts) != 1 || d.Attempts[0].Outcome != "refused" {
			t.Errorf("%s: attempts %+v, want one, refused", name, d.Attempts)
		}
	}
}

func TestGateGivesUp(t *testing.T) {
	e := newGateEnv(t, ratelimit.LimitsConfig{}, Config{GiveUpAfter: 30 * 24 * time.Hour})
	ctx := context.Background()
	const name = "hopeless.example.test"
	now := e.clock.Now()
	err := e.st.PutDomain(ctx, &store.Domain{Name: name, State: store.StateFailing, Failures: 31,
		FailingSince: now.Add(-31 * 24 * time.Hour), LastError: "acme dns: NXDOMAIN", NextAttempt: now})
	if err != nil {
		t.Fatal(err)
	}
	e.r.process(ctx, name, false)
	d := getDomain(t, e.st, name)
	if d.State != store.StateGivenUp || !d.NextAttempt.IsZero() || !strings.Contains(d.LastError, "given up after 31 days") || !strings.Contains(d.LastError, "NXDOMAIN") {
		t.Fatalf("after 31 days failing: %+v; want given_up, unscheduled, with the reason and the last error", d)
	}
	if n := e.iss.orderCount(); n != 0 {
		t.Fatalf("%d orders for a name being given up, want none", n)
	}
	due, _ := e.st.Due(ctx, now.Add(365*24*time.Hour), 10)
	if len(due) != 0 {
		t.Fatalf("a given-up name is still in the due index: %v", due)
	}
	// An operator's renew now tries again with a fresh failure count.
	e.r.process(ctx, name, true)
	d = getDomain(t, e.st, name)
	if n := e.iss.orderCount(); n != 1 || d.State != store.StateValid || d.Failures != 0 {
		t.Fatalf("after renew now: %d orders, state %s, failures %d; want 1, valid, 0", n, d.State, d.Failures)
	}
}

// TestGateRateLimitedGivesBackCertificateTokens: an order the CA refuses
// with rateLimited issued no certificate, so the registered-domain and
// exact-set tokens it took come back; only the bucket the CA named (new
// orders) is emptied. Three refusals in a row leave the domain's bucket
// full instead of holding every name under it back for days.
func TestGateRateLimitedGivesBackCertificateTokens(t *testing.T) {
	limited := func() error {
		return &ACMEError{Name: "a.example.test", Kind: KindRateLimited, Wait: time.Minute,
			Problem: "urn:ietf:params:acme:error:rateLimited", Detail: "too many new orders (300) from this account in the last 3h0m0s"}
	}
	e := newGateEnv(t, ratelimit.LimitsConfig{CertsPerRegisteredDomain: ratelimit.Limit{Burst: 3, Per: 7 * 24 * time.Hour}}, Config{}, limited(), limited(), limited())
	addPending(t, e.st, e.clock.Now(), "a.example.test")
	for i := range 3 {
		e.r.process(context.Background(), "a.example.test", false)
		if n := e.iss.orderCount(); n != i+1 {
			t.Fatalf("attempt %d: %d orders", i+1, n)
		}
		e.clock.Set(getDomain(t, e.st, "a.example.test").NextAttempt)
	}
	if b := e.lim.Bucket(ratelimit.LimitCertsPerRegisteredDomain, "example.test"); b.Tokens != 3 {
		t.Errorf("registered-domain bucket after 3 rateLimited answers: %.2f tokens, want 3 (nothing was issued)", b.Tokens)
	}
}

// TestGateRenewGivenUpStartsAfresh: an operator's renew of a given-up
// name starts a new give_up_after window even when the attempt is refused
// before anything is sent (pre-flight), so the name is not parked again
// at its next attempt.
func TestGateRenewGivenUpStartsAfresh(t *testing.T) {
	dnsSrv := dnstest.Start(t, dnstest.Options{}) // every name NXDOMAIN
	pf := preflightOn(t, dnsSrv)
	e := newGateEnv(t, ratelimit.LimitsConfig{}, Config{Preflight: pf, GiveUpAfter: 30 * 24 * time.Hour})
	ctx := context.Background()
	const name = "parked.example.test"
	now := e.clock.Now()
	err := e.st.PutDomain(ctx, &store.Domain{Name: name, State: store.StateGivenUp, Failures: 40,
		FailingSince: now.Add(-40 * 24 * time.Hour), LastError: "given up after 40 days of failures"})
	if err != nil {
		t.Fatal(err)
	}
	e.r.process(ctx, name, true)
	d := getDomain(t, e.st, name)
	if d.State != store.StateFailing || d.Failures != 1 || !d.FailingSince.Equal(now) || e.iss.orderCount() != 0 {
		t.Fatalf("after renew now, refused by pre-flight: %+v, %d orders; want failing, 1 failure since now, no order", d, e.iss.orderCount())
	}
	e.clock.Set(d.NextAttempt)
	e.r.process(ctx, name, false)
	if d := getDomain(t, e.st, name); d.State == store.StateGivenUp {
		t.Fatalf("given up again at the next attempt: %+v", d)
	}
}
