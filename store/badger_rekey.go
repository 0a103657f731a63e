package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

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

// CountKeys implements KeyRewriter by counting keys only: no record is read.
func (b *Badger) CountKeys(ctx context.Context, kind KeyKind) (int, error) {
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
