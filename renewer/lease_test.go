package renewer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openPostgres opens a store on url (a database of pgtest's cluster)
// reading the time from clock (time.Now when nil), closed when t ends.
func openPostgres(t *testing.T, url string, clock func() time.Time) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), postgres.Options{URL: url, Logger: discardLogger(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// slogTo returns a logger writing text at debug level to buf.
func slogTo(buf *lockedBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestLeasesShareTheWork: two hosts' renewers on one PostgreSQL, each with
// its own connections, work through 40 due names at once: every name is
// ordered exactly once, never by both hosts at the same time, and no
// lease is left when they are done.
func TestLeasesShareTheWork(t *testing.T) {
	url := pgtest.New(t)
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, delay: 5 * time.Millisecond,
		notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }}
	st := openPostgres(t, url, nil)
	var names []string
	for i := range 40 {
		names = append(names, fmt.Sprintf("n%02d.example.test", i))
	}
	addPending(t, st, time.Now().Add(-time.Minute), names...)
	for _, host := range []string{"a", "b"} {
		hs := openPostgres(t, url, nil)
		r, err := New(Config{Workers: 4, IdleWait: 50 * time.Millisecond, CAs: []CA{{Issuer: iss}},
			Leases: hs, Host: host}, hs, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		runRenewer(t, r)
	}
	waitFor(t, time.Minute, "every name valid", func() bool {
		for _, n := range names {
			if getDomain(t, st, n).State != store.StateValid {
				return false
			}
		}
		return true
	})
	waitFor(t, time.Minute, "every lease released", func() bool {
		ls, err := st.Leases(context.Background())
		return err == nil && len(ls) == 0
	})
	if iss.overlap.Load() {
		t.Error("a name was ordered by two workers at the same time")
	}
	if n := iss.orderCount(); n != len(names) {
		t.Errorf("%d orders for %d names, want one each", n, len(names))
	}
}

// heldIssuer holds each order until the test lets it go (or the order's
// context ends), then issues.
type heldIssuer struct {
	started chan string
	proceed chan struct{}
	ended   chan error
	clock   *fakeClock
}

func (h *heldIssuer) Obtain(ctx context.Context, o Order) (*store.Certificate, error) {
	h.started <- o.Name
	select {
	case <-h.proceed:
	case <-ctx.Done():
		h.ended <- ctx.Err()
		return nil, ctx.Err()
	}
	h.ended <- nil
	now := h.clock.Now()
	return selfSigned(o.Name, now, now.Add(90*24*time.Hour))
}

// TestLostLeaseDiscardsResult: a host's order runs past its lease (the
// host paused), another host claims the name and stores its own
// certificate; the first host's result is then discarded, whether it
// finds out when its write is refused (fencing) or when renewing its
// leases (its order is stopped), and it says so in its log. The other
// host's certificate and record stand.
func TestLostLeaseDiscardsResult(t *testing.T) {
	for _, how := range []string{"write refused", "renewal finds it lost"} {
		t.Run(how, func(t *testing.T) {
			url := pgtest.New(t)
			clock := newFakeClock(time.Now().UTC().Truncate(time.Second))
			st := openPostgres(t, url, clock.Now)
			const name = "paused.example.test"
			addPending(t, st, clock.Now().Add(-time.Minute), name)
			iss := &heldIssuer{started: make(chan string, 1), proceed: make(chan struct{}), ended: make(chan error, 1), clock: clock}
			log := &lockedBuffer{}
			r, err := New(Config{Workers: 1, IdleWait: time.Hour, CAs: []CA{{Issuer: iss}}, Now: clock.Now,
				Leases: st, Host: "a", LeaseTTL: time.Hour}, st, slogTo(log))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("log:\n%s", log)
				}
			})
			runRenewer(t, r)
			select {
			case <-iss.started:
			case <-time.After(time.Minute):
				t.Fatal("no order")
			}

			// Host a is paused past its lease; host b claims the name and
			// stores its certificate under its lease.
			clock.Advance(2 * time.Hour)
			other := openPostgres(t, url, clock.Now)
			lb, err := other.ClaimDue(context.Background(), "b", clock.Now(), 10, time.Minute)
			if err != nil || len(lb) != 1 {
				t.Fatalf("ClaimDue by b: %v, %v", lb, err)
			}
			theirs, err := selfSigned(name, clock.Now(), clock.Now().Add(90*24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			bctx := store.WithLease(context.Background(), lb[0])
			if err := other.PutCertificate(bctx, theirs); err != nil {
				t.Fatal(err)
			}
			if err := other.UpdateDomain(bctx, name, func(d *store.Domain) error {
				d.State, d.CertID, d.NextAttempt = store.StateValid, theirs.ID, clock.Now().Add(60*24*time.Hour)
				return nil
			}); err != nil {
				t.Fatal(err)
			}

			if how == "write refused" {
				close(iss.proceed)
				if err := <-iss.ended; err != nil {
					t.Fatalf("the order ended with %v, want it to issue", err)
				}
			} else {
				r.renewLeases(context.Background())
				select {
				case err := <-iss.ended:
					if !errors.Is(err, context.Canceled) {
						t.Fatalf("the order ended with %v, want it cancelled", err)
					}
				case <-time.After(time.Minute):
					close(iss.proceed) // for the cleanup
					t.Fatal("the order still runs a minute after its lease was found lost")
				}
			}
			waitFor(t, time.Minute, "the log line of the lost lease", func() bool {
				return strings.Contains(log.String(), "lease on "+name+" lost to another host; result discarded")
			})
			waitFor(t, time.Minute, "the worker done", func() bool { return r.InFlight() == 0 })
			if c, err := st.GetCertificate(context.Background(), name); err != nil || c.Serial != theirs.Serial {
				t.Errorf("stored certificate: %v; want b's, serial %s", err, theirs.Serial)
			}
			d := getDomain(t, st, name)
			if d.State != store.StateValid || d.CertID != theirs.ID || len(d.Attempts) != 0 {
				t.Errorf("record %+v: want b's write, valid, no attempt of a's", d)
			}
			if ls, err := st.Leases(context.Background()); err != nil || len(ls) != 1 || ls[0].Host != "b" {
				t.Errorf("leases %+v, %v: want b's alone", ls, err)
			}
		})
	}
}

// TestUrgentNameLeasedElsewhere: a name another host holds a lease on is
// not ordered when an operator asks for it here: that host has it.
func TestUrgentNameLeasedElsewhere(t *testing.T) {
	url := pgtest.New(t)
	st := openPostgres(t, url, nil)
	const name = "held.example.test"
	addPending(t, st, time.Now().Add(time.Hour), name)
	if _, err := st.Claim(context.Background(), "b", name, time.Hour); err != nil {
		t.Fatal(err)
	}
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }}
	log := &lockedBuffer{}
	r, err := New(Config{Workers: 1, IdleWait: time.Hour, CAs: []CA{{Issuer: iss}}, Leases: st, Host: "a"}, st, slogTo(log))
	if err != nil {
		t.Fatal(err)
	}
	runRenewer(t, r)
	r.Prioritize(name)
	waitFor(t, time.Minute, "the name left to the other host", func() bool {
		return strings.Contains(log.String(), "another host is working on the name; left to it")
	})
	waitFor(t, time.Minute, "the worker done", func() bool { return r.InFlight() == 0 })
	if n := iss.orderCount(); n != 0 {
		t.Errorf("%d orders, want none", n)
	}
}

