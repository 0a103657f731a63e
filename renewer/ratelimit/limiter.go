// Package ratelimit keeps a CA account's rate limits on the client side:
// a Limiter keeps the CA's limits for one ACME account as token buckets,
// so that the scheduler holds back an order the CA would refuse instead of
// sending it and waiting out a rateLimited problem (RFC 8555 section 6.7).
package ratelimit

// Client-side rate limits: a Limiter keeps the CA's limits for one ACME
// account as token buckets, so that the scheduler holds back an order the
// CA would refuse instead of sending it and waiting out a rateLimited
// problem (RFC 8555 section 6.7).
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

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/certserver/certserver/store"
)

// DefaultRetryAfter is the wait assumed when a CA rate-limits without a
// Retry-After header.
const DefaultRetryAfter = time.Hour

// SameSet reports whether a and b are the same exact set of names as the
// CA compares them (CertsPerExactSet): in any order and case, without
// trailing dots.
func SameSet(a, b []string) bool { return setKey(a) == setKey(b) }

// canonical is a name as the buckets key it: lowercase, without a
// trailing dot.
func canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

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

// OrderKind says which limits an order is subject to.
type OrderKind int

// The kinds of orders.
const (
	// OrderNew is an order for a set of names with no recent certificate.
	// Every limit applies.
	OrderNew OrderKind = iota
	// OrderRenewal is an order for exactly the names of a certificate
	// issued within RenewalDetectionWindow, without ARI. It is exempt from
	// NewOrders and CertsPerRegisteredDomain.
	OrderRenewal
	// OrderARIRenewal is an order that names the certificate it replaces
	// (RFC 9773 section 5). Only a paused name (ConsecutiveAuthzFailures)
	// and the request rate (OrderRequests) hold it back.
	OrderARIRenewal
)

