package main

import (
	"context"

	"github.com/certserver/certserver/store"
)

var _ store.KeyPool = (*sharedGate)(nil)

// PoolKey implements store.KeyPool.
func (g *sharedGate) PoolKey(ctx context.Context, keyType store.KeyType, slot int) (*store.PoolKey, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.PoolKey(ctx, keyType, slot)
}

// SwapPoolKey implements store.KeyPool.
func (g *sharedGate) SwapPoolKey(ctx context.Context, old string, k *store.PoolKey) (*store.PoolKey, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.SwapPoolKey(ctx, old, k)
}

// RemovePoolKey implements store.KeyPool.
func (g *sharedGate) RemovePoolKey(ctx context.Context, id string) (int, error) {
	db, err := g.get()
	if err != nil {
		return 0, err
	}
	return db.RemovePoolKey(ctx, id)
}
