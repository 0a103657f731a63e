package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// addBatch is how many domains AddDomains first tries to write in one
// transaction; it goes down to what fits when Badger says the transaction
// is too big (about 6,000 domains with the default 16 MiB memtables).
const addBatch = 10000

// PutDomain implements Store.
func (b *Badger) PutDomain(ctx context.Context, d *Domain) error {
	if err := validDomain(d); err != nil {
		return fmt.Errorf("put domain %s: %w", nameOf(d), err)
	}
	now := b.now()
	err := b.update(ctx, func(txn *badger.Txn) error {
		rec := *d
		if rec.UpdatedAt.IsZero() {
			rec.UpdatedAt = now
		}
		item, err := txn.Get(key(prefixDomain, rec.Name))
		switch {
		case err == nil:
			var old Domain
			if err := readDomain(item, &old); err != nil {
				return err
			}
			if rec.AddedAt.IsZero() {
				rec.AddedAt = old.AddedAt
			}
			if !old.NextAttempt.IsZero() {
				if err := txn.Delete(dueKey(old.NextAttempt, old.Name)); err != nil {
					return err
				}
			}
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		if rec.AddedAt.IsZero() {
			rec.AddedAt = now
		}
		return setDomain(txn, &rec)
	})
	if err != nil {
		return fmt.Errorf("put domain %s: %w", d.Name, err)
	}
	return nil
}

// UpdateDomain implements Store.
func (b *Badger) UpdateDomain(ctx context.Context, name string, fn func(*Domain) error) error {
	err := b.update(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(key(prefixDomain, name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		var old Domain
		if err := readDomain(item, &old); err != nil {
			return err
		}
		rec := old
		if err := fn(&rec); err != nil {
			return err
		}
		if rec.Name != old.Name {
			return fmt.Errorf("%w: the update renamed the record to %q", ErrInvalid, rec.Name)
		}
		if err := validDomain(&rec); err != nil {
			return err
		}
		if rec.UpdatedAt.IsZero() || rec.UpdatedAt.Equal(old.UpdatedAt) {
			rec.UpdatedAt = b.now()
		}
		if !old.NextAttempt.IsZero() {
			if err := txn.Delete(dueKey(old.NextAttempt, old.Name)); err != nil {
				return err
			}
		}
		return setDomain(txn, &rec)
	})
	if err != nil {
		return fmt.Errorf("update domain %s: %w", name, err)
	}
	return nil
}

// setDomain writes a domain record and its due entry.
func setDomain(txn *badger.Txn, d *Domain) error {
	val := appendDomain(nil, d)
	if !d.NextAttempt.IsZero() {
		if err := txn.Set(dueKey(d.NextAttempt, d.Name), nil); err != nil {
			return err
		}
	}
	return txn.Set(key(prefixDomain, d.Name), val)
}

// AddDomains implements Store. Batches commit one after another: on an
// error or a cancelled context the batches already committed stay, and
// added and existing count them.
func (b *Badger) AddDomains(ctx context.Context, ds []*Domain) (added, existing int, err error) {
	for i, d := range ds {
		if err := validDomain(d); err != nil {
			return 0, 0, fmt.Errorf("add domains: domain %d (%s): %w", i, nameOf(d), err)
		}
	}
	now := b.now()
	batch := addBatch
	for start := 0; start < len(ds); {
		var n, a, e int
		err := b.update(ctx, func(txn *badger.Txn) error {
			n, a, e = 0, 0, 0
			for _, d := range ds[start:min(start+batch, len(ds))] {
				_, err := txn.Get(key(prefixDomain, d.Name))
				switch {
				case err == nil:
					e++
				case errors.Is(err, badger.ErrKeyNotFound):
					rec := *d
					if rec.AddedAt.IsZero() {
						rec.AddedAt = now
					}
					if rec.UpdatedAt.IsZero() {
						rec.UpdatedAt = now
					}
					if err := setDomain(txn, &rec); err != nil {
						return err
					}
					a++
				default:
					return err
				}
				n++
			}
			return nil
		})
		if errors.Is(err, badger.ErrTxnTooBig) && n > 0 {
			batch = n // nothing was written: try again with what fitted
			continue
		}
		if err != nil {
			return added, existing, fmt.Errorf("add domains: after %d of %d: %w", start, len(ds), err)
		}
		start += n
		added += a
		existing += e
	}
	return added, existing, nil
}

// GetDomain implements Store.
func (b *Badger) GetDomain(ctx context.Context, name string) (*Domain, error) {
	var d Domain
	err := b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(key(prefixDomain, name))
		if err != nil {
			return notFound(err)
		}
		return readDomain(item, &d)
	})
	if err != nil {
		return nil, fmt.Errorf("get domain %s: %w", name, err)
	}
	return &d, nil
}

