// Package ratelimit keeps a CA account's rate limits on the client side:
// a Limiter keeps the CA's limits for one ACME account as token buckets,
// so that the scheduler holds back an order the CA would refuse instead of
// sending it and waiting out a rateLimited problem (RFC 8555 section 6.7).
//
// The package is split by concern: limits.go is the table of the six
// limits and their Let's Encrypt defaults, which NewLimiter, the checks
// and the status all read; gcra.go the bucket arithmetic; limiter.go the
// Limiter and its checks; buckets.go the state it keeps (Buckets);
// shared.go keeps them in a fleet's store instead, for every host at once
// (NewSharedLimiter); ratelimited.go reads a CA's rateLimited answers;
// persist.go saves and restores the buckets of one host; status.go
// reports them.
//
// The defaults are Let's Encrypt's, from https://letsencrypt.org/docs/rate-limits/
// ("Last updated: June 12, 2025"). The page says "Limits are calculated,
// per request, using a token bucket algorithm", and gives each limit as a
// burst and a refill rate:
//
//   - New Orders per Account: "Up to 300 new orders can be created by a
//     single account every 3 hours. The ability to create new orders
//     refills at a rate of 1 order every 36 seconds." Overrides are granted
//     "for a specific account".
//   - New Certificates per Registered Domain: "Up to 50 certificates can be
//     issued per registered domain (or IPv4 address, or IPv6 /64 range)
//     every 7 days. [...] refills at a rate of 1 certificate every 202
//     minutes." (7 days / 50 = 201.6 minutes.) It is global (every account's
//     orders count), and overrides are granted "for the specific registered
//     domain or an account".
//   - New Certificates per Exact Set of Identifiers: "Up to 5 certificates
//     can be issued per exact same set of identifiers every 7 days. [...]
//     refills at a rate of 1 certificate every 34 hours." (7 days / 5 =
//     33.6 hours.) Global; "We do not offer overrides for this limit."
//   - Authorization Failures per Identifier per Account: "Up to 5
//     authorization failures per identifier can be incurred by one account
//     every hour. The ability to incur authorization failures refills at a
//     rate of 1 per identifier every 12 minutes. Once exceeded, this limit
//     is enforced by preventing any new orders for the same identifier, by
//     the same account until the limit resets." No overrides.
//   - Consecutive Authorization Failures per Identifier per Account: "Up
//     to 1,152 consecutive authorization failures per identifier can be
//     incurred by one account. The ability to incur authorization failures
//     refills at a rate of 1 per identifier every day and resets to zero if
//     an authorization for that identifier is successfully validated. Once
//     exceeded, the account is prevented from requesting new certificates
//     for that identifier" until someone unpauses it in Let's Encrypt's
//     self-service portal. (The April 2025 page said 3,600; June 2025 says
//     1,152.) No overrides.
//   - Overall Requests Limit, per IP address and endpoint, enforced by the
//     load balancers with a 503 and Retry-After: "/acme/new-order 300"
//     requests per second with a "Burst Capacity" of 200. It is the only
//     limit an ARI renewal meets (LetsEncryptOrderRequests; OrderRequests
//     paces a mass renewal).
//
// Renewals, from the page's "Limit Exemptions for Renewals":
//
//   - "Renewals coordinated by ARI offer the unique benefit of being exempt
//     from all rate limits. [...] If the new order includes at least one
//     identifier matching the certificate it intends to replace and the
//     certificate has not been previously replaced using ARI, the order
//     will not be subject to any rate limits." (OrderARIRenewal.)
//   - Without ARI, an order "can still be considered a renewal of an
//     earlier certificate if it contains the exact same set of identifiers
//     [...] Each of these new orders would be considered renewals and would
//     be exempt from the New Orders per Account and New Certificates per
//     Registered Domain rate limits. However, unlike ARI renewals, these
//     orders would still be subject to Authorization Failures per
//     Identifier per Account and New Certificates per Exact Set of
//     Identifiers." (OrderRenewal.)
//
// Where the page is silent, the Limiter follows Boulder, the CA software
// behind Let's Encrypt (github.com/letsencrypt/boulder): wfe.NewOrder checks
// paused identifiers before anything else, ARI renewals included, and skips
// every other new-order limit for an ARI renewal; a non-ARI order is a
// renewal when a certificate for the same set was issued in the last 120
// days (FQDNSetTimestampsForWindow); ratelimits.NewOrderLimitTransactions
// spends New Orders at new-order time and only checks the failure,
// registered-domain and exact-set buckets; ra.countCertificateIssued spends
// the registered-domain bucket (not for renewals) and the exact-set bucket
// when a certificate is issued; a failed authorization spends both failure
// buckets, and a valid one resets the consecutive-failure bucket.
//
// The Limiter is stricter in one place: it takes the registered-domain and
// exact-set tokens when an order is reserved, not when the certificate is
// issued, so that orders running at the same time cannot together overshoot
// a bucket with one token left; NotIssued gives them back when the order
// ends without a certificate. And it sees less than the CA in one: the
// registered-domain and exact-set limits are global, so certificates other
// clients obtain for the same domains count at the CA but not here. The
// CA's rateLimited answers fill that gap (RateLimited).
package ratelimit

