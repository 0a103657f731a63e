package ratelimit

import "time"

// BucketKey names one bucket: its limit, and its key within the limit
// ("" for an account-wide limit, else a registered domain, an exact set
// of names joined by commas, or a name).
type BucketKey struct {
	Limit LimitID
	Key   string
}

// Buckets is the state a Limiter keeps: each bucket's theoretical arrival
// time (TAT, see gcra.go) as a duration since the Limiter's epoch. A
// bucket that is missing is full. The in-memory Buckets (NewMemoryBuckets)
// is the default, saved to and restored from the store by Changes and
// Restore. The buckets a fleet's hosts share are not a Buckets: they are
// kept in the fleet's store (NewSharedLimiter), and each decision runs on
// an in-memory view of the buckets it locked there.
//
// A Limiter calls its Buckets only with its own lock held, and every
// decision (Reserve reads each bucket an order needs, then writes them
// all) is made within one hold of that lock, so an implementation need
// not be safe for concurrent use by one Limiter; one shared by several
// Limiters must make such a sequence atomic itself.
type Buckets interface {
	// Get returns the TAT of bucket k, and false when the bucket is
	// missing (full).
	Get(k BucketKey) (time.Duration, bool)
	// Set stores tat as the TAT of bucket k.
	Set(k BucketKey, tat time.Duration)
	// Delete drops bucket k: it is full. Deleting a missing bucket does
	// nothing.
	Delete(k BucketKey)
	// Range calls fn for every bucket of limit id, in no particular
	// order. fn may Delete the bucket it is given, and no other.
	Range(id LimitID, fn func(key string, tat time.Duration))
}

// memoryBuckets is the in-memory Buckets: one map per limit.
type memoryBuckets map[LimitID]map[string]time.Duration

var _ Buckets = memoryBuckets(nil)

// NewMemoryBuckets returns empty in-memory Buckets, the state of a
// Limiter on one host (NewLimiter).
func NewMemoryBuckets() Buckets { return memoryBuckets{} }

func (m memoryBuckets) Get(k BucketKey) (time.Duration, bool) {
	tat, ok := m[k.Limit][k.Key]
	return tat, ok
}

func (m memoryBuckets) Set(k BucketKey, tat time.Duration) {
	byKey := m[k.Limit]
	if byKey == nil {
		byKey = map[string]time.Duration{}
		m[k.Limit] = byKey
	}
	byKey[k.Key] = tat
}

func (m memoryBuckets) Delete(k BucketKey) { delete(m[k.Limit], k.Key) }

func (m memoryBuckets) Range(id LimitID, fn func(key string, tat time.Duration)) {
	for key, tat := range m[id] {
		fn(key, tat)
	}
}
