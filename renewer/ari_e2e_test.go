package renewer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// The integration tests in this file run the renewer's ARI, failover and
// mass renewal paths against the real Pebble.

// runRenewer runs r until the test ends or the returned stop is called.
func runRenewer(t *testing.T, r *Renewer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return stop
}

// servedOther waits until the store serves name a certificate other than
// old (nil: any ACME certificate) and the name is valid with it.
func servedOther(t *testing.T, st store.Store, name string, old *store.Certificate) *store.Certificate {
	t.Helper()
	var c *store.Certificate
	waitFor(t, 30*time.Second, name+" served a new certificate", func() bool {
		var err error
		c, err = st.LookupCertificate(context.Background(), name)
		if err != nil || c.Source != store.SourceACME || old != nil && c.Serial == old.Serial {
			return false
		}
		d, err := st.GetDomain(context.Background(), name)
		return err == nil && d.State == store.StateValid && d.CertID == c.ID
	})
	return c
}

// pebbleLosesSerial reports whether Pebble v2.10.1 fails to find c by
// the serial in an ARI certificate identifier: it keys certificates by
// the hex of the serial's minimal bytes, and the identifier carries the
// DER integer, which has a leading zero byte when the top bit is set.
// Pebble then refuses a replacement of c with serverInternal ("could not
// find an order for the given certificate"), which the renewer answers
// with a plain order.
func pebbleLosesSerial(t *testing.T, c *store.Certificate) bool {
	t.Helper()
	b := leafOf(t, c).SerialNumber.Bytes()
	return len(b) > 0 && b[0]&0x80 != 0
}

// checkRenewal checks the orders for a name after the first one: a
// renewal that names old as replaced and is created, or, when Pebble
// cannot find old (pebbleLosesSerial), that renewal refused with a 500
// and a plain order, created.
func checkRenewal(t *testing.T, orders []pebbletest.Order, old *store.Certificate) {
	t.Helper()
	switch {
	case len(orders) == 1 && orders[0].Replaces == replacesID(old) && orders[0].Status == http.StatusCreated:
	case len(orders) == 2 && pebbleLosesSerial(t, old) && orders[0].Replaces == replacesID(old) &&
		orders[0].Status == http.StatusInternalServerError && orders[1].Replaces == "" && orders[1].Status == http.StatusCreated:
	default:
		t.Fatalf("renewal orders %+v, want one that replaces %s, created", orders, replacesID(old))
	}
}

// ordersFor returns the orders the CA received for name.
func ordersFor(ca *pebbletest.Server, name string) []pebbletest.Order {
	var out []pebbletest.Order
	for _, o := range ca.Orders() {
		if slices.Contains(o.Names, name) {
			out = append(out, o)
		}
	}
	return out
}

