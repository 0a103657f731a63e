package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// putDomain stores d or fails the test.
func (x *suite) putDomain(t *testing.T, d *store.Domain) {
	t.Helper()
	if err := x.s.PutDomain(ctx(t), d); err != nil {
		t.Fatalf("PutDomain(%s): %v", d.Name, err)
	}
}

// getDomain returns the record of name or fails the test.
func (x *suite) getDomain(t *testing.T, name string) *store.Domain {
	t.Helper()
	d, err := x.s.GetDomain(ctx(t), name)
	if err != nil {
		t.Fatalf("GetDomain(%s): %v", name, err)
	}
	return d
}

// testDomainRoundTrip: every field of a domain reads back; a replacing
// PutDomain keeps AddedAt when it gives none; zero AddedAt and UpdatedAt
// are stored as the current time.
func testDomainRoundTrip(t *testing.T, x *suite) {
	now := x.clock.Now()
	full := &store.Domain{
		Name: "www.example.com", State: store.StateFailing, Profile: "shortlived", CertID: "example.com",
		NextAttempt: now.Add(time.Hour + 123456789*time.Nanosecond), Failures: 3, LastError: "urn:ietf:params:acme:error:dns: no such host",
		FailingSince: now.Add(-time.Hour), Source: "api", AddedAt: now.Add(-48 * time.Hour), UpdatedAt: now,
		Attempts: []store.Attempt{
			{At: now.Add(-time.Minute), Outcome: store.OutcomeFailed, Error: "dns", Took: 1500 * time.Millisecond},
			{At: now.Add(-time.Hour), Outcome: store.OutcomeIssued, Serial: "0a1b", Took: 3 * time.Second, Challenge: store.ChallengeDNS01},
			{At: now.Add(-2 * time.Hour), Outcome: store.OutcomeRefused, Error: "CAA forbids"},
		},
		ExtraNames: []string{"example.com", "*.example.com"},
		Challenge:  store.ChallengeDNS01,
	}
	x.putDomain(t, full)
	if d := diffDomain(x.getDomain(t, full.Name), full); d != "" {
		t.Errorf("GetDomain after PutDomain:\n%s", d)
	}
	with := &store.Domain{Name: "example.com", State: store.StateValid, ManagedWith: "www.example.com", AddedAt: now, UpdatedAt: now}
	x.putDomain(t, with)
	if d := diffDomain(x.getDomain(t, with.Name), with); d != "" {
		t.Errorf("GetDomain of a name managed with another:\n%s", d)
	}

	// Stamps: a new record without times takes the clock's; a replacing
	// one without AddedAt keeps the old AddedAt.
	added := x.clock.Now()
	arg := &store.Domain{Name: "a.example.com", State: store.StatePending}
	x.putDomain(t, arg)
	if !arg.AddedAt.IsZero() || !arg.UpdatedAt.IsZero() {
		t.Error("PutDomain changed its argument")
	}
	x.clock.Advance(time.Hour)
	x.putDomain(t, &store.Domain{Name: "a.example.com", State: store.StateIssuing})
	d := x.getDomain(t, "a.example.com")
	if d.State != store.StateIssuing || !sameTime(d.AddedAt, added) || !sameTime(d.UpdatedAt, x.clock.Now()) {
		t.Errorf("state, AddedAt, UpdatedAt = %s, %v, %v; want issuing, %v, %v", d.State, d.AddedAt, d.UpdatedAt, added, x.clock.Now())
	}
	x.putDomain(t, &store.Domain{Name: "a.example.com", State: store.StateValid, AddedAt: now.Add(-time.Hour)})
	if d := x.getDomain(t, "a.example.com"); !sameTime(d.AddedAt, now.Add(-time.Hour)) {
		t.Errorf("AddedAt = %v, want the one given, %v", d.AddedAt, now.Add(-time.Hour))
	}

	// DeleteDomain removes the record and touches no certificate.
	x.putCert(t, x.cert("www.example.com"))
	if err := x.s.DeleteDomain(ctx(t), "www.example.com"); err != nil {
		t.Fatal(err)
	}
	if _, err := x.s.GetDomain(ctx(t), "www.example.com"); !isNotFound(err) {
		t.Errorf("GetDomain after DeleteDomain: %v, want ErrNotFound", err)
	}
	if err := x.s.DeleteDomain(ctx(t), "www.example.com"); !isNotFound(err) {
		t.Errorf("second DeleteDomain: %v, want ErrNotFound", err)
	}
	if got := x.lookupID(t, "www.example.com"); got != "www.example.com" {
		t.Errorf("DeleteDomain touched the certificate: LookupCertificate = %q", got)
	}
}

