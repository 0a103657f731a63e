package storetest

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/certserver/certserver/store"
)

// testCertificateScanner checks store.CertificateScanner, for a store that
// has it: after puts, a rehome (a name taken over by another certificate)
// and a delete, the scan hands out every record ListCertificates lists,
// each exactly once, less its chain and key; fn may keep what it is
// given; a done context stops it before fn is called; and fn's error
// stops the scan, which returns it wrapped.
func testCertificateScanner(t *testing.T, x *suite) {
	sc, ok := store.As[store.CertificateScanner](x.s)
	if !ok {
		return // an optional ability this store does not have
	}
	x.putCert(t, x.cert("a.example.com"))
	x.putCert(t, x.cert("m.example.com", "www.m.example.com"))
	x.putCert(t, x.cert("old.example.com", "shared.example.com"))
	x.putCert(t, x.cert("new.example.com", "shared.example.com")) // shared moves to it
	x.putCert(t, x.cert("gone.example.com"))
	if err := x.s.DeleteCertificate(ctx(t), "gone.example.com"); err != nil {
		t.Fatal(err)
	}
	listed, err := x.s.ListCertificates(ctx(t), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 4 {
		t.Fatalf("ListCertificates = %q, want 4 records", idsOf(listed))
	}

	var kept []*store.Certificate
	if err := sc.ScanCertificates(ctx(t), func(c *store.Certificate) error {
		kept = append(kept, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(kept, func(a, b *store.Certificate) int { return cmp.Compare(a.ID, b.ID) })
	if got, want := idsOf(kept), idsOf(listed); !slices.Equal(got, want) {
		t.Fatalf("ScanCertificates handed out %q, want each of %q once", got, want)
	}
	for i, c := range kept {
		if c.ChainPEM != nil || c.KeyPEM != nil {
			t.Errorf("ScanCertificates handed out %s with its chain or key", c.ID)
		}
		want := *listed[i]
		want.ChainPEM, want.KeyPEM = nil, nil
		if d := diffCert(c, &want); d != "" {
			t.Errorf("ScanCertificates handed out %s unlike ListCertificates: %s", c.ID, d)
		}
	}

	done, cancel := context.WithCancel(ctx(t))
	cancel()
	calls := 0
	err = sc.ScanCertificates(done, func(*store.Certificate) error { calls++; return nil })
	if !errors.Is(err, context.Canceled) || calls != 0 {
		t.Errorf("ScanCertificates with a done context: %v after %d calls; want context.Canceled before any", err, calls)
	}

	stop := errors.New("stop here")
	calls = 0
	err = sc.ScanCertificates(ctx(t), func(*store.Certificate) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ScanCertificates with fn failing: %v after %d calls; want fn's error after 1", err, calls)
	}
}
