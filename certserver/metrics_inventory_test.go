package certserver

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// pagedOnly is a Store that can only list its certificates page by page:
// its embedded interface hides the optional abilities of the store in it.
type pagedOnly struct{ store.Store }

// scanOnly is a Store whose certificates can only be scanned: listing
// them fails.
type scanOnly struct {
	store.Store
	sc store.CertificateScanner
}

func (s scanOnly) ListCertificates(context.Context, string, int) ([]*store.Certificate, error) {
	return nil, errors.New("ListCertificates called")
}

func (s scanOnly) ScanCertificates(ctx context.Context, fn func(*store.Certificate) error) error {
	return s.sc.ScanCertificates(ctx, fn)
}

// TestInventoryScanAgreesWithPages: an inventory of a Badger store counts
// the same certificates, and keeps the same soonest ones in the same
// order, through the store's one-pass scan (which it uses when the store
// has one) as through pages of ListCertificates, whichever way each
// record is kept: in its name's link, under its ID with several names,
// under its ID because its name links to a newer certificate.
func TestInventoryScanAgreesWithPages(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	st := newTestStore(t)
	for i := range 30 {
		putCert(t, st, fakeCert(fmt.Sprintf("n%02d.example.com", i), now.Add(time.Duration(i-5)*24*time.Hour)))
	}
	multi := fakeCert("multi.example.com", now.Add(3*24*time.Hour))
	multi.Names = append(multi.Names, "www.multi.example.com")
	putCert(t, st, multi)
	putCert(t, st, fakeCert("old.example.com", now.Add(2*24*time.Hour)))
	renewed := fakeCert("new.example.com", now.Add(80*24*time.Hour))
	renewed.Names = []string{"old.example.com"}
	putCert(t, st, renewed)
	if _, _, err := st.AddDomains(ctx, []*store.Domain{{Name: "n01.example.com", State: store.StateValid}}); err != nil {
		t.Fatal(err)
	}

	sc, ok := store.As[store.CertificateScanner](st)
	if !ok {
		t.Fatal("a Badger store has no CertificateScanner")
	}
	scanned, err := scanInventory(ctx, scanOnly{Store: st, sc: sc}, now, 10, 100)
	if err != nil {
		t.Fatalf("inventory through the scan: %v", err)
	}
	paged, err := scanInventory(ctx, pagedOnly{st}, now, 10, 100)
	if err != nil {
		t.Fatalf("inventory through pages: %v", err)
	}
	if paged.Certificates != 33 || paged.Expired != 6 || paged.Expiring7d != 9 || paged.Expiring14d != 16 {
		t.Fatalf("inventory through pages: %d certificates, %d expired, %d within 7 days, %d within 14; want 33, 6, 9, 16",
			paged.Certificates, paged.Expired, paged.Expiring7d, paged.Expiring14d)
	}
	scanned.Took, paged.Took = 0, 0
	if !reflect.DeepEqual(scanned, paged) {
		t.Errorf("through the scan:\n%+v\nthrough pages:\n%+v", scanned, paged)
	}
}
