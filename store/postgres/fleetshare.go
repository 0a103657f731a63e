package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/certserver/certserver/store"
)

var (
	_ store.AccountLocker     = (*Store)(nil)
	_ store.RateBucketUpdater = (*Store)(nil)
	_ store.RateBucketReader  = (*Store)(nil)
)

// The classes of the fleet's two-key advisory locks (PostgreSQL keeps
// them apart from the one-key locks of migrations and the renewer role):
// the first key says what is locked, the second is a hash of which one
// ("acct" and "rbkt" in ASCII). Two names whose hashes collide share a
// lock: they wait for each other, which is slower but never wrong.
const (
	accountLockClass = 0x61636374
	bucketLockClass  = 0x72626b74
)

// lockKey hashes the parts of a lock's name (FNV-1a over the parts, each
// ended by NUL) to the second key of a two-key advisory lock.
func lockKey(parts ...string) int32 {
	h := fnv.New32a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return int32(h.Sum32())
}

// LockAccount implements store.AccountLocker with a session advisory lock
// on a connection of the pool, held until unlock: PostgreSQL releases it
// when the session ends, so a host that dies while it holds the lock
// does not keep it. unlock returns the connection to the pool, or closes
// it when the lock cannot be released (the session, and the lock with it,
// ends then).
func (s *Store) LockAccount(ctx context.Context, id string) (func(), error) {
	key := lockKey(id)
	var c *pgxpool.Conn
	err := s.retry(ctx, func() error {
		var err error
		if c, err = s.pool.Acquire(ctx); err != nil {
			return err
		}
		if _, err = c.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", int32(accountLockClass), key); err != nil {
			// The statement may have been cut off after the lock was
			// granted: only ending the session is sure to release it.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
			c.Conn().Close(cctx)
			cancel()
			c.Release()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lock account %s: %w", id, err)
	}
	unlock := func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		var released bool
		if err := c.QueryRow(uctx, "SELECT pg_advisory_unlock($1, $2)", int32(accountLockClass), key).Scan(&released); err != nil || !released {
			c.Conn().Close(uctx)
		}
		c.Release()
	}
	return unlock, nil
}

// UpdateRateBuckets implements store.RateBucketUpdater in one
// transaction: it takes a transaction advisory lock per bucket (in the
// order of their keys, the same on every host, so that two updates never
// wait for each other in a cycle), reads the buckets that exist in the
// same round trip, calls fn, and writes what fn returns in one statement.
// Buckets missing from the table take no row and no lock on one: a
// bucket that is full costs nothing. The store's clock decides nothing
// here; the caller's times are written as given.
func (s *Store) UpdateRateBuckets(ctx context.Context, scope string, keys []store.RateBucket, fn func(have []store.RateBucket) ([]store.RateBucket, error)) error {
	if err := store.ValidateRateScope(scope); err != nil {
		return fmt.Errorf("update rate buckets: %w", err)
	}
	type bucketID struct{ limit, key string }
	known := make(map[bucketID]struct{}, len(keys))
	var (
		locks  []int32
		limits []string
		names  []string
	)
	for _, k := range keys {
		if err := store.ValidateRateBucket(k); err != nil {
			return fmt.Errorf("update rate buckets of %s: %w", scope, err)
		}
		id := bucketID{k.Limit, k.Key}
		if _, dup := known[id]; dup {
			continue
		}
		known[id] = struct{}{}
		locks = append(locks, lockKey(scope, k.Limit, k.Key))
		limits, names = append(limits, k.Limit), append(names, k.Key)
	}
	slices.Sort(locks)
	locks = slices.Compact(locks)
	err := s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		var b pgx.Batch
		b.Queue("SELECT count(pg_advisory_xact_lock($1, k)) FROM unnest($2::int[]) AS k", int32(bucketLockClass), locks)
		b.Queue(`SELECT r."limit", r.key, r.full_ns FROM rate_buckets r
			JOIN unnest($2::text[], $3::text[]) AS w(l, k) ON r."limit" = w.l AND r.key = w.k
			WHERE r.scope = $1`, scope, limits, names)
		br := tx.SendBatch(ctx, &b)
		have, err := readLockedBuckets(br)
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		writes, err := fn(have)
		if err != nil {
			return err
		}
		if len(writes) == 0 {
			return nil
		}
		// The last write of a bucket wins.
		last := make(map[bucketID]int, len(writes))
		for i, w := range writes {
			id := bucketID{w.Limit, w.Key}
			if _, ok := known[id]; !ok {
				return fmt.Errorf("bucket %q %q was not locked: %w", w.Limit, w.Key, store.ErrInvalid)
			}
			last[id] = i
		}
		wl := make([]string, 0, len(last))
		wk := make([]string, 0, len(last))
		wf := make([]int64, 0, len(last))
		for i, w := range writes {
			if last[bucketID{w.Limit, w.Key}] != i {
				continue
			}
			var full int64
			if !w.Full.IsZero() {
				full = nanos(w.Full)
			}
			wl, wk, wf = append(wl, w.Limit), append(wk, w.Key), append(wf, full)
		}
		// A zero time removes the bucket (fn found it full); any other
		// is written as given.
		_, err = tx.Exec(ctx, `WITH w AS (SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[]) AS w(l, k, f)),
			d AS (DELETE FROM rate_buckets r USING w WHERE r.scope = $1 AND r."limit" = w.l AND r.key = w.k AND w.f = 0)
			INSERT INTO rate_buckets (scope, "limit", key, full_ns) SELECT $1, l, k, f FROM w WHERE f <> 0
			ON CONFLICT (scope, "limit", key) DO UPDATE SET full_ns = EXCLUDED.full_ns`,
			scope, wl, wk, wf)
		return err
	})
	if err != nil {
		return fmt.Errorf("update rate buckets of %s: %w", scope, err)
	}
	return nil
}

// ReadRateBuckets implements store.RateBucketReader: one SELECT, no
// transaction, no lock. As in UpdateRateBuckets the store's clock decides
// nothing: a bucket whose Full time has passed is returned as it is.
func (s *Store) ReadRateBuckets(ctx context.Context, scope string, keys []store.RateBucket) ([]store.RateBucket, error) {
	if err := store.ValidateRateScope(scope); err != nil {
		return nil, fmt.Errorf("read rate buckets: %w", err)
	}
	limits := make([]string, len(keys))
	names := make([]string, len(keys))
	for i, k := range keys {
		if err := store.ValidateRateBucket(k); err != nil {
			return nil, fmt.Errorf("read rate buckets of %s: %w", scope, err)
		}
		limits[i], names[i] = k.Limit, k.Key
	}
	var out []store.RateBucket
	err := s.query(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT DISTINCT r."limit", r.key, r.full_ns FROM rate_buckets r
			JOIN unnest($2::text[], $3::text[]) AS w(l, k) ON r."limit" = w.l AND r.key = w.k
			WHERE r.scope = $1`, scope, limits, names)
		if err != nil {
			return err
		}
		out, err = scanRateBuckets(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read rate buckets of %s: %w", scope, err)
	}
	return out, nil
}

// readLockedBuckets reads the answers of UpdateRateBuckets' batch: the
// locks taken, then the buckets.
func readLockedBuckets(br pgx.BatchResults) ([]store.RateBucket, error) {
	if _, err := br.Exec(); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	return scanRateBuckets(rows)
}
