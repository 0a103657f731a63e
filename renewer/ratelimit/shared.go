package ratelimit

import (
	"context"
	"errors"
	"slices"
	"sync"
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
	st SharedStore
	// reader reads buckets without locking them, when st can.
	reader store.RateBucketReader
	// scope is the fleet's (fleetScope); hostScope the one a Limiter of
	// one host saves the same account's buckets under.
	scope, hostScope string

	// accountMu queues this host's operations on an account-wide bucket
	// (see update).
	accountMu sync.Mutex

	sweepMu   sync.Mutex
	lastSweep time.Duration // guarded by sweepMu
	swept     bool          // guarded by sweepMu
}

// unixEpoch is the epoch of a shared Limiter.
var unixEpoch = time.Unix(0, 0).UTC()

// fleetPrefix starts the scope of a fleet's buckets in the store.
const fleetPrefix = "fleet:"

// fleetScope returns the scope a shared Limiter keeps the buckets of
// scope, the account's, under: apart from those a Limiter of one host
// saves under scope itself. The two share one table, and a host still
// running a version that saves its own copy of the buckets (a rolling
// upgrade) writes them as it sees them, later or earlier: under the same
// scope it would set the fleet's buckets back to its own spending.
func fleetScope(scope string) string { return fleetPrefix + scope }

// NewSharedLimiter returns a Limiter for cfg (as NewLimiterWith fills and
// checks it) whose buckets are kept in st under scope, shared with every
// Limiter of the same scope on any host: each of Reserve, Refund,
// NotIssued, AuthzFailed, AuthzValid and RateLimited is one atomic update
// of the buckets it needs, so that all the hosts together never spend
// more than cfg allows, and a bucket drained by one host's rateLimited
// answer holds back every host. The hosts must be configured with the
// same limits, and their clocks agree (as NTP keeps them): a TAT is a wall
// clock time. scope is the account's (as the Renewer saves a Limiter of
// one host: "account:<id>"); the fleet's buckets are kept under
// "fleet:" and scope, which no Limiter of one host writes, and what was
// saved under scope itself (by a host before it joined the fleet, by
// `certserver fleet migrate`, by a host still on an older version) is merged
// into them by Sweep, each bucket keeping the later of its two times. A
// shared Limiter has nothing to save or restore: Changes returns nil and
// Restore does nothing. The buckets that are full again are removed by
// Sweep, which the Renewer calls when it starts and then from its
// ticker.
//
// The store's locks make each operation atomic: the Limiter's own lock
// is never held across the store, and operations on different buckets
// run side by side (see update).
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
	sb := &sharedBuckets{st: st, scope: fleetScope(scope), hostScope: scope}
	sb.reader, _ = st.(store.RateBucketReader)
	l.shared = sb
	l.epoch = unixEpoch
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

// storeKeys returns keys as the store names buckets.
func storeKeys(keys []BucketKey) []store.RateBucket {
	out := make([]store.RateBucket, len(keys))
	for i, k := range keys {
		out[i] = store.RateBucket{Limit: string(k.Limit), Key: k.Key}
	}
	return out
}

// update runs op on the buckets of keys at now by the Limiter's clock. A
// Limiter of one host passes its own buckets, with l.mu held. A shared
// Limiter passes a view of the buckets of keys, locked in the store
// against every operation of every host (this one's included), and
// writes what op wrote back in the same transaction; l.mu is not held,
// so op must touch no state of the Limiter but bs, and may run more than
// once (the store retried): it must not keep state across runs. The
// error is the store's.
//
// The operations of one host that need an account-wide bucket (every
// Reserve does) wait for one another here, one in the store at a time:
// they would wait for the same lock in the store anyway, where each
// waiter holds a transaction and a connection of the pool, and lock
// waits cost the database more than a goroutine waiting on a mutex
// (BenchmarkSharedReserveOneHost: 8 orders of one host reserving at
// once). Operations on a name's buckets alone (AuthzFailed, AuthzValid,
// NotIssued), and the reads, do not wait for them.
func (l *Limiter) update(keys []BucketKey, op func(bs Buckets, now time.Duration)) error {
	if l.shared == nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		op(l.buckets, l.since(l.now()))
		return nil
	}
	if len(keys) == 0 {
		// Nothing to lock or write (NotIssued of an ARI renewal).
		op(newView(nil), l.since(l.now()))
		return nil
	}
	if slices.ContainsFunc(keys, func(k BucketKey) bool { d, _ := limitOf(k.Limit); return d.accountWide() }) {
		l.shared.accountMu.Lock()
		defer l.shared.accountMu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	return l.shared.st.UpdateRateBuckets(ctx, l.shared.scope, storeKeys(keys), func(have []store.RateBucket) ([]store.RateBucket, error) {
		v := newView(have)
		op(v, l.since(l.now()))
		return v.writes(), nil
	})
}