func (k OrderKind) String() string {
	switch k {
	case OrderNew:
		return "new"
	case OrderRenewal:
		return "renewal"
	case OrderARIRenewal:
		return "ari_renewal"
	}
	return fmt.Sprintf("order_kind(%d)", int(k))
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

// Reservation is the outcome of Reserve.
type Reservation struct {
	// OK says the order may be sent now; its tokens are taken.
	OK bool
	// At is when every bucket the order needs has room: now when OK.
	At time.Time
	// Limit and Key name the bucket that holds the order back longest
	// ("" when OK): Key is the registered domain, the exact set (names
	// joined by commas), the name, or "" for the account-wide bucket.
	Limit LimitID
	Key   string
}

// BucketStatus is the state of one bucket.
type BucketStatus struct {
	Limit LimitID
	// Key is the registered domain, exact set or name; "" for the
	// account-wide bucket.
	Key string
	// Burst and Per are the bucket's limit; Burst is -1 when unlimited.
	Burst int
	Per   time.Duration
	// Tokens is how many tokens the bucket holds now (fractions are a
	// token on its way); Burst when full, 0 when empty or drained by the
	// CA.
	Tokens float64
	// Available is when the bucket next holds a whole token: now when it
	// does.
	Available time.Time
	// Full is when the bucket is full again: now when it is.
	Full time.Time
}

// LimitStatus is the state of one limit across its buckets.
type LimitStatus struct {
	Limit LimitID
	// Scope is what one bucket counts for: "account", "registered
	// domain", "exact set" or "name".
	Scope string
	// Burst and Per are the limit (for registered domains, the default;
	// overrides show in their buckets). Burst is -1 when unlimited.
	Burst int
	Per   time.Duration
	// Tracked is how many buckets are below full; a full bucket is not
	// kept.
	Tracked int
	// Blocked is how many buckets hold less than one token: orders that
	// need them wait.
	Blocked int
	// Buckets is the account-wide bucket for LimitNewOrders; for the
	// other limits, the blocked buckets, soonest available first, at most
	// maxStatusBuckets of them.
	Buckets []BucketStatus
}

// maxStatusBuckets bounds the buckets one LimitStatus lists.
const maxStatusBuckets = 100

// sweepEvery is how often, on the Limiter's clock, buckets that are full
// again are dropped.
const sweepEvery = 5 * time.Minute

// Limiter keeps the rate limits of one ACME account (see LimitsConfig) and
// decides whether an order can be sent now. It is safe for concurrent use.
//
// Each bucket is kept as the generic cell rate algorithm's theoretical
// arrival time: the time at which the bucket will be full again, as an
// integer count of nanoseconds since the Limiter was made. A token is
// Per/Burst rounded down to the nanosecond, so a bucket refills in at most
// Burst nanoseconds less than Per, and because every operation sets an
// absolute time instead of adding fractions, nothing drifts however long the
// Limiter runs. A bucket whose time has passed is full, which is also what a
// missing bucket means: full buckets are dropped (every sweepEvery), so the
// Limiter holds only the buckets charged within their refill period,
// however many names pass through it.
type Limiter struct {
	cfg   LimitsConfig
	now   func() time.Time
	epoch time.Time

	mu          sync.Mutex
	orders      time.Duration            // LimitNewOrders
	requests    time.Duration            // LimitOrderRequests
	domains     map[string]time.Duration // LimitCertsPerRegisteredDomain, by registered domain
	sets        map[string]time.Duration // LimitCertsPerExactSet, by setKey
	failures    map[string]time.Duration // LimitAuthzFailures, by name
	consecutive map[string]time.Duration // LimitConsecutiveAuthzFailures, by name
	lastSweep   time.Duration
	changed     map[savedKey]struct{} // buckets written since the last Changes
}

// savedKey names a bucket across the Limiter's maps.
type savedKey struct {
	id  LimitID
	key string
}

// NewLimiter returns a Limiter for cfg, with the zero fields filled from
// LetsEncryptLimits (a zero OrderRequests is no limit), reading the time
// from now (time.Now when nil). It
// refuses a Limit with a period but no burst, or a burst but no period.
func NewLimiter(cfg LimitsConfig, now func() time.Time) (*Limiter, error) {
	def := LetsEncryptLimits()
	fields := []struct {
		name string
		l    *Limit
		def  Limit
	}{
		{"new_orders", &cfg.NewOrders, def.NewOrders},
		{"certificates_per_registered_domain", &cfg.CertsPerRegisteredDomain, def.CertsPerRegisteredDomain},
		{"certificates_per_exact_set", &cfg.CertsPerExactSet, def.CertsPerExactSet},
		{"authorization_failures", &cfg.AuthzFailures, def.AuthzFailures},
		{"consecutive_authorization_failures", &cfg.ConsecutiveAuthzFailures, def.ConsecutiveAuthzFailures},
		{"order_requests", &cfg.OrderRequests, Limit{Burst: -1}},
	}
	for _, f := range fields {
		if err := f.l.validate(f.name); err != nil {
			return nil, err
		}
		if *f.l == (Limit{}) {
			*f.l = f.def
		}
	}
	overrides := make(map[string]Limit, len(cfg.RegisteredDomainOverrides))
	for d, l := range cfg.RegisteredDomainOverrides {
		key := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if key == "" {
			return nil, errors.New("rate limit override: empty registered domain")
		}
		if err := l.validate("override for " + key); err != nil {
			return nil, err
		}
		if l == (Limit{}) {
			l = cfg.CertsPerRegisteredDomain
		}
		overrides[key] = l
	}
	cfg.RegisteredDomainOverrides = overrides
	if now == nil {
		now = time.Now
	}
	return &Limiter{
		cfg:         cfg,
		now:         now,
		epoch:       now(),
		domains:     map[string]time.Duration{},
		sets:        map[string]time.Duration{},
		failures:    map[string]time.Duration{},
		consecutive: map[string]time.Duration{},
		changed:     map[savedKey]struct{}{},
	}, nil
}

// Limits returns the limits in force, defaults filled in.
func (l *Limiter) Limits() LimitsConfig {
	cfg := l.cfg
	cfg.RegisteredDomainOverrides = make(map[string]Limit, len(l.cfg.RegisteredDomainOverrides))
	for k, v := range l.cfg.RegisteredDomainOverrides {
		cfg.RegisteredDomainOverrides[k] = v
	}
	return cfg
}

// bucketRef is one bucket an operation touches.
type bucketRef struct {
	id    LimitID
	limit Limit
	m     map[string]time.Duration // nil for the account-wide buckets
	key   string
}

// accountWide returns the field that keeps the account-wide bucket b.
func (l *Limiter) accountWide(b bucketRef) *time.Duration {
	if b.id == LimitOrderRequests {
		return &l.requests
	}
	return &l.orders
}

func (l *Limiter) get(b bucketRef) time.Duration {
	if b.m == nil {
		return *l.accountWide(b)
	}
	return b.m[b.key]
}

// set stores tat for b, dropping the bucket when it is full at now.
func (l *Limiter) set(b bucketRef, tat, now time.Duration) {
	if tat != l.get(b) {
		l.changed[savedKey{b.id, b.key}] = struct{}{}
	}
	if b.m == nil {
		*l.accountWide(b) = tat
		return
	}
	if tat <= now {
		delete(b.m, b.key)
		return
	}
	b.m[b.key] = tat
}

// The bucket arithmetic. tat is the bucket's theoretical arrival time: the
// bucket holds Burst - (tat-now)/T tokens, where T is Interval, and is full
// when tat <= now. Taking a token moves tat to max(tat, now) + T, which is
// allowed while the result is at most now + Burst*T, that is while tat is
// at most now + (Burst-1)*T. An unlimited bucket has no tokens to count; its
// tat is only ever moved by the CA draining it, and it is open from tat on.

// slack is how far past now tat may be for one more token to fit.
func slack(lim Limit) time.Duration {
	return time.Duration(lim.Burst-1) * lim.Interval()
}

// readyAt is when the bucket holds a token (now when it does).
func readyAt(lim Limit, tat, now time.Duration) time.Duration {
	if lim.Unlimited() {
		return max(tat, now)
	}
	return max(tat-slack(lim), now)
}

// take spends one token if the bucket holds one, else leaves it as it is
// (as Boulder does with a spend it cannot make).
func take(lim Limit, tat, now time.Duration) time.Duration {
	if lim.Unlimited() || readyAt(lim, tat, now) > now {
		return tat
	}
	return max(tat, now) + lim.Interval()
}

// give returns one token, never filling past full.
func give(lim Limit, tat, now time.Duration) time.Duration {
	if lim.Unlimited() || tat <= now {
		return tat
	}
	return max(tat-lim.Interval(), now)
}

// drain empties the bucket so that its next token arrives at until.
func drain(lim Limit, tat, until time.Duration) time.Duration {
	if lim.Unlimited() {
		return max(tat, until)
	}
	return max(tat, until+slack(lim))
}

func (l *Limiter) since(t time.Time) time.Duration { return t.Sub(l.epoch) }
func (l *Limiter) at(d time.Duration) time.Time    { return l.epoch.Add(d) }

// Reserve decides whether an order of the given kind for names can be sent
// now. When every bucket the order needs has room it takes their tokens,
// all at once, and returns OK; otherwise it takes nothing and returns when
// they will all have room and which one holds the order back longest.
//
// Every order needs an OrderRequests token. An OrderNew also needs a
// NewOrders token, a CertsPerRegisteredDomain token for each registered
// domain among names and a CertsPerExactSet token, and needs each name's
// AuthzFailures and ConsecutiveAuthzFailures buckets to hold a token
// (failures are charged by AuthzFailed, not here). An OrderRenewal needs
// the CertsPerExactSet token and the failure buckets; an OrderARIRenewal
// only ConsecutiveAuthzFailures.
func (l *Limiter) Reserve(names []string, kind OrderKind) Reservation {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	l.maybeSweep(now)
	charged, checked := l.plan(names, kind)
	worst, worstRef := now, bucketRef{}
	for _, refs := range [][]bucketRef{charged, checked} {
		for _, b := range refs {
			if at := readyAt(b.limit, l.get(b), now); at > worst {
				worst, worstRef = at, b
			}
		}
	}
	if worst > now {
		return Reservation{At: l.at(worst), Limit: worstRef.id, Key: worstRef.key}
	}
	for _, b := range charged {
		l.set(b, take(b.limit, l.get(b), now), now)
	}
	return Reservation{OK: true, At: l.at(now)}
}

// Refund gives back what Reserve took for an order that never reached the
// CA (the context ended, pre-flight refused it, the account could not be
// loaded). Call it at most once per successful Reserve, with the same
// arguments.
func (l *Limiter) Refund(names []string, kind OrderKind) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	charged, _ := l.plan(names, kind)
	for _, b := range charged {
		l.set(b, give(b.limit, l.get(b), now), now)
	}
}

