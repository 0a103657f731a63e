package store

import (
	"context"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// PutAccount implements Store.
func (b *Badger) PutAccount(ctx context.Context, a *Account) error {
	if a == nil || a.ID == "" {
		return fmt.Errorf("put account: missing id: %w", ErrInvalid)
	}
	val, err := encodeJSON(a)
	if err != nil {
		return fmt.Errorf("put account %s: %w", a.ID, err)
	}
	err = b.update(ctx, func(txn *badger.Txn) error {
		return txn.Set(key(prefixAccount, a.ID), val)
	})
	if err != nil {
		return fmt.Errorf("put account %s: %w", a.ID, err)
	}
	return nil
}

// GetAccount implements Store.
func (b *Badger) GetAccount(ctx context.Context, id string) (*Account, error) {
	var a Account
	err := b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(key(prefixAccount, id))
		if err != nil {
			return notFound(err)
		}
		return readJSON(item, &a)
	})
	if err != nil {
		return nil, fmt.Errorf("get account %s: %w", id, err)
	}
	return &a, nil
}

// PutChallenge implements Store. The record carries its expiry, checked
// against the store's clock on every read, and a Badger TTL a second past
// it so that compaction drops it eventually. A token already expired is
// not written (and any earlier one is removed).
func (b *Badger) PutChallenge(ctx context.Context, token, keyAuth string, expires time.Time) error {
	if err := ValidateChallenge(token, keyAuth); err != nil {
		return fmt.Errorf("put challenge: %w", err)
	}
	err := b.update(ctx, func(txn *badger.Txn) error {
		return b.putChallenge(txn, token, keyAuth, expires)
	})
	if err != nil {
		return fmt.Errorf("put challenge %s: %w", token, err)
	}
	return nil
}

// putChallenge writes what PutChallenge stores in txn.
func (b *Badger) putChallenge(txn *badger.Txn, token, keyAuth string, expires time.Time) error {
	ttl := expires.Sub(b.now())
	if ttl <= 0 {
		return txn.Delete(key(prefixToken, token))
	}
	val, err := encodeJSON(&challengeRecord{KeyAuth: keyAuth, Expires: expires})
	if err != nil {
		return err
	}
	return txn.SetEntry(badger.NewEntry(key(prefixToken, token), val).WithTTL(ttl + time.Second))
}

// GetChallenge implements Store.
func (b *Badger) GetChallenge(ctx context.Context, token string) (string, error) {
	var rec challengeRecord
	err := b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(key(prefixToken, token))
		if err != nil {
			return notFound(err)
		}
		return readJSON(item, &rec)
	})
	if err == nil && !b.now().Before(rec.Expires) {
		err = fmt.Errorf("expired: %w", ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("get challenge %s: %w", token, err)
	}
	return rec.KeyAuth, nil
}

// DeleteChallenge implements Store.
func (b *Badger) DeleteChallenge(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	err := b.update(ctx, func(txn *badger.Txn) error {
		return txn.Delete(key(prefixToken, token))
	})
	if err != nil {
		return fmt.Errorf("delete challenge %s: %w", token, err)
	}
	return nil
}
