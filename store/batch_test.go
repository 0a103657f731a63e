package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// TestPutCertificatesBatch: a batch is written as its certificates would
// be one after another, a later one with the ID of an earlier one
// replacing it within the same write.
func TestPutCertificatesBatch(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)
	if err := s.PutCertificate(ctx, testCert(clock, "old.example.com", "gone.example.com")); err != nil {
		t.Fatal(err)
	}

	before, err := s.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	second := testCert(clock, "a.example.com", "c.example.com")
	second.Serial = "02"
	batch := []*Certificate{
		testCert(clock, "a.example.com", "b.example.com"),
		testCert(clock, "old.example.com"),
		second,
	}
	if err := s.PutCertificates(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"a.example.com":    "a.example.com",
		"b.example.com":    "",
		"c.example.com":    "a.example.com",
		"old.example.com":  "old.example.com",
		"gone.example.com": "",
	} {
		if got := lookupID(t, s, name); got != want {
			t.Errorf("LookupCertificate(%q) = %q, want %q", name, got, want)
		}
	}
	if c, err := s.GetCertificate(ctx, "a.example.com"); err != nil || c.Serial != "02" {
		t.Errorf("GetCertificate(a.example.com) = %+v, %v; want serial 02", c, err)
	}
	// The change feed tells nginx of every name the batch changed.
	ch, err := s.CertChanges(ctx, before.Next)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ch.Names)
	if want := []string{"a.example.com", "b.example.com", "c.example.com", "gone.example.com", "old.example.com"}; ch.Reset || !slices.Equal(ch.Names, want) {
		t.Errorf("changes after the batch: %+v, want names %q", ch, want)
	}
	if err := s.PutCertificates(ctx, nil); err != nil {
		t.Errorf("PutCertificates(nil) = %v", err)
	}
}

// TestPutCertificatesAllOrNothing: an invalid certificate or a batch too
// large for one transaction writes nothing of the batch.
func TestPutCertificatesAllOrNothing(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	s := openTestBadger(t, "", clock)

	bad := testCert(clock, "bad.example.com")
	bad.KeyPEM = nil
	err := s.PutCertificates(ctx, []*Certificate{testCert(clock, "good.example.com"), bad})
	if !errors.Is(err, ErrInvalid) || !bytes.Contains([]byte(err.Error()), []byte("#2 (bad.example.com)")) {
		t.Errorf("PutCertificates with an invalid second record = %v, want ErrInvalid naming #2", err)
	}
	if got := lookupID(t, s, "good.example.com"); got != "" {
		t.Errorf("the valid record of a refused batch was written: lookup = %q", got)
	}

	// The default memtable (32 MiB) takes 4.8 MB of entries per
	// transaction; certificate records are in the value log, so what
	// counts is their number: each certificate is about five entries (its
	// record, a claim and a link per name, the change log), and 20,000 of
	// them do not fit.
	var big []*Certificate
	for i := range 20000 {
		big = append(big, testCert(clock, fmt.Sprintf("big%d.example.com", i)))
	}
	if err := s.PutCertificates(ctx, big); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("PutCertificates of %d certificates = %v, want ErrBatchTooLarge", len(big), err)
	}
	if got := lookupID(t, s, "big0.example.com"); got != "" {
		t.Errorf("a batch too large was partly written: lookup = %q", got)
	}
	if err := s.PutCertificates(ctx, big[:1000]); err != nil {
		t.Errorf("PutCertificates of half of it: %v", err)
	}
}