// NotIssued gives back the certificate tokens (CertsPerRegisteredDomain
// and CertsPerExactSet) Reserve took for an order the CA created but that
// ended without a certificate: the CA counts those limits when it issues,
// while the NewOrders and OrderRequests tokens stay spent. Call it at most once per
// successful Reserve, with the same arguments, and not after Refund.
func (l *Limiter) NotIssued(names []string, kind OrderKind) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	charged, _ := l.plan(names, kind)
	for _, b := range charged {
		if b.id != LimitNewOrders && b.id != LimitOrderRequests {
			l.set(b, give(b.limit, l.get(b), now), now)
		}
	}
}

// AuthzFailed charges a failed authorization for name (the CA tried to
// validate it and every attempt failed, RFC 8555 section 7.1.4) to its
// AuthzFailures and ConsecutiveAuthzFailures buckets. It is charged for
// every kind of order: ARI renewals are exempt from the checks, not from
// the counting.
func (l *Limiter) AuthzFailed(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	l.maybeSweep(now)
	for _, b := range []bucketRef{l.failureRef(name), l.consecutiveRef(name)} {
		l.set(b, take(b.limit, l.get(b), now), now)
	}
}

// AuthzValid records that the CA validated name: its
// ConsecutiveAuthzFailures bucket is full again ("resets to zero if an
// authorization for that identifier is successfully validated"). An issued
// certificate means every one of its names was validated, or reused a
// valid authorization.
func (l *Limiter) AuthzValid(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := canonical(name)
	if _, ok := l.consecutive[key]; ok {
		delete(l.consecutive, key)
		l.changed[savedKey{LimitConsecutiveAuthzFailures, key}] = struct{}{}
	}
}

