package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/dgraph-io/badger/v4"

	"github.com/certserver/certserver/store/hostname"
)

// PutCertificate implements Store. It also records a claim of c on each of
// its names (with its StoredAt and NotAfter), from which unlink picks the
// record a name falls back to.
func (b *Badger) PutCertificate(ctx context.Context, c *Certificate) error {
	if err := validCertificate(c); err != nil {
		return fmt.Errorf("put certificate %s: %w", idOf(c), err)
	}
	rec := b.certRecord(c)
	err := b.update(ctx, func(txn *badger.Txn) error {
		var changed changeSet
		if err := b.putCertificate(txn, &rec, &changed); err != nil {
			return err
		}
		return recordChange(txn, changed.names)
	})
	if err != nil {
		return fmt.Errorf("put certificate %s: %w", c.ID, err)
	}
	return nil
}

// PutCertificates implements Store: one transaction, with what
// PutCertificate does for each certificate in turn, and one entry of the
// change feed for the whole batch (none when it only adds). It holds at most 15%
// of a memtable (BadgerOptions.MemTableSize): about 4.8 MB of records with
// the default size, some 1,200 certificates of a Let's Encrypt chain and
// key each.
func (b *Badger) PutCertificates(ctx context.Context, cs []*Certificate) error {
	if len(cs) == 0 {
		return nil
	}
	recs := make([]Certificate, len(cs))
	for i, c := range cs {
		if err := validCertificate(c); err != nil {
			return fmt.Errorf("put certificates: #%d (%s): %w", i+1, idOf(c), err)
		}
		recs[i] = b.certRecord(c)
	}
	err := b.update(ctx, func(txn *badger.Txn) error {
		var changed changeSet
		for i := range recs {
			if err := b.putCertificate(txn, &recs[i], &changed); err != nil {
				return err
			}
		}
		return recordChange(txn, changed.names)
	})
	switch {
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("put %d certificates: %w", len(cs), ErrBatchTooLarge)
	case err != nil:
		return fmt.Errorf("put %d certificates (%s to %s): %w", len(cs), cs[0].ID, cs[len(cs)-1].ID, err)
	}
	return nil
}

// certRecord returns the record PutCertificate stores for c: a copy, with
// a zero StoredAt set to the current time.
func (b *Badger) certRecord(c *Certificate) Certificate {
	rec := *c
	if rec.StoredAt.IsZero() {
		rec.StoredAt = b.now()
	}
	return rec
}

// putCertificate writes rec in txn: its record, its claims and links, and
// unlinks the names the record it replaces held and rec does not. Reads
// in txn see its earlier writes, so a batch may put the same ID twice. It
// adds to changed what a cache of earlier answers may hold stale (see
// feedNames); the caller records it.
func (b *Badger) putCertificate(txn *badger.Txn, rec *Certificate, changed *changeSet) error {
	var (
		old      Certificate
		replaced bool
	)
	switch item, err := txn.Get(key(prefixCert, rec.ID)); {
	case err == nil:
		if err := b.readCertificate(txn, item, &old); err != nil {
			return err
		}
		replaced = true
	case !errors.Is(err, badger.ErrKeyNotFound):
		return err
	}
	if replaced {
		changed.add(rec.ID)
	}
	for _, name := range old.Names {
		if !slices.Contains(rec.Names, name) {
			changed.add(name)
			if err := b.unlink(txn, name, rec.ID); err != nil {
				return err
			}
		}
	}
	claim := claimValue(rec.StoredAt, rec.NotAfter)
	for _, name := range rec.Names {
		if replaced {
			changed.add(name)
		} else {
			served, err := b.servedBefore(txn, name)
			if err != nil {
				return err
			}
			if served {
				changed.add(name)
			}
		}
		if err := txn.Set(claimKey(name, rec.ID), claim); err != nil {
			return err
		}
		if err := b.setLink(txn, name, rec.ID); err != nil {
			return err
		}
	}
	return b.setCertificate(txn, rec, changed)
}

// servedBefore reports whether a lookup of name found a certificate before
// txn's writes for it: through its own link, or, for a name that is not a
// wildcard, through its wildcard's. A name nothing served was answered
// 404, which nginx keeps only for its negative_ttl: storing it needs no
// entry in the change feed.
func (b *Badger) servedBefore(txn *badger.Txn, name string) (bool, error) {
	lookup := []string{name}
	if wild, ok := hostname.WildcardFor(name); ok && !hostname.IsWildcard(name) {
		lookup = append(lookup, wild)
	}
	for _, n := range lookup {
		switch _, err := txn.Get(key(prefixLink, n)); {
		case err == nil:
			return true, nil
		case !errors.Is(err, badger.ErrKeyNotFound):
			return false, err
		}
	}
	return false, nil
}

