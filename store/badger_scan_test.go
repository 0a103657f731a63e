package store

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ScanCertificates reads every record exactly once, wherever it lives:
// in its name's link, under its ID with several names, under its ID
// because its name links to another certificate, and under its ID as
// certserver wrote it before (formatV1, or formatV2 before records moved
// into links), with chains kept raw or as DER and digests. It returns
// what ListCertificates returns, less the chain and the key.
func TestScanCertificatesReadsEveryRecordOnce(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	dir := t.TempDir()
	real := realCerts(t, clock, 4)
	withID := func(c *Certificate, id string, names ...string) *Certificate {
		cp := *c
		cp.ID, cp.Names = id, names
		return &cp
	}
	// Each store option writes its certificates, in turn, into the same
	// directory; the upgrade is off, so that old layouts stay.
	for _, step := range []struct {
		opts BadgerOptions
		put  []*Certificate
	}{
		{BadgerOptions{writeV1: true}, []*Certificate{
			testCert(clock, "v1.example.com"),
			testCert(clock, "v1a.example.com", "v1b.example.com"),
		}},
		{BadgerOptions{writeUnhomed: true}, []*Certificate{
			testCert(clock, "unhomed.example.com"),
			withID(real[0], "unhomed-der.example.com", "unhomed-der.example.com"),
		}},
		{BadgerOptions{}, []*Certificate{
			testCert(clock, "home.example.com"),
			withID(real[1], "home-der.example.com", "home-der.example.com"),
			withID(real[2], "multi.example.com", "multi.example.com", "www.multi.example.com"),
			testCert(clock, "old.example.com", "renewed.example.com"),
			// Stored later, so the name links to it: the one above keeps
			// its record under its ID.
			withID(real[3], "new.example.com", "renewed.example.com"),
		}},
	} {
		clock.Advance(time.Minute)
		step.opts.Logger, step.opts.Clock, step.opts.noUpgrade = testLogger(t), clock.Now, true
		b, err := OpenBadger(dir, step.opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range step.put {
			if err := b.PutCertificate(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(t), Clock: clock.Now, noUpgrade: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	// The layouts this test is about are there.
	for id, want := range map[string]string{
		"v1.example.com": "id", "v1a.example.com": "id", "unhomed.example.com": "id", "unhomed-der.example.com": "id",
		"home.example.com": "link home.example.com", "home-der.example.com": "link home-der.example.com",
		"multi.example.com": "id", "old.example.com": "id", "new.example.com": "link renewed.example.com",
	} {
		if got := place(t, b, id); got != want {
			t.Fatalf("the record of %s lives at %q, want %q", id, got, want)
		}
	}
	if f := formats(t, b); f[formatV1] != 2 || f[formatV2] != 7 {
		t.Fatalf("formats %v, want 2 records in formatV1 and 7 in formatV2", f)
	}

	listed, err := b.ListCertificates(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*Certificate{}
	for _, c := range listed {
		c.ChainPEM, c.KeyPEM = nil, nil
		want[c.ID] = c
	}
	got := map[string]*Certificate{}
	err = b.ScanCertificates(ctx, func(c *Certificate) error {
		if got[c.ID] != nil {
			t.Errorf("%s scanned twice", c.ID)
		}
		got[c.ID] = c
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("scanned %d records, want %d", len(got), len(want))
	}
	for id, w := range want {
		if g := got[id]; !reflect.DeepEqual(g, w) {
			t.Errorf("%s: scanned %+v, want %+v", id, g, w)
		}
	}

	// fn's error stops the scan and is returned; so is the context's.
	stop := errors.New("stop")
	n := 0
	if err := b.ScanCertificates(ctx, func(*Certificate) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn failing: %v after %d records, want %v after 1", err, n, stop)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.ScanCertificates(cctx, func(*Certificate) error { return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("done context: %v, want context.Canceled", err)
	}
}

// TestScanCertificatesRejectsWhatListingDoes: a formatV2 record whose
// P-256 key is a scalar one byte short is corrupt to ScanCertificates as
// it is to ListCertificates (one reading of the layout, decodeCertLayout),
// and its error names the record.
func TestScanCertificatesRejectsWhatListingDoes(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	c := realCerts(t, clock, 1)[0]
	if err := b.PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(c.KeyPEM)
	scalar := block.Bytes[len(p256PKCS8Head) : len(p256PKCS8Head)+32]
	err := b.db.Update(func(txn *badger.Txn) error {
		link, err := homeOf(txn, c.ID)
		if err != nil || link == nil {
			return fmt.Errorf("the record of %s is not in a link: %v", c.ID, err)
		}
		v, err := link.ValueCopy(nil)
		if err != nil {
			return err
		}
		stored := append([]byte{keyP256Scalar, 32}, scalar...)
		i := bytes.Index(v, stored)
		if i < 0 {
			return fmt.Errorf("the record of %s holds no P-256 scalar", c.ID)
		}
		short := append([]byte{keyP256Scalar, 31}, scalar[:31]...)
		v = append(append(v[:i:i], short...), v[i+len(stored):]...)
		return txn.SetEntry(badger.NewEntry(link.KeyCopy(nil), v).WithMeta(link.UserMeta()))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ListCertificates(ctx, "", 100); !errors.Is(err, errCorrupt) {
		t.Fatalf("ListCertificates error = %v, want errCorrupt", err)
	}
	err = b.ScanCertificates(ctx, func(*Certificate) error { return nil })
	if !errors.Is(err, errCorrupt) || !strings.Contains(err.Error(), c.Names[0]) {
		t.Fatalf("ScanCertificates error = %v, want errCorrupt naming the record of %s", err, c.Names[0])
	}
}