import (
	"fmt"
	"time"
)

// DefaultRetryAfter is the wait assumed when a CA rate-limits without a
// Retry-After header.
const DefaultRetryAfter = time.Hour

// Limit is one token bucket: it holds up to Burst tokens and refills one
// token every Per/Burst, evenly, so that an empty bucket is full again after
// Per. A negative Burst means no limit. In a LimitsConfig the zero Limit
// stands for the Let's Encrypt default.
type Limit struct {
	Burst int
	Per   time.Duration
}

// Unlimited reports whether the limit is off (negative Burst).
func (l Limit) Unlimited() bool { return l.Burst < 0 }

// Interval is the time one token takes to refill, Per/Burst rounded down to
// the nanosecond; 0 for an unlimited or zero Limit.
func (l Limit) Interval() time.Duration {
	if l.Burst <= 0 {
		return 0
	}
	return l.Per / time.Duration(l.Burst)
}

// String reads "300 per 3h0m0s", or "unlimited".
func (l Limit) String() string {
	if l.Unlimited() {
		return "unlimited"
	}
	return fmt.Sprintf("%d per %s", l.Burst, l.Per)
}

func (l Limit) validate(field string) error {
	switch {
	case l.Unlimited() || l == (Limit{}):
		return nil
	case l.Burst == 0:
		return fmt.Errorf("rate limit %s: burst 0 with a period; set burst, or -1 for no limit", field)
	case l.Per <= 0:
		return fmt.Errorf("rate limit %s: burst %d needs a positive period", field, l.Burst)
	case l.Per < time.Duration(l.Burst):
		return fmt.Errorf("rate limit %s: period %s is too short for burst %d", field, l.Per, l.Burst)
	}
	return nil
}

// LimitsConfig is the rate limits of one ACME account at its CA. Each zero
// field takes the Let's Encrypt default stated; a field with a negative
// Burst turns that limit off (for a CA without it, or Pebble). An override
// Let's Encrypt granted the account goes in its field.
type LimitsConfig struct {
	// NewOrders bounds the orders the account creates. Default 300 per 3
	// hours (one every 36 seconds).
	NewOrders Limit
	// CertsPerRegisteredDomain bounds the certificates issued for names
	// under one registered domain (the public suffix plus one label: the
	// Public Suffix List's eTLD+1). Default 50 per 7 days (one every 201.6
	// minutes).
	CertsPerRegisteredDomain Limit
	// RegisteredDomainOverrides replaces CertsPerRegisteredDomain for the
	// registered domains named (lowercase, such as "example.com"), for
	// overrides granted per registered domain. Default none.
	RegisteredDomainOverrides map[string]Limit
	// CertsPerExactSet bounds the certificates issued for one exact set of
	// names. Default 5 per 7 days (one every 33.6 hours).
	CertsPerExactSet Limit
	// AuthzFailures bounds the failed authorizations per name; while its
	// bucket is empty the CA refuses orders for the name. Default 5 per hour
	// (one every 12 minutes).
	AuthzFailures Limit
	// ConsecutiveAuthzFailures bounds the failed authorizations per name
	// with no valid one in between; once it is empty the CA pauses the name
	// for the account until someone unpauses it. Default 1,152, refilling
	// one a day (1,152 per 1,152 days).
	ConsecutiveAuthzFailures Limit
	// OrderRequests bounds every newOrder request, renewals and ARI
	// renewals included: the pace of a mass renewal. Unlike the other
	// fields its zero value is no limit: Let's Encrypt's
	// (LetsEncryptOrderRequests) is counted per IP address, not per
	// account, and is far above what one certserver sends; set it to pace
	// renewals, or to share that limit among hosts behind one address.
	OrderRequests Limit
}

