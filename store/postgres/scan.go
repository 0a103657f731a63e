package postgres

import (
	"context"
	"fmt"

	"github.com/certserver/certserver/store"
)

var _ store.CertificateScanner = (*Store)(nil)

// scanStatement is ScanCertificates' statement: the certColumns of every
// certificates row, the chain and the key as NULL, so that they are
// never sent.
const scanStatement = "SELECT c.id, c.names, NULL::bytea, NULL::bytea, c.info FROM certificates c"

// ScanCertificates implements store.CertificateScanner in one statement,
// whose snapshot is the one PostgreSQL takes for it, in the table's
// order. It reads no chain and no key, and the rows stream from the
// connection as fn takes them (pgx reads the next only when asked): what
// stays in memory is what fn keeps. Until the scan ends, the statement
// holds one of the pool's connections and its snapshot, which keeps
// VACUUM from removing the rows deleted since it began: fn should be
// quick.
//
// fn is not called once ctx is done, which the scan checks before each
// record: pgx ends the statement when ctx ends, but from a goroutine of
// its own, and until that has run it hands out the rows it has read.
//
// A statement that fails before any record was handed to fn is tried
// again as every read is (query); once fn has been called it is not, so
// that no record is handed out twice, and the error says how far the
// scan got.
func (s *Store) ScanCertificates(ctx context.Context, fn func(*store.Certificate) error) error {
	var (
		n    int    // records handed to fn
		last string // the last of them
		// fnErr is fn's error, kept apart so that nothing takes it
		// for the database's (retry, Store.fail).
		fnErr error
	)
	err := s.query(ctx, func(q querier) error {
		err := func() error {
			qctx, cancel := context.WithCancel(ctx)
			defer cancel()
			rows, err := q.Query(qctx, scanStatement)
			if err != nil {
				return err
			}
			// A scan stopped early cancels the statement, which drops
			// the connection, rather than read every row left
			// (rows.Close).
			defer func() {
				cancel()
				rows.Close()
			}()
			for rows.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				c, err := scanCertificate(rows)
				if err != nil {
					return err
				}
				n, last = n+1, c.ID
				if fnErr = fn(c); fnErr != nil {
					return fnErr
				}
			}
			return rows.Err()
		}()
		if err != nil && n > 0 {
			return final{err: err}
		}
		return err
	})
	switch {
	case fnErr != nil:
		return fmt.Errorf("scan certificates: record %s: %w", last, fnErr)
	case err == nil:
		return nil
	case n == 0:
		return fmt.Errorf("scan certificates: %w", err)
	case n == 1:
		return fmt.Errorf("scan certificates after 1 record (%q): %w", last, err)
	}
	return fmt.Errorf("scan certificates after %d records (the last %q): %w", n, last, err)
}
