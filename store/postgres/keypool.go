package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
)

var _ store.KeyPool = (*Store)(nil)

// PoolKey implements store.KeyPool.
func (s *Store) PoolKey(ctx context.Context, keyType store.KeyType, slot int) (*store.PoolKey, error) {
	var k *store.PoolKey
	err := s.query(ctx, func(q querier) error {
		k = &store.PoolKey{KeyType: keyType, Slot: slot}
		var created int64
		err := q.QueryRow(ctx, `SELECT id, key_pem, created_ns FROM key_pool WHERE key_type = $1 AND slot = $2`,
			string(keyType), slot).Scan(&k.ID, &k.KeyPEM, &created)
		k.CreatedAt = fromNanos(created)
		return notFound(err)
	})
	if err != nil {
		return nil, fmt.Errorf("pool key %s slot %d: %w", keyType, slot, err)
	}
	return k, nil
}

// SwapPoolKey implements store.KeyPool in one statement: an upsert that
// replaces the slot's row only where it still holds the key old, so that
// of the hosts replacing one slot at once exactly one writes; the others
// read the row that won.
func (s *Store) SwapPoolKey(ctx context.Context, old string, k *store.PoolKey) (*store.PoolKey, error) {
	if err := store.CheckPoolKey(k); err != nil {
		return nil, fmt.Errorf("swap %w", err)
	}
	var out *store.PoolKey
	err := s.query(ctx, func(q querier) error {
		// A row removed between the two statements is filled on the
		// next round.
		for range 3 {
			tag, err := q.Exec(ctx, `INSERT INTO key_pool (key_type, slot, id, key_pem, created_ns)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (key_type, slot) DO UPDATE SET id = EXCLUDED.id, key_pem = EXCLUDED.key_pem, created_ns = EXCLUDED.created_ns
				WHERE key_pool.id = $6`,
				string(k.KeyType), k.Slot, k.ID, k.KeyPEM, nanos(k.CreatedAt), old)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				cp := *k
				out = &cp
				return nil
			}
			cur := &store.PoolKey{KeyType: k.KeyType, Slot: k.Slot}
			var created int64
			err = q.QueryRow(ctx, `SELECT id, key_pem, created_ns FROM key_pool WHERE key_type = $1 AND slot = $2`,
				string(k.KeyType), k.Slot).Scan(&cur.ID, &cur.KeyPEM, &created)
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			cur.CreatedAt = fromNanos(created)
			out = cur
			return nil
		}
		return fmt.Errorf("the slot changed under three swaps in a row")
	})
	if err != nil {
		return nil, fmt.Errorf("swap pool key %s slot %d: %w", k.KeyType, k.Slot, err)
	}
	return out, nil
}

// RemovePoolKey implements store.KeyPool.
func (s *Store) RemovePoolKey(ctx context.Context, id string) (int, error) {
	n := 0
	err := s.query(ctx, func(q querier) error {
		tag, err := q.Exec(ctx, `DELETE FROM key_pool WHERE id = $1`, id)
		n = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("remove pool key %s: %w", id, err)
	}
	return n, nil
}