// TestARIWithPebble: a certificate whose window Pebble moves into the past
// is found by the next poll and renewed with "replaces" naming it; when
// the CA answers alreadyReplaced (409) a plain order follows and succeeds;
// and a certificate another account ordered (Pebble: unauthorized) is
// renewed by a plain order too.
func TestARIWithPebble(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	const name, other = "ari.example.test", "moved.example.test"
	env.pointHere(name, other)
	is := env.issuer(t, nil)
	r, err := New(Config{Workers: 2, IdleWait: 100 * time.Millisecond, DefaultProfile: "default",
		ARIPollInterval: time.Second, CAs: []CA{{Issuer: is, OffersARI: true}}}, env.store, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runRenewer(t, r)
	addPending(t, env.store, time.Now(), name)
	r.Wake()
	first := servedOther(t, env.store, name, nil)

	// The CA wants it replaced now. The next poll (within about a second)
	// finds it.
	now := time.Now()
	env.ca.SetRenewalInfo(t, first.ChainPEM, now.Add(-2*time.Hour), now.Add(-time.Hour))
	second := servedOther(t, env.store, name, first)
	checkRenewal(t, ordersFor(env.ca, name)[1:], first)
	if err := env.ca.VerifyChain(t, second.ChainPEM, name); err != nil {
		t.Fatal(err)
	}
	if st := r.CAStatus()[0]; st.Counts.Polls == 0 || st.Counts.WindowsMoved == 0 {
		t.Errorf("CA counts %+v, want polls and a moved window", st.Counts)
	}

	// alreadyReplaced: the renewal without replaces follows at once.
	env.ca.FailNewOrders(1, pebbletest.Fault{Status: http.StatusConflict,
		Type: "urn:ietf:params:acme:error:alreadyReplaced", Detail: "certificate already has a replacement order"})
	before := len(ordersFor(env.ca, name))
	r.Prioritize(name)
	third := servedOther(t, env.store, name, second)
	orders := ordersFor(env.ca, name)[before:]
	if len(orders) != 2 || orders[0].Replaces != replacesID(second) || orders[0].Status != http.StatusConflict ||
		orders[1].Replaces != "" || orders[1].Status != http.StatusCreated {
		t.Fatalf("orders %+v, want a refused replacement of %s, then a plain order, created", orders, replacesID(second))
	}
	if d := getDomain(t, env.store, name); d.Failures != 0 || third.Origin != env.ca.DirectoryURL {
		t.Fatalf("domain %+v, origin %s; want no failure, the CA's directory", d, third.Origin)
	}

	// Another account's certificate: Pebble refuses the replacement
	// (unauthorized), the plain order succeeds.
	otherAcct := env.issuer(t, func(c *ACMEConfig) { c.Email = "someone-else@example.test" })
	var theirs *store.Certificate
	for theirs == nil || pebbleLosesSerial(t, theirs) {
		if theirs, err = otherAcct.Obtain(t.Context(), Order{Name: other, Profile: "default"}); err != nil {
			t.Fatal(err)
		}
	}
	issued := len(ordersFor(env.ca, other))
	theirs.RenewAt = time.Now().Add(-time.Minute) // due
	if err := env.store.PutCertificate(t.Context(), theirs); err != nil {
		t.Fatal(err)
	}
	addPending(t, env.store, time.Now(), other)
	r.Wake()
	servedOther(t, env.store, other, theirs)
	orders = ordersFor(env.ca, other)[issued:]
	if len(orders) != 2 || orders[0].Replaces != replacesID(theirs) || orders[0].Status != http.StatusForbidden ||
		orders[1].Replaces != "" || orders[1].Status != http.StatusCreated {
		t.Fatalf("orders %+v, want a replacement refused (another account's certificate), then a plain order", orders)
	}
}

// TestCAFailoverWithPebble: two Pebbles. While the first refuses orders
// (rateLimited, a 503) or cannot be reached, the second issues, and the
// certificates name it as their origin; a certificate from the second is
// renewed there, naming it as replaced.
func TestCAFailoverWithPebble(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	second := pebbletest.Start(t, pebbletest.Options{HTTPPort: env.ca.HTTPPort, DNS: env.ca.DNS})
	names := []string{"limited.example.test", "down.example.test", "unreachable.example.test"}
	env.pointHere(names...)
	log := testLogger(t)
	first := env.issuer(t, nil)
	backup, err := NewACMEIssuer(ACMEConfig{Directory: second.DirectoryURL, Email: "ops@example.test", AgreeTerms: true,
		HTTPClient: second.HTTPClient(), Timeout: time.Minute}, env.store, log)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Workers: 1, IdleWait: 100 * time.Millisecond, DefaultProfile: "default",
		CAs: []CA{{Name: "first", Issuer: first, OffersARI: true}, {Name: "second", Issuer: backup, OffersARI: true}}},
		env.store, log)
	if err != nil {
		t.Fatal(err)
	}
	stop := runRenewer(t, r)

	env.ca.FailNewOrders(1, pebbletest.Fault{Status: http.StatusTooManyRequests, Type: "urn:ietf:params:acme:error:rateLimited",
		Detail: "too many new orders (300) from this account", RetryAfter: "60"})
	addPending(t, env.store, time.Now(), names[0])
	r.Wake()
	c := servedOther(t, env.store, names[0], nil)
	if c.Origin != second.DirectoryURL || second.VerifyChain(t, c.ChainPEM, names[0]) != nil {
		t.Fatalf("%s: origin %s, want the second CA's, with a chain that verifies", names[0], c.Origin)
	}

	env.ca.FailNewOrders(1, pebbletest.Fault{Status: http.StatusServiceUnavailable, Detail: "<html>down for maintenance</html>"})
	addPending(t, env.store, time.Now(), names[1])
	r.Wake()
	if c := servedOther(t, env.store, names[1], nil); c.Origin != second.DirectoryURL {
		t.Fatalf("%s: origin %s, want the second CA", names[1], c.Origin)
	}
	if env.ca.OrdersFor(names[0]) != 1 || env.ca.OrdersFor(names[1]) != 1 || second.OrdersFor(names[0]) != 1 {
		t.Fatalf("orders at the first CA %+v, at the second %+v; want one each per name", env.ca.Orders(), second.Orders())
	}

	// The renewal of a certificate from the second CA goes there first.
	r.Prioritize(names[0])
	renewed := servedOther(t, env.store, names[0], c)
	checkRenewal(t, ordersFor(second, names[0])[1:], c)
	if renewed.Origin != second.DirectoryURL {
		t.Fatalf("renewed at %s, want the second CA", renewed.Origin)
	}
	if n := env.ca.OrdersFor(names[0]); n != 1 {
		t.Fatalf("%d orders for %s at the first CA, want only the refused one", n, names[0])
	}

	// A first CA nobody answers at.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	gone, err := NewACMEIssuer(ACMEConfig{Directory: "https://127.0.0.1:" + strconv.Itoa(port) + "/dir", AgreeTerms: true,
		Timeout: 10 * time.Second}, env.store, log)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := New(Config{Workers: 1, IdleWait: 100 * time.Millisecond, DefaultProfile: "default",
		CAs: []CA{{Name: "gone", Issuer: gone}, {Name: "second", Issuer: backup}}}, env.store, log)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	runRenewer(t, r2)
	addPending(t, env.store, time.Now(), names[2])
	r2.Wake()
	if c := servedOther(t, env.store, names[2], nil); c.Origin != second.DirectoryURL {
		t.Fatalf("%s: origin %s, want the second CA", names[2], c.Origin)
	}
	if st := r2.CAStatus(); st[0].Counts.Failed != 1 || st[1].Counts.Issued != 1 {
		t.Fatalf("CA status %+v, want one failure at the unreachable CA and one issue at the second", st)
	}
}