// FailuresAllowed reports whether the CA would accept an order for name as
// far as its failed authorizations go (AuthzFailures and
// ConsecutiveAuthzFailures), and if not, when it will.
func (l *Limiter) FailuresAllowed(name string) (ok bool, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	worst := now
	for _, b := range []bucketRef{l.failureRef(name), l.consecutiveRef(name)} {
		worst = max(worst, readyAt(b.limit, l.get(b), now))
	}
	return worst <= now, l.at(worst)
}

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
// said to wait.
func (l *Limiter) RateLimited(names []string, detail string, retryAfter time.Duration) LimitID {
	if retryAfter <= 0 {
		retryAfter = DefaultRetryAfter
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	l.maybeSweep(now)
	until := now + retryAfter
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
	for _, b := range refs {
		l.set(b, drain(b.limit, l.get(b), until), now)
	}
	return id
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

// restoreHorizon bounds how far past its period a restored bucket may be
// empty: a saved time further out comes from a clock that jumped, and is
// cut to that.
const restoreHorizon = 7 * 24 * time.Hour

// Changes returns the buckets that changed since the previous call (the
// first call: since the Limiter was made), each with the wall-clock time
// it is full again (a bucket full now, whose saved copy is to go, with
// now), and starts afresh. The Renewer saves them in the store every
// second, so that a restart, or a crash, forgets at most that second of
// spending instead of handing the account full buckets again.
func (l *Limiter) Changes() []store.RateBucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.changed) == 0 {
		return nil
	}
	// The Limiter counts on the monotonic clock from its epoch; a saved
	// time is on the wall clock, which may have been stepped since.
	wall := l.now()
	now := l.since(wall)
	wall = wall.Round(0)
	out := make([]store.RateBucket, 0, len(l.changed))
	for k := range l.changed {
		b, ok := l.ref(k.id, k.key)
		if !ok {
			continue
		}
		out = append(out, store.RateBucket{Limit: string(k.id), Key: k.key, Full: wall.Add(max(l.get(b), now) - now)})
	}
	clear(l.changed)
	return out
}

