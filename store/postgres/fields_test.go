package postgres_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/storetest"
)

// allSet fails t unless every exported field of the struct v points to is set: a
// field added to the record later must be added to the sample below, and
// so to the check that the store keeps it (domains have a column per
// field, see migrations/0001_initial.sql).
func allSet(t *testing.T, v any) {
	t.Helper()
	rv := reflect.ValueOf(v).Elem()
	for i := range rv.NumField() {
		// Unexported fields are the value's own (what a parse decoded),
		// never stored.
		if rv.Type().Field(i).IsExported() && rv.Field(i).IsZero() {
			t.Errorf("the sample %s leaves field %s unset: set it, and make the store keep it", rv.Type().Name(), rv.Type().Field(i).Name)
		}
	}
}

// micro returns t as the store keeps it: to the microsecond, in UTC.
func micro(t time.Time) time.Time { return t.Truncate(time.Microsecond).UTC() }

func TestEveryDomainFieldIsKept(t *testing.T) {
	clock := storetest.NewClock()
	s := open(t, clock.Now)
	c := ctx(t)
	at := time.Date(2026, 12, 5, 9, 41, 2, 123456789, time.FixedZone("CET", 3600))
	sample := func(name string) *store.Domain {
		return &store.Domain{
			Name: name, State: store.StateFailing, Profile: "shortlived", CertID: name,
			NextAttempt: at.Add(time.Hour), Failures: 3, LastError: "urn:ietf:params:acme:error:dns: NXDOMAIN",
			FailingSince: at.Add(-time.Hour), Source: "api", AddedAt: at.Add(-48 * time.Hour), UpdatedAt: at,
			Attempts: []store.Attempt{
				{At: at, Outcome: store.OutcomeFailed, Error: "NXDOMAIN", Took: 1500 * time.Millisecond},
				{At: at.Add(-time.Hour), Outcome: store.OutcomeIssued, Serial: "0a1b", Took: time.Second, Challenge: store.ChallengeDNS01},
			},
			ExtraNames:  []string{"www." + name},
			ManagedWith: "",
			Challenge:   store.ChallengeAuto,
		}
	}
	d := sample("a.example.com")
	d.ManagedWith = "primary.example.com" // for allSet; a real record has ExtraNames or ManagedWith
	allSet(t, d)
	d.ManagedWith = ""
	managed := &store.Domain{Name: "www.a.example.com", State: store.StateValid, ManagedWith: "a.example.com", Source: "api"}

	want := func(d *store.Domain) *store.Domain {
		w := *d
		w.NextAttempt, w.FailingSince, w.AddedAt, w.UpdatedAt = micro(w.NextAttempt), micro(w.FailingSince), micro(w.AddedAt), micro(w.UpdatedAt)
		w.Attempts = nil
		for _, a := range d.Attempts {
			a.At = a.At.UTC() // JSON: to the nanosecond
			w.Attempts = append(w.Attempts, a)
		}
		return &w
	}
	check := func(how string, d *store.Domain) {
		t.Helper()
		got, err := s.GetDomain(c, d.Name)
		if err != nil {
			t.Fatal(err)
		}
		if w := want(d); !reflect.DeepEqual(got, w) {
			t.Errorf("%s: got\n%#v\nwant\n%#v", how, got, w)
		}
	}
	if err := s.PutDomain(c, d); err != nil {
		t.Fatal(err)
	}
	check("PutDomain", d)
	if err := s.PutDomain(c, managed); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetDomain(c, managed.Name)
	if err != nil || got.ManagedWith != "a.example.com" || got.ExtraNames != nil || got.Attempts != nil {
		t.Errorf("a record managed with another: %#v, %v", got, err)
	}

	b := sample("b.example.com")
	if _, _, err := s.AddDomains(c, []*store.Domain{b}); err != nil {
		t.Fatal(err)
	}
	check("AddDomains", b)

	// UpdateDomain keeps what fn does not change.
	if err := s.UpdateDomain(c, "b.example.com", func(d *store.Domain) error {
		d.Failures++
		d.UpdatedAt = at.Add(time.Minute)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b.Failures++
	b.UpdatedAt = at.Add(time.Minute)
	check("UpdateDomain", b)
}

func TestEveryCertificateAndAccountFieldIsKept(t *testing.T) {
	clock := storetest.NewClock()
	s := open(t, clock.Now)
	c := ctx(t)
	crt := cert(time.Date(2026, 12, 5, 9, 41, 2, 123456789, time.UTC), "a.example.com", "www.a.example.com")
	crt.Origin = "https://acme.test/dir"
	crt.RenewAt = crt.NotAfter.Add(-30 * 24 * time.Hour)
	allSet(t, crt)
	if err := s.PutCertificate(c, crt); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCertificate(c, crt.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, crt) {
		t.Errorf("certificate: got\n%#v\nwant\n%#v", got, crt)
	}

	a := &store.Account{ID: "acct", Directory: "https://acme.test/dir", Email: "ops@example.com", URL: "https://acme.test/acct/1",
		KeyPEM: []byte("-----BEGIN EC PRIVATE KEY-----\nx\n-----END EC PRIVATE KEY-----\n"), CreatedAt: crt.StoredAt}
	allSet(t, a)
	if err := s.PutAccount(c, a); err != nil {
		t.Fatal(err)
	}
	gotA, err := s.GetAccount(c, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotA, a) {
		t.Errorf("account: got\n%#v\nwant\n%#v", gotA, a)
	}
}

func TestGetDomainsReadsThoseThatExist(t *testing.T) {
	s := open(t, time.Now)
	c := ctx(t)
	for _, n := range []string{"a.example.com", "b.example.com", "c.example.com"} {
		if err := s.PutDomain(c, &store.Domain{Name: n, State: store.StateValid}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := store.GetDomains(c, s, []string{"c.example.com", "missing.example.com", "a.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, d := range got {
		names[d.Name] = true
	}
	if len(got) != 2 || !names["a.example.com"] || !names["c.example.com"] {
		t.Errorf("GetDomains = %+v, want a and c", got)
	}
}
