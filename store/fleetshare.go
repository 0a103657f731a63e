package store

import "context"

// A fleet presents itself to each CA as one careful client: one ACME
// account per CA, registered once for the whole fleet, and one rate-limit
// budget per account, spent atomically by every host. A store shared by
// the hosts of a fleet (PostgreSQL) offers the two abilities below; a
// store of one host (Badger) needs neither, since one process decides
// alone. Callers find them with As.

// AccountLocker is implemented by a shared store whose hosts must not
// register the same ACME account twice: the host that finds no account
// (or an account the CA has forgotten) takes the account's lock, reads
// the record again, and registers only when it still must; the others
// wait for the lock and then find the record it stored.
type AccountLocker interface {
	// LockAccount takes the fleet-wide lock of the account with the given
	// ID, waiting for it until ctx ends (ctx's error, wrapped), and
	// returns the function that releases it; unlock must be called once,
	// and may be called after ctx ends. The lock is also released when
	// the holder's connection to the store ends (a host that dies while
	// registering does not keep it). A store that cannot be reached
	// returns an error wrapping ErrUnavailable.
	LockAccount(ctx context.Context, id string) (unlock func(), err error)
}

// RateBucketUpdater is implemented by a shared store that keeps the rate
// limit buckets of an account for every host at once: each decision of a
// Limiter (reserve an order's tokens, give them back, charge a failure,
// drain a bucket the CA named) is one UpdateRateBuckets, atomic across the
// fleet, so that all hosts together spend the account's limits once.
// Buckets are the same RateBucket records PutRateBuckets saves, in the
// same scope: Full is the bucket's theoretical arrival time, an absolute
// time, so hosts whose processes started at different moments agree.
type RateBucketUpdater interface {
	// UpdateRateBuckets locks the buckets of scope named by keys (their
	// Limit and Key; Full is ignored) against every other
	// UpdateRateBuckets that names any of them, on any host, reads them
	// and calls fn with those that exist (a missing bucket is full, and
	// so is one whose Full time has passed), in no particular order. fn
	// returns the buckets to write: each replaces the bucket of its Limit
	// and Key, and one whose Full is zero is removed;
	// buckets fn does not return stay as they are. fn's writes must name
	// only buckets of keys. All of it is one transaction: when fn or the
	// store fails nothing is written. fn may be called more than once
	// (the store retried) and must not keep state across calls. scope and
	// keys are checked as PutRateBuckets checks them (ErrInvalid); a
	// store that cannot be reached returns an error wrapping
	// ErrUnavailable, and fn's own error is returned as it is.
	UpdateRateBuckets(ctx context.Context, scope string, keys []RateBucket, fn func(have []RateBucket) ([]RateBucket, error)) error
}

// RateBucketReader is implemented by a shared store that can read some of
// an account's buckets without the locks of UpdateRateBuckets: a check
// that decides nothing (does a name's failure bucket hold a token?), made
// again under the locks by the update that follows it.
type RateBucketReader interface {
	// ReadRateBuckets returns the buckets of scope named by keys (their
	// Limit and Key; Full is ignored) that exist, in no particular order,
	// taking no lock and writing nothing: another host may change them
	// at once. scope and keys are checked as in UpdateRateBuckets
	// (ErrInvalid); a store that cannot be reached returns an error
	// wrapping ErrUnavailable.
	ReadRateBuckets(ctx context.Context, scope string, keys []RateBucket) ([]RateBucket, error)
}
