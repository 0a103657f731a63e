package ratelimit

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

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
	// Err says that the buckets could not be read or written: the store
	// of a shared Limiter failed (it wraps store.ErrUnavailable when the
	// store's database could not be reached). Nothing was taken, OK is
	// false, and At is now: the order must wait for the store, not for a
	// limit.
	Err error
}

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
// however many names pass through it. The buckets are kept in a Buckets,
// or, for a Limiter shared by a fleet's hosts (NewSharedLimiter), in the
// fleet's store.
type Limiter struct {
	cfg   LimitsConfig
	now   func() time.Time
	epoch time.Time
	// shared is the fleet's store of the buckets; nil for a Limiter of
	// one host.
	shared *sharedBuckets

	mu sync.Mutex
	// buckets are the Limiter's own; a shared Limiter's operations work
	// on a view of the buckets they locked in the store instead (see
	// update), and leave these empty.
	buckets   Buckets                // guarded by mu
	lastSweep time.Duration          // guarded by mu
	changed   map[BucketKey]struct{} // buckets written since the last Changes; guarded by mu
}

// NewLimiter returns a Limiter for cfg that keeps its buckets in memory
// (NewMemoryBuckets); see NewLimiterWith.
func NewLimiter(cfg LimitsConfig, now func() time.Time) (*Limiter, error) {
	return NewLimiterWith(cfg, now, NewMemoryBuckets())
}

