package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testClock is a settable clock for the store.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock {
	return &testClock{now: time.Now().UTC().Truncate(time.Second)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testLogger writes warnings and errors to the test's output.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// openTestBadger opens a store in dir (a new temporary directory when
// empty) and closes it when the test ends.
func openTestBadger(tb testing.TB, dir string, clock *testClock) *Badger {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	b, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(tb), Clock: clock.Now})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Error(err)
		}
	})
	return b
}

// testCert returns a certificate record for names with fake PEM bytes.
func testCert(clock *testClock, names ...string) *Certificate {
	now := clock.Now()
	return &Certificate{
		ID:        names[0],
		Names:     names,
		ChainPEM:  []byte("-----BEGIN CERTIFICATE-----\n" + names[0] + "\n-----END CERTIFICATE-----\n"),
		KeyPEM:    []byte("-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n"),
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(90 * 24 * time.Hour),
		Issuer:    "CN=Test CA",
		Serial:    "0a1b",
		KeyType:   "ecdsa-p256",
		Source:    "acme",
		Origin:    "https://acme.test/dir",
		RenewAt:   now.Add(60 * 24 * time.Hour),
		StoredAt:  now,
	}
}

// lookupID returns the ID of the certificate LookupCertificate finds for
// name, or "" when it finds none.
func lookupID(t *testing.T, s Store, name string) string {
	t.Helper()
	c, err := s.LookupCertificate(context.Background(), name)
	if errors.Is(err, ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("LookupCertificate(%q): %v", name, err)
	}
	return c.ID
}

func TestOpenBadgerRefusesBadOptions(t *testing.T) {
	tests := []struct {
		desc string
		path string
		opts BadgerOptions
	}{
		{desc: "nil logger", path: t.TempDir(), opts: BadgerOptions{}},
		{desc: "empty path", path: "", opts: BadgerOptions{Logger: testLogger(t)}},
		{desc: "tiny memtable", path: t.TempDir(), opts: BadgerOptions{Logger: testLogger(t), MemTableSize: 1 << 20}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			b, err := OpenBadger(tt.path, tt.opts)
			if err == nil {
				b.Close()
				t.Fatal("OpenBadger succeeded")
			}
		})
	}
}

