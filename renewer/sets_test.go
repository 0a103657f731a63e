package renewer

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

func TestAdoptsImportedCertificate(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	const name = "moved.example.test"
	life := 90 * 24 * time.Hour
	imported, err := selfSigned(name, clock.Now().Add(-24*time.Hour), clock.Now().Add(life-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	imported.Source = "certbot"
	if err := st.PutCertificate(ctx, imported); err != nil {
		t.Fatal(err)
	}
	iss := &scriptedIssuer{life: life, notAfter: func() time.Time { return clock.Now().Add(life) }}
	r, err := New(Config{Now: clock.Now, Seed: 9, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	addPending(t, st, clock.Now(), name)

	r.process(ctx, name, false)
	if n := iss.orderCount(); n != 0 {
		t.Fatalf("%d orders for a name an imported certificate serves, want none", n)
	}
	d := getDomain(t, st, name)
	target := imported.NotBefore.Add(life * 2 / 3)
	if d.State != store.StateValid || d.CertID != imported.ID || d.NextAttempt.Sub(target).Abs() > life/20 {
		t.Fatalf("after adoption: state %s, cert %q, next attempt %v; want valid, %q, about %v",
			d.State, d.CertID, d.NextAttempt, imported.ID, target)
	}

	clock.Set(d.NextAttempt)
	r.process(ctx, name, false)
	if n := iss.orderCount(); n != 1 {
		t.Fatalf("%d orders at the renewal time, want 1", n)
	}
	if o := iss.orders[0]; o.Replaces == nil || o.Replaces.Serial != imported.Serial || len(o.ExtraNames) != 0 {
		t.Fatalf("the renewal of the imported certificate is %+v, want it to replace serial %s", o, imported.Serial)
	}
	if c, err := st.LookupCertificate(ctx, name); err != nil || c.Source == "certbot" {
		t.Fatalf("after renewal the store serves %v (err %v), want the new certificate", c, err)
	}
}

func TestImportedLineageRenewsAsOneSet(t *testing.T) {
	ctx := context.Background()
	life := 90 * 24 * time.Hour
	set := []string{"shop.example.test", "www.shop.example.test", "api.shop.example.test"}
	for _, tc := range []struct {
		desc  string
		order []string // the order the workers reach the names in
	}{
		{desc: "first name first", order: []string{set[0], set[1], set[2]}},
		{desc: "other names first", order: []string{set[2], set[1], set[0]}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st := openStore(t)
			clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
			imported, err := selfSigned(set[0], clock.Now().Add(-24*time.Hour), clock.Now().Add(life-24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			imported.Names, imported.Source = set, "certbot"
			if err := st.PutCertificate(ctx, imported); err != nil {
				t.Fatal(err)
			}
			iss := &scriptedIssuer{life: life, notAfter: func() time.Time { return clock.Now().Add(life) }}
			r, err := New(Config{Now: clock.Now, Seed: 9, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
			if err != nil {
				t.Fatal(err)
			}
			addPending(t, st, clock.Now(), set...)
			for _, n := range tc.order {
				r.process(ctx, n, false)
			}
			if n := iss.orderCount(); n != 0 {
				t.Fatalf("%d orders for names the imported lineage serves, want none", n)
			}
			primary := getDomain(t, st, set[0])
			if primary.State != store.StateValid || !slices.Equal(primary.ExtraNames, set[1:]) || primary.NextAttempt.IsZero() {
				t.Fatalf("%s: state %s, extra names %v, next attempt %v; want valid with %v", set[0], primary.State, primary.ExtraNames, primary.NextAttempt, set[1:])
			}
			for _, n := range set[1:] {
				d := getDomain(t, st, n)
				if d.ManagedWith != set[0] || !d.NextAttempt.IsZero() || d.State != store.StateValid {
					t.Fatalf("%s: managed with %q, next attempt %v, state %s; want managed with %s, never due", n, d.ManagedWith, d.NextAttempt, d.State, set[0])
				}
			}

			// A name managed with another that is made due by mistake is
			// taken out of the due index, not ordered.
			if err := st.UpdateDomain(ctx, set[1], func(d *store.Domain) error { d.NextAttempt = clock.Now(); return nil }); err != nil {
				t.Fatal(err)
			}
			r.process(ctx, set[1], false)
			if d := getDomain(t, st, set[1]); !d.NextAttempt.IsZero() || iss.orderCount() != 0 {
				t.Fatalf("%s made due: next attempt %v, %d orders; want out of the index, none", set[1], d.NextAttempt, iss.orderCount())
			}

			clock.Set(primary.NextAttempt)
			for _, n := range set {
				r.process(ctx, n, false)
			}
			if n := iss.orderCount(); n != 1 {
				t.Fatalf("%d orders at the renewal time, want 1", n)
			}
			o := iss.orders[0]
			if !slices.Equal(o.Names(), set) || o.Replaces == nil || o.Replaces.Serial != imported.Serial {
				t.Fatalf("renewal order for %v replacing %v, want one order for %v replacing serial %s", o.Names(), o.Replaces, set, imported.Serial)
			}
			if k := ClassifyOrder(o, false, clock.Now()); k != ratelimit.OrderRenewal {
				t.Errorf("the renewal is classified %s, want %s", k, ratelimit.OrderRenewal)
			}
			for _, n := range set {
				c, err := st.LookupCertificate(ctx, n)
				if err != nil || c.Source != store.SourceACME || !slices.Equal(c.Names, set) {
					t.Errorf("%s is served by %+v (err %v), want the renewed certificate for the set", n, c, err)
				}
			}
			if d := getDomain(t, st, set[0]); d.CertID != set[0] || d.State != store.StateValid {
				t.Errorf("after the renewal %s is %s with certificate %q", set[0], d.State, d.CertID)
			}
		})
	}
}

func TestAdoptionEndsFailures(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	const name = "late.example.test"
	life := 90 * 24 * time.Hour
	err := st.PutDomain(ctx, &store.Domain{Name: name, State: store.StateFailing, Failures: 8,
		FailingSince: clock.Now().Add(-20 * 24 * time.Hour), LastError: "acme dns: NXDOMAIN", NextAttempt: clock.Now()})
	if err != nil {
		t.Fatal(err)
	}
	imported, err := selfSigned(name, clock.Now(), clock.Now().Add(life))
	if err != nil {
		t.Fatal(err)
	}
	imported.Source = "import"
	if err := st.PutCertificate(ctx, imported); err != nil {
		t.Fatal(err)
	}
	iss := &scriptedIssuer{life: life, notAfter: func() time.Time { return clock.Now().Add(life) },
		errs: []error{problem{detail: "connection reset"}}}
	r, err := New(Config{Now: clock.Now, Seed: 9, GiveUpAfter: 30 * 24 * time.Hour, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	r.process(ctx, name, false)
	d := getDomain(t, st, name)
	if d.State != store.StateValid || d.Failures != 0 || !d.FailingSince.IsZero() || d.LastError != "" {
		t.Fatalf("after adopting the imported certificate: %+v; want valid with no failure record", d)
	}

	clock.Set(d.NextAttempt)
	r.process(ctx, name, false) // the renewal fails once
	d = getDomain(t, st, name)
	if d.State != store.StateFailing || d.Failures != 1 || d.NextAttempt.Sub(clock.Now()) > 2*time.Minute {
		t.Fatalf("after one failed renewal: %+v; want failing, 1 failure, retried within a couple of minutes", d)
	}
	clock.Set(d.NextAttempt)
	r.process(ctx, name, false)
	if d := getDomain(t, st, name); d.State == store.StateGivenUp {
		t.Fatalf("given up after one failed renewal: %+v", d)
	}
}

// brokenReads fails every GetDomain, as a store with a record it cannot
// decode, or a failing disk, would.
type brokenReads struct {
	store.Store
	reads atomic.Int32
}