// testDomainInvalid: records the contract refuses are refused with
// ErrInvalid, by PutDomain and by AddDomains, and nothing is written.
func testDomainInvalid(t *testing.T, x *suite) {
	for _, tc := range []struct {
		desc string
		d    *store.Domain
	}{
		{"nil domain", nil},
		{"empty name", &store.Domain{}},
		{"name not normalized", &store.Domain{Name: "A.example"}},
		{"name with a trailing dot", &store.Domain{Name: "a.example."}},
		{"name with an underscore", &store.Domain{Name: "bad_name.example"}},
		{"extra name given twice", &store.Domain{Name: "a.example", ExtraNames: []string{"b.example", "b.example"}}},
		{"extra name is the name", &store.Domain{Name: "a.example", ExtraNames: []string{"a.example"}}},
		{"extra name not normalized", &store.Domain{Name: "a.example", ExtraNames: []string{"B.example"}}},
		{"managed with itself", &store.Domain{Name: "a.example", ManagedWith: "a.example"}},
		{"managed with a name not normalized", &store.Domain{Name: "a.example", ManagedWith: "B.example"}},
		{"managed with another and carrying names", &store.Domain{Name: "a.example", ManagedWith: "b.example", ExtraNames: []string{"c.example"}}},
		{"unknown challenge", &store.Domain{Name: "a.example", Challenge: "dns-02"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := x.s.PutDomain(ctx(t), tc.d); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("PutDomain = %v, want ErrInvalid", err)
			}
			_, _, err := x.s.AddDomains(ctx(t), []*store.Domain{{Name: "ok.example"}, tc.d})
			if !errors.Is(err, store.ErrInvalid) {
				t.Errorf("AddDomains with it second = %v, want ErrInvalid", err)
			}
			if ds, err := x.s.ListDomains(ctx(t), "", 10); err != nil || len(ds) != 0 {
				t.Errorf("a refused record was written: ListDomains = %q, %v", namesOf(ds), err)
			}
			if es, err := x.s.Due(ctx(t), x.clock.Now().Add(time.Hour), 10); err != nil || len(es) != 0 {
				t.Errorf("a refused record was indexed: Due = %v, %v", es, err)
			}
		})
	}
	// Extra names may be wildcards, and a name may be one.
	ok := &store.Domain{Name: "*.shop.example", ExtraNames: []string{"shop.example"}}
	x.putDomain(t, ok)
	if d := diffDomain(x.getDomain(t, ok.Name), &store.Domain{Name: ok.Name, ExtraNames: ok.ExtraNames, AddedAt: x.clock.Now(), UpdatedAt: x.clock.Now()}); d != "" {
		t.Errorf("a wildcard with its apex:\n%s", d)
	}
}