func TestBadgerRoundTrip(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	now := clock.Now()

	cert := testCert(clock, "example.com", "*.example.com", "www.example.com")
	domain := &Domain{
		Name: "www.example.com", State: StateFailing, Profile: "shortlived", CertID: "example.com",
		NextAttempt: now.Add(time.Hour), Failures: 3, LastError: "urn:ietf:params:acme:error:dns",
		FailingSince: now.Add(-time.Hour), Source: "api", AddedAt: now.Add(-48 * time.Hour), UpdatedAt: now,
	}
	account := &Account{
		ID: "acct-1", Directory: "https://acme.test/dir", Email: "ops@example.com",
		URL: "https://acme.test/acct/1", KeyPEM: []byte("account key"), CreatedAt: now,
	}

	tests := []struct {
		desc string
		put  func() error
		get  func() (any, error)
		want any
	}{
		{
			desc: "certificate",
			put:  func() error { return s.PutCertificate(ctx, cert) },
			get:  func() (any, error) { return s.GetCertificate(ctx, "example.com") },
			want: cert,
		},
		{
			desc: "domain",
			put:  func() error { return s.PutDomain(ctx, domain) },
			get:  func() (any, error) { return s.GetDomain(ctx, "www.example.com") },
			want: domain,
		},
		{
			desc: "account",
			put:  func() error { return s.PutAccount(ctx, account) },
			get:  func() (any, error) { return s.GetAccount(ctx, "acct-1") },
			want: account,
		},
		{
			desc: "challenge",
			put:  func() error { return s.PutChallenge(ctx, "tok-1", "tok-1.thumb", now.Add(time.Minute)) },
			get:  func() (any, error) { return s.GetChallenge(ctx, "tok-1") },
			want: "tok-1.thumb",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if err := tt.put(); err != nil {
				t.Fatalf("put: %v", err)
			}
			got, err := tt.get()
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestBadgerFillsTimestamps(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)

	c := testCert(clock, "a.example.com")
	c.StoredAt = time.Time{}
	if err := s.PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	if !c.StoredAt.IsZero() {
		t.Error("PutCertificate changed its argument")
	}
	got, err := s.GetCertificate(ctx, "a.example.com")
	if err != nil || !got.StoredAt.Equal(clock.Now()) {
		t.Errorf("StoredAt = %v, %v; want %v", got.StoredAt, err, clock.Now())
	}

	added := clock.Now()
	if err := s.PutDomain(ctx, &Domain{Name: "a.example.com", State: StatePending}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if err := s.PutDomain(ctx, &Domain{Name: "a.example.com", State: StateIssuing}); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDomain(ctx, "a.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !d.AddedAt.Equal(added) || !d.UpdatedAt.Equal(clock.Now()) {
		t.Errorf("AddedAt, UpdatedAt = %v, %v; want %v, %v", d.AddedAt, d.UpdatedAt, added, clock.Now())
	}
}

func TestBadgerNotFound(t *testing.T) {
	ctx := context.Background()
	s := openTestBadger(t, "", newTestClock())
	tests := []struct {
		desc string
		call func() error
	}{
		{desc: "get certificate", call: func() error { _, err := s.GetCertificate(ctx, "a.example.com"); return err }},
		{desc: "lookup certificate", call: func() error { _, err := s.LookupCertificate(ctx, "a.example.com"); return err }},
		{desc: "delete certificate", call: func() error { return s.DeleteCertificate(ctx, "a.example.com") }},
		{desc: "get domain", call: func() error { _, err := s.GetDomain(ctx, "a.example.com"); return err }},
		{desc: "delete domain", call: func() error { return s.DeleteDomain(ctx, "a.example.com") }},
		{desc: "get account", call: func() error { _, err := s.GetAccount(ctx, "acct"); return err }},
		{desc: "get challenge", call: func() error { _, err := s.GetChallenge(ctx, "tok"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, ErrNotFound) {
				t.Errorf("error = %v, want ErrNotFound", err)
			}
		})
	}
	if err := s.DeleteChallenge(ctx, "tok"); err != nil {
		t.Errorf("DeleteChallenge of a missing token: %v", err)
	}
}

func TestBadgerRefusesInvalidRecords(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	with := func(f func(c *Certificate)) *Certificate {
		c := testCert(clock, "example.com")
		f(c)
		return c
	}
	tests := []struct {
		desc string
		call func() error
	}{
		{desc: "nil certificate", call: func() error { return s.PutCertificate(ctx, nil) }},
		{desc: "no id", call: func() error { return s.PutCertificate(ctx, with(func(c *Certificate) { c.ID = "" })) }},
		{desc: "no names", call: func() error { return s.PutCertificate(ctx, with(func(c *Certificate) { c.Names = nil })) }},
		{desc: "no chain", call: func() error { return s.PutCertificate(ctx, with(func(c *Certificate) { c.ChainPEM = nil })) }},
		{desc: "no key", call: func() error { return s.PutCertificate(ctx, with(func(c *Certificate) { c.KeyPEM = nil })) }},
		{desc: "name not normalized", call: func() error {
			return s.PutCertificate(ctx, with(func(c *Certificate) { c.Names = []string{"Example.com"} }))
		}},
		{desc: "wildcard over tld", call: func() error {
			return s.PutCertificate(ctx, with(func(c *Certificate) { c.Names = []string{"*.com"} }))
		}},
		{desc: "nil domain", call: func() error { return s.PutDomain(ctx, nil) }},
		{desc: "domain not normalized", call: func() error { return s.PutDomain(ctx, &Domain{Name: "example.com."}) }},
		{desc: "domain empty", call: func() error { return s.PutDomain(ctx, &Domain{}) }},
		{desc: "add domains with one bad", call: func() error {
			_, _, err := s.AddDomains(ctx, []*Domain{{Name: "ok.example.com"}, {Name: "bad_name.example.com"}})
			return err
		}},
		{desc: "account without id", call: func() error { return s.PutAccount(ctx, &Account{}) }},
		{desc: "challenge without token", call: func() error { return s.PutChallenge(ctx, "", "x", clock.Now().Add(time.Hour)) }},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, ErrInvalid) {
				t.Errorf("error = %v, want ErrInvalid", err)
			}
		})
	}
	if d, err := s.GetDomain(ctx, "ok.example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("AddDomains wrote %v (%v) despite an invalid domain", d, err)
	}
}

