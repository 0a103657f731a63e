package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// testAccounts: an account reads back whole and is replaced under its
// ID; one without an ID is refused.
func testAccounts(t *testing.T, x *suite) {
	now := x.clock.Now()
	a := &store.Account{
		ID: "acct-1", Directory: "https://acme.test/dir", Email: "ops@example.com",
		URL: "https://acme.test/acct/1", KeyPEM: []byte("-----BEGIN EC PRIVATE KEY-----\nk\n-----END EC PRIVATE KEY-----\n"), CreatedAt: now,
	}
	check := func(want *store.Account) {
		t.Helper()
		got, err := x.s.GetAccount(ctx(t), want.ID)
		if err != nil {
			t.Fatalf("GetAccount(%s): %v", want.ID, err)
		}
		if got.ID != want.ID || got.Directory != want.Directory || got.Email != want.Email || got.URL != want.URL ||
			string(got.KeyPEM) != string(want.KeyPEM) || !sameTime(got.CreatedAt, want.CreatedAt) {
			t.Errorf("GetAccount(%s) = %+v, want %+v", want.ID, got, want)
		}
	}
	if err := x.s.PutAccount(ctx(t), a); err != nil {
		t.Fatal(err)
	}
	check(a)
	b := *a
	b.URL, b.Email, b.CreatedAt = "https://acme.test/acct/2", "", now.Add(time.Hour)
	if err := x.s.PutAccount(ctx(t), &b); err != nil {
		t.Fatal(err)
	}
	check(&b)
	for _, bad := range []*store.Account{nil, {Directory: "https://acme.test/dir"}} {
		if err := x.s.PutAccount(ctx(t), bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutAccount(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := x.s.GetAccount(ctx(t), "acct-2"); !isNotFound(err) {
		t.Errorf("GetAccount of a missing account: %v, want ErrNotFound", err)
	}
}

// testChallenges: a token reads back until it expires, then reads as
// missing; one put already expired reads as missing; a deleted one is
// gone; deleting a missing one is no error; an empty token or key
// authorization is refused.
func testChallenges(t *testing.T, x *suite) {
	now := x.clock.Now()
	get := func(token, want string) {
		t.Helper()
		got, err := x.s.GetChallenge(ctx(t), token)
		switch {
		case want == "" && !isNotFound(err):
			t.Errorf("GetChallenge(%s) = %q, %v; want ErrNotFound", token, got, err)
		case want != "" && (err != nil || got != want):
			t.Errorf("GetChallenge(%s) = %q, %v; want %q", token, got, err, want)
		}
	}
	put := func(token, keyAuth string, expires time.Time) {
		t.Helper()
		if err := x.s.PutChallenge(ctx(t), token, keyAuth, expires); err != nil {
			t.Fatalf("PutChallenge(%s): %v", token, err)
		}
	}
	put("tok", "tok.thumb", now.Add(time.Minute))
	put("old", "old.thumb", now.Add(-time.Second))
	put("now", "now.thumb", now)
	put("gone", "gone.thumb", now.Add(time.Hour))
	get("tok", "tok.thumb")
	get("old", "")
	get("now", "")
	get("gone", "gone.thumb")
	if err := x.s.DeleteChallenge(ctx(t), "gone"); err != nil {
		t.Fatal(err)
	}
	get("gone", "")
	if err := x.s.DeleteChallenge(ctx(t), "gone"); err != nil {
		t.Errorf("DeleteChallenge of a missing token: %v", err)
	}

	put("tok", "tok.thumb2", now.Add(2*time.Minute))
	get("tok", "tok.thumb2")
	put("old", "old.thumb", now.Add(time.Minute))
	put("old", "old.thumb", now.Add(-time.Minute))
	get("old", "")

	x.clock.Advance(time.Minute)
	get("tok", "tok.thumb2")
	x.clock.Advance(time.Minute)
	get("tok", "")

	for _, tc := range []struct{ token, keyAuth string }{{"", "x"}, {"t", ""}} {
		if err := x.s.PutChallenge(ctx(t), tc.token, tc.keyAuth, now.Add(time.Hour)); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutChallenge(%q, %q) = %v, want ErrInvalid", tc.token, tc.keyAuth, err)
		}
	}
	get("t", "")
}

// testRateBuckets: buckets are kept per scope, in key order, until they
// are full again; rewritten in place; removed when written full; bad
// input is refused with nothing written.
func testRateBuckets(t *testing.T, x *suite) {
	now := x.clock.Now()
	a := []store.RateBucket{
		{Limit: "new_orders_per_account", Full: now.Add(3 * time.Hour)},
		{Limit: "certificates_per_registered_domain", Key: "example.com", Full: now.Add(time.Hour)},
		{Limit: "certificates_per_exact_set", Key: "a.example.com,b.example.com", Full: now.Add(2*time.Minute + time.Microsecond)},
		{Limit: "authorization_failures_per_identifier", Key: "a.example.com", Full: now.Add(-time.Second)}, // full: not kept
		{Limit: "authorization_failures_per_identifier", Key: "b.example.com", Full: now},                   // full: not kept
	}
	check := func(scope string, want ...store.RateBucket) {
		t.Helper()
		got, err := x.s.RateBuckets(ctx(t), scope)
		if err != nil {
			t.Fatalf("RateBuckets(%s): %v", scope, err)
		}
		same := len(got) == len(want)
		for i := range got {
			if same && (got[i].Limit != want[i].Limit || got[i].Key != want[i].Key || !sameTime(got[i].Full, want[i].Full)) {
				same = false
			}
		}
		if !same {
			t.Fatalf("RateBuckets(%s) = %+v, want %+v", scope, got, want)
		}
	}
	put := func(scope string, bs []store.RateBucket) {
		t.Helper()
		if err := x.s.PutRateBuckets(ctx(t), scope, bs); err != nil {
			t.Fatalf("PutRateBuckets(%s): %v", scope, err)
		}
	}
	check("acct-a")
	put("acct-a", a)
	put("acct-b", []store.RateBucket{{Limit: "new_orders_per_account", Full: now.Add(time.Minute)}})
	put("acct-b", nil)
	check("acct-a", a[2], a[1], a[0]) // key order: limit, then key
	check("acct-b", store.RateBucket{Limit: "new_orders_per_account", Full: now.Add(time.Minute)})
	check("acct") // a prefix of another scope holds nothing

	// Rewritten later, and one written full (removed).
	a[0].Full = now.Add(4 * time.Hour)
	a[1].Full = now
	put("acct-a", a[:2])
	check("acct-a", a[2], a[0])

	// Full again with time: gone.
	x.clock.Advance(2 * time.Minute)
	check("acct-a", a[2], a[0])
	x.clock.Advance(time.Microsecond)
	check("acct-a", a[0])

	// Bad input changes nothing.
	for _, tc := range []struct {
		scope string
		b     store.RateBucket
	}{
		{"", store.RateBucket{Limit: "x", Full: now.Add(time.Hour)}},
		{"a\x00b", store.RateBucket{Limit: "x", Full: now.Add(time.Hour)}},
		{"acct-a", store.RateBucket{Limit: "", Full: now.Add(time.Hour)}},
		{"acct-a", store.RateBucket{Limit: "x\x00", Full: now.Add(time.Hour)}},
		{"acct-a", store.RateBucket{Limit: "x", Key: "k\x00", Full: now.Add(time.Hour)}},
	} {
		err := x.s.PutRateBuckets(ctx(t), tc.scope, []store.RateBucket{{Limit: "ok", Full: now.Add(time.Hour)}, tc.b})
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutRateBuckets(%q, %+v) = %v, want ErrInvalid", tc.scope, tc.b, err)
		}
	}
	check("acct-a", a[0])
	for _, scope := range []string{"", "a\x00b"} {
		if _, err := x.s.RateBuckets(ctx(t), scope); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("RateBuckets(%q) = %v, want ErrInvalid", scope, err)
		}
	}

	// More buckets than a write of a few hundred holds.
	many := make([]store.RateBucket, 2500)
	for i := range many {
		many[i] = store.RateBucket{Limit: "authorization_failures_per_identifier", Key: fmt.Sprintf("n%05d.example.com", i), Full: now.Add(time.Hour)}
	}
	put("acct-many", many)
	got, err := x.s.RateBuckets(ctx(t), "acct-many")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(many) || got[0].Key != many[0].Key || got[len(got)-1].Key != many[len(many)-1].Key {
		t.Fatalf("RateBuckets of %d: got %d", len(many), len(got))
	}
}

