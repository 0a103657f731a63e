package main

import (
	"context"
	"time"

	"github.com/certserver/certserver/store"
)

var _ store.Verdicts = (*sharedGate)(nil)

// ClaimVerdict implements store.Verdicts.
func (g *sharedGate) ClaimVerdict(ctx context.Context, name, host string, ttl time.Duration) (store.Verdict, bool, error) {
	db, err := g.get()
	if err != nil {
		return store.Verdict{}, false, err
	}
	return db.ClaimVerdict(ctx, name, host, ttl)
}

// GetVerdict implements store.Verdicts.
func (g *sharedGate) GetVerdict(ctx context.Context, name string) (store.Verdict, bool, error) {
	db, err := g.get()
	if err != nil {
		return store.Verdict{}, false, err
	}
	return db.GetVerdict(ctx, name)
}

// PutVerdict implements store.Verdicts.
func (g *sharedGate) PutVerdict(ctx context.Context, v store.Verdict, ttl time.Duration) (store.Verdict, error) {
	db, err := g.get()
	if err != nil {
		return store.Verdict{}, err
	}
	return db.PutVerdict(ctx, v, ttl)
}
