package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// applied returns the store's AppliedVersion, failing the test on error.
func applied(t *testing.T, b *Badger) uint64 {
	t.Helper()
	v, err := b.AppliedVersion(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func putCert(v uint64, c *Certificate) Change {
	return Change{Version: v, Kind: ChangePutCertificate, Certificate: c}
}

func TestApplyWritesLikeLocalWrites(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	if v := applied(t, b); v != 0 {
		t.Fatalf("a new store has applied version %d, want 0", v)
	}
	poll, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}

	// New certificates nothing served, a challenge: no entry in the feed.
	expires := clock.Now().Add(time.Hour)
	err = b.Apply(ctx, []Change{
		putCert(3, testCert(clock, "a.example.com", "www.a.example.com")),
		putCert(4, testCert(clock, "*.b.example.com")),
		{Version: 7, Kind: ChangePutChallenge, Token: "tok1", KeyAuth: "tok1.thumb", Expires: expires},
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := applied(t, b); v != 7 {
		t.Fatalf("applied version %d, want 7", v)
	}
	for name, want := range map[string]string{"www.a.example.com": "a.example.com", "x.b.example.com": "*.b.example.com"} {
		if got := lookupID(t, b, name); got != want {
			t.Errorf("lookup %s: %q, want %q", name, got, want)
		}
	}
	if ka, err := b.GetChallenge(ctx, "tok1"); err != nil || ka != "tok1.thumb" {
		t.Fatalf("challenge tok1: %q, %v", ka, err)
	}
	got, err := b.CertChanges(ctx, poll.Next)
	if err != nil {
		t.Fatal(err)
	}
	if got.Reset || len(got.Names) != 0 {
		t.Fatalf("after applying new certificates: %+v, want no change", got)
	}

	// A replacement, a certificate under a served wildcard, a delete, a
	// delete of a missing record, a challenge removed: one entry naming
	// what PutCertificate and DeleteCertificate would have named.
	err = b.Apply(ctx, []Change{
		putCert(8, testCert(clock, "a.example.com")),
		putCert(9, testCert(clock, "api.b.example.com")),
		{Version: 10, Kind: ChangeDeleteCertificate, ID: "*.b.example.com"},
		{Version: 11, Kind: ChangeDeleteCertificate, ID: "never.example.com"},
		{Version: 12, Kind: ChangeDeleteChallenge, Token: "tok1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = b.CertChanges(ctx, poll.Next)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a.example.com", "www.a.example.com", "api.b.example.com", "*.b.example.com"}
	if got.Reset || !slices.Equal(got.Names, want) || got.Next.Version != poll.Next.Version+1 {
		t.Fatalf("after a replacement and a delete: %+v, want %q in one entry", got, want)
	}
	if v := applied(t, b); v != 12 {
		t.Fatalf("applied version %d, want 12", v)
	}
	for name, want := range map[string]string{"www.a.example.com": "", "x.b.example.com": "", "api.b.example.com": "api.b.example.com"} {
		if got := lookupID(t, b, name); got != want {
			t.Errorf("lookup %s: %q, want %q", name, got, want)
		}
	}
	if _, err := b.GetChallenge(ctx, "tok1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("challenge tok1 after its delete: %v, want ErrNotFound", err)
	}
}

// Applying the same changes again, or a batch overlapping the last,
// changes nothing: not the records, not the feed, not the version.
func TestApplyTwiceIsHarmless(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	first := []Change{
		putCert(1, testCert(clock, "x.example.com")),
		putCert(2, testCert(clock, "y.example.com")),
		putCert(3, testCert(clock, "y.example.com", "x.example.com")), // takes x over
	}
	if err := b.Apply(ctx, first); err != nil {
		t.Fatal(err)
	}
	poll, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(ctx, first); err != nil {
		t.Fatal(err)
	}
	overlap := append(first[1:], Change{Version: 4, Kind: ChangeDeleteCertificate, ID: "absent.example.com"})
	if err := b.Apply(ctx, overlap); err != nil {
		t.Fatal(err)
	}
	if got := lookupID(t, b, "x.example.com"); got != "y.example.com" {
		t.Fatalf("x.example.com after the same changes again: served by %q, want y.example.com (version 1 re-applied over 3)", got)
	}
	if got, _ := b.CertChanges(ctx, poll.Next); got.Reset || len(got.Names) != 0 {
		t.Fatalf("the same changes again: feed %+v, want nothing changed", got)
	}
	if v := applied(t, b); v != 4 {
		t.Fatalf("applied version %d, want 4", v)
	}
}

func TestApplyRefusesVersionsOutOfOrder(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	for _, tc := range []struct {
		desc     string
		versions []uint64
	}{
		{"descending", []uint64{2, 1}},
		{"repeated", []uint64{5, 5}},
		{"zero", []uint64{0}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b := openTestBadger(t, "", clock)
			var cs []Change
			for i, v := range tc.versions {
				cs = append(cs, putCert(v, testCert(clock, fmt.Sprintf("n%d.example.com", i))))
			}
			err := b.Apply(ctx, cs)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Apply(versions %v): %v, want ErrInvalid", tc.versions, err)
			}
			if lookupID(t, b, "n0.example.com") != "" || applied(t, b) != 0 {
				t.Fatalf("a refused batch wrote something")
			}
		})
	}
}

// A record the local store cannot hold is logged and skipped; the changes
// after it are applied.
func TestApplySkipsWhatItCannotHold(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	var logs bytes.Buffer
	b, err := OpenBadger(t.TempDir(), BadgerOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	bad := testCert(clock, "bad.example.com")
	bad.KeyPEM = nil
	err = b.Apply(ctx, []Change{
		putCert(1, bad),
		{Version: 2, Kind: "put_mystery"},
		{Version: 3, Kind: ChangePutChallenge, Token: "", KeyAuth: "x"},
		putCert(4, testCert(clock, "good.example.com")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if lookupID(t, b, "bad.example.com") != "" || lookupID(t, b, "good.example.com") != "good.example.com" || applied(t, b) != 4 {
		t.Fatalf("bad record stored, or good one not, or applied version %d != 4", applied(t, b))
	}
	out := logs.String()
	for _, want := range []string{"version=1", "cert_id=bad.example.com", "no key", "version=2", "put_mystery", "version=3"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret") {
		t.Errorf("log shows key material:\n%s", out)
	}
}

// Apply splits a large batch into transactions that fit, keeps deletes
// in small ones, and halves a group whose changes write more than
// estimated (replacements that drop many names each).
func TestApplyLargeBatches(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openSmallMemTable(t, clock)
	v := uint64(0)
	apply := func(cs []Change) {
		t.Helper()
		if err := b.Apply(ctx, cs); err != nil {
			t.Fatal(err)
		}
		if got := applied(t, b); got != v {
			t.Fatalf("applied version %d, want %d", got, v)
		}
	}
	put := func(names ...string) Change {
		v++
		return putCert(v, testCert(clock, names...))
	}

	// 20,000 new certificates: several transactions.
	var cs []Change
	for i := range 20000 {
		cs = append(cs, put(fmt.Sprintf("c%d.example.com", i), fmt.Sprintf("www.c%d.example.com", i)))
	}
	apply(cs)

	// 150 records of 100 names, each name then taken over by a second
	// record; the first records replaced by one name each: 14,850 claims
	// dropped by 150 changes estimated as small, more than one
	// transaction holds with this memtable size.
	const wide, names = 150, 100
	cs = cs[:0]
	for i := range wide {
		var ns []string
		for j := range names {
			ns = append(ns, fmt.Sprintf("n%d.w%d.example.com", j, i))
		}
		cs = append(cs, put(ns...), put(append([]string{fmt.Sprintf("x.w%d.example.com", i)}, ns[1:]...)...))
	}
	apply(cs)
	cs = cs[:0]
	for i := range wide {
		cs = append(cs, put(fmt.Sprintf("n0.w%d.example.com", i)))
	}
	apply(cs)
	for name, want := range map[string]string{
		"c0.example.com": "c0.example.com", "www.c19999.example.com": "c19999.example.com",
		"n0.w149.example.com": "n0.w149.example.com", "n1.w149.example.com": "x.w149.example.com",
	} {
		if got := lookupID(t, b, name); got != want {
			t.Errorf("%s served by %q, want %q", name, got, want)
		}
	}

	// Deleting the second records, 100 names each: every name searched
	// for another claim, in small transactions.
	cs = cs[:0]
	for i := range wide {
		v++
		cs = append(cs, Change{Version: v, Kind: ChangeDeleteCertificate, ID: fmt.Sprintf("x.w%d.example.com", i)})
	}
	apply(cs)
	if got := lookupID(t, b, "n1.w149.example.com"); got != "" {
		t.Errorf("a name of deleted records only is still served by %q", got)
	}
}

// A wave of records that each take over the names of ten records of one
// name (each link then gives its record back under its ID) is applied in
// groups that fit: Apply's estimate counts those writes, and no group is
// split.
func TestApplyTakeOverFitsItsEstimate(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openSmallMemTable(t, clock)
	// Records above valueThreshold, as real ones are: Badger counts them
	// in a transaction by their pointer into the value log.
	pad := strings.Repeat("A", 2000)
	cert := func(id string, names ...string) *Certificate {
		c := testCert(clock, names...)
		c.ID = id
		c.ChainPEM = []byte("-----BEGIN CERTIFICATE-----\n" + id + pad + "\n-----END CERTIFICATE-----\n")
		return c
	}
	const wave, names = 500, 10
	var cs []Change
	for i := range wave * names {
		name := fmt.Sprintf("n%d.example.com", i)
		cs = append(cs, putCert(uint64(len(cs)+1), cert(name, name)))
	}
	if err := b.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if got := homedRecords(t, b); got != wave*names {
		t.Fatalf("%d records in their links, want %d", got, wave*names)
	}
	v := uint64(len(cs))
	cs = cs[:0]
	for i := range wave {
		var ns []string
		for j := range names {
			ns = append(ns, fmt.Sprintf("n%d.example.com", i*names+j))
		}
		v++
		cs = append(cs, putCert(v, cert(fmt.Sprintf("wave%d", i), ns...)))
	}
	before := b.applyHalvings.Load()
	if err := b.Apply(ctx, cs); err != nil {
		t.Fatal(err)
	}
	if got := b.applyHalvings.Load() - before; got != 0 {
		t.Errorf("%d groups of the wave split in halves, want none", got)
	}
	if got := applied(t, b); got != v {
		t.Errorf("applied version %d, want %d", got, v)
	}
	for name, want := range map[string]string{"n0.example.com": "wave0", fmt.Sprintf("n%d.example.com", wave*names-1): fmt.Sprintf("wave%d", wave-1)} {
		if id := lookupID(t, b, name); id != want {
			t.Errorf("%s served by %q, want %q", name, id, want)
		}
	}
	if got := place(t, b, "n1.example.com"); got != "id" {
		t.Errorf("the record of n1.example.com lives at %q after the take-over, want under its ID", got)
	}
}

// countdownCtx is a context whose Err reports it cancelled from its n-th
// call on: Apply checks its context before each transaction.
type countdownCtx struct {
	context.Context
	left atomic.Int64
}

func (c *countdownCtx) Err() error {
	if c.left.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

// An Apply cancelled between its transactions leaves a prefix of the
// changes applied, and AppliedVersion says which: applying the rest after
// a restart neither loses nor repeats one.
func TestApplyCancelledResumes(t *testing.T) {
	clock := newTestClock()
	dir := t.TempDir()
	b, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(t), Clock: clock.Now, MemTableSize: minMemTableSize})
	if err != nil {
		t.Fatal(err)
	}
	var cs []Change
	for i := range 30000 {
		cs = append(cs, putCert(uint64(i+1), testCert(clock, fmt.Sprintf("c%d.example.com", i))))
	}
	ctx := &countdownCtx{Context: context.Background()}
	ctx.left.Store(2)
	if err := b.Apply(ctx, cs); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with its context cancelled after two transactions: %v, want context.Canceled", err)
	}
	mid := applied(t, b)
	if mid == 0 || mid >= uint64(len(cs)) {
		t.Fatalf("applied version %d after two transactions of %d changes; want a part", mid, len(cs))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTestBadger(t, dir, clock)
	if got := applied(t, b); got != mid {
		t.Fatalf("applied version %d after a restart, want %d", got, mid)
	}
	if id := lookupID(t, b, fmt.Sprintf("c%d.example.com", mid-1)); id == "" {
		t.Fatalf("the last applied change (version %d) is not served after a restart", mid)
	}
	if id := lookupID(t, b, fmt.Sprintf("c%d.example.com", mid)); id != "" {
		t.Fatalf("a change after the applied version (%d) is served", mid+1)
	}
	if err := b.Apply(context.Background(), cs[mid:]); err != nil {
		t.Fatal(err)
	}
	certs, err := b.ListCertificates(context.Background(), "", len(cs)+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != len(cs) || applied(t, b) != uint64(len(cs)) {
		t.Fatalf("after resuming: %d certificates, applied %d; want %d of each", len(certs), applied(t, b), len(cs))
	}
}

// lookupID returns the ID of the record that serves name, "" for none.
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

// A key rewrite replaces the record's key and nothing else: a name two
// records claim stays with the one its link names, the change feed says
// nothing, and a rewrite for a record the copy lacks is skipped.
func TestApplyKeyRewriteKeepsTheLinks(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	err := b.Apply(ctx, []Change{
		putCert(1, testCert(clock, "z.example.com", "shared.example.com")),
		putCert(2, testCert(clock, "a.example.com", "shared.example.com")),
	})
	if err != nil {
		t.Fatal(err)
	}
	poll, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	newKey := []byte("-----BEGIN PRIVATE KEY-----\nresealed\n-----END PRIVATE KEY-----\n")
	err = b.Apply(ctx, []Change{
		{Version: 3, Kind: ChangeRewriteKey, ID: "a.example.com", KeyPEM: newKey},
		{Version: 4, Kind: ChangeRewriteKey, ID: "z.example.com", KeyPEM: newKey},
		{Version: 5, Kind: ChangeRewriteKey, ID: "gone.example.com", KeyPEM: newKey},
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := applied(t, b); v != 5 {
		t.Fatalf("applied version %d, want 5", v)
	}
	if got := lookupID(t, b, "shared.example.com"); got != "a.example.com" {
		t.Errorf("shared.example.com is served by %q after the key rewrites, want a.example.com", got)
	}
	for _, id := range []string{"a.example.com", "z.example.com"} {
		c, err := b.GetCertificate(ctx, id)
		if err != nil || !bytes.Equal(c.KeyPEM, newKey) || len(c.Names) != 2 {
			t.Errorf("%s after its key rewrite: %+v, %v", id, c, err)
		}
	}
	if _, err := b.GetCertificate(ctx, "gone.example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a key rewrite for a missing record: %v, want ErrNotFound", err)
	}
	ch, err := b.CertChanges(ctx, poll.Next)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Reset || len(ch.Names) > 0 {
		t.Errorf("the change feed after key rewrites: %+v, want nothing", ch)
	}
}

// openSmallMemTable opens a store in a new folder with the smallest
// memtable, so that a transaction fills up after a few hundred writes,
// closed when t ends.
func openSmallMemTable(t *testing.T, clock *testClock) *Badger {
	t.Helper()
	b, err := OpenBadger(t.TempDir(), BadgerOptions{Logger: testLogger(t), Clock: clock.Now, MemTableSize: minMemTableSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}
