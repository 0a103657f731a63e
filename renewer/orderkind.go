package renewer

import (
	"slices"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// RenewalDetectionWindow is how far back Let's Encrypt looks for a
// certificate with the same exact set of names to treat an order without
// ARI as a renewal (Boulder's wfe.NewOrder asks for FQDN sets issued in the
// last 120 days).
const RenewalDetectionWindow = 120 * 24 * time.Hour

// ClassifyOrder returns the kind of o as the CA will see it at now. ari
// says whether the CA offers renewal information (RFC 9773), in which case
// an order replacing a certificate carries "replaces" unless o.NoReplaces
// is set: it is an ARI renewal when it shares a name with the replaced
// certificate. Without "replaces", an order for the same exact set of
// names as the certificate it replaces (o.Names against
// o.Replaces.Names, in any order), issued within RenewalDetectionWindow,
// is a renewal; any other order is new, a renewal that drops or adds a
// name of the set included.
func ClassifyOrder(o Order, ari bool, now time.Time) ratelimit.OrderKind {
	switch {
	case o.Replaces == nil:
		return ratelimit.OrderNew
	case ari && !o.NoReplaces && replacesID(o.Replaces) != "" && sharesName(o, o.Replaces):
		return ratelimit.OrderARIRenewal
	case !o.Replaces.NotBefore.IsZero() && now.Sub(o.Replaces.NotBefore) < RenewalDetectionWindow &&
		ratelimit.SameSet(o.Names(), o.Replaces.Names):
		return ratelimit.OrderRenewal
	}
	return ratelimit.OrderNew
}

// sharesName reports whether the order asks for one of c's names at least
// (RFC 9773 section 5: the replacement and the replaced certificate share
// an identifier).
func sharesName(o Order, c *store.Certificate) bool {
	for _, n := range o.Names() {
		if slices.Contains(c.Names, n) {
			return true
		}
	}
	return false
}