// Restore puts back buckets saved from an earlier Limiter of the same
// account (Changes). A bucket that is full by now is skipped, as is one of
// a limit this Limiter does not know or no longer limits (a limit raised
// to unlimited is open at once; should the CA still disagree, its next
// rateLimited answer closes it again). A time further out than its
// limit's period and restoreHorizon (the clock jumped) is cut to that,
// and the cut counts as a change, so that the saved copy is mended; other
// restored buckets are not changes. A bucket this Limiter already holds
// keeps the later of the two times. A limit changed in between applies
// from now on to a bucket that is full again when it was.
func (l *Limiter) Restore(bs []store.RateBucket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	wall := l.now()
	now := l.since(wall)
	wall = wall.Round(0)
	for _, sb := range bs {
		b, ok := l.ref(LimitID(sb.Limit), sb.Key)
		if !ok || b.limit.Unlimited() {
			continue
		}
		tat := now + sb.Full.Sub(wall)
		if limit := now + b.limit.Per + restoreHorizon; tat > limit {
			tat = limit
			l.changed[savedKey{b.id, b.key}] = struct{}{}
		}
		if tat <= now || tat <= l.get(b) {
			continue
		}
		if b.m == nil {
			*l.accountWide(b) = tat
		} else {
			b.m[b.key] = tat
		}
	}
}

// ref returns the bucket of limit id under key, and false for a limit the
// Limiter does not keep, or an account-wide limit with a key.
func (l *Limiter) ref(id LimitID, key string) (bucketRef, bool) {
	switch id {
	case LimitNewOrders, LimitOrderRequests:
		if key != "" {
			return bucketRef{}, false
		}
	case LimitCertsPerRegisteredDomain, LimitCertsPerExactSet, LimitAuthzFailures, LimitConsecutiveAuthzFailures:
		if key == "" {
			return bucketRef{}, false
		}
	default:
		return bucketRef{}, false
	}
	return l.refFor(id, key), true
}

// Status returns the state of every limit, for the queue API and metrics.
func (l *Limiter) Status() []LimitStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	return []LimitStatus{
		l.limitStatus(LimitNewOrders, "account", l.cfg.NewOrders, nil, now),
		l.limitStatus(LimitOrderRequests, "account", l.cfg.OrderRequests, nil, now),
		l.limitStatus(LimitCertsPerRegisteredDomain, "registered domain", l.cfg.CertsPerRegisteredDomain, l.domains, now),
		l.limitStatus(LimitCertsPerExactSet, "exact set", l.cfg.CertsPerExactSet, l.sets, now),
		l.limitStatus(LimitAuthzFailures, "name", l.cfg.AuthzFailures, l.failures, now),
		l.limitStatus(LimitConsecutiveAuthzFailures, "name", l.cfg.ConsecutiveAuthzFailures, l.consecutive, now),
	}
}

