package store

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"
)

// A key pool ([keys] reuse = "pool") lets many certificates share few
// private keys: the renewer gives each order the key of one slot of the
// pool of its key type, and replaces a slot's key once it is older than
// the rotation period. The pool lives in the store, so that a restart
// keeps it and every host of a fleet (PostgreSQL) uses the same keys.
// Which slot a name takes and when a key is too old are the renewer's
// decisions (renewer.KeyPool); the store only keeps the slots.

// KeyOfPool is the KeyKind of a pool key (PoolKey.KeyPEM); store/sealed
// binds a sealed pool key to its PoolKey.ID.
const KeyOfPool KeyKind = "pool"

// PoolKey is the key one slot of a key pool holds. KeyPEM is a secret:
// never log a PoolKey whole.
type PoolKey struct {
	// KeyType and Slot name the slot: the pool of KeyType, slot Slot
	// (from 0).
	KeyType KeyType `json:"key_type"`
	Slot    int     `json:"slot"`
	// ID identifies the key: PublicKeyID of its public key.
	ID string `json:"id"`
	// KeyPEM is the private key, PEM encoded as the renewer writes a
	// certificate's key, so that every certificate on it holds these
	// very bytes.
	KeyPEM []byte `json:"key_pem"`
	// CreatedAt is when the key was made (the renewer's clock).
	CreatedAt time.Time `json:"created_at"`
}

// KeyPool is implemented by a store that keeps a key pool: Badger for one
// host, PostgreSQL for a fleet (one pool for every host). store/sealed
// seals the pool's keys as it seals certificates'. Callers find it with
// As. Its methods are safe for concurrent use, from any number of hosts.
type KeyPool interface {
	// PoolKey returns the key of slot of the pool of keyType, or
	// ErrNotFound when the slot is empty.
	PoolKey(ctx context.Context, keyType KeyType, slot int) (*PoolKey, error)

	// SwapPoolKey puts k in its slot (k.KeyType, k.Slot) when the slot
	// holds the key whose ID is old, or is empty (old "", or the key old
	// was removed meanwhile), and returns k. When the slot holds anything else (another host or
	// order filled or replaced it first) it writes nothing and returns
	// what the slot holds, so that every caller ends up with the same
	// key. The compare and the write are one atomic step. k must have a
	// KeyType, a Slot of 0 or more, an ID and a KeyPEM (ErrInvalid).
	SwapPoolKey(ctx context.Context, old string, k *PoolKey) (*PoolKey, error)

	// RemovePoolKey empties every slot, of any key type, that holds the
	// key whose ID is id, and returns how many it emptied (0: the key is
	// in no slot, which is not an error). The next order for a name of
	// such a slot fills it with a new key.
	RemovePoolKey(ctx context.Context, id string) (int, error)
}

// PublicKeyID returns the ID of a key pool's key: the SHA-256 of the
// DER of its public key's SubjectPublicKeyInfo, in lowercase hex. Two
// certificates share a private key exactly when their keys have the same
// ID.
func PublicKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("public key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// CheckPoolKey checks what SwapPoolKey requires of k, for every
// implementation.
func CheckPoolKey(k *PoolKey) error {
	switch {
	case k == nil:
		return fmt.Errorf("pool key: nil: %w", ErrInvalid)
	case k.KeyType == "" || k.Slot < 0 || k.ID == "" || len(k.KeyPEM) == 0:
		return fmt.Errorf("pool key %s slot %d: key type, slot, ID and key are required: %w", k.KeyType, k.Slot, ErrInvalid)
	}
	return nil
}
