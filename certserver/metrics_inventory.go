package certserver

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/certserver/certserver/store"
)

// Inventory is what one scan of the store found. Its times are measured
// from At, when the scan began: a name that came due since is not in
// Due.
type Inventory struct {
	// At is when the scan began; Took how long it took.
	At   time.Time
	Took time.Duration
	// Domains counts the management records, removed ones included;
	// States counts them by state.
	Domains int
	States  map[store.State]int
	// Due counts the names that are not removed and whose next attempt is
	// at or before At: the renewer's backlog, the names it is working on
	// included.
	Due int
	// Failing is up to FailingLimit of the names that are failing or
	// given up, those failing longest first; States counts them all.
	Failing []FailingName
	// InFailure counts the names in a run of failed attempts: failing,
	// given up, or renewing again after a failure (not removed); GET
	// /v1/queue's failing.
	InFailure int
	// Certificates counts the certificates stored; Expired those past
	// their NotAfter at At; Expiring7d and Expiring14d those whose
	// NotAfter is after At and within 7 or 14 days of it.
	Certificates, Expired, Expiring7d, Expiring14d int
	// Soonest is up to SoonestLimit of the certificates, soonest NotAfter
	// first (expired ones first of all).
	Soonest []ExpiringCertificate
}

// FailingName is a managed name whose last attempt failed.
type FailingName struct {
	Name string
	// State is failing (retried at NextAttempt) or given_up (not retried
	// until an operator renews or re-adds the name).
	State        store.State
	Failures     int
	FailingSince time.Time
	NextAttempt  time.Time
	// LastError is the failure in the CA's words, cut at maxErrorText
	// bytes.
	LastError string
	// CertID is the certificate that still serves the name, "" for none.
	CertID string
}

// ExpiringCertificate sums up one stored certificate.
type ExpiringCertificate struct {
	// ID is the certificate's primary name; Names how many names it
	// serves.
	ID       string
	Names    int
	NotAfter time.Time
	Issuer   string
	Source   string
	// State is the state of the management record of ID, "" when the name
	// is not managed (an imported certificate nobody renews).
	State store.State
}

// The expiry windows of Inventory.
const (
	expiringSoon  = 7 * 24 * time.Hour
	expiringLater = 14 * 24 * time.Hour
)

// scanPage is how many records one store read returns during a scan.
const scanPage = 5000

// maxErrorText is how much of a failure's text an Inventory keeps.
const maxErrorText = 2000

// scanInventory reads every domain and certificate record of st, page by
// page (the certificates in one pass when st can: eachCertificate), and
// sums them up as of now. It keeps failingLimit failing names
// and soonestLimit certificates.
func scanInventory(ctx context.Context, st store.Store, now time.Time, failingLimit, soonestLimit int) (*Inventory, error) {
	start := time.Now()
	inv := &Inventory{At: now, States: make(map[store.State]int, len(store.States))}
	failing := smallest[FailingName]{limit: failingLimit, cmp: func(a, b FailingName) int {
		return cmp.Or(a.FailingSince.Compare(b.FailingSince), cmp.Compare(a.Name, b.Name))
	}}
	for after := ""; ; {
		page, err := st.ListDomains(ctx, after, scanPage)
		if err != nil {
			return nil, err
		}
		for _, d := range page {
			inv.Domains++
			inv.States[d.State]++
			if d.State != store.StateRemoved && !d.NextAttempt.IsZero() && !d.NextAttempt.After(now) {
				inv.Due++
			}
			if isFailing(d) {
				inv.InFailure++
			}
			if d.State == store.StateFailing || d.State == store.StateGivenUp {
				failing.add(FailingName{Name: d.Name, State: d.State, Failures: d.Failures, FailingSince: d.FailingSince,
					NextAttempt: d.NextAttempt, LastError: cut(d.LastError, maxErrorText), CertID: d.CertID})
			}
		}
		if len(page) < scanPage {
			break
		}
		after = page[len(page)-1].Name
	}
	inv.Failing = failing.sorted()

	soonest := smallest[ExpiringCertificate]{limit: soonestLimit, cmp: func(a, b ExpiringCertificate) int {
		return cmp.Or(a.NotAfter.Compare(b.NotAfter), cmp.Compare(a.ID, b.ID))
	}}
	if err := eachCertificate(ctx, st, func(c *store.Certificate) error {
		inv.Certificates++
		left := c.NotAfter.Sub(now)
		switch {
		case left <= 0:
			inv.Expired++
		case left <= expiringSoon:
			inv.Expiring7d++
			inv.Expiring14d++
		case left <= expiringLater:
			inv.Expiring14d++
		}
		soonest.add(ExpiringCertificate{ID: c.ID, Names: len(c.Names), NotAfter: c.NotAfter, Issuer: c.Issuer, Source: string(c.Source)})
		return nil
	}); err != nil {
		return nil, err
	}
	inv.Soonest = soonest.sorted()
	for i := range inv.Soonest {
		d, err := st.GetDomain(ctx, inv.Soonest[i].ID)
		switch {
		case err == nil:
			inv.Soonest[i].State = d.State
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
	}
	inv.Took = time.Since(start)
	return inv, nil
}

// eachCertificate calls fn with every certificate record of st: in one
// pass in the store's own order when it can (store.CertificateScanner,
// which leaves out chains and keys, which an inventory does not read),
// else page by page in ID order.
func eachCertificate(ctx context.Context, st store.Store, fn func(*store.Certificate) error) error {
	if sc, ok := store.As[store.CertificateScanner](st); ok {
		return sc.ScanCertificates(ctx, fn)
	}
	for after := ""; ; {
		page, err := st.ListCertificates(ctx, after, scanPage)
		if err != nil {
			return err
		}
		for _, c := range page {
			if err := fn(c); err != nil {
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		after = page[len(page)-1].ID
	}
}

// smallest keeps the limit smallest values added by cmp, in O(n log limit)
// time and O(limit) space: it sorts and truncates whenever it holds twice
// the limit.
type smallest[T any] struct {
	limit int
	cmp   func(a, b T) int
	v     []T
}

func (s *smallest[T]) add(x T) {
	s.v = append(s.v, x)
	if len(s.v) >= 2*s.limit+1 {
		s.trim()
	}
}

func (s *smallest[T]) trim() {
	slices.SortFunc(s.v, s.cmp)
	s.v = s.v[:min(len(s.v), s.limit)]
}

// sorted returns the kept values, smallest first.
func (s *smallest[T]) sorted() []T {
	s.trim()
	return s.v
}

// cut returns s cut to at most n bytes, at a rune boundary, marked with an
// ellipsis when cut.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
