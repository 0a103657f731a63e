package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The upgrade of certificate records to formatV2, each in its name's
// link.
//
// A store written before formatV2 holds every record in formatV1, with
// its whole chain, and one written before records moved into their
// name's link (badger_home.go) holds every record under its ID.
// OpenBadger starts upgradeRecords in the background: it rewrites the
// records in formatV2 and moves those of one name into their link, in
// batches, each one transaction that also records how far it got
// (keyUpgrade), so that a stop or a crash between batches loses nothing
// and a restart goes on after the last batch written (a record is
// rewritten only while it is in formatV1 or could move, so nothing is
// done twice either). The store serves throughout: every reader decodes
// both formats and both places, and writers take turns with the batches
// (Badger.update). When every record is done, keyUpgrade says so and
// later starts read nothing.
const (
	keyUpgrade = "U/"
	// upgradeBatch is how many records one transaction of the upgrade
	// rewrites: about 1.5 MB of new records, well below what one
	// transaction may hold.
	upgradeBatch = 1000
	// upgradeLogEvery is how often the upgrade logs its progress.
	upgradeLogEvery = 5 * time.Second
)

// The first byte of keyUpgrade's value: in progress (the last ID
// rewritten follows), or done. The values of the upgrade to formatV2
// alone, before records moved into their links, start it over: that
// upgrade, done or not, left every record under its ID.
const (
	upgradeRunning = 3
	upgradeDone    = 4
	// Of the upgrade to formatV2 alone.
	upgradeV2Running = 0
	upgradeV2Done    = formatV2
)

// markUpgradedIfEmpty records in txn that the records need no upgrade
// when there are none: a new store, whose first open then writes nothing
// more for the upgrade, and whose later opens read nothing.
func markUpgradedIfEmpty(txn *badger.Txn) error {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(prefixCert)})
	defer it.Close()
	if it.Rewind(); it.Valid() {
		return nil
	}
	return txn.Set([]byte(keyUpgrade), []byte{upgradeDone})
}

// upgradeLoop runs upgradeRecords until it is done or the store closes.
func (b *Badger) upgradeLoop(ctx context.Context) {
	defer b.done.Done()
	defer close(b.upgraded)
	if _, err := b.upgradeRecords(ctx, 0); err != nil && ctx.Err() == nil {
		b.log.Error("upgrade of certificate records to the smaller format failed; the store serves both formats, and the next start tries again", "error", err)
	}
}

// upgradeRecords rewrites the formatV1 certificate records in formatV2,
// after the last one an earlier run rewrote, at most maxBatches batches
// (0: all). It reports whether every record is now in formatV2.
func (b *Badger) upgradeRecords(ctx context.Context, maxBatches int) (done bool, err error) {
	state, err := b.upgradeState(ctx)
	if err != nil || state == nil {
		return err == nil, err
	}
	total, err := b.CountKeys(ctx, KeyOfCertificate)
	if err != nil {
		return false, err
	}
	cursor := string(state)
	b.log.Info("upgrading certificate records to the smaller format (leaf and key as DER, intermediates stored once) and moving those of one name into the name's link (a lookup reads one key); the store serves meanwhile",
		"records", total, "resuming_after", cursor)
	var (
		start    = time.Now()
		lastLog  = start
		read     int
		upgraded int
		saved    int64
		batch    = upgradeBatch
	)
	for batches := 0; maxBatches == 0 || batches < maxBatches; batches++ {
		var (
			n, u int
			s    int64
			last string
			end  bool
		)
		err := b.update(ctx, func(txn *badger.Txn) error {
			var err error
			n, u, s, last, end, err = b.upgradeBatch(txn, cursor, batch)
			if err != nil {
				return err
			}
			v := []byte{upgradeDone}
			if !end {
				v = append([]byte{upgradeRunning}, last...)
			}
			return txn.Set([]byte(keyUpgrade), v)
		})
		if errors.Is(err, badger.ErrTxnTooBig) && batch > 1 {
			batch /= 2
			continue
		}
		if err != nil {
			return false, fmt.Errorf("upgrade certificate records after %q: %w", cursor, err)
		}
		read, upgraded, saved, cursor = read+n, upgraded+u, saved+s, last
		if end {
			b.log.Info("certificate records upgraded to the smaller format, those of one name in its link",
				"records", upgraded, "bytes_saved", saved, "took", time.Since(start).Round(time.Millisecond))
			if upgraded > 0 {
				b.runGC()
			}
			return true, nil
		}
		if time.Since(lastLog) >= upgradeLogEvery {
			lastLog = time.Now()
			b.log.Info("upgrading certificate records", "read", read, "of", total, "upgraded", upgraded, "bytes_saved", saved)
		}
	}
	return false, nil
}