// testUpdateDomain: UpdateDomain writes what fn leaves, moves the due
// entry and stamps UpdatedAt; fn's error writes nothing and is returned;
// a missing record is ErrNotFound without calling fn; renaming is refused.
func testUpdateDomain(t *testing.T, x *suite) {
	first := x.clock.Now().Add(time.Hour)
	x.putDomain(t, &store.Domain{Name: "a.example.com", State: store.StatePending, NextAttempt: first})
	x.putDomain(t, &store.Domain{Name: "b.example.com", State: store.StatePending, NextAttempt: first.Add(time.Minute)})

	t.Run("moves the due entry and stamps UpdatedAt", func(t *testing.T) {
		x.clock.Advance(time.Minute)
		later := first.Add(24 * time.Hour)
		err := x.s.UpdateDomain(ctx(t), "a.example.com", func(d *store.Domain) error {
			if d.Name != "a.example.com" || d.State != store.StatePending || !sameTime(d.NextAttempt, first) {
				return fmt.Errorf("fn got %+v, want the stored record", d)
			}
			d.State, d.NextAttempt, d.CertID = store.StateValid, later, "a.example.com"
			d.AddAttempt(store.Attempt{At: x.clock.Now(), Outcome: store.OutcomeIssued, Serial: "01"})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		d := x.getDomain(t, "a.example.com")
		if d.State != store.StateValid || d.CertID != "a.example.com" || !sameTime(d.NextAttempt, later) || !sameTime(d.UpdatedAt, x.clock.Now()) || len(d.Attempts) != 1 {
			t.Fatalf("after update: %+v", d)
		}
		x.wantDue(t, later.Add(time.Hour), 10, "b.example.com", first.Add(time.Minute), "a.example.com", later)
	})

	t.Run("an UpdatedAt set by fn is kept", func(t *testing.T) {
		at := x.clock.Now().Add(-time.Hour)
		if err := x.s.UpdateDomain(ctx(t), "a.example.com", func(d *store.Domain) error { d.UpdatedAt = at; return nil }); err != nil {
			t.Fatal(err)
		}
		if d := x.getDomain(t, "a.example.com"); !sameTime(d.UpdatedAt, at) {
			t.Errorf("UpdatedAt = %v, want %v", d.UpdatedAt, at)
		}
	})

	t.Run("zero NextAttempt takes the name out of the index", func(t *testing.T) {
		if err := x.s.UpdateDomain(ctx(t), "b.example.com", func(d *store.Domain) error { d.NextAttempt = time.Time{}; return nil }); err != nil {
			t.Fatal(err)
		}
		x.wantDue(t, first.Add(48*time.Hour), 10, "a.example.com", first.Add(24*time.Hour))
	})

	t.Run("an error from fn writes nothing", func(t *testing.T) {
		stop := errors.New("stop")
		err := x.s.UpdateDomain(ctx(t), "a.example.com", func(d *store.Domain) error {
			d.State, d.NextAttempt = store.StateRemoved, time.Time{}
			return stop
		})
		if !errors.Is(err, stop) {
			t.Fatalf("UpdateDomain = %v, want fn's error", err)
		}
		if d := x.getDomain(t, "a.example.com"); d.State != store.StateValid {
			t.Errorf("state %s after a refused update, want valid", d.State)
		}
		x.wantDue(t, first.Add(48*time.Hour), 10, "a.example.com", first.Add(24*time.Hour))
	})

	t.Run("a missing record is ErrNotFound and fn is not called", func(t *testing.T) {
		called := false
		err := x.s.UpdateDomain(ctx(t), "missing.example.com", func(*store.Domain) error { called = true; return nil })
		if !isNotFound(err) || called {
			t.Fatalf("UpdateDomain = %v (fn called: %v), want ErrNotFound without calling fn", err, called)
		}
	})

	t.Run("renaming is refused", func(t *testing.T) {
		err := x.s.UpdateDomain(ctx(t), "a.example.com", func(d *store.Domain) error { d.Name = "c.example.com"; return nil })
		if !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("UpdateDomain = %v, want ErrInvalid", err)
		}
		if _, err := x.s.GetDomain(ctx(t), "c.example.com"); !isNotFound(err) {
			t.Fatalf("renamed record exists: %v", err)
		}
		x.getDomain(t, "a.example.com")
	})

	t.Run("an invalid result is refused", func(t *testing.T) {
		err := x.s.UpdateDomain(ctx(t), "a.example.com", func(d *store.Domain) error { d.ManagedWith = "a.example.com"; return nil })
		if !errors.Is(err, store.ErrInvalid) {
			t.Fatalf("UpdateDomain = %v, want ErrInvalid", err)
		}
		if d := x.getDomain(t, "a.example.com"); d.ManagedWith != "" {
			t.Fatalf("an invalid update was written: %+v", d)
		}
	})
}

// testUpdateDomainConcurrent: many goroutines increment a counter through
// UpdateDomain and move the name in the due index while others update
// their own names: no increment is lost, and the name has one due entry.
func testUpdateDomainConcurrent(t *testing.T, x *suite) {
	now := x.clock.Now()
	x.putDomain(t, &store.Domain{Name: "count.example.com", State: store.StatePending, NextAttempt: now})
	const goroutines, each = 8, 25
	for g := range goroutines {
		x.putDomain(t, &store.Domain{Name: fmt.Sprintf("own%d.example.com", g), NextAttempt: now})
	}
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			own := fmt.Sprintf("own%d.example.com", g)
			for i := range each {
				err := x.s.UpdateDomain(ctx(t), "count.example.com", func(d *store.Domain) error {
					d.Failures++
					d.NextAttempt = now.Add(time.Duration(d.Failures) * time.Minute)
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				err = x.s.UpdateDomain(ctx(t), own, func(d *store.Domain) error {
					d.Failures++
					d.NextAttempt = now.Add(time.Duration(i) * time.Second)
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := goroutines * each
	if d := x.getDomain(t, "count.example.com"); d.Failures != total || !sameTime(d.NextAttempt, now.Add(time.Duration(total)*time.Minute)) {
		t.Fatalf("failures = %d, next attempt %v; want %d, %v", d.Failures, d.NextAttempt, total, now.Add(time.Duration(total)*time.Minute))
	}
	es, err := x.s.Due(ctx(t), now.Add(24*time.Hour), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != goroutines+1 || es[len(es)-1].Name != "count.example.com" {
		t.Fatalf("Due = %v; want each own name once, then count.example.com once", es)
	}
}

// testAddDomains: AddDomains creates the names not yet managed, leaves
// existing ones untouched, counts a name given twice as existing the
// second time, and indexes what it adds.
func testAddDomains(t *testing.T, x *suite) {
	now := x.clock.Now()
	kept := &store.Domain{Name: "b.example.com", State: store.StateValid, CertID: "b.example.com", NextAttempt: now.Add(time.Hour)}
	x.putDomain(t, kept)
	added, existing, err := x.s.AddDomains(ctx(t), []*store.Domain{
		{Name: "a.example.com", State: store.StatePending, Source: "api", NextAttempt: now},
		{Name: "b.example.com", State: store.StatePending, NextAttempt: now},
		{Name: "c.example.com", State: store.StatePending, NextAttempt: now.Add(-time.Minute)},
		{Name: "a.example.com", State: store.StateIssuing, NextAttempt: now.Add(-time.Hour)},
		{Name: "d.example.com", State: store.StatePending},
	})
	if err != nil || added != 3 || existing != 2 {
		t.Fatalf("AddDomains = %d, %d, %v; want 3, 2, nil", added, existing, err)
	}
	if d := x.getDomain(t, "b.example.com"); d.State != store.StateValid || d.CertID != "b.example.com" || !sameTime(d.NextAttempt, now.Add(time.Hour)) {
		t.Errorf("existing domain changed: %+v", d)
	}
	want := &store.Domain{Name: "a.example.com", State: store.StatePending, Source: "api", NextAttempt: now, AddedAt: now, UpdatedAt: now}
	if d := diffDomain(x.getDomain(t, "a.example.com"), want); d != "" {
		t.Errorf("the first of a name given twice is the one added:\n%s", d)
	}
	x.wantDue(t, now.Add(time.Hour), 10, "c.example.com", now.Add(-time.Minute), "a.example.com", now, "b.example.com", now.Add(time.Hour))
	if added, existing, err := x.s.AddDomains(ctx(t), nil); added != 0 || existing != 0 || err != nil {
		t.Errorf("AddDomains(nil) = %d, %d, %v", added, existing, err)
	}
}

// testListDomains: pages in name order, after a given name.
func testListDomains(t *testing.T, x *suite) {
	names := []string{"*.example.com", "a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com"}
	for _, n := range slices.Backward(names) {
		x.putDomain(t, &store.Domain{Name: n, State: store.StatePending})
	}
	for _, tc := range listPages(names) {
		t.Run(tc.desc, func(t *testing.T) {
			ds, err := x.s.ListDomains(ctx(t), tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := namesOf(ds); !slices.Equal(got, tc.want) {
				t.Errorf("ListDomains(%q, %d) = %q, want %q", tc.after, tc.limit, got, tc.want)
			}
		})
	}
}

// testConcurrentUse: many goroutines put certificates that claim the same
// names, look them up, move one domain in the due index and delete
// records, all at once: every call succeeds (a conflict between writers
// is the store's to resolve), the domain has exactly one due entry, and
// every name links to a stored record that lists it.
func testConcurrentUse(t *testing.T, x *suite) {
	const workers, rounds = 16, 40
	now := x.clock.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				own := fmt.Sprintf("w%d-%d.example.com", w, i%5)
				c := x.cert(own, "shared.example.com", fmt.Sprintf("s%d.example.com", i%3))
				if err := x.s.PutCertificate(ctx(t), c); err != nil {
					t.Error(err)
					return
				}
				if _, err := x.s.LookupCertificate(ctx(t), "shared.example.com"); err != nil {
					t.Error(err)
					return
				}
				if _, err := x.s.LookupCertificate(ctx(t), "x."+own); err != nil && !isNotFound(err) {
					t.Error(err)
					return
				}
				d := &store.Domain{Name: "shared.example.com", NextAttempt: now.Add(time.Duration(w*rounds+i) * time.Second)}
				if err := x.s.PutDomain(ctx(t), d); err != nil {
					t.Error(err)
					return
				}
				if _, err := x.s.Due(ctx(t), now.Add(time.Hour), 10); err != nil {
					t.Error(err)
					return
				}
				if i%10 == 9 {
					if err := x.s.DeleteCertificate(ctx(t), own); err != nil && !isNotFound(err) {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()

	es, err := x.s.Due(ctx(t), now.Add(24*time.Hour), 100)
	if err != nil || len(es) != 1 {
		t.Errorf("Due after concurrent PutDomain = %v, %v; want one entry", es, err)
	}
	for _, name := range []string{"shared.example.com", "s0.example.com", "s1.example.com", "s2.example.com"} {
		if c, err := x.s.LookupCertificate(ctx(t), name); err != nil || !slices.Contains(c.Names, name) {
			t.Errorf("LookupCertificate(%s) = %+v, %v", name, c, err)
		}
	}
	cs, err := x.s.ListCertificates(ctx(t), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if got := x.lookupID(t, c.ID); got != c.ID {
			t.Errorf("LookupCertificate(%s) = %q: a stored record does not serve its own ID", c.ID, got)
		}
	}
}
