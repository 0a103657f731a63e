package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/certserver/certserver/store"
)

var _ store.CertificateScanner = (*Store)(nil)

// scanStatement is ScanCertificates' statement: every column of each
// certificates row but the chain and the key, which are never sent.
const scanStatement = "SELECT id, names, info FROM certificates"

// scanCtxEvery is how many records ScanCertificates hands out between
// two looks at its context (pgx also cancels the statement when the
// context ends while it waits for rows).
const scanCtxEvery = 1024

// ScanCertificates implements store.CertificateScanner in one statement,
// whose snapshot is the one PostgreSQL takes for it, in the table's
// order. It reads no chain and no key, and the rows stream from the
// connection as fn takes them (pgx reads the next only when asked): what
// stays in memory is what fn keeps. The statement holds one of the
// pool's connections until the scan ends.
//
// A statement that fails before any record was handed to fn is tried
// again as every read is (retry); once fn has been called it is not, so
// that no record is handed out twice, and the error says how far the
// scan got.
func (s *Store) ScanCertificates(ctx context.Context, fn func(*store.Certificate) error) error {
	var (
		n    int    // records handed to fn
		last string // the last of them
		// named says that the error names its record.
		named bool
		// fnErr is fn's error, kept apart so that nothing takes it
		// for the database's (retry, Store.fail).
		fnErr error
	)
	err := s.retry(ctx, func() error {
		qctx, cancel := context.WithCancel(ctx)
		defer cancel()
		rows, err := s.pool.Query(qctx, scanStatement)
		if err != nil {
			return err
		}
		// A scan stopped early cancels the statement, which drops the
		// connection, rather than read every row left (rows.Close).
		defer func() {
			cancel()
			rows.Close()
		}()
		var (
			id    string
			names []string
			info  []byte
		)
		for rows.Next() {
			if n > 0 && n%scanCtxEvery == 0 {
				if err := ctx.Err(); err != nil {
					return final{err}
				}
			}
			id, names, info = "", nil, nil
			if err := rows.Scan(&id, &names, &info); err != nil {
				named = true
				return final{fmt.Errorf("record %q: %w", id, err)}
			}
			c, err := decodeCertificate(id, names, nil, nil, info)
			if err != nil {
				named = true
				return final{fmt.Errorf("record %s: decode: %w", id, err)}
			}
			n, last = n+1, id
			if fnErr = fn(c); fnErr != nil {
				return final{fnErr}
			}
		}
		if err := rows.Err(); err != nil {
			if n > 0 {
				return final{err}
			}
			return err
		}
		return nil
	})
	switch {
	case fnErr != nil:
		return fmt.Errorf("scan certificates: record %s: %w", last, fnErr)
	case err == nil:
		return nil
	case named:
		return fmt.Errorf("scan certificates: %w", err)
	}
	// pgx answers a statement cancelled by ctx with an error of its own:
	// say that ctx ended it.
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		err = fmt.Errorf("%w: %w", cerr, err)
	}
	if n == 0 {
		return fmt.Errorf("scan certificates (%s): %w", scanStatement, err)
	}
	return fmt.Errorf("scan certificates (%s), after %d records, the last %s: %w", scanStatement, n, last, err)
}
