package ratelimit

import (
	"context"
	"errors"
	"time"

	"github.com/certserver/certserver/store"
)

// SharedStore is what a Limiter shared by the hosts of a fleet needs of
// their store (PostgreSQL, through store.As): atomic updates of the
// buckets for every decision, and the reads and pruning of the scope.
type SharedStore interface {
	store.RateBucketUpdater
	// RateBuckets returns the buckets of scope that are not full (the
	// status and the planner read them).
	RateBuckets(ctx context.Context, scope string) ([]store.RateBucket, error)
	// PutRateBuckets with no buckets removes those of scope that are
	// full again (the sweep).
	PutRateBuckets(ctx context.Context, scope string, bs []store.RateBucket) error
}

// sharedTimeout bounds each round trip of a shared Limiter to its store:
// the Limiter's methods take no context, and an order waits for them.
const sharedTimeout = 10 * time.Second

// sharedBuckets are the buckets of one account kept in the fleet's store
// under scope. Their TATs are absolute: the Limiter's epoch is the Unix
// epoch, so a TAT is the bucket's Full time, nanoseconds since 1970,
// whichever host wrote it.
type sharedBuckets struct {
	st    SharedStore
	scope string
}

// unixEpoch is the epoch of a shared Limiter.
var unixEpoch = time.Unix(0, 0).UTC()

// NewSharedLimiter returns a Limiter for cfg (as NewLimiterWith fills and
// checks it) whose buckets are kept in st under scope, shared with every
// Limiter of the same scope on any host: each of Reserve, Refund,
// NotIssued, AuthzFailed, AuthzValid and RateLimited is one atomic update
// of the buckets it needs, so that all the hosts together never spend
// more than cfg allows, and a bucket drained by one host's rateLimited
// answer holds back every host. The hosts must be configured with the
// same limits, and their clocks agree (as NTP keeps them): a TAT is a wall
// clock time. scope is the account's (as the Renewer saves it:
// "account:<id>"). A Limiter of one host has nothing to save or restore:
// Changes returns nil and Restore does nothing.
func NewSharedLimiter(cfg LimitsConfig, now func() time.Time, st SharedStore, scope string) (*Limiter, error) {
	if st == nil {
		return nil, errors.New("rate limits: nil shared store")
	}
	if err := store.ValidateRateScope(scope); err != nil {
		return nil, err
	}
	l, err := NewLimiterWith(cfg, now, NewMemoryBuckets())
	if err != nil {
		return nil, err
	}
	l.shared = &sharedBuckets{st: st, scope: scope}
	l.epoch = unixEpoch
	l.lastSweep = l.since(l.now())
	return l, nil
}

// Shared reports whether the Limiter's buckets are a fleet's
// (NewSharedLimiter).
func (l *Limiter) Shared() bool { return l.shared != nil }

// keysOf returns the keys of the buckets of refs.
func keysOf(refs ...[]bucketRef) []BucketKey {
	var out []BucketKey
	for _, rs := range refs {
		for _, b := range rs {
			out = append(out, b.bucketKey())
		}
	}
	return out
}

// update runs op, which reads and writes l.buckets, with l.mu held, at
// now by the Limiter's clock. For a shared Limiter l.buckets is meanwhile
// a view of the buckets of keys, locked in the store against every other
// host, and what op writes is written back in the same transaction: op
// may run more than once (the store retried) and must not keep state
// across runs. The error is the store's.
func (l *Limiter) update(keys []BucketKey, op func(now time.Duration)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shared == nil {
		op(l.since(l.now()))
		return nil
	}
	own := l.buckets
	defer func() { l.buckets = own }()
	if len(keys) == 0 {
		// Nothing to lock or write (NotIssued of an ARI renewal).
		l.buckets = newView(nil)
		op(l.since(l.now()))
		return nil
	}
	l.pruneShared()
	want := make([]store.RateBucket, len(keys))
	for i, k := range keys {
		want[i] = store.RateBucket{Limit: string(k.Limit), Key: k.Key}
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	return l.shared.st.UpdateRateBuckets(ctx, l.shared.scope, want, func(have []store.RateBucket) ([]store.RateBucket, error) {
		v := newView(have)
		l.buckets = v
		op(l.since(l.now()))
		return v.writes(), nil
	})
}

// read runs op as update does, for reading only. A shared Limiter's op
// sees every bucket of the scope that is not full, read outside any
// lock; when the store cannot be read op sees full buckets, and read
// returns the store's error.
func (l *Limiter) read(op func(now time.Duration)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shared == nil {
		op(l.since(l.now()))
		return nil
	}
	own := l.buckets
	defer func() { l.buckets = own }()
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	have, err := l.shared.st.RateBuckets(ctx, l.shared.scope)
	l.buckets = newView(have)
	op(l.since(l.now()))
	return err
}

// pruneShared removes, once every sweepEvery, the buckets of the shared
// scope that are full again, which no operation touched since (a name
// that failed validation once): the sweep of a shared Limiter. A failure
// is left for the next sweep. The caller holds l.mu.
func (l *Limiter) pruneShared() {
	now := l.since(l.now())
	if now-l.lastSweep < sweepEvery {
		return
	}
	l.lastSweep = now
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	_ = l.shared.st.PutRateBuckets(ctx, l.shared.scope, nil)
}

// view is the Buckets of one operation of a shared Limiter: the buckets
// the store locked, as read, with what the operation set and deleted.
type view struct {
	memoryBuckets
	touched map[BucketKey]struct{}
}

func newView(have []store.RateBucket) *view {
	v := &view{memoryBuckets: memoryBuckets{}, touched: map[BucketKey]struct{}{}}
	for _, rb := range have {
		v.memoryBuckets.Set(BucketKey{LimitID(rb.Limit), rb.Key}, rb.Full.Sub(unixEpoch))
	}
	return v
}

func (v *view) Set(k BucketKey, tat time.Duration) {
	v.memoryBuckets.Set(k, tat)
	v.touched[k] = struct{}{}
}

func (v *view) Delete(k BucketKey) {
	v.memoryBuckets.Delete(k)
	v.touched[k] = struct{}{}
}

// writes returns what the operation changed, for the store: a deleted
// bucket with a zero Full time.
func (v *view) writes() []store.RateBucket {
	out := make([]store.RateBucket, 0, len(v.touched))
	for k := range v.touched {
		rb := store.RateBucket{Limit: string(k.Limit), Key: k.Key}
		if tat, ok := v.memoryBuckets.Get(k); ok {
			rb.Full = unixEpoch.Add(tat)
		}
		out = append(out, rb)
	}
	return out
}
