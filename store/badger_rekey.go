package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
)

var _ KeyRewriter = (*Badger)(nil)

// keyPrefix returns the key prefix of the records of kind.
func keyPrefix(kind KeyKind) (string, error) {
	switch kind {
	case KeyOfCertificate:
		return prefixCert, nil
	case KeyOfAccount:
		return prefixAccount, nil
	}
	return "", fmt.Errorf("unknown kind of key record %q: %w", kind, ErrInvalid)
}

// RewriteKeys implements KeyRewriter in one read-write transaction.
func (b *Badger) RewriteKeys(ctx context.Context, kind KeyKind, after string, limit int, fn func(id string, key []byte) ([]byte, error)) (string, error) {
	if kind == KeyOfPool {
		return b.rewritePoolKeys(ctx, after, limit, fn)
	}
	prefix, err := keyPrefix(kind)
	if err != nil {
		return "", err
	}
	if limit < 1 {
		return "", nil
	}
	var last string
	err = b.update(ctx, func(txn *badger.Txn) error {
		last = ""
		var inters changeSet // only for the intermediates it writes
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		opts.PrefetchSize = min(limit, 100)
		it := txn.NewIterator(opts)
		defer it.Close()
		start := key(prefix, after)
		n := 0
		for it.Seek(start); it.Valid() && n < limit; it.Next() {
			item := it.Item()
			if after != "" && bytes.Equal(item.Key(), start) {
				continue
			}
			n++
			id := string(item.Key()[len(prefix):])
			last = id
			if err := b.rewriteKey(txn, kind, item, id, fn, &inters); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, badger.ErrTxnTooBig):
		return "", fmt.Errorf("rewrite %d %s keys after %q: %w", limit, kind, after, ErrBatchTooLarge)
	case err != nil:
		return "", fmt.Errorf("rewrite %s keys after %q: %w", kind, after, err)
	}
	return last, nil
}

// rewriteKey writes in txn the record of kind in item with the key fn
// returns for it, when it returns one.
func (b *Badger) rewriteKey(txn *badger.Txn, kind KeyKind, item *badger.Item, id string, fn func(id string, key []byte) ([]byte, error), changed *changeSet) error {
	switch kind {
	case KeyOfCertificate:
		var c Certificate
		if err := b.readCertificate(txn, item, &c); err != nil {
			return fmt.Errorf("certificate %s: %w", id, err)
		}
		k, err := fn(id, c.KeyPEM)
		if err != nil || k == nil {
			return err
		}
		c.KeyPEM = k
		return b.setCertificate(txn, &c, changed)
	default:
		var a Account
		if err := readJSON(item, &a); err != nil {
			return fmt.Errorf("account %s: %w", id, err)
		}
		k, err := fn(id, a.KeyPEM)
		if err != nil || k == nil {
			return err
		}
		a.KeyPEM = k
		val, err := json.Marshal(&a)
		if err != nil {
			return err
		}
		return txn.Set(key(prefixAccount, id), val)
	}
}

// CountKeys implements KeyRewriter by counting keys only: no record is
// read, but for the key pool's few.
func (b *Badger) CountKeys(ctx context.Context, kind KeyKind) (int, error) {
	if kind == KeyOfPool {
		var n int
		err := b.view(ctx, func(txn *badger.Txn) error {
			ids, _, err := poolKeysByID(txn)
			n = len(ids)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("count %s keys: %w", kind, err)
		}
		return n, nil
	}
	prefix, err := keyPrefix(kind)
	if err != nil {
		return 0, err
	}
	n := 0
	err = b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count %s keys: %w", kind, err)
	}
	return n, nil
}

// poolSlot is one slot of the key pool as stored: its Badger key and its
// record.
type poolSlot struct {
	key []byte
	rec PoolKey
}

// poolKeysByID reads every slot of the key pool in txn (a pool holds a
// few dozen), and returns the IDs of the keys they hold, in order, and
// the slots holding each, in key order (key type, then slot).
func poolKeysByID(txn *badger.Txn) ([]string, map[string][]poolSlot, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixPool), PrefetchValues: true})
	defer it.Close()
	slots := map[string][]poolSlot{}
	var ids []string
	for it.Rewind(); it.Valid(); it.Next() {
		var s poolSlot
		if err := readJSON(it.Item(), &s.rec); err != nil {
			return nil, nil, fmt.Errorf("pool slot %q: %w", it.Item().Key()[len(prefixPool):], err)
		}
		s.key = it.Item().KeyCopy(nil)
		if slots[s.rec.ID] == nil {
			ids = append(ids, s.rec.ID)
		}
		slots[s.rec.ID] = append(slots[s.rec.ID], s)
	}
	slices.Sort(ids)
	return ids, slots, nil
}

// rewritePoolKeys implements RewriteKeys for KeyOfPool in one read-write
// transaction.
func (b *Badger) rewritePoolKeys(ctx context.Context, after string, limit int, fn func(id string, key []byte) ([]byte, error)) (string, error) {
	if limit < 1 {
		return "", nil
	}
	var last string
	err := b.update(ctx, func(txn *badger.Txn) error {
		last = ""
		ids, slots, err := poolKeysByID(txn)
		if err != nil {
			return err
		}
		i, _ := slices.BinarySearch(ids, after)
		if i < len(ids) && ids[i] == after {
			i++
		}
		for _, id := range ids[i:min(len(ids), i+limit)] {
			last = id
			k, err := fn(id, slots[id][0].rec.KeyPEM)
			if err != nil {
				return err
			}
			if k == nil {
				// The first slot is as fn wants it; a twin sealed
				// otherwise (under a retired KEK) still gets it.
				k = slots[id][0].rec.KeyPEM
			}
			for _, s := range slots[id] {
				if bytes.Equal(s.rec.KeyPEM, k) {
					continue
				}
				s.rec.KeyPEM = k
				val, err := encodeJSON(&s.rec)
				if err != nil {
					return err
				}
				if err := txn.Set(s.key, val); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("rewrite %s keys after %q: %w", KeyOfPool, after, err)
	}
	return last, nil
}