// limitStatus summarizes the buckets of one limit; m is nil for the
// account-wide bucket. The caller holds l.mu.
func (l *Limiter) limitStatus(id LimitID, scope string, lim Limit, m map[string]time.Duration, now time.Duration) LimitStatus {
	s := LimitStatus{Limit: id, Scope: scope, Burst: max(lim.Burst, -1), Per: lim.Per}
	if m == nil {
		b := l.refFor(id, "")
		tat := l.get(b)
		s.Buckets = []BucketStatus{l.bucketStatus(b, now)}
		if tat > now {
			s.Tracked = 1
		}
		if readyAt(b.limit, tat, now) > now {
			s.Blocked = 1
		}
		return s
	}
	for key, tat := range m {
		if tat <= now {
			continue
		}
		s.Tracked++
		b := l.refFor(id, key)
		if readyAt(b.limit, tat, now) > now {
			s.Blocked++
			s.Buckets = append(s.Buckets, l.bucketStatus(b, now))
		}
	}
	slices.SortFunc(s.Buckets, func(a, b BucketStatus) int {
		if c := a.Available.Compare(b.Available); c != 0 {
			return c
		}
		return strings.Compare(a.Key, b.Key)
	})
	if len(s.Buckets) > maxStatusBuckets {
		s.Buckets = s.Buckets[:maxStatusBuckets]
	}
	return s
}

// Bucket returns the state of one bucket: key is "" for LimitNewOrders
// and LimitOrderRequests, else a registered domain, a name, or for LimitCertsPerExactSet the names
// joined by commas (any order and case).
func (l *Limiter) Bucket(id LimitID, key string) BucketStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	if id == LimitCertsPerExactSet {
		key = setKey(strings.Split(key, ","))
	}
	return l.bucketStatus(l.refFor(id, key), now)
}

func (l *Limiter) bucketStatus(b bucketRef, now time.Duration) BucketStatus {
	tat := l.get(b)
	s := BucketStatus{
		Limit:     b.id,
		Key:       b.key,
		Burst:     max(b.limit.Burst, -1),
		Per:       b.limit.Per,
		Available: l.at(readyAt(b.limit, tat, now)),
		Full:      l.at(max(tat, now)),
	}
	switch {
	case b.limit.Unlimited():
		s.Tokens = -1
	case tat <= now:
		s.Tokens = float64(b.limit.Burst)
	default:
		t := float64(b.limit.Burst) - float64(tat-now)/float64(b.limit.Interval())
		s.Tokens = max(t, 0)
	}
	return s
}

// Backlog is how long n new orders take to send at the current NewOrders
// bucket: the time from now until the n-th of them can be sent, sending
// each as soon as a token arrives. At the default 300 per 3 hours, 500,000
// orders take 500,000 × 36 s less the 3-hour burst: about 208.2 days.
func (l *Limiter) Backlog(n int) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	return l.backlog(l.ordersRef(), l.orders, n, now)
}

// BacklogFor is how long new single-name orders for every one of names
// take to send at the current buckets: the longer of the NewOrders backlog
// and, for each registered domain, that of its CertsPerRegisteredDomain
// bucket for the names under it. Each limit is taken alone, so it is a
// lower bound; 2,000 names under one registered domain take about 39 weeks
// at 50 per week whatever the NewOrders limit is.
func (l *Limiter) BacklogFor(names []string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.since(l.now())
	worst := l.backlog(l.ordersRef(), l.orders, len(names), now)
	count := map[string]int{}
	for _, n := range names {
		count[registeredDomain(canonical(n))]++
	}
	for d, k := range count {
		b := l.domainRef(d)
		worst = max(worst, l.backlog(b, l.get(b), k, now))
	}
	return worst
}

func (l *Limiter) backlog(b bucketRef, tat time.Duration, n int, now time.Duration) time.Duration {
	if n <= 0 {
		return 0
	}
	if b.limit.Unlimited() {
		return max(tat-now, 0)
	}
	// The k-th token (from 1) arrives at max(tat, now) + k*T - Burst*T.
	lastAt := max(tat, now) + time.Duration(n-b.limit.Burst)*b.limit.Interval()
	return max(lastAt-now, 0)
}

// plan returns the buckets an order takes tokens from and the ones it only
// needs to hold a token.
func (l *Limiter) plan(names []string, kind OrderKind) (charged, checked []bucketRef) {
	charged = append(charged, l.requestsRef())
	for _, n := range names {
		checked = append(checked, l.consecutiveRef(n))
	}
	if kind == OrderARIRenewal {
		return charged, checked
	}
	for _, n := range names {
		checked = append(checked, l.failureRef(n))
	}
	charged = append(charged, l.setRef(names))
	if kind == OrderRenewal {
		return charged, checked
	}
	charged = append(charged, l.ordersRef())
	for _, d := range registeredDomains(names) {
		charged = append(charged, l.domainRef(d))
	}
	return charged, checked
}

