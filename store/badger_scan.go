package store

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

var _ CertificateScanner = (*Badger)(nil)

// ScanCertificates implements CertificateScanner in one read transaction
// and two passes in key order, each one sequential read of Badger's
// tables with the values fetched ahead: the links (n/) for the records
// that live in their name's link (metaRecord), then c/ for the others,
// skipping the c/ID that say their record is in a link (metaHomed).
// ListCertificates, which must go in ID order, reads such a record with
// a get of its link for each: a random read, one at a time, for nearly
// every record of a store of one-name certificates (badger_home.go).
// Records are decoded without their chain and key (decodeCertSummary).
func (b *Badger) ScanCertificates(ctx context.Context, fn func(*Certificate) error) error {
	err := b.view(ctx, func(txn *badger.Txn) error {
		if err := scanPrefix(ctx, txn, prefixLink, true, func(item *badger.Item) error {
			if item.UserMeta() != metaRecord {
				return nil
			}
			return scanRecord(item, fn)
		}); err != nil {
			return err
		}
		// Nearly every c/ID of a store of one-name certificates holds a
		// name, not a record: its value is not fetched ahead.
		return scanPrefix(ctx, txn, prefixCert, false, func(item *badger.Item) error {
			if item.UserMeta() == metaHomed {
				return nil
			}
			return scanRecord(item, fn)
		})
	})
	if err != nil {
		return fmt.Errorf("scan certificates: %w", err)
	}
	return nil
}

// scanPrefix calls fn with every item under prefix in txn, in key order,
// fetching values ahead when prefetch is set.
func scanPrefix(ctx context.Context, txn *badger.Txn, prefix string, prefetch bool, fn func(*badger.Item) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = []byte(prefix)
	opts.PrefetchValues = prefetch
	it := txn.NewIterator(opts)
	defer it.Close()
	n := 0
	for it.Rewind(); it.Valid(); it.Next() {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := fn(it.Item()); err != nil {
			return err
		}
	}
	return nil
}

// scanRecord decodes the summary of the certificate record in item and
// hands it to fn.
func scanRecord(item *badger.Item, fn func(*Certificate) error) error {
	c := new(Certificate)
	if err := item.Value(func(v []byte) error { return decodeCertSummary(v, c) }); err != nil {
		return fmt.Errorf("record %s: %w", item.Key(), err)
	}
	return fn(c)
}

// decodeCertSummary decodes a stored certificate of either format into c
// but for its chain and key, which it checks (decodeCertLayout, as a
// lookup does) and skips: no intermediate is looked up and no PEM is
// built.
func decodeCertSummary(b []byte, c *Certificate) error {
	_, err := decodeCertLayout(b, c)
	return err
}
