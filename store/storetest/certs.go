package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// testCertificateRoundTrip: a certificate reads back whole, by its ID and
// by each of its names; a zero StoredAt is stored as the current time and
// the argument is not changed.
func testCertificateRoundTrip(t *testing.T, x *suite) {
	c := x.cert("example.com", "*.example.com", "www.example.com")
	c.Source, c.Origin, c.RenewAt = store.SourceImport, "/etc/ssl/example.pem", time.Time{}
	x.putCert(t, c)
	got, err := x.s.GetCertificate(ctx(t), "example.com")
	if err != nil {
		t.Fatalf("GetCertificate: %v", err)
	}
	if d := diffCert(got, c); d != "" {
		t.Errorf("GetCertificate: %s", d)
	}
	for _, name := range []string{"example.com", "*.example.com", "www.example.com", "other.example.com"} {
		got, err := x.s.LookupCertificate(ctx(t), name)
		if err != nil {
			t.Fatalf("LookupCertificate(%s): %v", name, err)
		}
		if d := diffCert(got, c); d != "" {
			t.Errorf("LookupCertificate(%s): %s", name, d)
		}
	}

	x.clock.Advance(time.Minute)
	fill := x.cert("stamp.example.com")
	fill.StoredAt = time.Time{}
	x.putCert(t, fill)
	if !fill.StoredAt.IsZero() {
		t.Error("PutCertificate changed its argument's StoredAt")
	}
	got, err = x.s.GetCertificate(ctx(t), "stamp.example.com")
	if err != nil || !sameTime(got.StoredAt, x.clock.Now()) {
		t.Errorf("a zero StoredAt reads back as %v (%v), want the store's clock %v", got.StoredAt, err, x.clock.Now())
	}
}

// testCertificateReplaceRelinks: a record replaced under its ID serves
// its new names and no longer the names only the old one had.
func testCertificateReplaceRelinks(t *testing.T, x *suite) {
	x.putCert(t, x.cert("a.example.com", "b.example.com", "c.example.com"))
	next := x.cert("a.example.com", "b.example.com", "d.example.com")
	next.Serial = "02"
	x.putCert(t, next)
	for name, want := range map[string]string{
		"a.example.com": "a.example.com",
		"b.example.com": "a.example.com",
		"c.example.com": "",
		"d.example.com": "a.example.com",
	} {
		if got := x.lookupID(t, name); got != want {
			t.Errorf("LookupCertificate(%q) = %q, want %q", name, got, want)
		}
	}
	if got, err := x.s.GetCertificate(ctx(t), "a.example.com"); err != nil || got.Serial != "02" {
		t.Errorf("GetCertificate after the replacement: %+v, %v; want serial 02", got, err)
	}

	// Deleting unlinks every name; the record is gone.
	if err := x.s.DeleteCertificate(ctx(t), "a.example.com"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a.example.com", "b.example.com", "d.example.com"} {
		if got := x.lookupID(t, name); got != "" {
			t.Errorf("after delete: LookupCertificate(%q) = %q, want none", name, got)
		}
	}
	if _, err := x.s.GetCertificate(ctx(t), "a.example.com"); !isNotFound(err) {
		t.Errorf("GetCertificate after delete: %v, want ErrNotFound", err)
	}
	if err := x.s.DeleteCertificate(ctx(t), "a.example.com"); !isNotFound(err) {
		t.Errorf("second DeleteCertificate: %v, want ErrNotFound", err)
	}
}