// upgradeState returns nil when the records are all in formatV2, else the
// ID after which the upgrade goes on ("" for the start).
func (b *Badger) upgradeState(ctx context.Context) ([]byte, error) {
	var state []byte
	err := b.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(keyUpgrade))
		if errors.Is(err, badger.ErrKeyNotFound) {
			state = []byte{}
			return nil
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		switch {
		case err != nil:
			return err
		case len(v) == 1 && v[0] == upgradeDone:
		case len(v) >= 1 && v[0] == upgradeRunning:
			state = v[1:]
		case len(v) == 1 && v[0] == upgradeV2Done, len(v) >= 1 && v[0] == upgradeV2Running:
			state = []byte{}
		default:
			return fmt.Errorf("upgrade state %q: %w", v, errCorrupt)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the upgrade state: %w", err)
	}
	return state, nil
}

// upgradeBatch rewrites in txn the formatV1 records among the next limit
// certificate records after the ID after, and moves those of one name
// into the name's link when it selects them (placeRecord). It returns
// how many it read and rewrote or moved, the bytes the rewritten records
// saved, the last ID read, and whether no record follows it.
func (b *Badger) upgradeBatch(txn *badger.Txn, after string, limit int) (read, upgraded int, saved int64, last string, end bool, err error) {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefixCert)
	opts.PrefetchSize = 100
	it := txn.NewIterator(opts)
	defer it.Close()
	start := key(prefixCert, after)
	var changed changeSet // for the intermediates written
	last = after
	for it.Seek(start); it.Valid(); it.Next() {
		item := it.Item()
		if after != "" && bytes.Equal(item.Key(), start) {
			continue
		}
		if read == limit {
			return read, upgraded, saved, last, false, nil
		}
		read++
		last = string(item.Key()[len(prefixCert):])
		if item.UserMeta() == metaHomed {
			continue
		}
		var (
			c   Certificate
			old int
			v1  bool
		)
		err := item.Value(func(v []byte) error {
			if len(v) == 0 || v[0] != formatV1 {
				return nil
			}
			v1, old = true, len(v)
			return decodeCertificate(v, &c, nil)
		})
		if errors.Is(err, errCorrupt) {
			// Reading it fails as before; the rest of the store goes on.
			b.log.Error("certificate record left in the older format: it does not decode", "cert_id", last, "error", err)
			continue
		}
		if err != nil {
			return 0, 0, 0, "", false, fmt.Errorf("certificate %s: %w", last, err)
		}
		if !v1 {
			moved, err := b.rehome(txn, last)
			if err != nil {
				return 0, 0, 0, "", false, fmt.Errorf("certificate %s: %w", last, err)
			}
			if moved {
				upgraded++
			}
			continue
		}
		rec, inters := encodeCertificate(&c)
		if err := b.putIntermediates(txn, inters, &changed); err != nil {
			return 0, 0, 0, "", false, err
		}
		if err := b.placeRecord(txn, last, c.Names, rec); err != nil {
			return 0, 0, 0, "", false, err
		}
		upgraded++
		saved += int64(old - len(rec))
	}
	return read, upgraded, saved, last, true, nil
}