// DeleteDomain implements Store.
func (b *Badger) DeleteDomain(ctx context.Context, name string) error {
	err := b.update(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(key(prefixDomain, name))
		if err != nil {
			return notFound(err)
		}
		var old Domain
		if err := readDomain(item, &old); err != nil {
			return err
		}
		if !old.NextAttempt.IsZero() {
			if err := txn.Delete(dueKey(old.NextAttempt, old.Name)); err != nil {
				return err
			}
		}
		return txn.Delete(key(prefixDomain, name))
	})
	if err != nil {
		return fmt.Errorf("delete domain %s: %w", name, err)
	}
	return nil
}

// ListDomains implements Store.
func (b *Badger) ListDomains(ctx context.Context, after string, limit int) ([]*Domain, error) {
	var out []*Domain
	err := b.list(ctx, prefixDomain, after, limit, func(_ *badger.Txn, item *badger.Item) error {
		var d Domain
		if err := readDomain(item, &d); err != nil {
			return err
		}
		out = append(out, &d)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list domains after %q: %w", after, err)
	}
	return out, nil
}

// Due implements Store. It walks the due index from its start and stops at
// the first entry after before, reading keys only.
func (b *Badger) Due(ctx context.Context, before time.Time, limit int) ([]DueEntry, error) {
	if limit < 1 {
		return nil, nil
	}
	end := dueTime(before)
	var out []DueEntry
	err := b.view(ctx, func(txn *badger.Txn) error {
		prefix := []byte(prefixDue)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix) && len(out) < limit; it.Next() {
			k := it.Item().Key()
			if len(k) < len(prefixDue)+8 || binary.BigEndian.Uint64(k[len(prefixDue):]) > end {
				break
			}
			if e, ok := parseDueKey(k); ok {
				out = append(out, e)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("due before %s: %w", before.Format(time.RFC3339), err)
	}
	return out, nil
}

// validDomain checks what PutDomain and AddDomains require of d.
func validDomain(d *Domain) error {
	if d == nil {
		return fmt.Errorf("nil domain: %w", ErrInvalid)
	}
	if err := normalized(d.Name); err != nil {
		return err
	}
	if d.ManagedWith != "" && len(d.ExtraNames) > 0 {
		return fmt.Errorf("%s: managed with %s and carrying extra names: %w", d.Name, d.ManagedWith, ErrInvalid)
	}
	if d.ManagedWith != "" {
		if d.ManagedWith == d.Name {
			return fmt.Errorf("%s: managed with itself: %w", d.Name, ErrInvalid)
		}
		if err := normalized(d.ManagedWith); err != nil {
			return err
		}
	}
	if d.Challenge != "" {
		if _, err := ParseChallenge(string(d.Challenge)); err != nil {
			return fmt.Errorf("%s: %w: %w", d.Name, err, ErrInvalid)
		}
	}
	for i, n := range d.ExtraNames {
		if n == d.Name || slices.Contains(d.ExtraNames[:i], n) {
			return fmt.Errorf("%s: extra name %s given twice: %w", d.Name, n, ErrInvalid)
		}
		if err := normalized(n); err != nil {
			return err
		}
	}
	return nil
}

// nameOf returns d.Name, or "<nil>" for a nil d.
func nameOf(d *Domain) string {
	if d == nil {
		return "<nil>"
	}
	return d.Name
}
