package storetest

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// cert returns a valid certificate record serving names, ID names[0], with
// fake PEM (the store does not parse it) and times from the clock.
func (x *suite) cert(names ...string) *store.Certificate {
	now := x.clock.Now()
	return &store.Certificate{
		ID:        names[0],
		Names:     slices.Clone(names),
		ChainPEM:  []byte("-----BEGIN CERTIFICATE-----\n" + names[0] + "\n-----END CERTIFICATE-----\n"),
		KeyPEM:    []byte("-----BEGIN PRIVATE KEY-----\nsecret of " + names[0] + "\n-----END PRIVATE KEY-----\n"),
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(90 * 24 * time.Hour),
		Issuer:    "CN=storetest CA",
		Serial:    "0a1b",
		KeyType:   store.KeyECDSAP256,
		Source:    store.SourceACME,
		Origin:    "https://acme.test/dir",
		RenewAt:   now.Add(60 * 24 * time.Hour),
		StoredAt:  now,
	}
}

// putCert stores c or fails the test.
func (x *suite) putCert(t *testing.T, c *store.Certificate) {
	t.Helper()
	if err := x.s.PutCertificate(ctx(t), c); err != nil {
		t.Fatalf("PutCertificate(%s): %v", c.ID, err)
	}
}

// lookupID returns the ID of the certificate LookupCertificate finds for
// name, or "" when it finds none.
func (x *suite) lookupID(t *testing.T, name string) string {
	t.Helper()
	c, err := x.s.LookupCertificate(ctx(t), name)
	if isNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatalf("LookupCertificate(%q): %v", name, err)
	}
	if c == nil {
		t.Fatalf("LookupCertificate(%q) returned nil and no error", name)
	}
	if !slices.Contains(c.Names, name) && !slices.Contains(c.Names, wildcardOf(name)) {
		t.Fatalf("LookupCertificate(%q) returned %s, whose names %q hold neither the name nor its wildcard", name, c.ID, c.Names)
	}
	return c.ID
}

// wildcardOf returns the wildcard one label up of name ("" for none).
func wildcardOf(name string) string {
	for i := range len(name) {
		if name[i] == '.' {
			return "*" + name[i:]
		}
	}
	return ""
}

// diffCert describes how got differs from want ("" when it does not),
// comparing times to the microsecond.
func diffCert(got, want *store.Certificate) string {
	if got == nil || want == nil {
		if got == want {
			return ""
		}
		return fmt.Sprintf("got %v, want %v", idOrNil(got), idOrNil(want))
	}
	var d []string
	field := func(name string, ok bool, g, w any) {
		if !ok {
			d = append(d, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	field("ID", got.ID == want.ID, got.ID, want.ID)
	field("Names", slices.Equal(got.Names, want.Names), got.Names, want.Names)
	field("ChainPEM", bytes.Equal(got.ChainPEM, want.ChainPEM), len(got.ChainPEM), len(want.ChainPEM))
	field("KeyPEM", bytes.Equal(got.KeyPEM, want.KeyPEM), "(secret)", "(secret)")
	field("NotBefore", sameTime(got.NotBefore, want.NotBefore), got.NotBefore, want.NotBefore)
	field("NotAfter", sameTime(got.NotAfter, want.NotAfter), got.NotAfter, want.NotAfter)
	field("Issuer", got.Issuer == want.Issuer, got.Issuer, want.Issuer)
	field("Serial", got.Serial == want.Serial, got.Serial, want.Serial)
	field("KeyType", got.KeyType == want.KeyType, got.KeyType, want.KeyType)
	field("Source", got.Source == want.Source, got.Source, want.Source)
	field("Origin", got.Origin == want.Origin, got.Origin, want.Origin)
	field("RenewAt", sameTime(got.RenewAt, want.RenewAt), got.RenewAt, want.RenewAt)
	field("StoredAt", sameTime(got.StoredAt, want.StoredAt), got.StoredAt, want.StoredAt)
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprintf("certificate %s: %q", want.ID, d)
}

func idOrNil(c *store.Certificate) string {
	if c == nil {
		return "<nil>"
	}
	return c.ID
}

// normDomain returns a copy of d with its times truncated to the
// microsecond in UTC and empty slices nil, for reflect.DeepEqual.
func normDomain(d *store.Domain) *store.Domain {
	if d == nil {
		return nil
	}
	n := *d
	n.NextAttempt, n.FailingSince, n.AddedAt, n.UpdatedAt = usZero(n.NextAttempt), usZero(n.FailingSince), usZero(n.AddedAt), usZero(n.UpdatedAt)
	n.Attempts = nil
	for _, a := range d.Attempts {
		a.At = usZero(a.At)
		n.Attempts = append(n.Attempts, a)
	}
	if len(d.ExtraNames) > 0 {
		n.ExtraNames = slices.Clone(d.ExtraNames)
	} else {
		n.ExtraNames = nil
	}
	return &n
}

// usZero is us, keeping the zero time zero.
func usZero(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return us(t)
}

// diffDomain describes how got differs from want ("" when it does not),
// comparing times to the microsecond.
func diffDomain(got, want *store.Domain) string {
	g, w := normDomain(got), normDomain(want)
	if reflect.DeepEqual(g, w) {
		return ""
	}
	return fmt.Sprintf("got  %+v\nwant %+v", g, w)
}

// idsOf returns the IDs of cs.
func idsOf(cs []*store.Certificate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// namesOf returns the names of ds.
func namesOf(ds []*store.Domain) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}