// massRenewalDefault is how many certificates TestMassRenewalWithPebble
// renews in `make test`: hundreds of orders paced by the bucket after its burst,
// few enough that the run does not depend on how loaded the machine is.
const massRenewalDefault = 400

// TestMassRenewalWithPebble: certificates whose windows Pebble moves
// into the past (a CA revoking in bulk) are all replaced, each naming the
// certificate it replaces, at the pace of the account's OrderRequests
// bucket (20 a second, bursts of 10): no span of orders reaches Pebble
// faster than the bucket allows (give or take the time between the bucket
// and Pebble), and the whole wave takes not much longer than the bucket
// needs, so the limiter, not the workers, sets the pace.
//
// In the suite it runs massRenewalDefault certificates (about a minute on 2
// cores beside the other packages). CERTSERVER_MASS_RENEWAL=N runs N
// instead: `make soak` runs 2,000 (about 4 minutes alone: 130 s to issue
// them 16 at a time, since more make Pebble v2.10.1 stick, see
// watchPebble; 100 s to replace them).
func TestMassRenewalWithPebble(t *testing.T) {
	t.Parallel()
	n := massRenewalDefault
	if v := os.Getenv("CERTSERVER_MASS_RENEWAL"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("CERTSERVER_MASS_RENEWAL=%q: want a count", v)
		}
	}
	const (
		burst = 10
		per   = 500 * time.Millisecond // 20 a second
		slack = time.Second            // from the bucket to Pebble, under -race
	)
	// Pebble reuses each name's valid authorization from the first
	// order, as Let's Encrypt does for 7 hours, so renewals are paced
	// by the bucket rather than by validation.
	env := newACMEEnv(t, pebbletest.Options{AuthzReuse: 100})
	// A slow Pebble is not a failure: the watchdog tells a stuck one.
	is := env.issuer(t, func(c *ACMEConfig) { c.Timeout = 5 * time.Minute })
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("m%04d.example.test", i)
	}
	env.pointHere(names...)

	// Pebble v2.10.1 can stop answering under many concurrent orders (a
	// lock cycle of its own, seen once in CI with 32 at a time); the
	// watchdog then fails the test within 90 s with Pebble's goroutines,
	// instead of at the test timeout.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stopWatch := watchPebble(t, env.ca, cancel)
	defer stopWatch()

	// The certificates, issued 16 at a time and stored as the renewer
	// would, their windows then moved into the past.
	start := time.Now()
	certs := make([]*store.Certificate, n)
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				c, err := is.Obtain(ctx, Order{Name: names[i], Profile: "default"})
				if err != nil {
					t.Error(err)
					continue
				}
				certs[i] = c
			}
		})
	}
	for i := range names {
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	now := time.Now()
	var ds []*store.Domain
	for i, c := range certs {
		c.StoredAt = now
		if err := env.store.PutCertificate(t.Context(), c); err != nil {
			t.Fatal(err)
		}
		env.ca.SetRenewalInfo(t, c.ChainPEM, now.Add(-2*time.Hour), now.Add(-time.Hour))
		ds = append(ds, &store.Domain{Name: names[i], State: store.StateValid, CertID: c.ID, NextAttempt: now})
	}
	if _, _, err := env.store.AddDomains(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d certificates issued in %s", n, time.Since(start).Round(time.Millisecond))

	off := ratelimit.Limit{Burst: -1}
	lim, err := ratelimit.NewLimiter(ratelimit.LimitsConfig{OrderRequests: ratelimit.Limit{Burst: burst, Per: per},
		NewOrders: off, CertsPerRegisteredDomain: off, CertsPerExactSet: off, AuthzFailures: off, ConsecutiveAuthzFailures: off}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Workers: 32, IdleWait: 100 * time.Millisecond, DefaultProfile: "default",
		CAs: []CA{{Issuer: is, Limiter: lim, OffersARI: true}}}, env.store, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	runRenewer(t, r)
	// Only a bound for a wave that never ends (the watchdog reports a
	// stuck Pebble sooner): four times what the bucket needs, and 5 minutes.
	waitFor(t, 4*time.Duration(n)*per/burst+5*time.Minute, "every certificate replaced", func() bool {
		if ctx.Err() != nil {
			t.FailNow() // the watchdog found Pebble stuck
		}
		return len(env.ca.Orders()) >= 2*n && r.InFlight() == 0
	})
	took := time.Since(start)
	stopWatch()

	renewals := env.ca.Orders()[n:]
	for i, name := range names {
		servedOther(t, env.store, name, certs[i])
		checkRenewal(t, ordersFor(env.ca, name)[1:], certs[i])
	}
	interval := per / burst
	for j := range renewals {
		for i := j - burst; i >= 0; i-- {
			if span := renewals[j].Received.Sub(renewals[i].Received); span < time.Duration(j-i+1-burst)*interval-slack {
				t.Fatalf("renewal orders %d to %d reached Pebble within %s: faster than %d per %s", i, j, span, burst, per)
			}
		}
	}
	span := renewals[n-1].Received.Sub(renewals[0].Received)
	t.Logf("%d renewals in %s (orders over %s; the bucket allows one every %s after a burst of %d)",
		n, took.Round(time.Millisecond), span.Round(time.Millisecond), interval, burst)
	want := time.Duration(n-burst) * interval
	if span < want-slack {
		t.Fatalf("renewal orders spread over %s, want at least %s", span, want)
	}
	// The bucket sets the pace, with room for a loaded CI machine: twice
	// what the bucket needs, and a minute.
	if limit := 2*want + time.Minute; span > limit {
		t.Fatalf("renewal orders spread over %s, want at most %s: something other than the bucket (workers, the dispatcher) held the wave back", span, limit)
	}
}

// TestNoARIWithPebble: against a CA whose directory does not advertise
// renewal information, the issuer says so, RenewalInfo answers
// ErrNoRenewalInfo without asking, and a renewal goes without "replaces"
// (RFC 9773 section 5: not to a CA that has not said it understands it).
func TestNoARIWithPebble(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{HideRenewalInfo: true})
	const name = "noari.example.test"
	env.pointHere(name)
	is := env.issuer(t, nil)
	ctx := t.Context()
	first, err := is.Obtain(ctx, Order{Name: name, Profile: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if offered, err := is.OffersRenewalInfo(ctx); offered || err != nil {
		t.Errorf("OffersRenewalInfo = %v, %v; want false", offered, err)
	}
	if _, err := is.RenewalInfo(ctx, first); !errors.Is(err, ErrNoRenewalInfo) {
		t.Errorf("RenewalInfo = %v, want ErrNoRenewalInfo", err)
	}
	if _, err := is.Obtain(ctx, Order{Name: name, Profile: "default", Replaces: first}); err != nil {
		t.Fatal(err)
	}
	orders := ordersFor(env.ca, name)
	if len(orders) != 2 || orders[1].Replaces != "" || orders[1].Status != http.StatusCreated {
		t.Fatalf("orders %+v; want the renewal created without replaces", orders)
	}
}

// watchPebble fails t, with Pebble's goroutine dump, and calls cancel when
// Pebble has created no order for 90 seconds (a test with Pebble at work
// creates several a second). The returned stop, to be called as soon as
// no more orders are due, ends the watch.
func watchPebble(t *testing.T, ca *pebbletest.Server, cancel context.CancelFunc) (stop func()) {
	t.Helper()
	done := make(chan struct{})
	finished := make(chan struct{})
	// Progress is orders created: a stuck Pebble's front still answers,
	// with a 502 when the client gives up.
	answered := func() (ans, sent int) {
		orders := ca.Orders()
		for _, o := range orders {
			if o.Status == http.StatusCreated {
				ans++
			}
		}
		return ans, len(orders)
	}
	go func() {
		defer close(finished)
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		last, since := -1, time.Now()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			ans, sent := answered()
			if ans != last {
				last, since = ans, time.Now()
				continue
			}
			if time.Since(since) > 90*time.Second {
				t.Errorf("Pebble created no order for %s (%d created of %d sent): it is stuck; its goroutines:\n%s",
					time.Since(since).Round(time.Second), ans, sent, ca.DumpAndStop())
				cancel()
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			<-finished
		})
	}
}

// TestImportedSetReplacesWithPebble: a two-name certificate this account
// ordered comes back as an import (a store restored from a backup, a
// certificate copied from another host). Its names are managed again; the
// first one takes the set, and its renewal is one order for both names
// that names the imported certificate in "replaces", which Pebble accepts:
// the same account ordered it. (TestCertbotLineageRenewsAsOneOrder in
// cmd/certserver has the other account's case: refused, then a plain
// order.)
func TestImportedSetReplacesWithPebble(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	set := []string{"set.example.test", "www.set.example.test"}
	env.pointHere(set...)
	is := env.issuer(t, nil)
	ctx := context.Background()
	imported, err := is.Obtain(ctx, Order{Name: set[0], ExtraNames: set[1:], Profile: "default"})
	if err != nil {
		t.Fatal(err)
	}
	imported.Source, imported.Origin, imported.RenewAt = "import", "/etc/ssl/set.pem", time.Time{}
	if err := env.store.PutCertificate(ctx, imported); err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Workers: 2, IdleWait: 100 * time.Millisecond, DefaultProfile: "default", CAs: []CA{{Issuer: is, OffersARI: true}}},
		env.store, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	runRenewer(t, r)
	addPending(t, env.store, time.Now(), set...)
	r.Wake()
	waitFor(t, 30*time.Second, "the set to be managed", func() bool {
		p, err1 := env.store.GetDomain(ctx, set[0])
		o, err2 := env.store.GetDomain(ctx, set[1])
		return err1 == nil && err2 == nil && p.State == store.StateValid && slices.Equal(p.ExtraNames, set[1:]) && o.ManagedWith == set[0]
	})
	if n := len(ordersFor(env.ca, set[0])); n != 1 {
		t.Fatalf("%d orders before the renewal, want the one that made the imported certificate", n)
	}

	if !r.Prioritize(set[0]) {
		t.Fatal("renewal not queued")
	}
	renewed := servedOther(t, env.store, set[0], imported)
	orders := ordersFor(env.ca, set[0])[1:]
	checkRenewal(t, orders, imported)
	if last := orders[len(orders)-1]; !slices.Equal(last.Names, set) {
		t.Errorf("renewal order for %v, want %v", last.Names, set)
	}
	if c, err := env.store.LookupCertificate(ctx, set[1]); err != nil || c.Serial != renewed.Serial {
		t.Errorf("%s is served %v (err %v), want the renewed certificate", set[1], c, err)
	}
}
