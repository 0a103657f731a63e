package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/certserver/certserver/store/certtest"
)

// logBuffer collects a store's log lines for a test to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// realCerts returns n certificate records with real chains (a leaf and
// one intermediate, three leaves taking turns) and P-256 keys.
func realCerts(t *testing.T, clock *testClock, n int) []*Certificate {
	t.Helper()
	root := certtest.New(t, certtest.Template{CommonName: "Test Root", IsCA: true}, nil)
	inter := certtest.New(t, certtest.Template{CommonName: "Test E1", IsCA: true}, root)
	var leaves []*certtest.Cert
	for i := range 3 {
		leaves = append(leaves, certtest.New(t, certtest.Template{DNSNames: []string{fmt.Sprintf("leaf%d.example.com", i)}}, inter))
	}
	cs := make([]*Certificate, n)
	for i := range cs {
		leaf := leaves[i%len(leaves)]
		c := testCert(clock, fmt.Sprintf("n%05d.example.com", i))
		c.ChainPEM = append(bytes.Clone(leaf.CertPEM), inter.CertPEM...)
		c.KeyPEM = leaf.KeyPEM
		cs[i] = c
	}
	return cs
}

// writeOldStore writes cs into a new store in dir as certserver did
// before formatV2: records in formatV1 with their whole chain, no
// intermediates of their own, no upgrade state.
func writeOldStore(t *testing.T, dir string, clock *testClock, cs []*Certificate) {
	t.Helper()
	b, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(t), Clock: clock.Now, noUpgrade: true, writeV1: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(cs); i += 500 {
		if err := b.PutCertificates(context.Background(), cs[i:min(i+500, len(cs))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := forgetUpgrade(b); err != nil {
		t.Fatal(err)
	}
	if n := len(rawKeys(t, b, prefixInter)) + len(rawKeys(t, b, keyUpgrade)); n != 0 {
		t.Fatalf("the old store holds %d intermediates or upgrade states", n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// forgetUpgrade removes the upgrade state that the first open of a new
// store writes, as a store of certserver before formatV2 lacks it.
func forgetUpgrade(b *Badger) error {
	return b.db.Update(func(txn *badger.Txn) error { return txn.Delete([]byte(keyUpgrade)) })
}

// rawKeys returns the keys under prefix.
func rawKeys(t *testing.T, b *Badger, prefix string) [][]byte {
	t.Helper()
	var keys [][]byte
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// formats counts the certificate records of each format, wherever they
// live.
func formats(t *testing.T, b *Badger) map[byte]int {
	t.Helper()
	n := map[byte]int{}
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixCert)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if item.UserMeta() == metaHomed {
				var err error
				if item, err = homedRecord(txn, item); err != nil {
					return err
				}
			}
			if err := item.Value(func(v []byte) error { n[v[0]]++; return nil }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// homedRecords counts the certificate records that live in their name's
// link.
func homedRecords(t *testing.T, b *Badger) int {
	t.Helper()
	n := 0
	err := b.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixCert), PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if it.Item().UserMeta() == metaHomed {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkServes checks that b serves every record of cs as it was put.
func checkServes(t *testing.T, b *Badger, cs []*Certificate) {
	t.Helper()
	ctx := context.Background()
	for _, want := range cs {
		got, err := b.LookupCertificate(ctx, want.Names[0])
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != want.ID || !bytes.Equal(got.ChainPEM, want.ChainPEM) || !bytes.Equal(got.KeyPEM, want.KeyPEM) || !got.NotAfter.Equal(want.NotAfter) {
			t.Fatalf("LookupCertificate(%s) = %s with\n%s%s\nwant %s with\n%s%s", want.Names[0], got.ID, got.ChainPEM, got.KeyPEM, want.ID, want.ChainPEM, want.KeyPEM)
		}
	}
	all, err := b.ListCertificates(ctx, "", len(cs)+10)
	if err != nil || len(all) != len(cs) {
		t.Fatalf("ListCertificates = %d records, %v; want %d", len(all), err, len(cs))
	}
}

func TestUpgradeRewritesOldRecords(t *testing.T) {
	clock := newTestClock()
	cs := realCerts(t, clock, 2500) // three batches
	dir := t.TempDir()
	writeOldStore(t, dir, clock, cs)

	var logs logBuffer
	b, err := OpenBadger(dir, BadgerOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	checkServes(t, b, cs) // while the upgrade runs, or after
	<-b.upgraded
	if got := formats(t, b); got[formatV2] != len(cs) || len(got) != 1 {
		t.Errorf("records by format after the upgrade: %v, want all %d in %d", got, len(cs), formatV2)
	}
	if got := homedRecords(t, b); got != len(cs) {
		t.Errorf("%d records in their name's link after the upgrade, want all %d", got, len(cs))
	}
	if got := rawKeys(t, b, prefixInter); len(got) != 1 {
		t.Errorf("%d intermediates stored, want 1", len(got))
	}
	checkServes(t, b, cs)
	if !strings.Contains(logs.String(), "certificate records upgraded to the smaller format") || !strings.Contains(logs.String(), "records=2500") {
		t.Errorf("no final log line with records=2500 in:\n%s", logs.String())
	}
}

func TestUpgradeResumesAfterAStop(t *testing.T) {
	clock := newTestClock()
	cs := realCerts(t, clock, 2500)
	dir := t.TempDir()
	writeOldStore(t, dir, clock, cs)

	// One batch, then a stop: the store serves both formats.
	b, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(t), Clock: clock.Now, noUpgrade: true})
	if err != nil {
		t.Fatal(err)
	}
	if done, err := b.upgradeRecords(context.Background(), 1); done || err != nil {
		t.Fatalf("upgradeRecords(1 batch) = %v, %v; want not done", done, err)
	}
	if got := formats(t, b); got[formatV2] != upgradeBatch || got[formatV1] != len(cs)-upgradeBatch {
		t.Errorf("records by format after one batch: %v", got)
	}
	checkServes(t, b, cs)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	// The next start goes on where it stopped.
	var logs logBuffer
	b, err = OpenBadger(dir, BadgerOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	<-b.upgraded
	if got := formats(t, b); got[formatV2] != len(cs) || len(got) != 1 {
		t.Errorf("records by format after the restart: %v, want all %d in %d", got, len(cs), formatV2)
	}
	checkServes(t, b, cs)
	if want := fmt.Sprintf("records=%d", len(cs)-upgradeBatch); !strings.Contains(logs.String(), want) {
		t.Errorf("no final log line with %s (the rest only) in:\n%s", want, logs.String())
	}
	if !strings.Contains(logs.String(), "resuming_after=n00999.example.com") {
		t.Errorf("the restart did not resume after the first batch:\n%s", logs.String())
	}
}

func TestCorruptIntermediateIsAnError(t *testing.T) {
	clock := newTestClock()
	cs := realCerts(t, clock, 3)
	ctx := context.Background()
	for _, tt := range []struct {
		desc    string
		corrupt func(txn *badger.Txn, k []byte) error
	}{
		{desc: "missing", corrupt: func(txn *badger.Txn, k []byte) error { return txn.Delete(k) }},
		{desc: "other bytes", corrupt: func(txn *badger.Txn, k []byte) error {
			root := certtest.New(t, certtest.Template{CommonName: "Other", IsCA: true}, nil)
			return txn.Set(k, root.Cert.Raw)
		}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			dir := t.TempDir()
			b := openTestBadger(t, dir, clock)
			if err := b.PutCertificates(ctx, cs); err != nil {
				t.Fatal(err)
			}
			err := b.db.Update(func(txn *badger.Txn) error {
				for _, k := range rawKeys(t, b, prefixInter) {
					if err := tt.corrupt(txn, k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			b.Close()
			b = openTestBadger(t, dir, clock) // an empty cache
			if c, err := b.LookupCertificate(ctx, cs[0].ID); !errors.Is(err, errCorrupt) || errors.Is(err, ErrNotFound) {
				t.Errorf("LookupCertificate = %v, %v; want an error wrapping errCorrupt", c, err)
			}
			if _, err := b.GetCertificate(ctx, cs[1].ID); !errors.Is(err, errCorrupt) {
				t.Errorf("GetCertificate error = %v, want errCorrupt", err)
			}
		})
	}
}

// Keys rewritten in place (sealed.Rotate through RewriteKeys) and changes
// a fleet host applies (Apply) go through the same records: the chain
// stays shared, the key reads back as written, sealed or not.
func TestCompactRecordsThroughRewriteAndApply(t *testing.T) {
	clock := newTestClock()
	cs := realCerts(t, clock, 4)
	ctx := context.Background()
	sealedKey := func(id string) []byte {
		return []byte("-----BEGIN CERTSERVER SEALED KEY-----\nFormat: 1\nKey-Id: k1\n\n" + id + "\n-----END CERTSERVER SEALED KEY-----\n")
	}

	b := openTestBadger(t, "", clock)
	changes := []Change{
		{Version: 1, Kind: ChangePutCertificate, Certificate: cs[0]},
		{Version: 2, Kind: ChangePutCertificate, Certificate: cs[1]},
		{Version: 3, Kind: ChangeRewriteKey, ID: cs[1].ID, KeyPEM: sealedKey(cs[1].ID)},
	}
	if err := b.Apply(ctx, changes); err != nil {
		t.Fatal(err)
	}
	if err := b.PutCertificates(ctx, cs[2:]); err != nil {
		t.Fatal(err)
	}
	// Seal every key, then open them again, as a rotation would.
	for _, seal := range []bool{true, false} {
		_, err := b.RewriteKeys(ctx, KeyOfCertificate, "", 10, func(id string, key []byte) ([]byte, error) {
			if seal {
				return sealedKey(id), nil
			}
			for _, c := range cs {
				if c.ID == id {
					return c.KeyPEM, nil
				}
			}
			return nil, fmt.Errorf("no certificate %s", id)
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			got, err := b.GetCertificate(ctx, c.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := c.KeyPEM
			if seal {
				want = sealedKey(c.ID)
			}
			if !bytes.Equal(got.ChainPEM, c.ChainPEM) || !bytes.Equal(got.KeyPEM, want) {
				t.Errorf("sealed %v: %s reads back\n%s%s\nwant\n%s%s", seal, c.ID, got.ChainPEM, got.KeyPEM, c.ChainPEM, want)
			}
		}
	}
	if got := formats(t, b); got[formatV2] != len(cs) || len(got) != 1 {
		t.Errorf("records by format: %v, want all %d in %d", got, len(cs), formatV2)
	}
	if got := rawKeys(t, b, prefixInter); len(got) != 1 {
		t.Errorf("%d intermediates stored, want 1", len(got))
	}
}
