package sealed

import (
	"context"
	"fmt"

	"github.com/certserver/certserver/store"
)

var _ store.KeyPool = (*Store)(nil)

// keyPool returns the key pool of the wrapped store.
func (s *Store) keyPool() (store.KeyPool, error) {
	p, ok := store.As[store.KeyPool](s.inner)
	if !ok {
		return nil, fmt.Errorf("the store keeps no key pool")
	}
	return p, nil
}

// openPool returns k with its key opened, as a copy. A key that cannot be
// opened is returned with no KeyPEM alongside the error (wrapping
// ErrOpen), so that the caller can replace it by its ID.
func (s *Store) openPool(k *store.PoolKey) (*store.PoolKey, error) {
	out := *k
	key, err := s.kr.Open(store.KeyOfPool, k.ID, k.KeyPEM)
	if err != nil {
		out.KeyPEM = nil
		return &out, fmt.Errorf("pool key %s slot %d: %w", k.KeyType, k.Slot, err)
	}
	out.KeyPEM = key
	return &out, nil
}

// PoolKey implements store.KeyPool, opening the key. A key that cannot be
// opened is an error wrapping ErrOpen, returned with the PoolKey minus
// its KeyPEM.
func (s *Store) PoolKey(ctx context.Context, keyType store.KeyType, slot int) (*store.PoolKey, error) {
	p, err := s.keyPool()
	if err != nil {
		return nil, err
	}
	k, err := p.PoolKey(ctx, keyType, slot)
	if err != nil {
		return nil, err
	}
	return s.openPool(k)
}

// SwapPoolKey implements store.KeyPool, sealing k's key for its ID (k is
// not changed) and opening the key it returns.
func (s *Store) SwapPoolKey(ctx context.Context, old string, k *store.PoolKey) (*store.PoolKey, error) {
	p, err := s.keyPool()
	if err != nil {
		return nil, err
	}
	if err := store.CheckPoolKey(k); err != nil {
		return nil, fmt.Errorf("swap %w", err)
	}
	key, err := s.seal(store.KeyOfPool, k.ID, k.KeyPEM)
	if err != nil {
		return nil, err
	}
	sk := *k
	sk.KeyPEM = key
	cur, err := p.SwapPoolKey(ctx, old, &sk)
	if err != nil {
		return nil, err
	}
	if cur.ID == k.ID {
		out := *k
		return &out, nil
	}
	return s.openPool(cur)
}

// RemovePoolKey implements store.KeyPool. A wrapped store without a
// pool holds no pool key: it removes nothing.
func (s *Store) RemovePoolKey(ctx context.Context, id string) (int, error) {
	p, err := s.keyPool()
	if err != nil {
		return 0, nil
	}
	return p.RemovePoolKey(ctx, id)
}
