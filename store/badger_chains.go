package store

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// Intermediates are stored once each, under i/DIGEST (the SHA-256 of
// their DER, which is the value), and certificate records of formatV2
// refer to them by digest (encode_cert.go). They are never deleted: a
// handful of CA intermediates sign nearly every certificate, and one that
// no record refers to any more costs a couple of kilobytes.
//
// The store keeps the PEM of every intermediate it has read or written in
// memory (intermediateCache), so that a lookup reads only the record.

// maxCachedIntermediates bounds intermediateCache: past it, intermediates
// are read from the store each time (a store of that many CAs is not one
// this cache is for).
const maxCachedIntermediates = 4096

// interKey returns the key of the intermediate of digest.
func interKey(digest [digestSize]byte) []byte {
	return append([]byte(prefixInter), digest[:]...)
}

// intermediateCache holds the PEM block of intermediates known to be
// committed to the store, by digest. It is safe for concurrent use.
type intermediateCache struct {
	mu    sync.RWMutex
	pem   map[[digestSize]byte][]byte
	limit int // of entries; 0 is maxCachedIntermediates (tests set less)
}

// intermediatePEM implements intermediateSource.
func (c *intermediateCache) intermediatePEM(digest [digestSize]byte) ([]byte, bool) {
	c.mu.RLock()
	p, ok := c.pem[digest]
	c.mu.RUnlock()
	return p, ok
}

// add remembers the PEM block of a committed intermediate, and says
// whether the cache holds it (false once the cache is full).
func (c *intermediateCache) add(digest [digestSize]byte, pem []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pem == nil {
		c.pem = make(map[[digestSize]byte][]byte)
	}
	limit := c.limit
	if limit == 0 {
		limit = maxCachedIntermediates
	}
	if _, ok := c.pem[digest]; !ok && len(c.pem) >= limit {
		return false
	}
	c.pem[digest] = pem
	return true
}

// pendingIntermediates is an intermediateSource, in front of the store's
// cache, of those one read loaded that the cache does not hold: a
// read-write transaction's own writes, not known to be committed, and
// committed ones the full cache had no room for.
type pendingIntermediates struct {
	cache *intermediateCache
	pem   map[[digestSize]byte][]byte
}

func (p *pendingIntermediates) intermediatePEM(digest [digestSize]byte) ([]byte, bool) {
	if pem, ok := p.pem[digest]; ok {
		return pem, true
	}
	return p.cache.intermediatePEM(digest)
}

// readCertificate decodes the certificate record in item, read in txn,
// into c: a c/ID item, which may say that the record lives in its name's
// link (badger_home.go), or a link that holds it. Intermediates come from the cache; one it lacks is read from
// the store, after item's value is released (reading Badger while holding
// a value can deadlock with the value-log GC), and the record decoded
// again, with those read that the cache did not take in front of it. A
// record that refers to an intermediate the store does not hold, or holds
// with other bytes than its digest says, is an error wrapping errCorrupt:
// never a record with another chain.
func (b *Badger) readCertificate(txn *badger.Txn, item *badger.Item, c *Certificate) error {
	return b.readRecord(txn, item, c, nil, nil)
}

// readRecord is readCertificate reading the record through cache, which
// may be nil (recordcache.go: lookups only, in read-only transactions),
// and setting in found, unless nil, the key and version of the item
// holding the record.
func (b *Badger) readRecord(txn *badger.Txn, item *badger.Item, c *Certificate, cache *recordCache, found *foundRecord) error {
	var id []byte // of a record read through c/ID from its name's link
	if item.UserMeta() == metaHomed {
		id = item.KeyCopy(nil)[len(prefixCert):]
		var err error
		if item, err = homedRecord(txn, item); err != nil {
			return err
		}
	}
	if found != nil && cache != nil {
		found.key, found.version = item.KeyCopy(nil), item.Version()
	}
	if err := b.decodeRecord(txn, item, c, cache); err != nil || id == nil || c.ID == string(id) {
		return err
	}
	return fmt.Errorf("certificate %s: the link of %s holds the record of %s: %w", id, c.Names, c.ID, errCorrupt)
}