// GetCertificate implements Store.
func (b *Badger) GetCertificate(ctx context.Context, id string) (*Certificate, error) {
	var c Certificate
	err := b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(key(prefixCert, id))
		if err != nil {
			return notFound(err)
		}
		return b.readCertificate(txn, item, &c)
	})
	if err != nil {
		return nil, fmt.Errorf("get certificate %s: %w", id, err)
	}
	return &c, nil
}

// LookupCertificate implements Store. The answer of a name the store has
// not changed since a lookup last found it comes from the record cache
// alone, with no transaction (recordcache_fast.go). Else it reads one
// read-only transaction: one get for a name whose link holds its record
// (badger_home.go), two when the link holds the ID; up to twice that
// through a wildcard. The records it reads it keeps in the record cache,
// and reads from there while the store holds them unchanged
// (recordcache.go).
func (b *Badger) LookupCertificate(ctx context.Context, name string) (*Certificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("lookup certificate %s: %w", name, err)
	}
	wild, hasWild := hostname.WildcardFor(name)
	hasWild = hasWild && !hostname.IsWildcard(name)
	var c Certificate
	var at lookupEpochs
	if b.records != nil {
		// The epochs are loaded before the transaction begins: that
		// order is what makes the fast path's answers current
		// (recordcache_fast.go). Without a record cache there is
		// nothing for them to validate.
		at.name = b.epochs.load(name)
		if hasWild {
			at.wild = b.epochs.load(wild)
		}
		link := key(prefixLink, name)
		if ok, err := b.records.readFast(name, link, at, func(v []byte) error { return decodeCertificate(v, &c, &b.inters) }); ok && err == nil {
			return &c, nil
		}
		c = Certificate{}
	}
	var found foundRecord
	err := b.view(ctx, func(txn *badger.Txn) error {
		found = foundRecord{}
		err := b.lookupLinked(txn, name, &c, &found)
		if !errors.Is(err, ErrNotFound) || !hasWild {
			return err
		}
		found = foundRecord{wild: true}
		return b.lookupLinked(txn, wild, &c, &found)
	})
	if err != nil {
		return nil, fmt.Errorf("lookup certificate %s: %w", name, err)
	}
	b.records.validate(name, at, &found)
	return &c, nil
}

// lookupLinked decodes into c the record linked to name, or returns
// ErrNotFound, and says in found where it read it (its key stays nil
// when there is no record cache). It reads the record through the record
// cache: txn must be read-only.
func (b *Badger) lookupLinked(txn *badger.Txn, name string, c *Certificate, found *foundRecord) error {
	item, err := txn.Get(key(prefixLink, name))
	if err != nil {
		return notFound(err)
	}
	if item.UserMeta() == metaRecord {
		found.direct = !found.wild
		return b.readRecord(txn, item, c, b.records, found)
	}
	var id []byte
	if id, err = item.ValueCopy(nil); err != nil {
		return err
	}
	item, err = txn.Get(append([]byte(prefixCert), id...))
	if err != nil {
		// A link always names a stored record; a miss here is a bug.
		if errors.Is(err, badger.ErrKeyNotFound) {
			b.log.Error("name linked to a missing certificate", "name", name, "cert_id", string(id))
		}
		return notFound(err)
	}
	return b.readRecord(txn, item, c, b.records, found)
}

// DeleteCertificate implements Store.
func (b *Badger) DeleteCertificate(ctx context.Context, id string) error {
	err := b.update(ctx, func(txn *badger.Txn) error {
		var changed changeSet
		switch found, err := b.deleteCertificate(txn, id, &changed); {
		case err != nil:
			return err
		case !found:
			return ErrNotFound
		}
		return recordChange(txn, changed.names)
	})
	if err != nil {
		return fmt.Errorf("delete certificate %s: %w", id, err)
	}
	return nil
}

// deleteCertificate removes the record id in txn and unlinks its names,
// adding the ID and the names to changed; it reports false, and writes
// nothing, when there is no such record.
func (b *Badger) deleteCertificate(txn *badger.Txn, id string, changed *changeSet) (bool, error) {
	item, err := txn.Get(key(prefixCert, id))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, err
	}
	var old Certificate
	if err := b.readCertificate(txn, item, &old); err != nil {
		return false, err
	}
	changed.add(id)
	for _, name := range old.Names {
		changed.add(name)
		if err := b.unlink(txn, name, id); err != nil {
			return false, err
		}
	}
	b.records.drop(key(prefixCert, id))
	return true, txn.Delete(key(prefixCert, id))
}