// testNotFound: every read and delete the contract promises ErrNotFound
// for returns it on an empty store.
func testNotFound(t *testing.T, x *suite) {
	for _, tc := range []struct {
		desc string
		call func(ctx context.Context) error
	}{
		{"GetCertificate", func(c context.Context) error { _, err := x.s.GetCertificate(c, "a.example.com"); return err }},
		{"LookupCertificate", func(c context.Context) error { _, err := x.s.LookupCertificate(c, "a.example.com"); return err }},
		{"DeleteCertificate", func(c context.Context) error { return x.s.DeleteCertificate(c, "a.example.com") }},
		{"UpdateDomain", func(c context.Context) error {
			return x.s.UpdateDomain(c, "a.example.com", func(*store.Domain) error { return nil })
		}},
		{"GetDomain", func(c context.Context) error { _, err := x.s.GetDomain(c, "a.example.com"); return err }},
		{"DeleteDomain", func(c context.Context) error { return x.s.DeleteDomain(c, "a.example.com") }},
		{"GetAccount", func(c context.Context) error { _, err := x.s.GetAccount(c, "acct"); return err }},
		{"GetChallenge", func(c context.Context) error { _, err := x.s.GetChallenge(c, "tok"); return err }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := tc.call(ctx(t)); !isNotFound(err) {
				t.Errorf("error = %v, want ErrNotFound", err)
			}
		})
	}
	for _, tc := range []struct {
		desc string
		call func(c context.Context) (int, error)
	}{
		{"ListCertificates", func(c context.Context) (int, error) { cs, err := x.s.ListCertificates(c, "", 10); return len(cs), err }},
		{"ListDomains", func(c context.Context) (int, error) { ds, err := x.s.ListDomains(c, "", 10); return len(ds), err }},
		{"Due", func(c context.Context) (int, error) {
			es, err := x.s.Due(c, x.clock.Now().Add(time.Hour), 10)
			return len(es), err
		}},
		{"RateBuckets", func(c context.Context) (int, error) { bs, err := x.s.RateBuckets(c, "acct"); return len(bs), err }},
		{"DeleteChallenge", func(c context.Context) (int, error) { return 0, x.s.DeleteChallenge(c, "tok") }},
	} {
		t.Run(tc.desc+" of nothing", func(t *testing.T) {
			if n, err := tc.call(ctx(t)); n != 0 || err != nil {
				t.Errorf("= %d records, %v; want none and no error", n, err)
			}
		})
	}
}