// LetsEncryptOrderRequests is Let's Encrypt's overall request limit on
// newOrder per IP address: 300 a second, in bursts of up to 200.
var LetsEncryptOrderRequests = Limit{Burst: 200, Per: 200 * time.Second / 300}

// LetsEncryptLimits returns Let's Encrypt's default limits (see the package
// comment above for the passages they come from), without OrderRequests.
func LetsEncryptLimits() LimitsConfig {
	const week = 7 * 24 * time.Hour
	return LimitsConfig{
		NewOrders:                Limit{Burst: 300, Per: 3 * time.Hour},
		CertsPerRegisteredDomain: Limit{Burst: 50, Per: week},
		CertsPerExactSet:         Limit{Burst: 5, Per: week},
		AuthzFailures:            Limit{Burst: 5, Per: time.Hour},
		ConsecutiveAuthzFailures: Limit{Burst: 1152, Per: 1152 * 24 * time.Hour},
	}
}

// LimitID names a limit in Reservations, Status and metrics.
type LimitID string

// The limits a Limiter keeps.
const (
	LimitNewOrders                LimitID = "new_orders_per_account"
	LimitCertsPerRegisteredDomain LimitID = "certificates_per_registered_domain"
	LimitCertsPerExactSet         LimitID = "certificates_per_exact_set"
	LimitAuthzFailures            LimitID = "authorization_failures_per_identifier"
	LimitConsecutiveAuthzFailures LimitID = "consecutive_authorization_failures_per_identifier"
	LimitOrderRequests            LimitID = "new_order_requests"
)

// limitDef is one limit a Limiter keeps: one row of limits.
type limitDef struct {
	id LimitID
	// name is the limit's key in configuration and in errors.
	name string
	// scope is what one bucket counts for: "account" (one bucket), or
	// "registered domain", "exact set", "name" (one bucket per key).
	scope string
	// field is the limit's field in a LimitsConfig.
	field func(*LimitsConfig) *Limit
}

// accountWide reports whether the limit has one bucket for the account.
func (d limitDef) accountWide() bool { return d.scope == "account" }

// limits is the table of the limits a Limiter keeps, in the order Status
// reports them: NewLimiter fills and checks each row's field, the checks
// find a bucket's limit here, and Status reports each row.
var limits = [...]limitDef{
	{LimitNewOrders, "new_orders", "account", func(c *LimitsConfig) *Limit { return &c.NewOrders }},
	{LimitOrderRequests, "order_requests", "account", func(c *LimitsConfig) *Limit { return &c.OrderRequests }},
	{LimitCertsPerRegisteredDomain, "certificates_per_registered_domain", "registered domain", func(c *LimitsConfig) *Limit { return &c.CertsPerRegisteredDomain }},
	{LimitCertsPerExactSet, "certificates_per_exact_set", "exact set", func(c *LimitsConfig) *Limit { return &c.CertsPerExactSet }},
	{LimitAuthzFailures, "authorization_failures", "name", func(c *LimitsConfig) *Limit { return &c.AuthzFailures }},
	{LimitConsecutiveAuthzFailures, "consecutive_authorization_failures", "name", func(c *LimitsConfig) *Limit { return &c.ConsecutiveAuthzFailures }},
}

// limitOf returns the row of limit id, and false for a limit the Limiter
// does not keep.
func limitOf(id LimitID) (limitDef, bool) {
	for _, d := range limits {
		if d.id == id {
			return d, true
		}
	}
	return limitDef{}, false
}