// unlink removes certificate id's claim on name and, when name is linked to
// id, re-links it to the newest other claim whose certificate has not
// expired (moving that record into the link when it can: rehome), or
// removes the link. A record of id the link held goes with it: the
// caller writes id's record again or deletes it.
func (b *Badger) unlink(txn *badger.Txn, name, id string) error {
	b.touch(name)
	if err := txn.Delete(claimKey(name, id)); err != nil {
		return err
	}
	item, err := txn.Get(key(prefixLink, name))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil
	case err != nil:
		return err
	}
	linked, err := linkedID(item)
	if err != nil {
		return err
	}
	if linked != id {
		return nil
	}

	now := dueTime(b.now())
	prefix := claimPrefix(name)
	var (
		best       []byte
		bestStored uint64
	)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
		other := it.Item().Key()[len(prefix):]
		if string(other) == id {
			continue
		}
		var stored, notAfter uint64
		if err := it.Item().Value(func(v []byte) error {
			stored, notAfter = parseClaimValue(v)
			return nil
		}); err != nil {
			it.Close()
			return err
		}
		if notAfter < now || (best != nil && stored < bestStored) {
			continue
		}
		best, bestStored = bytes.Clone(other), stored
	}
	it.Close()
	// The link held id's record or ID, which goes: nothing to give back.
	if best == nil {
		b.records.drop(key(prefixLink, name))
		b.records.drop(fastEntryKey(name))
		return txn.Delete(key(prefixLink, name))
	}
	if err := txn.Set(key(prefixLink, name), best); err != nil {
		return err
	}
	_, err = b.rehome(txn, string(best))
	return err
}

// ListCertificates implements Store.
func (b *Badger) ListCertificates(ctx context.Context, after string, limit int) ([]*Certificate, error) {
	var out []*Certificate
	err := b.list(ctx, prefixCert, after, limit, func(txn *badger.Txn, item *badger.Item) error {
		var c Certificate
		if err := b.readCertificate(txn, item, &c); err != nil {
			return err
		}
		out = append(out, &c)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list certificates after %q: %w", after, err)
	}
	return out, nil
}

// list calls fn for up to limit items under prefix whose key follows
// prefix+after, in key order.
func (b *Badger) list(ctx context.Context, prefix, after string, limit int, fn func(*badger.Txn, *badger.Item) error) error {
	if limit < 1 {
		return nil
	}
	return b.view(ctx, func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.Prefix = []byte(prefix)
		opts.PrefetchSize = min(limit, 100)
		it := txn.NewIterator(opts)
		defer it.Close()
		start := key(prefix, after)
		n := 0
		for it.Seek(start); it.Valid() && n < limit; it.Next() {
			if after != "" && bytes.Equal(it.Item().Key(), start) {
				continue
			}
			if err := fn(txn, it.Item()); err != nil {
				return err
			}
			n++
		}
		return nil
	})
}

// validCertificate checks what PutCertificate requires of c.
func validCertificate(c *Certificate) error {
	switch {
	case c == nil:
		return fmt.Errorf("nil certificate: %w", ErrInvalid)
	case c.ID == "" || strings.IndexByte(c.ID, 0) >= 0:
		return fmt.Errorf("bad id %q: %w", c.ID, ErrInvalid)
	case len(c.Names) == 0:
		return fmt.Errorf("no names: %w", ErrInvalid)
	case len(c.ChainPEM) == 0:
		return fmt.Errorf("no chain: %w", ErrInvalid)
	case len(c.KeyPEM) == 0:
		return fmt.Errorf("no key: %w", ErrInvalid)
	}
	for _, n := range c.Names {
		if err := normalized(n); err != nil {
			return err
		}
	}
	return nil
}

// normalized returns an error wrapping ErrInvalid unless name is a
// normalized host name or pattern.
func normalized(name string) error {
	n, err := hostname.NormalizePattern(name)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if n != name {
		return fmt.Errorf("name %q is not normalized (%q): %w", name, n, ErrInvalid)
	}
	return nil
}

// idOf returns c.ID, or "<nil>" for a nil c.
func idOf(c *Certificate) string {
	if c == nil {
		return "<nil>"
	}
	return c.ID
}
