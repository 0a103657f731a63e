package ratelimit

import (
	"strings"
	"time"
)

// RateLimited records that the CA refused an order for names with a
// rateLimited problem (RFC 8555 section 6.7) whose detail is detail and
// whose Retry-After was retryAfter (0 when the CA sent none: an hour is
// assumed): the bucket the detail names is emptied so that it next holds a
// token at now+retryAfter, which holds back every order that needs it. It
// returns the limit it emptied.
//
// The detail is matched against Boulder's wording ("too many new orders
// (300) from this account", "too many certificates (50) already issued for
// "example.com"", "too many certificates (5) already issued for this exact
// set of identifiers", "too many failed authorizations (5) for
// "www.example.com"", and the pause: "Your account is temporarily prevented
// from requesting certificates for …"). A detail it does not recognize
// empties the account-wide NewOrders bucket: whatever the CA limited, it
// said to wait. A shared Limiter drains the fleet's bucket, so that every
// host holds back; the error is its store's (nothing was drained).
func (l *Limiter) RateLimited(names []string, detail string, retryAfter time.Duration) (LimitID, error) {
	if retryAfter <= 0 {
		retryAfter = DefaultRetryAfter
	}
	id := classifyRateLimit(detail)
	var refs []bucketRef
	quoted := strings.ToLower(firstQuoted(detail))
	if !plausibleName(quoted) {
		quoted = "" // not a name: the buckets of the order's names are drained
	}
	switch id {
	case LimitCertsPerExactSet:
		refs = append(refs, l.setRef(names))
	case LimitCertsPerRegisteredDomain:
		if quoted != "" {
			refs = append(refs, l.domainRef(quoted))
		} else {
			for _, d := range registeredDomains(names) {
				refs = append(refs, l.domainRef(d))
			}
		}
	case LimitAuthzFailures, LimitConsecutiveAuthzFailures:
		targets := names
		if quoted != "" && id == LimitAuthzFailures {
			targets = []string{quoted}
		}
		for _, n := range targets {
			if id == LimitAuthzFailures {
				refs = append(refs, l.failureRef(n))
			} else {
				refs = append(refs, l.consecutiveRef(n))
			}
		}
	}
	if len(refs) == 0 {
		id = LimitNewOrders
		refs = append(refs, l.ordersRef())
	}
	err := l.update(keysOf(refs), func(bs Buckets, now time.Duration) {
		l.maybeSweep(bs, now)
		until := now + retryAfter
		for _, b := range refs {
			l.set(bs, b, drain(b.limit, l.get(bs, b), until), now)
		}
	})
	return id, err
}

// classifyRateLimit maps the detail of a rateLimited problem to the limit
// it reports; "" when it names none the Limiter keeps.
func classifyRateLimit(detail string) LimitID {
	d := strings.ToLower(detail)
	switch {
	case strings.Contains(d, "new orders"):
		return LimitNewOrders
	case strings.Contains(d, "exact set"):
		return LimitCertsPerExactSet
	case strings.Contains(d, "failed authorization"):
		return LimitAuthzFailures
	case strings.Contains(d, "temporarily prevented") || strings.Contains(d, "paused"):
		return LimitConsecutiveAuthzFailures
	case strings.Contains(d, "certificates") && strings.Contains(d, "already issued for"):
		return LimitCertsPerRegisteredDomain
	}
	return ""
}

// plausibleName reports whether s, quoted from a CA's problem detail,
// can name a bucket: a host name's letters, digits, dots, hyphens (and
// the underscores and star a CA might quote), at most 253 bytes. A CA's
// free text must not make keys the store cannot hold.
func plausibleName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_' || c == '*') {
			return false
		}
	}
	return true
}

// firstQuoted returns the text between the first pair of double quotes in
// s, "" when there is none.
func firstQuoted(s string) string {
	i := strings.IndexByte(s, '"')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(s[i+1:], '"')
	if j < 0 {
		return ""
	}
	return s[i+1 : i+1+j]
}
