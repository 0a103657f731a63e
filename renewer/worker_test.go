package renewer

import (
	"context"
	"errors"
	"math/big"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
)

// scriptedIssuer stands in for a CA in the scheduler's unit tests: it
// answers each order with the next error of its script, or a certificate
// once the script is used up. Integration tests use the real Pebble.
type scriptedIssuer struct {
	mu       sync.Mutex
	errs     []error
	life     time.Duration
	notAfter func() time.Time
	orders   []Order
	running  map[string]int
	overlap  atomic.Bool
	delay    time.Duration
	during   func(Order) // called while the order runs, if set
}

func (s *scriptedIssuer) Obtain(ctx context.Context, o Order) (*store.Certificate, error) {
	s.mu.Lock()
	s.orders = append(s.orders, o)
	if s.running == nil {
		s.running = map[string]int{}
	}
	s.running[o.Name]++
	if s.running[o.Name] > 1 {
		s.overlap.Store(true)
	}
	var err error
	if len(s.errs) > 0 {
		err, s.errs = s.errs[0], s.errs[1:]
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running[o.Name]--
		s.mu.Unlock()
	}()
	if s.during != nil {
		s.during(o)
	}
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	c, err := selfSigned(o.Name, s.notAfter().Add(-s.life), s.notAfter())
	if err != nil {
		return nil, err
	}
	c.Source, c.Names = store.SourceACME, o.Names() // the record says what a CA's certificate would
	return c, nil
}

func (s *scriptedIssuer) orderCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.orders)
}

type problem struct {
	detail string
	perm   bool
	after  time.Duration
}

func (p problem) Error() string             { return p.detail }
func (p problem) Permanent() bool           { return p.perm }
func (p problem) RetryAfter() time.Duration { return p.after }

func selfSigned(name string, notBefore, notAfter time.Time) (*store.Certificate, error) {
	return selfSignedWith(name, notBefore, notAfter, big.NewInt(notAfter.UnixNano()), nil)
}

// selfSignedWith is a self-signed certificate record for name, valid from
// notBefore to notAfter, with the given serial and subject key identifier
// (with one, the certificate names it as its authority key too, and so
// has an ARI certificate identifier).
func selfSignedWith(name string, notBefore, notAfter time.Time, serial *big.Int, ski []byte) (*store.Certificate, error) {
	c, err := certtest.Mint(certtest.Template{DNSNames: []string{name}, Serial: serial, NotBefore: notBefore, NotAfter: notAfter, SubjectKeyID: ski}, nil)
	if err != nil {
		return nil, err
	}
	return store.ParseCertificate(c.CertPEM, c.KeyPEM, notBefore)
}

