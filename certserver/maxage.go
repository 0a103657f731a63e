package certserver

import (
	"time"

	"github.com/certserver/certserver/store"
)

// CacheMaxAge returns how long nginx may cache certificate c, fetched at
// now, before asking again: the max-age of the certificate endpoint's
// Cache-Control header, in whole seconds.
//
// The rule:
//
//   - a certificate that is still valid and not yet due for renewal may be
//     cached until it expires or, when c.RenewAt is set, until it is due for
//     renewal, whichever comes first, but no longer than maxAge;
//   - a certificate whose RenewAt has passed (renewal due or overdue) gets
//     minAge, so that its replacement is picked up soon after it is stored;
//   - an expired certificate is still served (see CertEndpoint) with minAge,
//     for the same reason;
//   - the result is never below minAge: a certificate about to expire is
//     cached minAge rather than refetched on every handshake.
//
// minAge must not exceed maxAge.
func CacheMaxAge(c *store.Certificate, now time.Time, minAge, maxAge time.Duration) time.Duration {
	if !now.Before(c.NotAfter) {
		return minAge
	}
	if !c.RenewAt.IsZero() && !now.Before(c.RenewAt) {
		return minAge
	}
	d := c.NotAfter.Sub(now)
	if !c.RenewAt.IsZero() {
		d = min(d, c.RenewAt.Sub(now))
	}
	d = min(d, maxAge).Truncate(time.Second)
	return max(d, minAge)
}
