package renewer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// ariEnv is a renewer over a real Badger store with one fakeCA that
// offers renewal information, and a fake clock.
type ariEnv struct {
	st    *store.Badger
	clock *fakeClock
	ca    *fakeCA
	r     *Renewer
}

func newARIEnv(t *testing.T, cfg Config) *ariEnv {
	t.Helper()
	e := &ariEnv{st: openStore(t), clock: newFakeClock(time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC))}
	e.ca = newFakeCA("https://ca.example.test/dir", e.clock)
	// One CA offering ARI: the test's, with the Limiter a test may give
	// in cfg.CAs[0].
	ca := CA{Issuer: e.ca, OffersARI: true}
	if len(cfg.CAs) > 0 {
		ca.Limiter = cfg.CAs[0].Limiter
	}
	cfg.Now, cfg.CAs = e.clock.Now, []CA{ca}
	if cfg.Seed == 0 {
		cfg.Seed = 5
	}
	var err error
	if e.r, err = New(cfg, e.st, discardLogger()); err != nil {
		t.Fatal(err)
	}
	return e
}

// issue adds name and runs its first order.
func (e *ariEnv) issue(t *testing.T, name string) *store.Certificate {
	t.Helper()
	addPending(t, e.st, e.clock.Now(), name)
	e.r.process(context.Background(), name, false)
	d := getDomain(t, e.st, name)
	c, err := e.st.GetCertificate(context.Background(), d.CertID)
	if err != nil || d.State != store.StateValid {
		t.Fatalf("%s after its first order: %+v (%v)", name, d, err)
	}
	return c
}

// TestARIPollSchedule follows one certificate through its polls: the
// first about 12 hours after issuance, then about every 12 hours, never
// an order before its renewal time; the CA's Retry-After when it is later
// (capped at a day); a failed poll is tried again after about 3 hours; a
// CA without renewal information is not asked again.
func TestARIPollSchedule(t *testing.T) {
	t.Parallel()
	e := newARIEnv(t, Config{})
	ctx := context.Background()
	const name = "www.example.test"
	c := e.issue(t, name)

	near := func(got, want time.Duration) bool { return got >= want-want/10 && got <= want+want/10 }
	step := func(desc string, want time.Duration) {
		t.Helper()
		d := getDomain(t, e.st, name)
		if got := d.NextAttempt.Sub(e.clock.Now()); !near(got, want) || d.State != store.StateValid {
			t.Fatalf("%s: state %s, next attempt in %s, want valid and %s ± 10%%", desc, d.State, got, want)
		}
		e.clock.Set(d.NextAttempt)
		polls := e.ca.pollCount()
		e.r.process(ctx, name, false)
		if e.ca.pollCount() != polls+1 {
			t.Fatalf("%s: %d polls at the next attempt, want one", desc, e.ca.pollCount()-polls)
		}
	}
	step("after issuance", 12*time.Hour)
	step("after a poll", 12*time.Hour)
	e.ca.retryAfter = 20 * time.Hour
	step("after a poll without Retry-After", 12*time.Hour)
	e.ca.retryAfter = 72 * time.Hour
	step("after Retry-After 20h", 20*time.Hour)
	e.ca.retryAfter = 0
	e.ca.pollErr = errors.New("GET renewalInfo: 503 Service Unavailable")
	step("after Retry-After 72h (capped)", 24*time.Hour)
	e.ca.pollErr = fmt.Errorf("renewal info: %w", ErrNoRenewalInfo)
	step("after a failed poll", 3*time.Hour)

	d := getDomain(t, e.st, name)
	if !d.NextAttempt.Equal(c.RenewAt) {
		t.Fatalf("after the CA said it has no renewal information: next attempt %s, want the renewal time %s", d.NextAttempt, c.RenewAt)
	}
	if n := len(e.ca.orderList()); n != 1 {
		t.Fatalf("%d orders, want only the first: no poll may order before the renewal time", n)
	}
	// The answer "no renewal information" is not a failed poll, and the
	// CA is taken at it: no ARI in its status, no more polls.
	st := e.r.CAStatus()[0]
	if st.OffersARI || st.Counts.PollErrors != 1 {
		t.Errorf("CA status after it said it has none: offers ARI %v, %d poll errors (want false, and only the 503)", st.OffersARI, st.Counts.PollErrors)
	}
	if ca, inf := e.r.informer(c); ca != nil || inf != nil {
		t.Error("the CA is still asked for renewal information after it said it has none")
	}
	if c.RenewAt.Sub(e.clock.Now()) < 24*time.Hour {
		t.Fatalf("the test ran past the renewal time %s", c.RenewAt)
	}
}