func openStore(t *testing.T) *store.Badger {
	t.Helper()
	st, err := store.OpenBadger(filepath.Join(t.TempDir(), "db"), store.BadgerOptions{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func addPending(t *testing.T, st store.Store, at time.Time, names ...string) {
	t.Helper()
	var ds []*store.Domain
	for _, n := range names {
		ds = append(ds, &store.Domain{Name: n, State: store.StatePending, NextAttempt: at, AddedAt: at, UpdatedAt: at})
	}
	if _, _, err := st.AddDomains(context.Background(), ds); err != nil {
		t.Fatal(err)
	}
}

func getDomain(t *testing.T, st store.Store, name string) *store.Domain {
	t.Helper()
	d, err := st.GetDomain(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestFailingNameFollowsBackoff drives one name through repeated permanent
// failures with a fake clock and checks that each next attempt follows the
// 1m, 10m, 100m, daily schedule, that the CA's words are kept, and that a
// success resets the count.
func TestFailingNameFollowsBackoff(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	detail := `urn:ietf:params:acme:error:dns :: DNS problem: NXDOMAIN looking up A for nowhere.example.test`
	fail := problem{detail: detail, perm: true}
	iss := &scriptedIssuer{errs: []error{fail, fail, fail, fail, fail}, life: 90 * 24 * time.Hour,
		notAfter: func() time.Time { return clock.Now().Add(90 * 24 * time.Hour) }}
	r, err := New(Config{Now: clock.Now, Seed: 42, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	const name = "nowhere.example.test"
	addPending(t, st, clock.Now(), name)

	wantWaits := []time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute, 24 * time.Hour, 24 * time.Hour}
	for i, want := range wantWaits {
		r.process(ctx, name, false)
		d := getDomain(t, st, name)
		if d.State != store.StateFailing || d.Failures != i+1 || d.LastError != detail {
			t.Fatalf("after failure %d: state %s, failures %d, last error %q", i+1, d.State, d.Failures, d.LastError)
		}
		wait := d.NextAttempt.Sub(clock.Now())
		if wait < want-want/10 || wait > want+want/10 {
			t.Fatalf("after failure %d: next attempt in %v, want %v ±10%%", i+1, wait, want)
		}
		// Not due yet: nothing happens, no order is sent.
		before := iss.orderCount()
		r.process(ctx, name, false)
		if iss.orderCount() != before {
			t.Fatalf("after failure %d: an order was sent before the next attempt was due", i+1)
		}
		due, err := st.Due(ctx, clock.Now(), 10)
		if err != nil || len(due) != 0 {
			t.Fatalf("after failure %d: due now = %v, %v; want nothing", i+1, due, err)
		}
		clock.Set(d.NextAttempt)
	}

	r.process(ctx, name, false)
	d := getDomain(t, st, name)
	if d.State != store.StateValid || d.Failures != 0 || d.LastError != "" || !d.FailingSince.IsZero() {
		t.Fatalf("after success: %+v", d)
	}
	if d.CertID != name {
		t.Fatalf("after success: cert id %q, want %q", d.CertID, name)
	}
	// Six attempts: the newest first, the issue then five failures in the
	// CA's words.
	if len(d.Attempts) != 6 || d.Attempts[0].Outcome != "issued" || d.Attempts[0].Serial == "" ||
		d.Attempts[1].Outcome != "failed" || d.Attempts[1].Error != detail {
		t.Fatalf("recent attempts %+v, want issued then five failures with the CA's detail", d.Attempts)
	}
}

func TestRetryAfterFromCAIsHonoured(t *testing.T) {
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	iss := &scriptedIssuer{errs: []error{problem{detail: "rateLimited", after: 3 * time.Hour}}, life: time.Hour,
		notAfter: func() time.Time { return clock.Now().Add(time.Hour) }}
	r, err := New(Config{Now: clock.Now, Seed: 1, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	addPending(t, st, clock.Now(), "a.example.test")
	r.process(context.Background(), "a.example.test", false)
	d := getDomain(t, st, "a.example.test")
	if got := d.NextAttempt.Sub(clock.Now()); got != 3*time.Hour {
		t.Fatalf("next attempt in %v, want the CA's Retry-After of 3h", got)
	}
}

func TestSuccessSchedulesRenewal(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	life := 90 * 24 * time.Hour
	iss := &scriptedIssuer{life: life, notAfter: func() time.Time { return clock.Now().Add(life) }}
	r, err := New(Config{Now: clock.Now, Seed: 7, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	const name = "ok.example.test"
	addPending(t, st, clock.Now(), name)
	r.process(ctx, name, false)

	d := getDomain(t, st, name)
	c, err := st.GetCertificate(ctx, d.CertID)
	if err != nil {
		t.Fatal(err)
	}
	target := c.NotBefore.Add(life * 2 / 3)
	if diff := c.RenewAt.Sub(target); diff < -life/20 || diff > life/20 {
		t.Fatalf("renew at %v, want within 5%% of the lifetime around %v", c.RenewAt, target)
	}
	if !d.NextAttempt.Equal(c.RenewAt) || d.State != store.StateValid {
		t.Fatalf("domain %+v: want valid with next attempt at the renewal time %v", d, c.RenewAt)
	}
	if iss.orders[0].Replaces != nil {
		t.Fatalf("first order carries Replaces")
	}

	// Due for renewal: the next order names the certificate it replaces and
	// the state goes through renewing back to valid with a new serial.
	clock.Set(c.RenewAt)
	r.process(ctx, name, false)
	if n := iss.orderCount(); n != 2 {
		t.Fatalf("%d orders after the renewal time, want 2", n)
	}
	if rep := iss.orders[1].Replaces; rep == nil || rep.Serial != c.Serial {
		t.Fatalf("renewal order replaces %v, want serial %s", rep, c.Serial)
	}
	c2, err := st.LookupCertificate(ctx, name)
	if err != nil || c2.Serial == c.Serial {
		t.Fatalf("after renewal the store serves serial %v (err %v), want a new one", c2.Serial, err)
	}
}

// TestRunOrdersEachNameOnceAtATime runs the real dispatcher over many due
// names with more workers than names need and checks that every name is
// ordered exactly once and never twice at the same time.
func TestRunOrdersEachNameOnceAtATime(t *testing.T) {
	st := openStore(t)
	now := time.Now()
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, delay: 5 * time.Millisecond,
		notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }}
	r, err := New(Config{Workers: 8, IdleWait: 50 * time.Millisecond, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 60 {
		names = append(names, "n"+string(rune('a'+i%26))+string(rune('a'+i/26))+".example.test")
	}
	addPending(t, st, now.Add(-time.Minute), names...)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		valid := 0
		for _, n := range names {
			if getDomain(t, st, n).State == store.StateValid {
				valid++
			}
		}
		if valid == len(names) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d names valid after 20s", valid, len(names))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v, want context.Canceled", err)
	}
	if iss.overlap.Load() {
		t.Fatal("a name was ordered twice at the same time")
	}
	if n := iss.orderCount(); n != len(names) {
		t.Fatalf("%d orders for %d names, want one each", n, len(names))
	}
}

// TestUrgentGoesFirst checks that a prioritized name is ordered before a
// backlog of due names.
func TestUrgentGoesFirst(t *testing.T) {
	st := openStore(t)
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, delay: 20 * time.Millisecond,
		notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }}
	r, err := New(Config{Workers: 1, IdleWait: 50 * time.Millisecond, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	var backlog []string
	for i := range 20 {
		backlog = append(backlog, "b"+string(rune('a'+i))+".example.test")
	}
	addPending(t, st, time.Now().Add(-time.Hour), backlog...)
	addPending(t, st, time.Now(), "urgent.example.test")
	r.Prioritize("urgent.example.test")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for iss.orderCount() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("fewer than 3 orders after 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	iss.mu.Lock()
	first := iss.orders[0].Name
	iss.mu.Unlock()
	if first != "urgent.example.test" {
		t.Fatalf("first order was for %s, want the prioritized name", first)
	}
}

// TestRemovedWhileOrdering removes a name while its order runs, as an
// operator would, and checks that the worker's outcome does not bring it
// back, whether the order succeeds or fails, and that a certificate the
// order obtained is not stored.
func TestRemovedWhileOrdering(t *testing.T) {
	for _, tc := range []struct {
		desc string
		errs []error
	}{
		{desc: "order succeeds"},
		{desc: "order fails", errs: []error{problem{detail: "serverInternal"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ctx := context.Background()
			st := openStore(t)
			clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
			const name = "gone.example.test"
			iss := &scriptedIssuer{errs: tc.errs, life: 90 * 24 * time.Hour,
				notAfter: func() time.Time { return clock.Now().Add(90 * 24 * time.Hour) },
				during: func(Order) {
					err := st.UpdateDomain(ctx, name, func(d *store.Domain) error {
						d.State, d.NextAttempt = store.StateRemoved, time.Time{}
						return nil
					})
					if err != nil {
						t.Error(err)
					}
				}}
			r, err := New(Config{Now: clock.Now, Seed: 3, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
			if err != nil {
				t.Fatal(err)
			}
			addPending(t, st, clock.Now(), name)
			r.process(ctx, name, false)
			d := getDomain(t, st, name)
			if d.State != store.StateRemoved || !d.NextAttempt.IsZero() {
				t.Fatalf("after the order: state %s, next attempt %v; want removed and unscheduled", d.State, d.NextAttempt)
			}
			// Nobody renews a removed name: the certificate of its last
			// order is not stored (and so not served).
			if c, err := st.LookupCertificate(ctx, name); !errors.Is(err, store.ErrNotFound) {
				serial := ""
				if c != nil {
					serial = c.Serial
				}
				t.Fatalf("after the order the store serves certificate %q (err %v), want nothing", serial, err)
			}
		})
	}
}

// TestAdoptsImportedCertificate adds a name that an imported certificate
// already serves: no order is sent until the certificate's renewal time
// (two thirds of its lifetime), and then the order replaces the imported
// certificate (it may come from this CA and account; a CA that says
// otherwise gets a plain order, see TestReplacesRefusedFallsBack).
// TestImportedLineageRenewsAsOneSet: a certbot lineage for three names is
// imported and its names are added one by one. The names are served at
// once and nothing is ordered; the lineage's first name takes the set, the
// other two are managed with it (whichever the workers reach first), and
// the renewal is one order for the three names, replacing the imported
// certificate: a renewal for the CA's limits, not three new orders.
// TestAdoptionEndsFailures: a name whose first order had been failing for
// 20 days is valid once an operator imports a certificate for it, and its
// failure record is cleared, so a single failed renewal 60 days later is
// a first failure (retried in a minute), not the end of a 30-day run that
// gives the name up.
func (b *brokenReads) GetDomain(ctx context.Context, name string) (*store.Domain, error) {
	b.reads.Add(1)
	return nil, errors.New("decode domain record: unexpected EOF")
}

// TestStoreErrorDoesNotSpin: a name whose record cannot be read stays due
// (nothing can be written), and the worker that met the error waits
// before the dispatcher hands the name out again, instead of spinning on
// it and flooding the log.
func TestStoreErrorDoesNotSpin(t *testing.T) {
	st := &brokenReads{Store: openStore(t)}
	addPending(t, st.Store, time.Now(), "broken.example.test")
	r, err := New(Config{Workers: 1, IdleWait: 10 * time.Millisecond, CAs: []CA{{Issuer: &scriptedIssuer{}}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.Run(ctx)
	if n := st.reads.Load(); n < 1 || n > 2 {
		t.Fatalf("the unreadable record was read %d times in 2 s, want 1 or 2 (a pause of %s after each failure)", n, storeErrorPause)
	}
}

// TestManagedWithRemovedOwner: a name left managed with a name that was
// removed (a removal cut short) is renewed on its own when it comes due,
// not skipped forever.
func TestManagedWithRemovedOwner(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	life := 90 * 24 * time.Hour
	iss := &scriptedIssuer{life: life, notAfter: func() time.Time { return clock.Now().Add(life) }}
	r, err := New(Config{Now: clock.Now, Seed: 9, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*store.Domain{
		{Name: "shop.example.test", State: store.StateRemoved, ExtraNames: []string{"www.shop.example.test"}},
		{Name: "www.shop.example.test", State: store.StateValid, ManagedWith: "shop.example.test", NextAttempt: clock.Now()},
		{Name: "api.shop.example.test", State: store.StateValid, ManagedWith: "gone.example.test", NextAttempt: clock.Now()},
	} {
		if err := st.PutDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"www.shop.example.test", "api.shop.example.test"} {
		r.process(ctx, n, false)
		d := getDomain(t, st, n)
		if d.ManagedWith != "" || d.State != store.StateValid || d.NextAttempt.IsZero() {
			t.Errorf("%s: managed with %q, state %s, next attempt %v; want valid on its own, due again", n, d.ManagedWith, d.State, d.NextAttempt)
		}
		if c, err := st.LookupCertificate(ctx, n); err != nil || c.ID != n {
			t.Errorf("%s is served by %+v (%v), want its own certificate", n, c, err)
		}
	}
	if n := iss.orderCount(); n != 2 {
		t.Errorf("%d orders, want one for each name", n)
	}
}
