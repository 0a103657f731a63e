package postgres_test

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/renewer/clocktest"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// addDue adds n managed names, name-000 … name-(n-1), due one second
// apart from at on, and returns their names in due order.
func addDue(t *testing.T, s *postgres.Store, at time.Time, n int) []string {
	t.Helper()
	ds := make([]*store.Domain, n)
	names := make([]string, n)
	for i := range ds {
		names[i] = fmt.Sprintf("d%03d.example.com", i)
		ds[i] = &store.Domain{Name: names[i], State: store.StatePending, Source: "api", NextAttempt: at.Add(time.Duration(i) * time.Second)}
	}
	if _, _, err := s.AddDomains(ctx(t), ds); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestClaimDueSharesTheWork: four hosts, each with a store of its own on
// one database, claim the due names in small batches at the same time
// until none is left: every due name is claimed exactly once, each
// batch earliest first, each under a token of its own; the names not due
// yet are claimed by nobody.
func TestClaimDueSharesTheWork(t *testing.T) {
	url := pgtest.New(t)
	clock := clocktest.New(time.Now().UTC().Truncate(time.Second))
	first := openURL(t, url, clock.Now)
	const due = 120
	names := addDue(t, first, clock.Now().Add(-time.Hour), due)
	if _, _, err := first.AddDomains(ctx(t), []*store.Domain{{Name: "later.example.com", State: store.StatePending, NextAttempt: clock.Now().Add(time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		got    = map[string]string{} // name -> host
		tokens = map[int64]bool{}
		errs   []error
		wg     sync.WaitGroup
	)
	for h := range 4 {
		host := fmt.Sprintf("host%d", h)
		s := openURL(t, url, clock.Now)
		wg.Go(func() {
			for {
				ls, err := s.ClaimDue(ctx(t), host, clock.Now(), 7, time.Minute)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				if !slices.IsSortedFunc(ls, func(a, b store.Lease) int { return slices.Index(names, a.Name) - slices.Index(names, b.Name) }) {
					errs = append(errs, fmt.Errorf("%s: batch %v not earliest first", host, ls))
				}
				for _, l := range ls {
					if prev, dup := got[l.Name]; dup {
						errs = append(errs, fmt.Errorf("%s claimed by %s and by %s", l.Name, prev, host))
					}
					if tokens[l.Token] {
						errs = append(errs, fmt.Errorf("token %d given twice", l.Token))
					}
					if l.Host != host || !l.Expires.Equal(clock.Now().Add(time.Minute)) {
						errs = append(errs, fmt.Errorf("lease %+v: want host %s, expiring in a minute", l, host))
					}
					got[l.Name], tokens[l.Token] = host, true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
	if len(got) != due {
		t.Errorf("%d names claimed, want the %d due", len(got), due)
	}
	if _, ok := got["later.example.com"]; ok {
		t.Error("a name not due yet was claimed")
	}
	ls, err := first.Leases(ctx(t))
	if err != nil || len(ls) != due {
		t.Fatalf("Leases: %d, %v; want %d", len(ls), err, due)
	}
	if !slices.IsSortedFunc(ls, func(a, b store.Lease) int {
		if a.Host != b.Host {
			return compare(a.Host, b.Host)
		}
		return compare(a.Name, b.Name)
	}) {
		t.Error("Leases not by host then name")
	}
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestLeaseExpiresAndFences: a lease held is not claimed by another host;
// once it expires, another host claims the name under a greater token,
// and from then on the first holder can neither renew it nor write under
// it (every fenced write refused with ErrLeaseLost, nothing written),
// while the new holder writes.
func TestLeaseExpiresAndFences(t *testing.T) {
	url := pgtest.New(t)
	clock := clocktest.New(time.Now().UTC().Truncate(time.Second))
	a, b := openURL(t, url, clock.Now), openURL(t, url, clock.Now)
	c := ctx(t)
	names := addDue(t, a, clock.Now().Add(-time.Hour), 1)
	name := names[0]
	cur := testCert(name, clock.Now())
	if err := a.PutCertificate(c, cur); err != nil {
		t.Fatal(err)
	}

	la, err := a.ClaimDue(c, "a", clock.Now(), 10, time.Minute)
	if err != nil || len(la) != 1 {
		t.Fatalf("ClaimDue by a: %v, %v", la, err)
	}
	if lb, err := b.ClaimDue(c, "b", clock.Now(), 10, time.Minute); err != nil || len(lb) != 0 {
		t.Fatalf("ClaimDue by b while a holds the lease: %v, %v; want nothing", lb, err)
	}
	if _, err := b.Claim(c, "b", name, time.Minute); !errors.Is(err, store.ErrLeased) {
		t.Fatalf("Claim by b while a holds the lease: %v, want ErrLeased", err)
	}

	clock.Advance(time.Minute) // a's lease lapses: its grace begins
	if lb, err := b.ClaimDue(c, "b", clock.Now(), 10, time.Minute); err != nil || len(lb) != 0 {
		t.Fatalf("ClaimDue by b in the grace of a's lapsed lease: %v, %v; want nothing", lb, err)
	}
	if _, err := b.Claim(c, "b", name, time.Minute); !errors.Is(err, store.ErrLeased) {
		t.Fatalf("Claim by b in the grace of a's lapsed lease: %v, want ErrLeased", err)
	}
	// a, back in its grace, renews; then lets it lapse for good.
	if renewed, err := a.Renew(c, la, time.Minute); err != nil || len(renewed) != 1 {
		t.Fatalf("Renew by a in its grace: %v, %v; want it kept", renewed, err)
	}
	clock.Advance(time.Minute + 30*time.Second) // lapsed, and its grace over
	lb, err := b.ClaimDue(c, "b", clock.Now(), 10, time.Minute)
	if err != nil || len(lb) != 1 {
		t.Fatalf("ClaimDue by b after a's lease expired: %v, %v", lb, err)
	}
	if lb[0].Token <= la[0].Token {
		t.Errorf("b's token %d, want above a's %d", lb[0].Token, la[0].Token)
	}
	if renewed, err := a.Renew(c, la, time.Minute); err != nil || len(renewed) != 0 {
		t.Errorf("Renew of a's lost lease: %v, %v; want it dropped", renewed, err)
	}

	stale := store.WithLease(c, la[0])
	writes := []struct {
		desc  string
		write func() error
	}{
		{"UpdateDomain", func() error {
			return a.UpdateDomain(stale, name, func(d *store.Domain) error { d.State = store.StateValid; return nil })
		}},
		{"PutDomain", func() error {
			return a.PutDomain(stale, &store.Domain{Name: name, State: store.StateValid})
		}},
		{"PutCertificate", func() error { return a.PutCertificate(stale, testCert(name, clock.Now().Add(time.Hour))) }},
		{"PutCertificates", func() error {
			return a.PutCertificates(stale, []*store.Certificate{testCert(name, clock.Now().Add(time.Hour))})
		}},
		{"DeleteCertificate", func() error { return a.DeleteCertificate(stale, name) }},
		{"PutChallenge", func() error { return a.PutChallenge(stale, "tokA", "tokA.x", clock.Now().Add(time.Hour)) }},
		{"DeleteChallenge", func() error { return a.DeleteChallenge(stale, "tokB") }},
	}
	if err := a.PutChallenge(c, "tokB", "tokB.x", clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	before, _ := a.LatestVersion(c)
	for _, w := range writes {
		if err := w.write(); !errors.Is(err, store.ErrLeaseLost) {
			t.Errorf("%s under a lost lease: %v, want ErrLeaseLost", w.desc, err)
		}
	}
	after, _ := a.LatestVersion(c)
	if after != before {
		t.Errorf("writes under a lost lease took versions %d to %d", before, after)
	}
	if d, err := a.GetDomain(c, name); err != nil || d.State != store.StatePending {
		t.Errorf("record after the refused writes: %+v, %v; want it pending, as it was", d, err)
	}
	if got, err := a.GetCertificate(c, name); err != nil || got.Serial != cur.Serial {
		t.Errorf("certificate after the refused writes: %v; want serial %s", err, cur.Serial)
	}
	if _, err := a.GetChallenge(c, "tokA"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("challenge put under a lost lease: %v, want ErrNotFound", err)
	}
	if _, err := a.GetChallenge(c, "tokB"); err != nil {
		t.Errorf("challenge deleted under a lost lease: %v", err)
	}
	// A removal of a record keyed by the work itself is not fenced
	// once the lease is dropped from the context (store.WithoutLease).
	if err := a.DeleteChallenge(store.WithoutLease(stale), "tokB"); err != nil {
		t.Errorf("DeleteChallenge under WithoutLease of a lost lease: %v", err)
	}
	if _, err := a.GetChallenge(c, "tokB"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("challenge after DeleteChallenge under WithoutLease: %v, want ErrNotFound", err)
	}

	// The holder writes.
	held := store.WithLease(c, lb[0])
	if err := b.UpdateDomain(held, name, func(d *store.Domain) error { d.State = store.StateValid; return nil }); err != nil {
		t.Errorf("UpdateDomain under the lease held: %v", err)
	}
	if err := b.PutCertificate(held, testCert(name, clock.Now().Add(time.Hour))); err != nil {
		t.Errorf("PutCertificate under the lease held: %v", err)
	}
	if err := b.PutDomain(held, &store.Domain{Name: name, State: store.StateValid}); err != nil {
		t.Errorf("PutDomain under the lease held: %v", err)
	}
}

// TestClaimRenewRelease: Claim takes a name whatever its due time, refuses
// a name that is not managed, and claims again under a new token a name
// its host holds (the old token is then lost); Renew extends; a released
// lease fences its writes and is claimed at once by another host.
func TestClaimRenewRelease(t *testing.T) {
	url := pgtest.New(t)
	clock := clocktest.New(time.Now().UTC().Truncate(time.Second))
	s := openURL(t, url, clock.Now)
	c := ctx(t)
	names := addDue(t, s, clock.Now().Add(time.Hour), 2) // not due
	if _, err := s.Claim(c, "a", "nobody.example.com", time.Minute); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Claim of a name not managed: %v, want ErrNotFound", err)
	}
	l1, err := s.Claim(c, "a", names[0], time.Minute)
	if err != nil || l1.Name != names[0] || l1.Host != "a" || !l1.Expires.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("Claim: %+v, %v", l1, err)
	}
	l2, err := s.Claim(c, "a", names[0], time.Minute)
	if err != nil || l2.Token <= l1.Token {
		t.Fatalf("Claim again by its holder: %+v, %v; want a greater token than %d", l2, err, l1.Token)
	}
	if err := s.UpdateDomain(store.WithLease(c, l1), names[0], func(*store.Domain) error { return nil }); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("write under the token claimed over: %v, want ErrLeaseLost", err)
	}

	clock.Advance(30 * time.Second)
	renewed, err := s.Renew(c, []store.Lease{l1, l2}, time.Minute)
	if err != nil || len(renewed) != 1 || renewed[0].Token != l2.Token || !renewed[0].Expires.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("Renew: %+v, %v; want only the held lease, until a minute from now", renewed, err)
	}

	if err := s.Release(c, []store.Lease{l2}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateDomain(store.WithLease(c, l2), names[0], func(*store.Domain) error { return nil }); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("write under a released lease: %v, want ErrLeaseLost", err)
	}
	if ls, err := s.Leases(c); err != nil || len(ls) != 0 {
		t.Errorf("Leases after the release: %v, %v; want none", ls, err)
	}
	lb, err := s.Claim(c, "b", names[0], time.Minute)
	if err != nil {
		t.Fatalf("Claim by another host after the release: %v", err)
	}
	if err := s.Release(c, []store.Lease{l2}); err != nil { // not held: left alone
		t.Fatal(err)
	}
	if ls, err := s.Leases(c); err != nil || len(ls) != 1 || ls[0] != lb {
		t.Errorf("Leases: %+v, %v; want b's lease %+v, untouched by a's release of its old one", ls, err, lb)
	}
}

// testCert returns a certificate record for name stored at storedAt.
func testCert(name string, storedAt time.Time) *store.Certificate {
	return &store.Certificate{
		ID: name, Names: []string{name}, ChainPEM: []byte("chain"), KeyPEM: []byte("key"),
		NotBefore: storedAt, NotAfter: storedAt.Add(90 * 24 * time.Hour), Serial: fmt.Sprintf("%x", storedAt.UnixNano()),
		Source: store.SourceImport, StoredAt: storedAt,
	}
}

// TestFencedPutDomainLockOrder: a fenced PutDomain takes the record's lock
// before the lease's, as a claim does, so the two cannot deadlock: a
// transaction that, like Claim, has locked the record and then updates
// the lease's row while a PutDomain under the lease waits is not
// aborted as a deadlock (its deadlock check runs after 10ms, long before
// the PutDomain's), and the PutDomain then finds the lease lost.
func TestFencedPutDomainLockOrder(t *testing.T) {
	url := pgtest.New(t)
	s := openURL(t, url, nil)
	c := ctx(t)
	name := addDue(t, s, time.Now().Add(-time.Hour), 1)[0]
	la, err := s.Claim(c, "a", name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(c, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(c)
	if _, err := conn.Exec(c, "SET deadlock_timeout = '10ms'"); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(c)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(c)
	if _, err := tx.Exec(c, "SELECT 1 FROM domains WHERE name = $1 FOR UPDATE", name); err != nil {
		t.Fatal(err)
	}
	put := make(chan error, 1)
	go func() {
		put <- s.PutDomain(store.WithLease(c, la), &store.Domain{Name: name, State: store.StateValid, Source: "api"})
	}()
	// Wait until the PutDomain waits for a lock.
	deadline := time.Now().Add(time.Minute)
	for {
		var waiting int
		if err := conn.QueryRow(c, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the PutDomain never waited for a lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := tx.Exec(c, "UPDATE leases SET host = 'b', token = nextval('lease_token') WHERE name = $1", name); err != nil {
		t.Fatalf("the claim's update of the lease while a fenced PutDomain waits: %v", err)
	}
	if err := tx.Commit(c); err != nil {
		t.Fatal(err)
	}
	if err := <-put; !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("PutDomain under a lease claimed meanwhile: %v, want ErrLeaseLost", err)
	}
}

// TestDeleteDomainDropsLease: deleting a name deletes its lease row, which
// nothing would remove otherwise; other names' leases stay.
func TestDeleteDomainDropsLease(t *testing.T) {
	url := pgtest.New(t)
	s := openURL(t, url, nil)
	c := ctx(t)
	names := addDue(t, s, time.Now().Add(-time.Hour), 2)
	ls, err := s.ClaimDue(c, "a", time.Now(), 10, time.Hour)
	if err != nil || len(ls) != 2 {
		t.Fatalf("ClaimDue: %v, %v", ls, err)
	}
	if err := s.DeleteDomain(c, names[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDomain(c, names[0]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteDomain of a deleted name: %v, want ErrNotFound", err)
	}
	if got, err := s.Leases(c); err != nil || len(got) != 1 || got[0].Name != names[1] {
		t.Errorf("Leases after deleting %s: %+v, %v; want %s's alone", names[0], got, err, names[1])
	}
}

// TestLeaseCounts: the fleet's unexpired leases counted by host, with
// the store's clock: a lapsed lease no longer counts, a released one
// neither.
func TestLeaseCounts(t *testing.T) {
	url := pgtest.New(t)
	clock := clocktest.New(time.Now().UTC().Truncate(time.Second))
	s := openURL(t, url, clock.Now)
	c := ctx(t)
	names := addDue(t, s, clock.Now().Add(-time.Hour), 4)
	la, err := s.ClaimDue(c, "a", clock.Now(), 2, time.Minute)
	if err != nil || len(la) != 2 {
		t.Fatalf("ClaimDue by a: %v, %v", la, err)
	}
	lb, err := s.Claim(c, "b", names[3], 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(c, "b", names[2], 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	check := func(when string, want map[string]int) {
		t.Helper()
		got, err := s.LeaseCounts(c)
		if err != nil || !maps.Equal(got, want) {
			t.Errorf("%s: LeaseCounts = %v, %v; want %v", when, got, err, want)
		}
	}
	check("claimed", map[string]int{"a": 2, "b": 2})
	if err := s.Release(c, []store.Lease{lb}); err != nil {
		t.Fatal(err)
	}
	check("one of b's released", map[string]int{"a": 2, "b": 1})
	clock.Advance(time.Minute + time.Second)
	check("a's lapsed", map[string]int{"b": 1})
}
