package ratelimit

import (
	"slices"
	"strings"
	"time"
)

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

// Status returns the state of every limit, for the queue API and metrics:
// for a shared Limiter, the fleet's buckets as its store holds them, and
// nil when the store cannot be read.
func (l *Limiter) Status() []LimitStatus {
	var out []LimitStatus
	err := l.read(func(bs Buckets, now time.Duration) {
		out = make([]LimitStatus, 0, len(limits))
		for _, d := range limits {
			out = append(out, l.limitStatus(bs, d, now))
		}
	})
	if err != nil {
		return nil
	}
	return out
}

// limitStatus summarizes the buckets of one limit in bs (as get).
func (l *Limiter) limitStatus(bs Buckets, d limitDef, now time.Duration) LimitStatus {
	lim := *d.field(&l.cfg)
	s := LimitStatus{Limit: d.id, Scope: d.scope, Burst: max(lim.Burst, -1), Per: lim.Per}
	if d.accountWide() {
		b := l.refFor(d.id, "")
		tat := l.get(bs, b)
		s.Buckets = []BucketStatus{l.bucketStatus(bs, b, now)}
		if tat > now {
			s.Tracked = 1
		}
		if readyAt(b.limit, tat, now) > now {
			s.Blocked = 1
		}
		return s
	}
	bs.Range(d.id, func(key string, tat time.Duration) {
		if tat <= now {
			return
		}
		s.Tracked++
		b := l.refFor(d.id, key)
		if readyAt(b.limit, tat, now) > now {
			s.Blocked++
			s.Buckets = append(s.Buckets, l.bucketStatus(bs, b, now))
		}
	})
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
// joined by commas (any order and case). A shared Limiter whose store
// cannot be read says the bucket holds no token, available now.
func (l *Limiter) Bucket(id LimitID, key string) BucketStatus {
	if id == LimitCertsPerExactSet {
		key = setKey(strings.Split(key, ","))
	}
	b := l.refFor(id, key)
	var s BucketStatus
	err := l.readKeys([]BucketKey{b.bucketKey()}, func(bs Buckets, now time.Duration) { s = l.bucketStatus(bs, b, now) })
	if err != nil {
		now := l.now()
		return BucketStatus{Limit: b.id, Key: b.key, Burst: max(b.limit.Burst, -1), Per: b.limit.Per, Available: now, Full: now}
	}
	return s
}

func (l *Limiter) bucketStatus(bs Buckets, b bucketRef, now time.Duration) BucketStatus {
	tat := l.get(bs, b)
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
//
// A shared Limiter reads the fleet's buckets; when its store cannot be
// read, the buckets count as full.
func (l *Limiter) Backlog(n int) time.Duration {
	var d time.Duration
	l.read(func(bs Buckets, now time.Duration) { d = l.backlog(l.ordersRef(), l.get(bs, l.ordersRef()), n, now) })
	return d
}

// BacklogFor is how long new single-name orders for every one of names
// take to send at the current buckets: the longer of the NewOrders backlog
// and, for each registered domain, that of its CertsPerRegisteredDomain
// bucket for the names under it. Each limit is taken alone, so it is a
// lower bound; 2,000 names under one registered domain take about 39 weeks
// at 50 per week whatever the NewOrders limit is.
func (l *Limiter) BacklogFor(names []string) time.Duration {
	count := map[string]int{}
	for _, n := range names {
		count[registeredDomain(canonical(n))]++
	}
	var worst time.Duration
	l.read(func(bs Buckets, now time.Duration) {
		worst = l.backlog(l.ordersRef(), l.get(bs, l.ordersRef()), len(names), now)
		for d, k := range count {
			b := l.domainRef(d)
			worst = max(worst, l.backlog(b, l.get(bs, b), k, now))
		}
	})
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