// testNewestWriteWins: a name two records list is served by the one
// written last; when that one goes away or drops the name, the name falls
// back to the newest other record that still lists it and has not
// expired, else to none.
func testNewestWriteWins(t *testing.T, x *suite) {
	put := func(c *store.Certificate) {
		t.Helper()
		x.putCert(t, c)
		x.clock.Advance(time.Second)
	}
	check := func(step, name, want string) {
		t.Helper()
		if got := x.lookupID(t, name); got != want {
			t.Errorf("%s: LookupCertificate(%q) = %q, want %q", step, name, got, want)
		}
	}
	del := func(id string) {
		t.Helper()
		if err := x.s.DeleteCertificate(ctx(t), id); err != nil {
			t.Fatalf("DeleteCertificate(%s): %v", id, err)
		}
	}

	put(x.cert("old.example.com", "shared.example.com"))
	put(x.cert("new.example.com", "shared.example.com"))
	check("two claims", "shared.example.com", "new.example.com")
	put(x.cert("old.example.com", "shared.example.com"))
	check("the older one rewritten", "shared.example.com", "old.example.com")
	put(x.cert("new.example.com", "shared.example.com"))
	check("the newer one rewritten", "shared.example.com", "new.example.com")

	del("new.example.com")
	check("newer deleted", "shared.example.com", "old.example.com")
	check("newer deleted", "new.example.com", "")

	put(x.cert("new.example.com", "shared.example.com"))
	check("newer back", "shared.example.com", "new.example.com")
	put(x.cert("new.example.com"))
	check("newer dropped the name", "shared.example.com", "old.example.com")

	del("old.example.com")
	check("both gone", "shared.example.com", "")
	check("both gone", "new.example.com", "new.example.com")

	// Of several other records, the one with the latest StoredAt.
	put(x.cert("first.example.com", "three.example.com"))
	put(x.cert("second.example.com", "three.example.com"))
	put(x.cert("third.example.com", "three.example.com"))
	put(x.cert("first.example.com", "three.example.com")) // rewritten: now the latest
	check("three claims", "three.example.com", "first.example.com")
	del("first.example.com")
	check("the latest of three deleted", "three.example.com", "third.example.com")
	put(x.cert("third.example.com"))
	check("the next one dropped the name", "three.example.com", "second.example.com")

	expired := x.cert("expired.example.com", "other.example.com")
	expired.NotBefore, expired.NotAfter = x.clock.Now().Add(-48*time.Hour), x.clock.Now().Add(-time.Minute)
	put(expired)
	check("an expired record is served by its own write", "other.example.com", "expired.example.com")
	put(x.cert("fresh.example.com", "other.example.com"))
	del("fresh.example.com")
	check("no fallback to an expired record", "other.example.com", "")
	check("an expired record still serves its own name", "expired.example.com", "expired.example.com")
}

// testCertificateInvalid: records missing what PutCertificate requires
// are refused with ErrInvalid and nothing is written.
func testCertificateInvalid(t *testing.T, x *suite) {
	with := func(f func(c *store.Certificate)) *store.Certificate {
		c := x.cert("example.com", "www.example.com")
		f(c)
		return c
	}
	for _, tc := range []struct {
		desc string
		c    *store.Certificate
	}{
		{"nil certificate", nil},
		{"no id", with(func(c *store.Certificate) { c.ID = "" })},
		{"no names", with(func(c *store.Certificate) { c.Names = nil })},
		{"no chain", with(func(c *store.Certificate) { c.ChainPEM = nil })},
		{"no key", with(func(c *store.Certificate) { c.KeyPEM = nil })},
		{"name not normalized", with(func(c *store.Certificate) { c.Names = []string{"example.com", "WWW.example.com"} })},
		{"name with a trailing dot", with(func(c *store.Certificate) { c.Names = []string{"example.com", "www.example.com."} })},
		{"wildcard over a tld", with(func(c *store.Certificate) { c.Names = []string{"example.com", "*.com"} })},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := x.s.PutCertificate(ctx(t), tc.c); !errors.Is(err, store.ErrInvalid) {
				t.Errorf("PutCertificate = %v, want ErrInvalid", err)
			}
			for _, name := range []string{"example.com", "www.example.com"} {
				if got := x.lookupID(t, name); got != "" {
					t.Errorf("a refused record was written: LookupCertificate(%s) = %q", name, got)
				}
			}
			if cs, err := x.s.ListCertificates(ctx(t), "", 10); err != nil || len(cs) != 0 {
				t.Errorf("a refused record was written: ListCertificates = %q, %v", idsOf(cs), err)
			}
		})
	}
}