// TestARIPollsSpread: the polls of certificates issued in the same instant
// do not stay together: their next polls spread over 12 h ± 10%.
func TestARIPollsSpread(t *testing.T) {
	t.Parallel()
	e := newARIEnv(t, Config{})
	var delays []time.Duration
	for i := range 200 {
		name := fmt.Sprintf("n%03d.example.test", i)
		e.issue(t, name)
		delays = append(delays, getDomain(t, e.st, name).NextAttempt.Sub(e.clock.Now()))
	}
	slices.Sort(delays)
	lo, hi := delays[0], delays[len(delays)-1]
	if lo < 12*time.Hour*9/10 || hi > 12*time.Hour*11/10 || hi-lo < 2*time.Hour {
		t.Fatalf("next polls from %s to %s, want spread over most of 10.8h to 13.2h", lo, hi)
	}
	if n := len(slices.Compact(delays)); n < 190 {
		t.Fatalf("only %d distinct poll times among 200", n)
	}
}

// TestARIWindowMovedEarlier: the CA moves the window earlier, still in the
// future. The poll moves the certificate's renewal time into the new
// window (stored with the certificate), the name is due then, and the
// renewal order names the certificate it replaces.
func TestARIWindowMovedEarlier(t *testing.T) {
	t.Parallel()
	e := newARIEnv(t, Config{})
	ctx := context.Background()
	const name = "moved.example.test"
	c := e.issue(t, name)
	start, end := e.clock.Now().Add(5*24*time.Hour), e.clock.Now().Add(6*24*time.Hour)
	e.ca.setWindow(c.ID, start, end)

	// A poll that finds the renewal time in the window changes nothing.
	d := getDomain(t, e.st, name)
	e.clock.Set(d.NextAttempt)
	e.r.process(ctx, name, false)
	stored, err := e.st.GetCertificate(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.RenewAt.Before(start) || stored.RenewAt.After(end) {
		t.Fatalf("renewal time %s after the window moved to %s – %s, want in it", stored.RenewAt, start, end)
	}
	if stored.Serial != c.Serial || stored.StoredAt.IsZero() {
		t.Fatalf("the stored certificate changed: serial %s, want %s", stored.Serial, c.Serial)
	}
	d = getDomain(t, e.st, name)
	if d.NextAttempt.After(stored.RenewAt) || d.NextAttempt.Sub(e.clock.Now()) > 13*time.Hour+12*time.Minute {
		t.Fatalf("next attempt %s, want the next poll, before the renewal time %s", d.NextAttempt, stored.RenewAt)
	}

	// Polls go on until the renewal time; then the certificate is renewed.
	for range 20 {
		d = getDomain(t, e.st, name)
		e.clock.Set(d.NextAttempt)
		e.r.process(ctx, name, false)
		if len(e.ca.orderList()) > 1 {
			break
		}
	}
	orders := e.ca.orderList()
	if len(orders) != 2 {
		t.Fatalf("%d orders, want the renewal after the polls", len(orders))
	}
	if got := orders[1].At; got.Before(start) || got.After(end) {
		t.Fatalf("renewed at %s, want within the new window %s – %s", got, start, end)
	}
	if rep := orders[1].Replaces; rep == nil || rep.Serial != c.Serial || orders[1].NoReplaces {
		t.Fatalf("renewal order %+v, want it to replace serial %s", orders[1].Order, c.Serial)
	}
}

// TestMassRenewalEarliestExpiryFirst: 50 certificates with random expiry
// times, whose CA moves every window into the past (a revocation in
// bulk). Once the polls have found it, the renewals go out earliest
// expiry first; a name asked for on demand in the middle of them goes
// ahead of the rest.
func TestMassRenewalEarliestExpiryFirst(t *testing.T) {
	t.Parallel()
	e := newARIEnv(t, Config{Workers: 1, IdleWait: 20 * time.Millisecond})
	ctx := context.Background()
	now := e.clock.Now()
	rnd := rand.New(rand.NewPCG(1, 2))
	notAfter := map[string]time.Time{}
	var names []string
	for i := range 50 {
		name := fmt.Sprintf("n%02d.example.test", i)
		na := now.Add(time.Duration(10+rnd.IntN(60*24)) * time.Hour)
		c, err := selfSigned(name, na.Add(-90*24*time.Hour), na)
		if err != nil {
			t.Fatal(err)
		}
		c.Source, c.Origin, c.RenewAt = store.SourceACME, e.ca.dir, na.Add(-10*24*time.Hour+time.Hour)
		if c.RenewAt.Before(now) {
			c.RenewAt = na.Add(-time.Hour)
		}
		if err := e.st.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
		// Due for a poll now, in an order that has nothing to do with expiry.
		if err := e.st.PutDomain(ctx, &store.Domain{Name: name, State: store.StateValid, CertID: c.ID,
			NextAttempt: now.Add(-time.Duration(rnd.IntN(3600)) * time.Second)}); err != nil {
			t.Fatal(err)
		}
		e.ca.setWindow(c.ID, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
		notAfter[name] = na
		names = append(names, name)
	}
	// The polls come due one by one as they do over a day; each finds the
	// window in the past.
	for _, n := range names {
		e.r.process(ctx, n, false)
		if d := getDomain(t, e.st, n); !d.NextAttempt.Before(now.Add(-300*24*time.Hour)) || d.State != store.StateValid {
			t.Fatalf("%s after the poll: %+v; want valid and due long ago (overdue)", n, d)
		}
	}
	if n := len(e.ca.orderList()); n != 0 {
		t.Fatalf("%d orders sent by the polls themselves, want none", n)
	}

	const onDemand = "new.example.test"
	addPending(t, e.st, now, onDemand)
	e.ca.during = func(o Order) {
		if len(e.ca.orderList()) == 25 {
			e.r.Expedite(onDemand)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.r.Run(runCtx) }()
	waitFor(t, 20*time.Second, "51 orders", func() bool { return len(e.ca.orderList()) >= 51 && e.r.InFlight() == 0 })
	cancel()
	<-done

	orders := e.ca.orderList()
	if len(orders) != 51 {
		t.Fatalf("%d orders, want 51", len(orders))
	}
	if orders[25].Name != onDemand {
		t.Errorf("order 26 is for %s, want the on-demand name asked for during order 25", orders[25].Name)
	}
	var renewed []string
	for _, o := range orders {
		if o.Name == onDemand {
			continue
		}
		if o.Replaces == nil || o.NoReplaces {
			t.Errorf("order for %s does not name the certificate it replaces", o.Name)
		}
		renewed = append(renewed, o.Name)
	}
	if !slices.IsSortedFunc(renewed, func(a, b string) int { return notAfter[a].Compare(notAfter[b]) }) {
		for _, n := range renewed {
			t.Logf("%s expires %s", n, notAfter[n].Format(time.RFC3339))
		}
		t.Fatal("renewals not in order of expiry")
	}
	for _, n := range names {
		if d := getDomain(t, e.st, n); d.State != store.StateValid || !d.NextAttempt.After(now) {
			t.Errorf("%s after its renewal: %+v, want valid and scheduled ahead", n, d)
		}
	}
}

// TestARIPollingRate states the load the polls put on a CA: with N
// certificates, each polled every 12 h ± 10% on average, N/43,200
// requests a second. 1,000,000 certificates make about 23 a second, far
// below the 1,000 a second Let's Encrypt allows one IP address on
// renewal-info. The mean is measured over the renewer's own pollDelay.
func TestARIPollingRate(t *testing.T) {
	t.Parallel()
	e := newARIEnv(t, Config{})
	const samples = 100_000
	var sum time.Duration
	for range samples {
		sum += e.r.pollDelay(0)
	}
	mean := sum / samples
	const certs = 1_000_000
	rate := certs / mean.Seconds()
	t.Logf("mean poll interval %s: %d certificates poll at %.1f requests/s", mean.Round(time.Second), certs, rate)
	if mean < 11*time.Hour+50*time.Minute || mean > 12*time.Hour+10*time.Minute {
		t.Errorf("mean poll interval %s, want 12h", mean)
	}
	if rate < 22 || rate > 24.5 {
		t.Errorf("%.1f polls a second for a million certificates, want about 23", rate)
	}
}
