package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/dgraph-io/badger/v4"
)

var _ KeyPool = (*Badger)(nil)

// poolKey returns the Badger key of slot of the pool of keyType.
func poolKey(keyType KeyType, slot int) []byte {
	return key(prefixPool, string(keyType)+"\x00"+strconv.Itoa(slot))
}

// PoolKey implements KeyPool.
func (b *Badger) PoolKey(ctx context.Context, keyType KeyType, slot int) (*PoolKey, error) {
	var k PoolKey
	err := b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(poolKey(keyType, slot))
		if err != nil {
			return notFound(err)
		}
		return readJSON(item, &k)
	})
	if err != nil {
		return nil, fmt.Errorf("pool key %s slot %d: %w", keyType, slot, err)
	}
	return &k, nil
}

// SwapPoolKey implements KeyPool: the read and the write are one
// transaction, and Badger's writes are one at a time (update).
func (b *Badger) SwapPoolKey(ctx context.Context, old string, k *PoolKey) (*PoolKey, error) {
	if err := CheckPoolKey(k); err != nil {
		return nil, fmt.Errorf("swap %w", err)
	}
	val, err := encodeJSON(k)
	if err != nil {
		return nil, fmt.Errorf("swap pool key %s slot %d: %w", k.KeyType, k.Slot, err)
	}
	var out *PoolKey
	err = b.update(ctx, func(txn *badger.Txn) error {
		out = nil
		item, err := txn.Get(poolKey(k.KeyType, k.Slot))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			// Empty: k fills it.
		case err != nil:
			return err
		default:
			var cur PoolKey
			if err := readJSON(item, &cur); err != nil {
				return err
			}
			if cur.ID != old {
				out = &cur
				return nil
			}
		}
		out = k
		return txn.Set(poolKey(k.KeyType, k.Slot), val)
	})
	if err != nil {
		return nil, fmt.Errorf("swap pool key %s slot %d: %w", k.KeyType, k.Slot, err)
	}
	return out, nil
}

// RemovePoolKey implements KeyPool, reading every slot: a pool holds a
// few dozen keys.
func (b *Badger) RemovePoolKey(ctx context.Context, id string) (int, error) {
	n := 0
	err := b.update(ctx, func(txn *badger.Txn) error {
		n = 0
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixPool), PrefetchValues: true})
		defer it.Close()
		var del [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			var k PoolKey
			if err := readJSON(it.Item(), &k); err != nil {
				return err
			}
			if k.ID == id {
				del = append(del, it.Item().KeyCopy(nil))
			}
		}
		for _, d := range del {
			if err := txn.Delete(d); err != nil {
				return err
			}
		}
		n = len(del)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("remove pool key %s: %w", id, err)
	}
	return n, nil
}
