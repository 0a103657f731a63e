package store

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/certserver/certserver/store/certtest"
)

// certsUnderIntermediates returns n certificate records, each with a
// real chain under an intermediate of its own.
func certsUnderIntermediates(t *testing.T, clock *testClock, n int) []*Certificate {
	t.Helper()
	root := certtest.New(t, certtest.Template{CommonName: "Test Root", IsCA: true}, nil)
	cs := make([]*Certificate, n)
	for i := range cs {
		inter := certtest.New(t, certtest.Template{CommonName: fmt.Sprintf("Test E%d", i), IsCA: true}, root)
		name := fmt.Sprintf("n%d.example.com", i)
		leaf := certtest.New(t, certtest.Template{DNSNames: []string{name}}, inter)
		c := testCert(clock, name)
		c.ChainPEM = append(bytes.Clone(leaf.CertPEM), inter.CertPEM...)
		c.KeyPEM = leaf.KeyPEM
		cs[i] = c
	}
	return cs
}

// A store with more intermediates than its cache holds reads the others
// from the store each time: every record still reads back, and renews.
func TestIntermediatesPastTheCacheLimit(t *testing.T) {
	clock := newTestClock()
	cs := certsUnderIntermediates(t, clock, 3)
	ctx := context.Background()
	dir := t.TempDir()
	b := openTestBadger(t, dir, clock)
	if err := b.PutCertificates(ctx, cs); err != nil {
		t.Fatal(err)
	}
	b.Close()

	b = openTestBadger(t, dir, clock) // an empty cache
	<-b.upgraded
	b.inters.limit = 1
	for range 2 { // with the cache empty, then full
		checkServes(t, b, cs)
		for _, c := range cs {
			if _, err := b.GetCertificate(ctx, c.ID); err != nil {
				t.Errorf("GetCertificate(%s): %v", c.ID, err)
			}
		}
	}
	if n := len(b.inters.pem); n != 1 {
		t.Errorf("the cache holds %d intermediates, want its limit of 1", n)
	}

	// A renewal reads the record it replaces.
	renewed := certsUnderIntermediates(t, clock, 3)
	if err := b.PutCertificates(ctx, renewed); err != nil {
		t.Fatalf("PutCertificates of renewals: %v", err)
	}
	checkServes(t, b, renewed)
}