// readKeys runs op as update does, for reading only: op must write
// nothing. A shared Limiter reads the buckets of keys without locking
// them when its store can (store.RateBucketReader), else in an update
// that writes nothing; when the store cannot be read op is not run.
func (l *Limiter) readKeys(keys []BucketKey, op func(bs Buckets, now time.Duration)) error {
	if l.shared == nil || l.shared.reader == nil {
		return l.update(keys, op)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	have, err := l.shared.reader.ReadRateBuckets(ctx, l.shared.scope, storeKeys(keys))
	if err != nil {
		return err
	}
	op(newView(have), l.since(l.now()))
	return nil
}

// read runs op as update does, for reading only. A shared Limiter's op
// sees every bucket of the scope that is not full, read outside any
// lock; when the store cannot be read op sees full buckets, and read
// returns the store's error.
func (l *Limiter) read(op func(bs Buckets, now time.Duration)) error {
	if l.shared == nil {
		l.mu.Lock()
		defer l.mu.Unlock()
		op(l.buckets, l.since(l.now()))
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	have, err := l.shared.st.RateBuckets(ctx, l.shared.scope)
	op(newView(have), l.since(l.now()))
	return err
}

// Sweep, at most once every sweepEvery by the Limiter's clock (the first
// call at once), merges into a shared Limiter's buckets those saved under
// the account's scope by Limiters of one host (mergeHostBuckets), then
// removes the buckets that are full again, which no operation touched
// since (a name that failed validation once): away from the orders (the
// Renewer calls it when it starts, then from the ticker that saves a
// Limiter of one host). It returns the store's errors; the next sweep is
// due sweepEvery later all the same. A Limiter of one host sweeps its own
// buckets as it goes: Sweep does nothing. It is safe for concurrent use.
func (l *Limiter) Sweep(ctx context.Context) error {
	if l.shared == nil {
		return nil
	}
	sb := l.shared
	sb.sweepMu.Lock()
	defer sb.sweepMu.Unlock()
	now := l.since(l.now())
	if sb.swept && now-sb.lastSweep < sweepEvery {
		return nil
	}
	sb.lastSweep, sb.swept = now, true
	merr := l.mergeHostBuckets(ctx)
	return errors.Join(merr, sb.st.PutRateBuckets(ctx, sb.scope, nil))
}

// mergeBatch bounds the buckets one update of mergeHostBuckets locks.
const mergeBatch = 200

// mergeHostBuckets raises each of the fleet's buckets to the time saved
// for it under the account's own scope when that is later: what a host
// spent before it shared the fleet's budget, or spends still on an older
// version, is spent for the fleet too, and nothing it saves lowers the
// fleet's. A bucket of a limit the Limiter does not keep, or keeps
// unlimited, is skipped; a time further out than its limit's period and
// restoreHorizon (a clock that jumped) is cut to that, as Restore does.
func (l *Limiter) mergeHostBuckets(ctx context.Context) error {
	sb := l.shared
	saved, err := sb.st.RateBuckets(ctx, sb.hostScope)
	if err != nil {
		return err
	}
	wall := l.now()
	want := map[BucketKey]time.Time{}
	for _, rb := range saved {
		b, ok := l.ref(LimitID(rb.Limit), rb.Key)
		if !ok || b.limit.Unlimited() || !rb.Full.After(wall) {
			continue
		}
		want[b.bucketKey()] = minTime(rb.Full, wall.Add(b.limit.Per+restoreHorizon))
	}
	keys := make([]BucketKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), mergeBatch)]
		keys = keys[len(batch):]
		err := l.update(batch, func(bs Buckets, _ time.Duration) {
			for _, k := range batch {
				if tat := want[k].Sub(unixEpoch); tat > bucketTAT(bs, k) {
					bs.Set(k, tat)
				}
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// bucketTAT is bucket k's TAT in bs, 0 when it is missing.
func bucketTAT(bs Buckets, k BucketKey) time.Duration {
	tat, _ := bs.Get(k)
	return tat
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
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
