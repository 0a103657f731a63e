package store

import (
	"fmt"
	"strings"
)

// The checks every Store implementation makes before it writes: each
// returns nil for a record the Store contract accepts, else an error
// wrapping ErrInvalid that names what is wrong. They are exported so that
// implementations outside this package (store/postgres) refuse exactly
// what Badger refuses.

// ValidateCertificate checks what PutCertificate requires of c.
func ValidateCertificate(c *Certificate) error { return validCertificate(c) }

// ValidateDomain checks what PutDomain, UpdateDomain and AddDomains
// require of d.
func ValidateDomain(d *Domain) error { return validDomain(d) }

// ValidateChallenge checks what PutChallenge requires: a token without NUL
// bytes and a key authorization, both non-empty.
func ValidateChallenge(token, keyAuth string) error {
	if token == "" || keyAuth == "" || strings.IndexByte(token, 0) >= 0 {
		return fmt.Errorf("empty token or key authorization: %w", ErrInvalid)
	}
	return nil
}

// ValidateRateScope checks the scope of PutRateBuckets and RateBuckets:
// non-empty and free of NUL bytes.
func ValidateRateScope(scope string) error {
	if scope == "" || strings.IndexByte(scope, 0) >= 0 {
		return fmt.Errorf("bad scope %q: %w", scope, ErrInvalid)
	}
	return nil
}

// ValidateRateBucket checks one bucket of PutRateBuckets: a non-empty
// Limit, and a Limit and Key free of NUL bytes.
func ValidateRateBucket(rb RateBucket) error {
	if rb.Limit == "" || strings.IndexByte(rb.Limit, 0) >= 0 || strings.IndexByte(rb.Key, 0) >= 0 {
		return fmt.Errorf("bad bucket %q %q: %w", rb.Limit, rb.Key, ErrInvalid)
	}
	return nil
}