func TestPutCertificateRelinksNames(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)

	if err := s.PutCertificate(ctx, testCert(clock, "a.example.com", "b.example.com", "c.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCertificate(ctx, testCert(clock, "a.example.com", "b.example.com", "d.example.com")); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"a.example.com": "a.example.com",
		"b.example.com": "a.example.com",
		"c.example.com": "",
		"d.example.com": "a.example.com",
	} {
		if got := lookupID(t, s, name); got != want {
			t.Errorf("LookupCertificate(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestNewestClaimWins(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	put := func(c *Certificate) {
		t.Helper()
		if err := s.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
	}
	check := func(step, name, want string) {
		t.Helper()
		if got := lookupID(t, s, name); got != want {
			t.Errorf("%s: LookupCertificate(%q) = %q, want %q", step, name, got, want)
		}
	}

	put(testCert(clock, "old.example.com", "shared.example.com"))
	put(testCert(clock, "new.example.com", "shared.example.com"))
	check("two claims", "shared.example.com", "new.example.com")

	if err := s.DeleteCertificate(ctx, "new.example.com"); err != nil {
		t.Fatal(err)
	}
	check("newer deleted", "shared.example.com", "old.example.com")
	check("newer deleted", "new.example.com", "")

	put(testCert(clock, "new.example.com", "shared.example.com"))
	check("newer back", "shared.example.com", "new.example.com")
	put(testCert(clock, "new.example.com"))
	check("newer dropped the name", "shared.example.com", "old.example.com")

	if err := s.DeleteCertificate(ctx, "old.example.com"); err != nil {
		t.Fatal(err)
	}
	check("both gone", "shared.example.com", "")
	check("both gone", "new.example.com", "new.example.com")

	expired := testCert(clock, "expired.example.com", "other.example.com")
	expired.NotAfter = clock.Now().Add(-time.Minute)
	put(expired)
	put(testCert(clock, "fresh.example.com", "other.example.com"))
	if err := s.DeleteCertificate(ctx, "fresh.example.com"); err != nil {
		t.Fatal(err)
	}
	check("no fallback to an expired record", "other.example.com", "")
	check("expired record still serves its own name", "expired.example.com", "expired.example.com")
}

func TestLookupCertificateWildcard(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	for _, c := range []*Certificate{
		testCert(clock, "*.example.com", "example.com"),
		testCert(clock, "exact.example.com"),
		testCert(clock, "*.b.example.com"),
	} {
		if err := s.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		desc string
		name string
		want string
	}{
		{desc: "exact before wildcard", name: "exact.example.com", want: "exact.example.com"},
		{desc: "wildcard one label up", name: "other.example.com", want: "*.example.com"},
		{desc: "apex by its own name", name: "example.com", want: "*.example.com"},
		{desc: "nearest wildcard", name: "a.b.example.com", want: "*.b.example.com"},
		{desc: "never deeper", name: "a.c.example.com", want: ""},
		{desc: "never over a tld", name: "example.org", want: ""},
		{desc: "pattern itself", name: "*.example.com", want: "*.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := lookupID(t, s, tt.name); got != tt.want {
				t.Errorf("LookupCertificate(%q) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

func TestListCertificatesAndDomains(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	names := []string{"a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com"}
	for _, n := range slices.Backward(names) {
		if err := s.PutCertificate(ctx, testCert(clock, n)); err != nil {
			t.Fatal(err)
		}
		if err := s.PutDomain(ctx, &Domain{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		desc  string
		after string
		limit int
		want  []string
	}{
		{desc: "first page", after: "", limit: 2, want: names[:2]},
		{desc: "next page", after: "b.example.com", limit: 2, want: names[2:4]},
		{desc: "last page", after: "d.example.com", limit: 2, want: names[4:]},
		{desc: "after a missing key", after: "bb.example.com", limit: 10, want: names[2:]},
		{desc: "past the end", after: "z.example.com", limit: 2, want: nil},
		{desc: "zero limit", after: "", limit: 0, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			certs, err := s.ListCertificates(ctx, tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			domains, err := s.ListDomains(ctx, tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			var gotCerts, gotDomains []string
			for _, c := range certs {
				gotCerts = append(gotCerts, c.ID)
			}
			for _, d := range domains {
				gotDomains = append(gotDomains, d.Name)
			}
			if !slices.Equal(gotCerts, tt.want) || !slices.Equal(gotDomains, tt.want) {
				t.Errorf("certificates %q, domains %q; want %q", gotCerts, gotDomains, tt.want)
			}
		})
	}
}

func TestDueIndex(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	t0 := clock.Now()
	at := func(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }
	for _, d := range []*Domain{
		{Name: "c.example.com", NextAttempt: at(10)},
		{Name: "a.example.com", NextAttempt: at(10)},
		{Name: "b.example.com", NextAttempt: at(5)},
		{Name: "z.example.com", NextAttempt: at(60)},
		{Name: "never.example.com"},
		{Name: "old.example.com", NextAttempt: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		if err := s.PutDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	due := func(before time.Time, limit int) []string {
		t.Helper()
		es, err := s.Due(ctx, before, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, fmt.Sprintf("%s@%d", e.Name, int(e.At.Sub(t0)/time.Minute)))
		}
		return out
	}
	oldAt := int(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC).Sub(t0) / time.Minute)
	old := fmt.Sprintf("old.example.com@%d", oldAt)

	tests := []struct {
		desc   string
		change func() error
		before time.Time
		limit  int
		want   []string
	}{
		{desc: "order, ties by name, zero not indexed", before: at(60), limit: 10,
			want: []string{old, "b.example.com@5", "a.example.com@10", "c.example.com@10", "z.example.com@60"}},
		{desc: "stops after before", before: at(10), limit: 10,
			want: []string{old, "b.example.com@5", "a.example.com@10", "c.example.com@10"}},
		{desc: "before between entries", before: at(9), limit: 10,
			want: []string{old, "b.example.com@5"}},
		{desc: "limit", before: at(60), limit: 2, want: []string{old, "b.example.com@5"}},
		{desc: "zero limit", before: at(60), limit: 0, want: nil},
		{desc: "moving a domain moves its entry",
			change: func() error { return s.PutDomain(ctx, &Domain{Name: "z.example.com", NextAttempt: at(1)}) },
			before: at(60), limit: 10,
			want: []string{old, "z.example.com@1", "b.example.com@5", "a.example.com@10", "c.example.com@10"}},
		{desc: "zero next attempt takes it out",
			change: func() error { return s.PutDomain(ctx, &Domain{Name: "b.example.com", State: StateValid}) },
			before: at(60), limit: 10,
			want: []string{old, "z.example.com@1", "a.example.com@10", "c.example.com@10"}},
		{desc: "delete removes the entry",
			change: func() error { return s.DeleteDomain(ctx, "a.example.com") },
			before: at(60), limit: 10,
			want: []string{old, "z.example.com@1", "c.example.com@10"}},
		{desc: "adding a domain indexes it",
			change: func() error {
				_, _, err := s.AddDomains(ctx, []*Domain{{Name: "new.example.com", NextAttempt: at(2)}, {Name: "c.example.com", NextAttempt: at(0)}})
				return err
			},
			before: at(60), limit: 10,
			want: []string{old, "z.example.com@1", "new.example.com@2", "c.example.com@10"}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if tt.change != nil {
				if err := tt.change(); err != nil {
					t.Fatal(err)
				}
			}
			if got := due(tt.before, tt.limit); !slices.Equal(got, tt.want) {
				t.Errorf("Due = %q\nwant  %q", got, tt.want)
			}
		})
	}
}

func TestAddDomains(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	kept := &Domain{Name: "b.example.com", State: StateValid, CertID: "b.example.com"}
	if err := s.PutDomain(ctx, kept); err != nil {
		t.Fatal(err)
	}
	added, existing, err := s.AddDomains(ctx, []*Domain{
		{Name: "a.example.com", State: StatePending, NextAttempt: clock.Now()},
		{Name: "b.example.com", State: StatePending, NextAttempt: clock.Now()},
		{Name: "c.example.com", State: StatePending, NextAttempt: clock.Now()},
		{Name: "a.example.com", State: StatePending, NextAttempt: clock.Now()},
	})
	if err != nil || added != 2 || existing != 2 {
		t.Fatalf("AddDomains = %d, %d, %v; want 2, 2, nil", added, existing, err)
	}
	d, err := s.GetDomain(ctx, "b.example.com")
	if err != nil || d.State != StateValid || d.CertID != "b.example.com" {
		t.Errorf("existing domain changed: %+v, %v", d, err)
	}
	if es, _ := s.Due(ctx, clock.Now(), 10); len(es) != 2 {
		t.Errorf("Due has %v, want a and c", es)
	}
}

func TestAddDomainsManyBatches(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	// Records padded so that addBatch of them overflow a transaction: the
	// store has to find out and write smaller batches.
	const n = 40000
	pad := strings.Repeat("x", 300)
	ds := make([]*Domain, n)
	for i := range ds {
		ds[i] = &Domain{Name: fmt.Sprintf("d%06d.example.com", i), State: StatePending, LastError: pad,
			NextAttempt: clock.Now().Add(time.Duration(i) * time.Second)}
	}
	added, existing, err := s.AddDomains(ctx, ds[:n/2])
	if err != nil || added != n/2 || existing != 0 {
		t.Fatalf("first AddDomains = %d, %d, %v", added, existing, err)
	}
	added, existing, err = s.AddDomains(ctx, ds)
	if err != nil || added != n/2 || existing != n/2 {
		t.Fatalf("second AddDomains = %d, %d, %v", added, existing, err)
	}
	es, err := s.Due(ctx, clock.Now().Add(n*time.Second), n+1)
	if err != nil || len(es) != n {
		t.Fatalf("Due returned %d entries, %v; want %d", len(es), err, n)
	}
	for i, e := range es {
		if e.Name != ds[i].Name {
			t.Fatalf("Due entry %d is %s, want %s", i, e.Name, ds[i].Name)
		}
	}
}

func TestAddDomainsStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := openTestBadger(t, "", newTestClock())
	if _, _, err := s.AddDomains(ctx, []*Domain{{Name: "a.example.com"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("AddDomains with a cancelled context: %v", err)
	}
	if _, err := s.GetCertificate(ctx, "a.example.com"); !errors.Is(err, context.Canceled) {
		t.Errorf("GetCertificate with a cancelled context: %v", err)
	}
}

func TestChallengeExpiry(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	if err := s.PutChallenge(ctx, "tok", "tok.thumb", clock.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetChallenge(ctx, "tok"); err != nil || got != "tok.thumb" {
		t.Fatalf("GetChallenge = %q, %v", got, err)
	}
	clock.Advance(time.Minute)
	if _, err := s.GetChallenge(ctx, "tok"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetChallenge after expiry: %v, want ErrNotFound", err)
	}
	if err := s.PutChallenge(ctx, "old", "old.thumb", clock.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetChallenge(ctx, "old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetChallenge of a token put expired: %v, want ErrNotFound", err)
	}
	if err := s.PutChallenge(ctx, "gone", "gone.thumb", clock.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteChallenge(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetChallenge(ctx, "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetChallenge after delete: %v, want ErrNotFound", err)
	}
}

func TestBadgerReopen(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	dir := t.TempDir()
	s, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(t), Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	cert := testCert(clock, "*.example.com", "example.com")
	domain := &Domain{Name: "example.com", State: StateValid, NextAttempt: clock.Now().Add(time.Hour), AddedAt: clock.Now(), UpdatedAt: clock.Now()}
	account := &Account{ID: "acct", Directory: "https://acme.test/dir", URL: "https://acme.test/acct/1", KeyPEM: []byte("k"), CreatedAt: clock.Now()}
	for _, err := range []error{
		s.PutCertificate(ctx, cert),
		s.PutDomain(ctx, domain),
		s.PutAccount(ctx, account),
		s.PutChallenge(ctx, "tok", "tok.thumb", clock.Now().Add(time.Hour)),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	s = openTestBadger(t, dir, clock)
	if c, err := s.LookupCertificate(ctx, "www.example.com"); err != nil || !reflect.DeepEqual(c, cert) {
		t.Errorf("LookupCertificate after reopen = %+v, %v", c, err)
	}
	if d, err := s.GetDomain(ctx, "example.com"); err != nil || !reflect.DeepEqual(d, domain) {
		t.Errorf("GetDomain after reopen = %+v, %v", d, err)
	}
	if a, err := s.GetAccount(ctx, "acct"); err != nil || !reflect.DeepEqual(a, account) {
		t.Errorf("GetAccount after reopen = %+v, %v", a, err)
	}
	if k, err := s.GetChallenge(ctx, "tok"); err != nil || k != "tok.thumb" {
		t.Errorf("GetChallenge after reopen = %q, %v", k, err)
	}
	if es, err := s.Due(ctx, clock.Now().Add(time.Hour), 10); err != nil || len(es) != 1 || es[0].Name != "example.com" {
		t.Errorf("Due after reopen = %v, %v", es, err)
	}
}

func TestBadgerConcurrentUse(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	const workers, rounds = 16, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				own := fmt.Sprintf("w%d-%d.example.com", w, i%5)
				// Every worker claims the same shared names, so that
				// transactions conflict and are retried.
				c := testCert(clock, own, "shared.example.com", fmt.Sprintf("s%d.example.com", i%3))
				if err := s.PutCertificate(ctx, c); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.LookupCertificate(ctx, "shared.example.com"); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.LookupCertificate(ctx, "x."+own); err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
					return
				}
				d := &Domain{Name: "shared.example.com", NextAttempt: clock.Now().Add(time.Duration(w*rounds+i) * time.Second)}
				if err := s.PutDomain(ctx, d); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.Due(ctx, clock.Now().Add(time.Hour), 10); err != nil {
					t.Error(err)
					return
				}
				if i%10 == 9 {
					if err := s.DeleteCertificate(ctx, own); err != nil && !errors.Is(err, ErrNotFound) {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()

	// The due index holds exactly one entry for the one domain.
	es, err := s.Due(ctx, clock.Now().Add(24*time.Hour), 100)
	if err != nil || len(es) != 1 {
		t.Errorf("Due after concurrent PutDomain = %v, %v; want one entry", es, err)
	}
	// Every link points at a stored record that lists the name.
	c, err := s.LookupCertificate(ctx, "shared.example.com")
	if err != nil || !slices.Contains(c.Names, "shared.example.com") {
		t.Errorf("LookupCertificate(shared) = %+v, %v", c, err)
	}
}

// TestPutDomainSets: a name carrying extra names and a name managed with
// another are stored and read back; records that cannot be are refused
// with ErrInvalid and nothing is written.
func TestPutDomainSets(t *testing.T) {
	ctx := context.Background()
	b := openTestBadger(t, "", newTestClock())
	good := []*Domain{
		{Name: "shop.example", State: StateValid, ExtraNames: []string{"www.shop.example", "*.shop.example"}},
		{Name: "www.shop.example", State: StateValid, ManagedWith: "shop.example"},
	}
	for _, d := range good {
		if err := b.PutDomain(ctx, d); err != nil {
			t.Fatalf("put %s: %v", d.Name, err)
		}
		got, err := b.GetDomain(ctx, d.Name)
		if err != nil || !slices.Equal(got.ExtraNames, d.ExtraNames) || got.ManagedWith != d.ManagedWith {
			t.Errorf("get %s: %+v %v", d.Name, got, err)
		}
	}
	for _, tc := range []struct {
		desc string
		d    *Domain
	}{
		{desc: "extra name given twice", d: &Domain{Name: "a.example", ExtraNames: []string{"b.example", "b.example"}}},
		{desc: "extra name is the name", d: &Domain{Name: "a.example", ExtraNames: []string{"a.example"}}},
		{desc: "extra name not normalized", d: &Domain{Name: "a.example", ExtraNames: []string{"B.example"}}},
		{desc: "managed with itself", d: &Domain{Name: "a.example", ManagedWith: "a.example"}},
		{desc: "managed with a name not normalized", d: &Domain{Name: "a.example", ManagedWith: "B.example"}},
		{desc: "managed with another and carrying names", d: &Domain{Name: "a.example", ManagedWith: "b.example", ExtraNames: []string{"c.example"}}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if err := b.PutDomain(ctx, tc.d); !errors.Is(err, ErrInvalid) {
				t.Errorf("put: %v, want ErrInvalid", err)
			}
			if _, err := b.GetDomain(ctx, tc.d.Name); !errors.Is(err, ErrNotFound) {
				t.Errorf("get after a refused put: %v, want ErrNotFound", err)
			}
		})
	}
}