func (l *Limiter) ordersRef() bucketRef {
	return bucketRef{id: LimitNewOrders, limit: l.cfg.NewOrders}
}

func (l *Limiter) requestsRef() bucketRef {
	return bucketRef{id: LimitOrderRequests, limit: l.cfg.OrderRequests}
}

func (l *Limiter) domainRef(domain string) bucketRef {
	lim, ok := l.cfg.RegisteredDomainOverrides[domain]
	if !ok {
		lim = l.cfg.CertsPerRegisteredDomain
	}
	return bucketRef{id: LimitCertsPerRegisteredDomain, limit: lim, m: l.domains, key: domain}
}

func (l *Limiter) setRef(names []string) bucketRef {
	return bucketRef{id: LimitCertsPerExactSet, limit: l.cfg.CertsPerExactSet, m: l.sets, key: setKey(names)}
}

func (l *Limiter) failureRef(name string) bucketRef {
	return bucketRef{id: LimitAuthzFailures, limit: l.cfg.AuthzFailures, m: l.failures, key: canonical(name)}
}

func (l *Limiter) consecutiveRef(name string) bucketRef {
	return bucketRef{id: LimitConsecutiveAuthzFailures, limit: l.cfg.ConsecutiveAuthzFailures, m: l.consecutive, key: canonical(name)}
}

func (l *Limiter) refFor(id LimitID, key string) bucketRef {
	switch id {
	case LimitCertsPerRegisteredDomain:
		return l.domainRef(key)
	case LimitCertsPerExactSet:
		return bucketRef{id: id, limit: l.cfg.CertsPerExactSet, m: l.sets, key: key}
	case LimitAuthzFailures:
		return l.failureRef(key)
	case LimitConsecutiveAuthzFailures:
		return l.consecutiveRef(key)
	case LimitOrderRequests:
		return l.requestsRef()
	}
	return l.ordersRef()
}

// maybeSweep drops the buckets that are full again, once every sweepEvery.
// The caller holds l.mu.
func (l *Limiter) maybeSweep(now time.Duration) {
	if now-l.lastSweep < sweepEvery {
		return
	}
	l.lastSweep = now
	for _, m := range []map[string]time.Duration{l.domains, l.sets, l.failures, l.consecutive} {
		for k, tat := range m {
			if tat <= now {
				delete(m, k)
			}
		}
	}
}

// setKey is the bucket key of an exact set of names: lowercase, without
// trailing dots, sorted, deduplicated and joined by commas, so that order
// and case do not matter (as the CA compares sets).
func setKey(names []string) string {
	set := make([]string, 0, len(names))
	for _, n := range names {
		if n = canonical(strings.TrimSpace(n)); n != "" {
			set = append(set, n)
		}
	}
	slices.Sort(set)
	return strings.Join(slices.Compact(set), ",")
}

// registeredDomains returns the distinct registered domains of names.
func registeredDomains(names []string) []string {
	var out []string
	for _, n := range names {
		if d := registeredDomain(canonical(n)); !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// registeredDomain returns the registered domain a name counts against: its
// eTLD+1 by the Public Suffix List, without a leading "*." ("*.a.example.co.uk"
// counts against "example.co.uk"). A name that is itself a public suffix
// counts against itself, as Boulder does. An IPv4 address counts against
// itself and an IPv6 address against its /64, as the Let's Encrypt page
// says.
func registeredDomain(name string) string {
	name = strings.TrimPrefix(name, "*.")
	if a, err := netip.ParseAddr(name); err == nil {
		if a = a.Unmap(); a.Is4() {
			return a.String()
		}
		p, _ := a.Prefix(64)
		return p.String()
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return name
	}
	return d
}
