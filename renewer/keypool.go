package renewer

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/certserver/certserver/store"
)

// Defaults of a KeyPool.
const (
	DefaultPoolSize     = 16
	DefaultPoolRotation = 30 * 24 * time.Hour
)

// KeyPool makes orders share their private keys ([keys] reuse = "pool"):
// instead of a new key per certificate, each order takes the key of one
// of Size slots of the pool of the configured key type, kept in the store
// (store.KeyPool) so that a restart keeps it and every host of a fleet
// uses the same keys.
//
// A name's slot is the first 8 bytes of the SHA-256 of its order's
// primary name, as a big-endian integer, modulo Size (PoolSlot): the
// renewals of a name take the same slot, and so keep their key until it
// is rotated. A slot's key older than Rotation is not given to another
// order: the first order that finds it so makes a new key and puts it in
// the slot, and the certificates on the old key move to the new one as
// they renew. A slot that is empty, holds a key that does not parse, is
// not of the key type, or cannot be opened (sealed under a
// key-encryption key no longer configured) is filled with a new key the
// same way. A change of key type or of Size takes effect at the next
// order of each name: another pool, or another slot.
type KeyPool struct {
	// Size is how many keys the pool of each key type holds. Default
	// DefaultPoolSize.
	Size int
	// Rotation is the age at which a pool key is replaced. Default
	// DefaultPoolRotation.
	Rotation time.Duration
}

// PoolSlot returns the slot of a pool of size slots that the orders for
// name take.
func PoolSlot(name string, size int) int {
	sum := sha256.Sum256([]byte(name))
	return int(binary.BigEndian.Uint64(sum[:8]) % uint64(size))
}

// poolKey returns the key of the pool slot of name, and the slot's
// record (its PEM, ID and age), filling or replacing the slot when
// KeyPool says so.
func (a *ACMEIssuer) poolKey(ctx context.Context, log *slog.Logger, name string) (crypto.Signer, *store.PoolKey, error) {
	p := a.cfg.KeyPool
	slot := PoolSlot(name, p.Size)
	log = log.With("key_type", string(a.cfg.KeyType), "slot", slot)
	now := a.cfg.Now()
	cur, err := a.pool.PoolKey(ctx, a.cfg.KeyType, slot)
	old := ""
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil && cur == nil:
		return nil, nil, fmt.Errorf("pool key: %w", err)
	case err != nil:
		log.Warn("pool key cannot be read; replacing it", "key_id", cur.ID, "error", err)
		old = cur.ID
	default:
		old = cur.ID
		key, why := a.usablePoolKey(cur, now)
		if why == "" {
			return key, cur, nil
		}
		log.Info("replacing the pool key: "+why, "key_id", cur.ID, "created_at", cur.CreatedAt)
	}
	key, err := generateKey(a.cfg.KeyType)
	if err != nil {
		return nil, nil, fmt.Errorf("pool key: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pool key: %w", err)
	}
	id, err := store.PublicKeyID(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("pool key: %w", err)
	}
	got, err := a.pool.SwapPoolKey(ctx, old, &store.PoolKey{KeyType: a.cfg.KeyType, Slot: slot, ID: id, KeyPEM: keyPEM, CreatedAt: now})
	if err != nil {
		return nil, nil, fmt.Errorf("pool key: %w", err)
	}
	if got.ID == id {
		log.Info("new pool key", "key_id", id)
		return key, got, nil
	}
	// Another order (or host) filled the slot first: take its key.
	k, why := a.usablePoolKey(got, now)
	if why != "" {
		return nil, nil, fmt.Errorf("pool key %s slot %d: the key another order put there is %s", a.cfg.KeyType, slot, why)
	}
	return k, got, nil
}

// poolKeyKept checks, once the CA issued a certificate on the pool key
// k, that k was not taken out of the pool meanwhile (revoked for
// keyCompromise, certserver.AdminAPI.removePoolKey), before the
// certificate is stored: the slot still holds k, or holds a key that
// replaced k for its age (rotation, which compromises nothing). A slot
// that is empty, or whose k was replaced before its rotation age, lost k
// to a removal: the certificate is on a compromised key, and the error
// says so (the order fails, nothing is stored, and the name is ordered
// again, onto a new key). A slot that cannot be read fails the order
// the same way: a certificate is never stored unchecked.
func (a *ACMEIssuer) poolKeyKept(ctx context.Context, k *store.PoolKey) error {
	cur, err := a.pool.PoolKey(ctx, k.KeyType, k.Slot)
	switch {
	case cur != nil && cur.ID == k.ID:
		return nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("pool key %s slot %d: cannot check that key %.12s is still in the pool, certificate discarded: %w", k.KeyType, k.Slot, k.ID, err)
	case err == nil && a.cfg.Now().Sub(k.CreatedAt) >= a.cfg.KeyPool.Rotation:
		return nil // rotated out while the order ran
	}
	return fmt.Errorf("pool key %s slot %d: key %.12s was removed from the key pool while the order ran (revoked for keyCompromise): the certificate issued on it is discarded and the name ordered again onto a new key", k.KeyType, k.Slot, k.ID)
}

// usablePoolKey returns k's key, or why an order may not take it.
func (a *ACMEIssuer) usablePoolKey(k *store.PoolKey, now time.Time) (crypto.Signer, string) {
	key, err := store.ParseKey(k.KeyPEM)
	switch {
	case err != nil:
		return nil, "it does not parse"
	case store.KeyTypeOf(key.Public()) != a.cfg.KeyType:
		return nil, "it is of type " + string(store.KeyTypeOf(key.Public()))
	case now.Sub(k.CreatedAt) >= a.cfg.KeyPool.Rotation:
		return nil, fmt.Sprintf("it is older than the rotation period (%s)", a.cfg.KeyPool.Rotation)
	}
	return key, ""
}
