package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// place says where the record of certificate id lives: "link NAME" when
// the link of NAME holds it (and c/ID names NAME), "id" when c/ID holds
// it, "" when there is none.
func place(t *testing.T, b *Badger, id string) string {
	t.Helper()
	var where string
	err := b.db.View(func(txn *badger.Txn) error {
		link, err := homeOf(txn, id)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
		case err != nil:
			return err
		case link == nil:
			where = "id"
		default:
			where = "link " + string(link.Key()[len(prefixLink):])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return where
}

// served returns the ID of the certificate LookupCertificate returns for
// name, "" for none, checking that its chain is that certificate's.
func served(t *testing.T, b *Badger, name string) string {
	t.Helper()
	c, err := b.LookupCertificate(context.Background(), name)
	if errors.Is(err, ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	if want := testCert(newTestClock(), c.ID).ChainPEM; !bytes.Equal(c.ChainPEM, want) {
		t.Errorf("lookup %s: certificate %s with chain %q, want %q", name, c.ID, c.ChainPEM, want)
	}
	return c.ID
}

// A certificate of one name lives in that name's link, so that a lookup
// reads one key; it moves out when the name links to another certificate,
// and back in when the name links to it again. Every step serves what it
// served before the records moved.
func TestRecordLivesInItsNamesLink(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	b := openTestBadger(t, "", clock)
	put, del := certWriters(t, b)
	withID := func(id string, names ...string) *Certificate {
		c := testCert(clock, names...)
		c.ID = id
		c.ChainPEM = testCert(clock, id).ChainPEM
		return c
	}

	type want struct{ id, place string }
	steps := []struct {
		desc   string
		do     func()
		places []want            // where each record lives
		serves map[string]string // name: the ID served
	}{
		{
			desc:   "one name: in its link",
			do:     func() { put(withID("a1", "a.example.com")) },
			places: []want{{"a1", "link a.example.com"}},
			serves: map[string]string{"a.example.com": "a1"},
		},
		{
			desc:   "two names: under its ID",
			do:     func() { put(withID("m1", "m.example.com", "n.example.com")) },
			places: []want{{"a1", "link a.example.com"}, {"m1", "id"}},
			serves: map[string]string{"m.example.com": "m1", "n.example.com": "m1"},
		},
		{
			desc: "a renewal under a new ID takes the link; the old record goes back under its ID",
			do: func() {
				clock.Advance(time.Minute)
				put(withID("a2", "a.example.com"))
			},
			places: []want{{"a1", "id"}, {"a2", "link a.example.com"}},
			serves: map[string]string{"a.example.com": "a2"},
		},
		{
			desc:   "the renewal removed: the name falls back to the old record, which moves back in",
			do:     func() { del("a2") },
			places: []want{{"a1", "link a.example.com"}, {"a2", ""}},
			serves: map[string]string{"a.example.com": "a1"},
		},
		{
			desc:   "the same ID put again with a second name: under its ID",
			do:     func() { put(withID("a1", "a.example.com", "b.example.com")) },
			places: []want{{"a1", "id"}},
			serves: map[string]string{"a.example.com": "a1", "b.example.com": "a1"},
		},
		{
			desc:   "and again with the other name alone: in that name's link",
			do:     func() { put(withID("a1", "b.example.com")) },
			places: []want{{"a1", "link b.example.com"}},
			serves: map[string]string{"a.example.com": "", "b.example.com": "a1"},
		},
		{
			desc:   "a certificate of two names takes the name: the one-name record goes back under its ID",
			do:     func() { clock.Advance(time.Minute); put(withID("m2", "b.example.com", "m.example.com")) },
			places: []want{{"a1", "id"}, {"m1", "id"}, {"m2", "id"}},
			serves: map[string]string{"b.example.com": "m2", "m.example.com": "m2", "n.example.com": "m1"},
		},
		{
			desc:   "deleted: the name's link goes with the record",
			do:     func() { del("m2"); del("a1") },
			places: []want{{"a1", ""}, {"m2", ""}, {"m1", "id"}},
			serves: map[string]string{"a.example.com": "", "b.example.com": "", "m.example.com": "m1"},
		},
	}
	for _, s := range steps {
		s.do()
		for _, w := range s.places {
			if got := place(t, b, w.id); got != w.place {
				t.Errorf("%s: record %s lives at %q, want %q", s.desc, w.id, got, w.place)
			}
		}
		for name, id := range s.serves {
			if got := served(t, b, name); got != id {
				t.Errorf("%s: %s serves %q, want %q", s.desc, name, got, id)
			}
		}
		for _, w := range s.places {
			c, err := b.GetCertificate(ctx, w.id)
			switch {
			case w.place == "" && !errors.Is(err, ErrNotFound):
				t.Errorf("%s: GetCertificate(%s) = %v, %v; want ErrNotFound", s.desc, w.id, c, err)
			case w.place != "" && (err != nil || c.ID != w.id):
				t.Errorf("%s: GetCertificate(%s) = %v, %v", s.desc, w.id, c, err)
			}
		}
	}
}

// A store whose records were all written under their ID, by certserver
// before records moved into their links and after its upgrade to
// formatV2 (its upgrade state says done), is served as it is, and its
// records of one name move into their links at the next start.
func TestUpgradeMovesRecordsIntoTheirLinks(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	cs := realCerts(t, clock, 1500) // two batches
	multi := testCert(clock, "m.example.com", "n.example.com")
	dir := t.TempDir()

	b, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(t), Clock: clock.Now, noUpgrade: true, writeUnhomed: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutCertificates(ctx, append(cs[:len(cs):len(cs)], multi)); err != nil {
		t.Fatal(err)
	}
	if err := b.db.Update(func(txn *badger.Txn) error {
		return txn.Set([]byte(keyUpgrade), []byte{upgradeV2Done})
	}); err != nil {
		t.Fatal(err)
	}
	if got := homedRecords(t, b); got != 0 {
		t.Fatalf("the old store holds %d records in links", got)
	}
	checkServes(t, b, append(cs[:len(cs):len(cs)], multi))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b = openTestBadger(t, dir, clock)
	<-b.upgraded
	if got := homedRecords(t, b); got != len(cs) {
		t.Errorf("%d records in their name's link after the upgrade, want %d", got, len(cs))
	}
	if got := place(t, b, multi.ID); got != "id" {
		t.Errorf("the record of two names lives at %q, want under its ID", got)
	}
	if got := formats(t, b); got[formatV2] != len(cs)+1 || len(got) != 1 {
		t.Errorf("records by format: %v, want all %d in %d", got, len(cs)+1, formatV2)
	}
	checkServes(t, b, append(cs[:len(cs):len(cs)], multi))
	if state, err := b.upgradeState(ctx); err != nil || state != nil {
		t.Errorf("upgrade state %q, %v; want done", state, err)
	}
}

// A store opened to write records under their ID (writeUnhomed, writeV1:
// tests and benchmarks that build an older store) over records that live
// in their links takes each record it rewrites out of its link: a key
// rewritten through RewriteKeys or Apply is the key both a lookup and a
// get return.
func TestUnhomedWritesTakeRecordsOutOfLinks(t *testing.T) {
	ctx := context.Background()
	newKey := []byte("-----BEGIN PRIVATE KEY-----\nrewritten\n-----END PRIVATE KEY-----\n")
	rewrites := map[string]func(b *Badger) error{
		"RewriteKeys": func(b *Badger) error {
			_, err := b.RewriteKeys(ctx, KeyOfCertificate, "", 10, func(string, []byte) ([]byte, error) { return newKey, nil })
			return err
		},
		"Apply": func(b *Badger) error {
			return b.Apply(ctx, []Change{{Version: 1, Kind: ChangeRewriteKey, ID: "a.example.com", KeyPEM: newKey}})
		},
	}
	for _, opts := range []BadgerOptions{{writeUnhomed: true}, {writeV1: true}} {
		for how, rewrite := range rewrites {
			clock := newTestClock()
			dir := t.TempDir()
			b := openTestBadger(t, dir, clock)
			if err := b.PutCertificate(ctx, testCert(clock, "a.example.com")); err != nil {
				t.Fatal(err)
			}
			if got := place(t, b, "a.example.com"); got != "link a.example.com" {
				t.Fatalf("the record lives at %q, want in its link", got)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			opts.Logger, opts.Clock, opts.noUpgrade = testLogger(t), clock.Now, true
			b, err := OpenBadger(dir, opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			if err := rewrite(b); err != nil {
				t.Fatal(err)
			}
			if got := place(t, b, "a.example.com"); got != "id" {
				t.Errorf("v1 %t, %s: the record lives at %q, want under its ID", opts.writeV1, how, got)
			}
			if got, err := b.GetCertificate(ctx, "a.example.com"); err != nil || !bytes.Equal(got.KeyPEM, newKey) {
				t.Errorf("v1 %t, %s: GetCertificate: %v, or not the new key", opts.writeV1, how, err)
			}
			if got, err := b.LookupCertificate(ctx, "a.example.com"); err != nil || !bytes.Equal(got.KeyPEM, newKey) {
				t.Errorf("v1 %t, %s: LookupCertificate: %v, or not the new key", opts.writeV1, how, err)
			}
		}
	}
}

// A key rewritten in a record that lives in its link writes the link
// alone: c/ID already names that link, and a key rotation over a million
// records would write a million markers again for nothing.
func TestRewriteKeysInLinksLeavesTheirMarkers(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	const n = 5
	for i := range n {
		if err := b.PutCertificate(ctx, testCert(clock, fmt.Sprintf("c%d.example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := homedRecords(t, b); got != n {
		t.Fatalf("%d records in their links, want %d", got, n)
	}
	newKey := []byte("-----BEGIN PRIVATE KEY-----\nrewritten\n-----END PRIVATE KEY-----\n")
	if _, err := b.RewriteKeys(ctx, KeyOfCertificate, "", 10, func(string, []byte) ([]byte, error) { return newKey, nil }); err != nil {
		t.Fatal(err)
	}
	// versions counts the versions Badger holds of the keys under prefix:
	// nothing is compacted away in a store this small.
	versions := func(prefix string) int {
		n := 0
		err := b.db.View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix), AllVersions: true})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				n++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := versions(prefixLink); got != 2*n {
		t.Errorf("%d versions of the links, want %d: each written by the put and the rewrite", got, 2*n)
	}
	if got := versions(prefixCert); got != n {
		t.Errorf("%d versions of the c/ID markers, want %d: each written by the put alone", got, n)
	}
	for i := range n {
		id := fmt.Sprintf("c%d.example.com", i)
		if got := place(t, b, id); got != "link "+id {
			t.Errorf("the record of %s lives at %q after the rewrite, want in its link", id, got)
		}
		if c, err := b.LookupCertificate(ctx, id); err != nil || !bytes.Equal(c.KeyPEM, newKey) {
			t.Errorf("LookupCertificate(%s): %v, or not the new key", id, err)
		}
	}
}

// certWriters returns functions that put a certificate into b and delete
// one from it, failing t on an error.
func certWriters(t *testing.T, b *Badger) (put func(*Certificate), del func(id string)) {
	put = func(c *Certificate) {
		t.Helper()
		if err := b.PutCertificate(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	del = func(id string) {
		t.Helper()
		if err := b.DeleteCertificate(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	return put, del
}
