package main

import (
	"context"

	"github.com/certserver/certserver/store"
)

// The fleet's one ACME account and one rate-limit budget pass through the
// gate: until the database is open they answer store.ErrUnavailable, so
// that nothing registers and nothing reserves meanwhile.
var (
	_ store.AccountLocker     = (*sharedGate)(nil)
	_ store.RateBucketUpdater = (*sharedGate)(nil)
)

// LockAccount implements store.AccountLocker.
func (g *sharedGate) LockAccount(ctx context.Context, id string) (func(), error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.LockAccount(ctx, id)
}

// UpdateRateBuckets implements store.RateBucketUpdater.
func (g *sharedGate) UpdateRateBuckets(ctx context.Context, scope string, keys []store.RateBucket, fn func(have []store.RateBucket) ([]store.RateBucket, error)) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.UpdateRateBuckets(ctx, scope, keys, fn)
}
