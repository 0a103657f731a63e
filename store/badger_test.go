package store

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
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
	return openTestBadgerWith(tb, dir, BadgerOptions{Clock: clock.Now})
}

// openTestBadgerWith is openTestBadger with opts, whose Logger is
// testLogger's when nil.
func openTestBadgerWith(tb testing.TB, dir string, opts BadgerOptions) *Badger {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(tb)
	}
	b, err := OpenBadger(dir, opts)
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
