package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
)

// PutAccount implements store.Store.
func (s *Store) PutAccount(ctx context.Context, a *store.Account) error {
	if a == nil || a.ID == "" {
		return fmt.Errorf("put account: missing id: %w", store.ErrInvalid)
	}
	rec := *a
	utc(&rec.CreatedAt)
	val, err := json.Marshal(&rec)
	if err != nil {
		return fmt.Errorf("put account %s: %w", a.ID, err)
	}
	err = s.query(ctx, func(q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO accounts (id, record) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record`, a.ID, val)
		return err
	})
	if err != nil {
		return fmt.Errorf("put account %s: %w", a.ID, err)
	}
	return nil
}

// GetAccount implements store.Store.
func (s *Store) GetAccount(ctx context.Context, id string) (*store.Account, error) {
	var a store.Account
	err := s.query(ctx, func(q querier) error {
		var val []byte
		if err := q.QueryRow(ctx, "SELECT record FROM accounts WHERE id = $1", id).Scan(&val); err != nil {
			return notFound(err)
		}
		return json.Unmarshal(val, &a)
	})
	if err != nil {
		return nil, fmt.Errorf("get account %s: %w", id, err)
	}
	utc(&a.CreatedAt)
	return &a, nil
}

// PutChallenge implements store.Store under the next version. A token
// already expired is not written (and any earlier one is removed, leaving
// a tombstone).
func (s *Store) PutChallenge(ctx context.Context, token, keyAuth string, expires time.Time) error {
	if err := store.ValidateChallenge(token, keyAuth); err != nil {
		return fmt.Errorf("put challenge: %w", err)
	}
	if !expires.After(s.now()) {
		if err := s.deleteChallenge(ctx, token); err != nil {
			return fmt.Errorf("put challenge %s: %w", token, err)
		}
		return nil
	}
	err := s.versioned(ctx, func(tx pgx.Tx) (uint64, error) {
		var v int64
		err := tx.QueryRow(ctx, `WITH v AS (SELECT nextval('change_version') AS v),
			t AS (DELETE FROM tombstones WHERE kind = 'challenge' AND key = $1)
			INSERT INTO challenges (token, key_auth, expires_ns, version) SELECT $1, $2, $3, v FROM v
			ON CONFLICT (token) DO UPDATE SET key_auth = EXCLUDED.key_auth, expires_ns = EXCLUDED.expires_ns, version = EXCLUDED.version
			RETURNING version`, token, keyAuth, nanos(expires)).Scan(&v)
		return uint64(v), err
	})
	if err != nil {
		return fmt.Errorf("put challenge %s: %w", token, err)
	}
	return nil
}

// GetChallenge implements store.Store: a token whose expiry has passed by
// the store's clock reads as missing.
func (s *Store) GetChallenge(ctx context.Context, token string) (string, error) {
	var (
		keyAuth string
		expires int64
	)
	err := s.query(ctx, func(q querier) error {
		return notFound(q.QueryRow(ctx, "SELECT key_auth, expires_ns FROM challenges WHERE token = $1", token).Scan(&keyAuth, &expires))
	})
	if err == nil && nanos(s.now()) >= expires {
		err = fmt.Errorf("expired: %w", store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("get challenge %s: %w", token, err)
	}
	return keyAuth, nil
}

// DeleteChallenge implements store.Store, leaving a tombstone under the
// next version when there was a token to remove.
func (s *Store) DeleteChallenge(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	if err := s.deleteChallenge(ctx, token); err != nil {
		return fmt.Errorf("delete challenge %s: %w", token, err)
	}
	return nil
}

// deleteChallenge removes token with a tombstone, if it exists.
func (s *Store) deleteChallenge(ctx context.Context, token string) error {
	return s.versioned(ctx, func(tx pgx.Tx) (uint64, error) {
		var v int64
		err := tx.QueryRow(ctx, `WITH d AS (DELETE FROM challenges WHERE token = $1 RETURNING token)
			INSERT INTO tombstones (kind, key, version) SELECT 'challenge', token, nextval('change_version') FROM d
			ON CONFLICT (kind, key) DO UPDATE SET version = EXCLUDED.version, deleted_at = now()
			RETURNING version`, token).Scan(&v)
		if err == pgx.ErrNoRows {
			return 0, nil
		}
		return uint64(v), err
	})
}

// PutRateBuckets implements store.Store in one transaction. A bucket
// already full is removed, and so is every bucket of scope whose Full time
// has passed.
func (s *Store) PutRateBuckets(ctx context.Context, scope string, bs []store.RateBucket) error {
	if err := store.ValidateRateScope(scope); err != nil {
		return fmt.Errorf("put rate buckets: %w", err)
	}
	for _, rb := range bs {
		if err := store.ValidateRateBucket(rb); err != nil {
			return fmt.Errorf("put rate buckets of %s: %w", scope, err)
		}
	}
	now := nanos(s.now())
	limits := make([]string, len(bs))
	keys := make([]string, len(bs))
	fulls := make([]int64, len(bs))
	for i, rb := range bs {
		limits[i], keys[i], fulls[i] = rb.Limit, rb.Key, nanos(rb.Full)
	}
	err := s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		// The last of a bucket given twice wins, as in Badger.
		if _, err := tx.Exec(ctx, `INSERT INTO rate_buckets (scope, "limit", key, full_ns)
			SELECT DISTINCT ON (l, k) $1, l, k, f
			FROM unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS b(l, k, f, pos)
			ORDER BY l, k, pos DESC
			ON CONFLICT (scope, "limit", key) DO UPDATE SET full_ns = EXCLUDED.full_ns`,
			scope, limits, keys, fulls); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM rate_buckets WHERE scope = $1 AND full_ns <= $2`, scope, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("put rate buckets of %s: %w", scope, err)
	}
	return nil
}

// RateBuckets implements store.Store.
func (s *Store) RateBuckets(ctx context.Context, scope string) ([]store.RateBucket, error) {
	if err := store.ValidateRateScope(scope); err != nil {
		return nil, fmt.Errorf("rate buckets: %w", err)
	}
	var out []store.RateBucket
	err := s.query(ctx, func(q querier) error {
		rows, err := q.Query(ctx, `SELECT "limit", key, full_ns FROM rate_buckets
			WHERE scope = $1 AND full_ns > $2 ORDER BY "limit", key`, scope, nanos(s.now()))
		if err != nil {
			return err
		}
		out, err = scanRateBuckets(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rate buckets of %s: %w", scope, err)
	}
	return out, nil
}

// scanRateBuckets reads rows of ("limit", key, full_ns) into buckets, and
// closes rows.
func scanRateBuckets(rows pgx.Rows) ([]store.RateBucket, error) {
	defer rows.Close()
	var out []store.RateBucket
	for rows.Next() {
		var (
			rb   store.RateBucket
			full int64
		)
		if err := rows.Scan(&rb.Limit, &rb.Key, &full); err != nil {
			return nil, err
		}
		rb.Full = fromNanos(full)
		out = append(out, rb)
	}
	return out, rows.Err()
}
