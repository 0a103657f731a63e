package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// ChangeFeed is implemented by a Store that can tell its readers which
// names' certificates changed, so that caches of what it served (nginx's)
// can drop them at once instead of waiting for their max-age. It is an
// optional ability, found by type assertion; Badger has it.
type ChangeFeed interface {
	// CertChanges returns the names whose certificate changed after the
	// point since of a previous answer, the names an earlier answer may
	// have served a certificate for that is no longer theirs: for every
	// record replaced or deleted, its ID and the names it had and has;
	// for a new record, those of its names that a lookup found a
	// certificate for before (their own, or their wildcard's). Names
	// nothing served before are not listed: their earlier answer was
	// "not found". A zero Cursor, a cursor of another epoch (another
	// store), one older than the history kept, or one more than
	// MaxChanges names behind answers with Reset set: the caller must
	// treat everything it cached as stale. The history is written with
	// the records, so it survives restarts and crashes. It is safe for
	// concurrent use.
	CertChanges(ctx context.Context, since Cursor) (Changes, error)
}

// Cursor is a point in a store's change feed: the store's epoch, made at
// its creation, and the version of the last write seen.
type Cursor struct {
	Epoch   string
	Version uint64
}

// Changes is an answer of ChangeFeed.
type Changes struct {
	// Next is the cursor to ask with next time.
	Next Cursor
	// Reset says that changes since the cursor asked with are not known:
	// whatever the caller cached before must be looked up again. Names is
	// empty then.
	Reset bool
	// Names are the names changed after the cursor asked with, each once,
	// oldest change first.
	Names []string
}

// The bounds of the change history: the last MaxChangeWrites writes that
// changed something are kept (a PutCertificates batch is one write, and
// one that only adds certificates for names nothing served is none); an
// answer lists at most MaxChanges names, beyond which it is a Reset. A
// write of more than MaxChanges names is kept as a marker that answers
// Reset, so an entry holds at most MaxChanges names: the history is about
// 1 MB for writes of a few names each, and bounded for any.
const (
	MaxChangeWrites = 8192
	MaxChanges      = 4096
)

// changeOverflow is the entry of a write of more than MaxChanges names.
const changeOverflow = "\x00"

// changeSet collects the names one write changes, each once, in the
// order they were added.
type changeSet struct {
	names []string
	seen  map[string]bool
	// inters are the intermediates the write stored (badger_chains.go).
	inters map[[digestSize]byte]bool
}

func (c *changeSet) add(name string) {
	if c.seen[name] {
		return
	}
	if c.seen == nil {
		c.seen = make(map[string]bool)
	}
	c.seen[name] = true
	c.names = append(c.names, name)
}

// The change history's keys: h/VERSION (8 bytes, big-endian) holds the
// names of one write, newline-separated; H/ holds the epoch (16 hex
// digits) and the last version (8 bytes).
const (
	prefixChange = "h/"
	keyChangeLog = "H/"
)

func changeKey(v uint64) []byte {
	b := make([]byte, len(prefixChange)+8)
	copy(b, prefixChange)
	binary.BigEndian.PutUint64(b[len(prefixChange):], v)
	return b
}

// readChangeLog returns the epoch and last version of the history, or ""
// and 0 when there is none yet.
func readChangeLog(txn *badger.Txn) (string, uint64, error) {
	item, err := txn.Get([]byte(keyChangeLog))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return "", 0, err
	}
	if len(v) != 16+8 {
		return "", 0, fmt.Errorf("change log header of %d bytes, want 24", len(v))
	}
	return string(v[:16]), binary.BigEndian.Uint64(v[16:]), nil
}

// initChangeLog gives a new store its epoch, so that every answer of
// CertChanges names one.
func (b *Badger) initChangeLog() error {
	return b.update(context.Background(), func(txn *badger.Txn) error {
		epoch, _, err := readChangeLog(txn)
		if err != nil || epoch != "" {
			return err
		}
		if err := markUpgradedIfEmpty(txn); err != nil {
			return err
		}
		return txn.Set([]byte(keyChangeLog), changeLogHeader(newEpoch(), 0))
	})
}

// newEpoch returns 16 random hex digits.
func newEpoch() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func changeLogHeader(epoch string, last uint64) []byte {
	head := make([]byte, 16+8)
	copy(head, epoch)
	binary.BigEndian.PutUint64(head[16:], last)
	return head
}

// recordChange adds one write, the names changed, to the history in txn,
// and forgets the write MaxChangeWrites before it; a write that changed no
// name adds nothing. The store's writes take turns (writeMu), so versions
// are in commit order.
func recordChange(txn *badger.Txn, names []string) error {
	if len(names) == 0 {
		return nil
	}
	entry := []byte(changeOverflow)
	if len(names) <= MaxChanges {
		entry = []byte(strings.Join(names, "\n"))
	}
	epoch, last, err := readChangeLog(txn)
	if err != nil {
		return err
	}
	if epoch == "" {
		epoch = newEpoch()
	}
	last++
	if err := txn.Set([]byte(keyChangeLog), changeLogHeader(epoch, last)); err != nil {
		return err
	}
	if err := txn.Set(changeKey(last), entry); err != nil {
		return err
	}
	if last > MaxChangeWrites {
		return txn.Delete(changeKey(last - MaxChangeWrites))
	}
	return nil
}

// CertChanges implements ChangeFeed: every PutCertificate,
// PutCertificates and DeleteCertificate that changed a name, the last
// MaxChangeWrites of them.
func (b *Badger) CertChanges(ctx context.Context, since Cursor) (Changes, error) {
	var ch Changes
	err := b.view(ctx, func(txn *badger.Txn) error {
		epoch, last, err := readChangeLog(txn)
		if err != nil {
			return err
		}
		ch = Changes{Next: Cursor{Epoch: epoch, Version: last}}
		oldest := uint64(1)
		if last > MaxChangeWrites {
			oldest = last - MaxChangeWrites + 1
		}
		if since.Epoch != epoch || since.Version > last || since.Version+1 < oldest {
			ch.Reset = true
			return nil
		}
		seen := make(map[string]bool)
		for v := since.Version + 1; v <= last; v++ {
			item, err := txn.Get(changeKey(v))
			if err != nil {
				return fmt.Errorf("change %d: %w", v, err)
			}
			err = item.Value(func(val []byte) error {
				if string(val) == changeOverflow {
					ch.Reset = true
					return nil
				}
				for n := range strings.SplitSeq(string(val), "\n") {
					if n != "" && !seen[n] {
						seen[n] = true
						ch.Names = append(ch.Names, n)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			if ch.Reset || len(ch.Names) > MaxChanges {
				ch.Names, ch.Reset = nil, true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return Changes{}, fmt.Errorf("certificate changes: %w", err)
	}
	return ch, nil
}