// testContextDone: every method called with a context that is done
// returns its error and writes nothing.
func testContextDone(t *testing.T, x *suite) {
	now := x.clock.Now()
	x.putCert(t, x.cert("a.example.com"))
	x.putDomain(t, &store.Domain{Name: "a.example.com", NextAttempt: now})
	if err := x.s.PutChallenge(ctx(t), "tok", "tok.thumb", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	calls := []struct {
		desc string
		call func(c context.Context) error
	}{
		{"PutCertificate", func(c context.Context) error { return x.s.PutCertificate(c, x.cert("b.example.com")) }},
		{"PutCertificates", func(c context.Context) error {
			return x.s.PutCertificates(c, []*store.Certificate{x.cert("b.example.com")})
		}},
		{"GetCertificate", func(c context.Context) error { _, err := x.s.GetCertificate(c, "a.example.com"); return err }},
		{"LookupCertificate", func(c context.Context) error { _, err := x.s.LookupCertificate(c, "a.example.com"); return err }},
		{"DeleteCertificate", func(c context.Context) error { return x.s.DeleteCertificate(c, "a.example.com") }},
		{"ListCertificates", func(c context.Context) error { _, err := x.s.ListCertificates(c, "", 10); return err }},
		{"PutDomain", func(c context.Context) error { return x.s.PutDomain(c, &store.Domain{Name: "b.example.com"}) }},
		{"UpdateDomain", func(c context.Context) error {
			return x.s.UpdateDomain(c, "a.example.com", func(d *store.Domain) error { d.Failures = 9; return nil })
		}},
		{"AddDomains", func(c context.Context) error {
			_, _, err := x.s.AddDomains(c, []*store.Domain{{Name: "b.example.com"}})
			return err
		}},
		{"GetDomain", func(c context.Context) error { _, err := x.s.GetDomain(c, "a.example.com"); return err }},
		{"DeleteDomain", func(c context.Context) error { return x.s.DeleteDomain(c, "a.example.com") }},
		{"ListDomains", func(c context.Context) error { _, err := x.s.ListDomains(c, "", 10); return err }},
		{"Due", func(c context.Context) error { _, err := x.s.Due(c, now, 10); return err }},
		{"PutAccount", func(c context.Context) error { return x.s.PutAccount(c, &store.Account{ID: "acct"}) }},
		{"GetAccount", func(c context.Context) error { _, err := x.s.GetAccount(c, "acct"); return err }},
		{"PutChallenge", func(c context.Context) error { return x.s.PutChallenge(c, "tok2", "k", now.Add(time.Hour)) }},
		{"GetChallenge", func(c context.Context) error { _, err := x.s.GetChallenge(c, "tok"); return err }},
		{"DeleteChallenge", func(c context.Context) error { return x.s.DeleteChallenge(c, "tok") }},
		{"PutRateBuckets", func(c context.Context) error {
			return x.s.PutRateBuckets(c, "acct", []store.RateBucket{{Limit: "l", Full: now.Add(time.Hour)}})
		}},
		{"RateBuckets", func(c context.Context) error { _, err := x.s.RateBuckets(c, "acct"); return err }},
	}
	if feed, ok := x.s.(store.ChangeFeed); ok {
		calls = append(calls, struct {
			desc string
			call func(c context.Context) error
		}{"CertChanges", func(c context.Context) error { _, err := feed.CertChanges(c, store.Cursor{}); return err }})
	}
	for _, tc := range calls {
		t.Run(tc.desc, func(t *testing.T) {
			if err := tc.call(done); !errors.Is(err, context.Canceled) {
				t.Errorf("with a cancelled context: %v, want context.Canceled", err)
			}
		})
	}

	// Nothing was written.
	if cs, err := x.s.ListCertificates(ctx(t), "", 10); err != nil || !slices.Equal(idsOf(cs), []string{"a.example.com"}) {
		t.Errorf("certificates after cancelled calls: %q, %v", idsOf(cs), err)
	}
	if ds, err := x.s.ListDomains(ctx(t), "", 10); err != nil || !slices.Equal(namesOf(ds), []string{"a.example.com"}) || ds[0].Failures != 0 {
		t.Errorf("domains after cancelled calls: %+v, %v", ds, err)
	}
	if _, err := x.s.GetAccount(ctx(t), "acct"); !isNotFound(err) {
		t.Errorf("account after a cancelled PutAccount: %v", err)
	}
	if got, err := x.s.GetChallenge(ctx(t), "tok"); err != nil || got != "tok.thumb" {
		t.Errorf("challenge after a cancelled DeleteChallenge: %q, %v", got, err)
	}
	if _, err := x.s.GetChallenge(ctx(t), "tok2"); !isNotFound(err) {
		t.Errorf("challenge after a cancelled PutChallenge: %v", err)
	}
	if bs, err := x.s.RateBuckets(ctx(t), "acct"); err != nil || len(bs) != 0 {
		t.Errorf("rate buckets after a cancelled put: %v, %v", bs, err)
	}
}

// testListChallenges, for a store with store.ChallengeLister: the
// unexpired tokens under a prefix come back in token order, up to the
// limit, none from beside the prefix (a token one character past it, or
// the prefix with a higher last character); a put or a delete shows in
// the next listing, and an expiry as soon as it passes; a bad prefix is
// refused.
func testListChallenges(t *testing.T, x *suite) {
	l, ok := store.As[store.ChallengeLister](x.s)
	if !ok {
		return // an optional ability this store does not have
	}
	now := x.clock.Now()
	for token, expires := range map[string]time.Time{
		"dns-01:abc:v2":   now.Add(time.Hour),
		"dns-01:abc:v1":   now.Add(time.Minute),
		"dns-01:abc:old":  now.Add(-time.Second),
		"dns-01:abcd:v":   now.Add(time.Hour),
		"dns-01:abb:v":    now.Add(time.Hour),
		"dns-01:abc;":     now.Add(time.Hour),
		"dns-01:abé:v":    now.Add(time.Hour),
		"dns-01:abê:v":    now.Add(time.Hour),
		"tokenabcdefghij": now.Add(time.Hour),
	} {
		if err := x.s.PutChallenge(ctx(t), token, "value-of-"+token, expires); err != nil {
			t.Fatalf("PutChallenge(%s): %v", token, err)
		}
	}
	list := func(prefix string, limit int) []string {
		t.Helper()
		cs, err := l.ListChallenges(ctx(t), prefix, limit)
		if err != nil {
			t.Fatalf("ListChallenges(%q, %d): %v", prefix, limit, err)
		}
		var got []string
		for _, c := range cs {
			if c.KeyAuth != "value-of-"+c.Token || c.Expires.IsZero() {
				t.Errorf("ListChallenges(%q): record %+v", prefix, c)
			}
			got = append(got, c.Token)
		}
		return got
	}
	for _, tc := range []struct {
		desc   string
		prefix string
		limit  int
		want   []string
	}{
		{"unexpired under the prefix, in token order", "dns-01:abc:", 10, []string{"dns-01:abc:v1", "dns-01:abc:v2"}},
		{"limit", "dns-01:abc:", 1, []string{"dns-01:abc:v1"}},
		{"limit 0", "dns-01:abc:", 0, nil},
		{"a wider prefix", "dns-01:abc", 10, []string{"dns-01:abc:v1", "dns-01:abc:v2", "dns-01:abc;", "dns-01:abcd:v"}},
		{"a non-ASCII last character", "dns-01:abé", 10, []string{"dns-01:abé:v"}},
		{"nothing under it", "dns-01:zzz:", 10, nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := list(tc.prefix, tc.limit); !slices.Equal(got, tc.want) {
				t.Errorf("ListChallenges(%q, %d) = %q, want %q", tc.prefix, tc.limit, got, tc.want)
			}
		})
	}
	// A write after a listing shows in the next one, whatever the store
	// keeps of the first.
	if err := x.s.PutChallenge(ctx(t), "dns-01:abc:v3", "value-of-dns-01:abc:v3", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := list("dns-01:abc:", 10), []string{"dns-01:abc:v1", "dns-01:abc:v2", "dns-01:abc:v3"}; !slices.Equal(got, want) {
		t.Errorf("after a put: %q, want %q", got, want)
	}
	if err := x.s.DeleteChallenge(ctx(t), "dns-01:abc:v3"); err != nil {
		t.Fatal(err)
	}
	if got, want := list("dns-01:abc:", 10), []string{"dns-01:abc:v1", "dns-01:abc:v2"}; !slices.Equal(got, want) {
		t.Errorf("after a delete: %q, want %q", got, want)
	}
	x.clock.Advance(time.Minute)
	if got, want := list("dns-01:abc:", 10), []string{"dns-01:abc:v2"}; !slices.Equal(got, want) {
		t.Errorf("a minute later: %q, want %q", got, want)
	}
	for _, bad := range []string{"", "a\x00b"} {
		if _, err := l.ListChallenges(ctx(t), bad, 10); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ListChallenges(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}