// NewLimiterWith returns a Limiter for cfg that keeps its buckets in b,
// with the zero fields of cfg filled from LetsEncryptLimits (a zero
// OrderRequests is no limit), reading the time from now (time.Now when
// nil). It refuses a Limit with a period but no burst, or a burst but no
// period, and nil Buckets.
func NewLimiterWith(cfg LimitsConfig, now func() time.Time, b Buckets) (*Limiter, error) {
	if b == nil {
		return nil, errors.New("rate limits: nil buckets")
	}
	def := LetsEncryptLimits()
	def.OrderRequests = Limit{Burst: -1}
	for _, d := range limits {
		l := d.field(&cfg)
		if err := l.validate(d.name); err != nil {
			return nil, err
		}
		if *l == (Limit{}) {
			*l = *d.field(&def)
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
		cfg:     cfg,
		now:     now,
		epoch:   now(),
		buckets: b,
		changed: map[BucketKey]struct{}{},
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

// bucketRef is one bucket an operation touches, with its limit.
type bucketRef struct {
	id    LimitID
	limit Limit
	key   string // "" for an account-wide limit
}

func (b bucketRef) bucketKey() BucketKey { return BucketKey{b.id, b.key} }

// accountWide reports whether b is the one bucket of an account-wide
// limit, which is kept even when full.
func (b bucketRef) accountWide() bool {
	d, _ := limitOf(b.id)
	return d.accountWide()
}

// get returns b's TAT in bs, 0 (full) when it is missing. bs is the
// Limiter's own buckets, with l.mu held, or a shared Limiter's view.
func (l *Limiter) get(bs Buckets, b bucketRef) time.Duration {
	tat, _ := bs.Get(b.bucketKey())
	return tat
}

// set stores tat for b in bs (as get), dropping a per-key bucket when it
// is full at now.
func (l *Limiter) set(bs Buckets, b bucketRef, tat, now time.Duration) {
	if tat != l.get(bs, b) && l.shared == nil {
		l.changed[b.bucketKey()] = struct{}{}
	}
	if tat <= now && !b.accountWide() {
		bs.Delete(b.bucketKey())
		return
	}
	bs.Set(b.bucketKey(), tat)
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
//
// A shared Limiter decides within one atomic update of the fleet's
// buckets; when the store fails, Reservation.Err says so and nothing is
// taken.
func (l *Limiter) Reserve(names []string, kind OrderKind) Reservation {
	charged, checked := l.plan(names, kind)
	var res Reservation
	err := l.update(keysOf(charged, checked), func(bs Buckets, now time.Duration) {
		l.maybeSweep(bs, now)
		res = l.reserve(bs, charged, checked, now)
	})
	if err != nil {
		return Reservation{At: l.now(), Err: err}
	}
	return res
}

// reserve is Reserve on the buckets bs (as get).
func (l *Limiter) reserve(bs Buckets, charged, checked []bucketRef, now time.Duration) Reservation {
	worst, worstRef := now, bucketRef{}
	for _, refs := range [][]bucketRef{charged, checked} {
		for _, b := range refs {
			if at := readyAt(b.limit, l.get(bs, b), now); at > worst {
				worst, worstRef = at, b
			}
		}
	}
	if worst > now {
		return Reservation{At: l.at(worst), Limit: worstRef.id, Key: worstRef.key}
	}
	for _, b := range charged {
		l.set(bs, b, take(b.limit, l.get(bs, b), now), now)
	}
	return Reservation{OK: true, At: l.at(now)}
}

// Refund gives back what Reserve took for an order that never reached the
// CA (the context ended, pre-flight refused it, the account could not be
// loaded). Call it at most once per successful Reserve, with the same
// arguments. It returns the error of a shared Limiter's store (nothing
// was given back).
func (l *Limiter) Refund(names []string, kind OrderKind) error {
	charged, _ := l.plan(names, kind)
	return l.update(keysOf(charged), func(bs Buckets, now time.Duration) {
		for _, b := range charged {
			l.set(bs, b, give(b.limit, l.get(bs, b), now), now)
		}
	})
}

// NotIssued gives back the certificate tokens (CertsPerRegisteredDomain
// and CertsPerExactSet) Reserve took for an order the CA created but that
// ended without a certificate: the CA counts those limits when it issues,
// while the NewOrders and OrderRequests tokens stay spent. Call it at most once per
// successful Reserve, with the same arguments, and not after Refund. It
// returns the error of a shared Limiter's store (nothing was given back).
func (l *Limiter) NotIssued(names []string, kind OrderKind) error {
	all, _ := l.plan(names, kind)
	var certs []bucketRef
	for _, b := range all {
		if b.id != LimitNewOrders && b.id != LimitOrderRequests {
			certs = append(certs, b)
		}
	}
	return l.update(keysOf(certs), func(bs Buckets, now time.Duration) {
		for _, b := range certs {
			l.set(bs, b, give(b.limit, l.get(bs, b), now), now)
		}
	})
}

// AuthzFailed charges a failed authorization for name (the CA tried to
// validate it and every attempt failed, RFC 8555 section 7.1.4) to its
// AuthzFailures and ConsecutiveAuthzFailures buckets. It is charged for
// every kind of order: ARI renewals are exempt from the checks, not from
// the counting. It returns the error of a shared Limiter's store
// (nothing was charged).
func (l *Limiter) AuthzFailed(name string) error {
	refs := []bucketRef{l.failureRef(name), l.consecutiveRef(name)}
	return l.update(keysOf(refs), func(bs Buckets, now time.Duration) {
		l.maybeSweep(bs, now)
		for _, b := range refs {
			l.set(bs, b, take(b.limit, l.get(bs, b), now), now)
		}
	})
}

// AuthzValid records that the CA validated name: its
// ConsecutiveAuthzFailures bucket is full again ("resets to zero if an
// authorization for that identifier is successfully validated"). An issued
// certificate means every one of its names was validated, or reused a
// valid authorization. It returns the error of a shared Limiter's store.
func (l *Limiter) AuthzValid(name string) error {
	k := l.consecutiveRef(name).bucketKey()
	return l.update([]BucketKey{k}, func(bs Buckets, _ time.Duration) {
		if _, ok := bs.Get(k); ok {
			bs.Delete(k)
			if l.shared == nil {
				l.changed[k] = struct{}{}
			}
		}
	})
}

// FailuresAllowed reports whether the CA would accept an order for name as
// far as its failed authorizations go (AuthzFailures and
// ConsecutiveAuthzFailures), and if not, when it will. It only reads: a
// shared Limiter reads the two buckets without locking them (the Reserve
// that follows decides under the locks), and when its store fails says
// yes: that Reserve fails the same way, and says why.
func (l *Limiter) FailuresAllowed(name string) (ok bool, at time.Time) {
	refs := []bucketRef{l.failureRef(name), l.consecutiveRef(name)}
	var worst, now time.Duration
	err := l.readKeys(keysOf(refs), func(bs Buckets, n time.Duration) {
		now, worst = n, n
		for _, b := range refs {
			worst = max(worst, readyAt(b.limit, l.get(bs, b), now))
		}
	})
	if err != nil {
		return true, l.now()
	}
	return worst <= now, l.at(worst)
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
	return bucketRef{id: LimitCertsPerRegisteredDomain, limit: lim, key: domain}
}

func (l *Limiter) setRef(names []string) bucketRef {
	return bucketRef{id: LimitCertsPerExactSet, limit: l.cfg.CertsPerExactSet, key: setKey(names)}
}

func (l *Limiter) failureRef(name string) bucketRef {
	return bucketRef{id: LimitAuthzFailures, limit: l.cfg.AuthzFailures, key: canonical(name)}
}

func (l *Limiter) consecutiveRef(name string) bucketRef {
	return bucketRef{id: LimitConsecutiveAuthzFailures, limit: l.cfg.ConsecutiveAuthzFailures, key: canonical(name)}
}

func (l *Limiter) refFor(id LimitID, key string) bucketRef {
	switch id {
	case LimitCertsPerRegisteredDomain:
		return l.domainRef(key)
	case LimitCertsPerExactSet:
		return bucketRef{id: id, limit: l.cfg.CertsPerExactSet, key: key}
	case LimitAuthzFailures:
		return l.failureRef(key)
	case LimitConsecutiveAuthzFailures:
		return l.consecutiveRef(key)
	case LimitOrderRequests:
		return l.requestsRef()
	}
	return l.ordersRef()
}

// maybeSweep drops the buckets of bs that are full again, once every
// sweepEvery, for a Limiter of one host (bs is its own, l.mu held). A
// shared Limiter's buckets are swept in the store by Sweep, away from
// the orders.
func (l *Limiter) maybeSweep(bs Buckets, now time.Duration) {
	if l.shared != nil || now-l.lastSweep < sweepEvery {
		return
	}
	l.lastSweep = now
	for _, d := range limits {
		if d.accountWide() {
			continue
		}
		bs.Range(d.id, func(key string, tat time.Duration) {
			if tat <= now {
				bs.Delete(BucketKey{d.id, key})
			}
		})
	}
}