// decodeRecord decodes the certificate record in item's value, read in
// txn through cache (nil for none), into c: readRecord's work on the item
// that holds the record. A record read from the cache is the same bytes
// at the same version, and decodes the same way.
func (b *Badger) decodeRecord(txn *badger.Txn, item *badger.Item, c *Certificate, cache *recordCache) error {
	var (
		src     intermediateSource = &b.inters
		pending *pendingIntermediates
	)
	for range maxChain + 1 {
		err := cache.read(item, func(v []byte) error { return decodeCertificate(v, c, src) })
		var missing *missingIntermediate
		if !errors.As(err, &missing) {
			return err
		}
		pem, cached, err := b.loadIntermediate(txn, missing.digest)
		if err != nil {
			return fmt.Errorf("certificate %s: %w", c.ID, err)
		}
		if !cached {
			if pending == nil {
				pending = &pendingIntermediates{cache: &b.inters, pem: make(map[[digestSize]byte][]byte)}
				src = pending
			}
			pending.pem[missing.digest] = pem
		}
	}
	return fmt.Errorf("certificate %s: more than %d intermediates: %w", c.ID, maxChain, errCorrupt)
}

// loadIntermediate returns the PEM block of the intermediate of digest:
// from the committed store (and then caches it if the cache has room),
// else, unless txn is nil, as txn sees it (written by txn itself, and so
// not cached: txn may yet fail). cached says whether the cache now holds
// it.
func (b *Badger) loadIntermediate(txn *badger.Txn, digest [digestSize]byte) (pem []byte, cached bool, err error) {
	der, err := b.committedIntermediate(digest)
	if err != nil {
		return nil, false, err
	}
	if der != nil {
		pem = appendPEM(nil, "CERTIFICATE", der)
		return pem, b.inters.add(digest, pem), nil
	}
	if txn != nil {
		item, err := txn.Get(interKey(digest))
		switch {
		case err == nil:
			if der, err = item.ValueCopy(nil); err != nil {
				return nil, false, err
			}
			if err := checkIntermediate(digest, der); err != nil {
				return nil, false, err
			}
			return appendPEM(nil, "CERTIFICATE", der), false, nil
		case !errors.Is(err, badger.ErrKeyNotFound):
			return nil, false, err
		}
	}
	return nil, false, fmt.Errorf("intermediate %x is not in the store: %w", digest, errCorrupt)
}

// committedIntermediate reads the DER of the intermediate of digest in a
// transaction of its own, which sees only committed writes; nil when
// there is none.
func (b *Badger) committedIntermediate(digest [digestSize]byte) ([]byte, error) {
	var der []byte
	err := b.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(interKey(digest))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if der, err = item.ValueCopy(nil); err != nil {
			return err
		}
		return checkIntermediate(digest, der)
	})
	return der, err
}

// checkIntermediate says whether der is the intermediate of digest.
func checkIntermediate(digest [digestSize]byte, der []byte) error {
	if sha256.Sum256(der) != digest {
		return fmt.Errorf("intermediate %x: stored bytes do not match the digest: %w", digest, errCorrupt)
	}
	return nil
}

// putIntermediates writes in txn the intermediates of inters that the
// store does not hold yet, adding them to changed's.
func (b *Badger) putIntermediates(txn *badger.Txn, inters []intermediate, changed *changeSet) error {
	for _, in := range inters {
		if _, ok := b.inters.intermediatePEM(in.digest); ok || changed.inters[in.digest] {
			continue
		}
		der, err := b.committedIntermediate(in.digest)
		if err != nil {
			return err
		}
		if der != nil {
			b.inters.add(in.digest, appendPEM(nil, "CERTIFICATE", der))
			continue
		}
		if err := txn.Set(interKey(in.digest), in.der); err != nil {
			return err
		}
		if changed.inters == nil {
			changed.inters = make(map[[digestSize]byte]bool)
		}
		changed.inters[in.digest] = true
	}
	return nil
}

// setCertificate writes the record of c in txn, where placeRecord puts
// it, and the intermediates it refers to that the store lacks. c's links
// must be written first.
func (b *Badger) setCertificate(txn *badger.Txn, c *Certificate, changed *changeSet) error {
	if b.writeV1 {
		return b.placeRecord(txn, c.ID, c.Names, encodeCertificateV1(c))
	}
	rec, inters := encodeCertificate(c)
	if err := b.putIntermediates(txn, inters, changed); err != nil {
		return err
	}
	return b.placeRecord(txn, c.ID, c.Names, rec)
}