// testLookupWildcard: a name is served by its own link, else by the
// wildcard one label up; never by one deeper or further up, never by
// "*.com" for "example.com".
func testLookupWildcard(t *testing.T, x *suite) {
	x.putCert(t, x.cert("*.example.com", "example.com"))
	x.putCert(t, x.cert("exact.example.com"))
	x.putCert(t, x.cert("*.b.example.com"))
	x.putCert(t, x.cert("*.c.example.com"))
	for _, tc := range []struct {
		desc, name, want string
	}{
		{"exact before wildcard", "exact.example.com", "exact.example.com"},
		{"wildcard one label up", "other.example.com", "*.example.com"},
		{"apex by its own name", "example.com", "*.example.com"},
		{"nearest wildcard", "a.b.example.com", "*.b.example.com"},
		{"a wildcard does not serve its own apex", "c.example.com", "*.example.com"},
		{"never two labels up", "a.d.example.com", ""},
		{"never from a deeper wildcard", "x.a.c.example.com", ""},
		{"nothing for another domain", "example.org", ""},
		{"never *.com", "com", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := x.lookupID(t, tc.name); got != tc.want {
				t.Errorf("LookupCertificate(%q) = %q, want %q", tc.name, got, tc.want)
			}
		})
	}
}

// testPutCertificatesBatch: a batch is written as its certificates would
// be one after another, a later one with the ID of an earlier one
// replacing it within the same write; no certificates is no write.
func testPutCertificatesBatch(t *testing.T, x *suite) {
	x.putCert(t, x.cert("old.example.com", "gone.example.com"))
	second := x.cert("a.example.com", "c.example.com")
	second.Serial = "02"
	batch := []*store.Certificate{
		x.cert("a.example.com", "b.example.com"),
		x.cert("old.example.com"),
		second,
	}
	if err := x.s.PutCertificates(ctx(t), batch); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"a.example.com":    "a.example.com",
		"b.example.com":    "",
		"c.example.com":    "a.example.com",
		"old.example.com":  "old.example.com",
		"gone.example.com": "",
	} {
		if got := x.lookupID(t, name); got != want {
			t.Errorf("LookupCertificate(%q) = %q, want %q", name, got, want)
		}
	}
	if c, err := x.s.GetCertificate(ctx(t), "a.example.com"); err != nil || c.Serial != "02" {
		t.Errorf("GetCertificate(a.example.com) = %+v, %v; want serial 02", c, err)
	}
	if err := x.s.PutCertificates(ctx(t), nil); err != nil {
		t.Errorf("PutCertificates(nil) = %v", err)
	}
	if err := x.s.PutCertificates(ctx(t), []*store.Certificate{}); err != nil {
		t.Errorf("PutCertificates of none = %v", err)
	}
	if cs, err := x.s.ListCertificates(ctx(t), "", 10); err != nil || !slices.Equal(idsOf(cs), []string{"a.example.com", "old.example.com"}) {
		t.Errorf("ListCertificates after the batch = %q, %v", idsOf(cs), err)
	}
}