// TestARIPollLeased: renewal information polls are leased work like any
// other: two hosts' renewers on one PostgreSQL, whose certificates all
// come up for their poll at once, ask the CA once per certificate for the
// whole fleet, and order nothing.
func TestARIPollLeased(t *testing.T) {
	url := pgtest.New(t)
	clock := newFakeClock(time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC))
	ca := newFakeCA("https://ca.example.test/dir", clock)
	st := openPostgres(t, url, clock.Now)
	var names []string
	for i := range 12 {
		names = append(names, fmt.Sprintf("ari%02d.example.test", i))
	}
	addPending(t, st, clock.Now().Add(-time.Minute), names...)
	var rs []*Renewer
	for _, host := range []string{"a", "b"} {
		hs := openPostgres(t, url, clock.Now)
		r, err := New(Config{Workers: 4, IdleWait: 50 * time.Millisecond, Now: clock.Now, CAs: []CA{{Issuer: ca, OffersARI: true}},
			Leases: hs, Host: host}, hs, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
		runRenewer(t, r)
	}
	settled := func(what string) {
		t.Helper()
		waitFor(t, time.Minute, what, func() bool {
			for _, n := range names {
				if d := getDomain(t, st, n); d.State != store.StateValid || !d.NextAttempt.After(clock.Now()) {
					return false
				}
			}
			ls, err := st.Leases(context.Background())
			return err == nil && len(ls) == 0
		})
	}
	settled("every name valid")
	if n := len(ca.orderList()); n != len(names) {
		t.Fatalf("%d orders for %d names, want one each", n, len(names))
	}
	polls := ca.pollCount()

	// Every certificate's next poll (about 12 hours on) has come; its
	// renewal (about 60 days on) has not.
	clock.Advance(14 * time.Hour)
	for _, r := range rs {
		r.Wake()
	}
	settled("every name polled and rescheduled")
	if got := ca.pollCount() - polls; got != len(names) {
		t.Errorf("%d polls for %d certificates, want one each for the fleet", got, len(names))
	}
	if n := len(ca.orderList()); n != len(names) {
		t.Errorf("%d orders after the polls, want still %d", n, len(names))
	}
}