// testPutCertificatesAllOrNothing: an invalid certificate anywhere in a
// batch is refused naming its position, and a batch too large for one
// atomic write is refused with ErrBatchTooLarge; either way nothing of
// the batch is written.
func testPutCertificatesAllOrNothing(t *testing.T, x *suite) {
	x.putCert(t, x.cert("kept.example.com", "shared.example.com"))
	x.clock.Advance(time.Second)
	bad := x.cert("bad.example.com")
	bad.KeyPEM = nil
	err := x.s.PutCertificates(ctx(t), []*store.Certificate{x.cert("good.example.com", "shared.example.com"), bad, x.cert("third.example.com")})
	if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "#2") {
		t.Errorf("PutCertificates with an invalid second record = %v, want ErrInvalid naming #2", err)
	}
	for name, want := range map[string]string{"good.example.com": "", "shared.example.com": "kept.example.com", "third.example.com": ""} {
		if got := x.lookupID(t, name); got != want {
			t.Errorf("after a refused batch: LookupCertificate(%q) = %q, want %q", name, got, want)
		}
	}
	err = x.s.PutCertificates(ctx(t), []*store.Certificate{x.cert("good.example.com"), nil})
	if !errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "#2") {
		t.Errorf("PutCertificates with a nil second record = %v, want ErrInvalid naming #2", err)
	}

	// 20,000 certificates: an engine may take them in one write (all are
	// there) or refuse them with ErrBatchTooLarge (none is).
	const n = 20000
	big := make([]*store.Certificate, n)
	for i := range big {
		big[i] = x.cert(fmt.Sprintf("big%05d.example.com", i), fmt.Sprintf("www.big%05d.example.com", i))
	}
	big[n-1].Names = append(big[n-1].Names, "shared.example.com")
	err = x.s.PutCertificates(ctx(t), big)
	switch {
	case errors.Is(err, store.ErrBatchTooLarge):
		for _, name := range []string{"big00000.example.com", "www.big19999.example.com"} {
			if got := x.lookupID(t, name); got != "" {
				t.Errorf("a batch too large was partly written: LookupCertificate(%s) = %q", name, got)
			}
		}
		if got := x.lookupID(t, "shared.example.com"); got != "kept.example.com" {
			t.Errorf("a batch too large re-pointed a name: LookupCertificate(shared.example.com) = %q", got)
		}
		if cs, err := x.s.ListCertificates(ctx(t), "big", 1); err != nil || len(cs) != 0 && strings.HasPrefix(cs[0].ID, "big") {
			t.Errorf("a batch too large was partly written: ListCertificates = %q, %v", idsOf(cs), err)
		}
		if err := x.s.PutCertificates(ctx(t), big[:500]); err != nil {
			t.Errorf("PutCertificates of 500 after a batch too large: %v", err)
		}
	case err != nil:
		t.Fatalf("PutCertificates of %d: %v, want nil or ErrBatchTooLarge", n, err)
	default:
		for _, name := range []string{"big00000.example.com", "www.big19999.example.com"} {
			if got, want := x.lookupID(t, name), strings.TrimPrefix(name, "www."); got != want {
				t.Errorf("after a batch of %d: LookupCertificate(%s) = %q, want %q", n, name, got, want)
			}
		}
		if got := x.lookupID(t, "shared.example.com"); got != "big19999.example.com" {
			t.Errorf("after a batch of %d: LookupCertificate(shared.example.com) = %q, want the batch's", n, got)
		}
	}
}

// testListCertificates: pages in ID order, after a given ID.
func testListCertificates(t *testing.T, x *suite) {
	ids := []string{"*.example.com", "a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com"}
	for _, id := range slices.Backward(ids) {
		x.putCert(t, x.cert(id))
	}
	for _, tc := range listPages(ids) {
		t.Run(tc.desc, func(t *testing.T) {
			cs, err := x.s.ListCertificates(ctx(t), tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if got := idsOf(cs); !slices.Equal(got, tc.want) {
				t.Errorf("ListCertificates(%q, %d) = %q, want %q", tc.after, tc.limit, got, tc.want)
			}
		})
	}
	cs, err := x.s.ListCertificates(ctx(t), "", 1)
	if err != nil || len(cs) != 1 {
		t.Fatalf("ListCertificates(\"\", 1) = %q, %v", idsOf(cs), err)
	}
	if d := diffCert(cs[0], x.cert(ids[0])); d != "" {
		t.Errorf("ListCertificates returned a record unlike the one stored: %s", d)
	}
}

// A listPage is one call of a List method and what it returns.
type listPage struct {
	desc  string
	after string
	limit int
	want  []string
}

// listPages returns the pages every List method must give over keys (in
// order, six of them).
func listPages(keys []string) []listPage {
	return []listPage{
		{"first page", "", 2, keys[:2]},
		{"next page", keys[1], 2, keys[2:4]},
		{"last page", keys[3], 5, keys[4:]},
		{"after a missing key", keys[2] + "x", 10, keys[3:]},
		{"past the end", "zzz", 2, nil},
		{"all", "", 100, keys},
		{"zero limit", "", 0, nil},
	}
}
