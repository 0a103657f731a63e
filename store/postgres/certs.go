package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
)

// Bounds of one PutCertificates batch, beyond which it returns
// store.ErrBatchTooLarge: PostgreSQL itself takes far larger transactions,
// but a batch holds its rows locked and its versions' turn (see versioned)
// until it commits, so other writers of the fleet wait for it.
const (
	maxBatchCerts = 10000
	maxBatchBytes = 64 << 20
)

// certRow is what certserver_put_certificate takes for one record.
type certRow struct {
	c        *store.Certificate
	info     []byte
	storedNs int64
}

// row returns the row PutCertificate stores for c: a zero StoredAt is the
// current time (c itself is not changed).
func (s *Store) row(c *store.Certificate) (certRow, error) {
	rec := *c
	if rec.StoredAt.IsZero() {
		rec.StoredAt = s.now()
	}
	info, err := encodeCertInfo(&rec)
	if err != nil {
		return certRow{}, err
	}
	return certRow{c: c, info: info, storedNs: nanos(rec.StoredAt)}, nil
}

// putRows stores rows in tx, in order, in one round trip, and returns the
// highest version they took.
func (s *Store) putRows(ctx context.Context, tx pgx.Tx, rows []certRow) (uint64, error) {
	now := nanos(s.now())
	var b pgx.Batch
	for _, r := range rows {
		b.Queue("SELECT certserver_put_certificate($1, $2, $3, $4, $5, $6, $7, $8)",
			r.c.ID, r.c.Names, r.c.ChainPEM, r.c.KeyPEM, r.info, r.storedNs, nanos(r.c.NotAfter), now)
	}
	res := tx.SendBatch(ctx, &b)
	var last int64
	for range rows {
		if err := res.QueryRow().Scan(&last); err != nil {
			res.Close()
			return 0, err
		}
	}
	return uint64(last), res.Close()
}

// PutCertificate implements store.Store: the record, a claim and a link for
// each of its names, under the next version. A zero StoredAt is stored as
// the current time.
func (s *Store) PutCertificate(ctx context.Context, c *store.Certificate) error {
	if err := store.ValidateCertificate(c); err != nil {
		return fmt.Errorf("put certificate %s: %w", idOf(c), err)
	}
	r, err := s.row(c)
	if err != nil {
		return fmt.Errorf("put certificate %s: %w", c.ID, err)
	}
	err = s.versioned(ctx, func(tx pgx.Tx) (uint64, error) {
		return s.putRows(ctx, tx, []certRow{r})
	})
	if err != nil {
		return fmt.Errorf("put certificate %s: %w", c.ID, err)
	}
	return nil
}

// PutCertificates implements store.Store in one transaction, each
// certificate under a version of its own. A batch of more than 10,000
// certificates or 64 MiB of PEM is store.ErrBatchTooLarge.
func (s *Store) PutCertificates(ctx context.Context, cs []*store.Certificate) error {
	if len(cs) == 0 {
		return nil
	}
	rows := make([]certRow, len(cs))
	size := 0
	for i, c := range cs {
		if err := store.ValidateCertificate(c); err != nil {
			return fmt.Errorf("put certificates: #%d (%s): %w", i+1, idOf(c), err)
		}
		var err error
		if rows[i], err = s.row(c); err != nil {
			return fmt.Errorf("put certificates: #%d (%s): %w", i+1, c.ID, err)
		}
		size += len(c.ChainPEM) + len(c.KeyPEM)
	}
	if len(cs) > maxBatchCerts || size > maxBatchBytes {
		return fmt.Errorf("put %d certificates (%d bytes of PEM; at most %d and %d in one): %w", len(cs), size, maxBatchCerts, maxBatchBytes, store.ErrBatchTooLarge)
	}
	err := s.versioned(ctx, func(tx pgx.Tx) (uint64, error) {
		return s.putRows(ctx, tx, rows)
	})
	if err != nil {
		return fmt.Errorf("put %d certificates (%s to %s): %w", len(cs), cs[0].ID, cs[len(cs)-1].ID, err)
	}
	return nil
}

// certColumns are the columns scanCertificate reads, in its order.
const certColumns = "c.id, c.names, c.chain_pem, c.key_pem, c.info"

// scanCertificate reads the certColumns of row.
func scanCertificate(row pgx.Row, extra ...any) (*store.Certificate, error) {
	var (
		id         string
		names      []string
		chain, key []byte
		info       []byte
	)
	if err := row.Scan(append([]any{&id, &names, &chain, &key, &info}, extra...)...); err != nil {
		return nil, err
	}
	c, err := decodeCertificate(id, names, chain, key, info)
	if err != nil {
		return nil, fmt.Errorf("decode certificate %s: %w", id, err)
	}
	return c, nil
}

// GetCertificate implements store.Store.
func (s *Store) GetCertificate(ctx context.Context, id string) (*store.Certificate, error) {
	var c *store.Certificate
	err := s.query(ctx, func(q querier) error {
		var err error
		c, err = scanCertificate(q.QueryRow(ctx, "SELECT "+certColumns+" FROM certificates c WHERE c.id = $1", id))
		return notFound(err)
	})
	if err != nil {
		return nil, fmt.Errorf("get certificate %s: %w", id, err)
	}
	return c, nil
}

// LookupCertificate implements store.Store in one statement: the record
// linked to name, else the one linked to its wildcard.
func (s *Store) LookupCertificate(ctx context.Context, name string) (*store.Certificate, error) {
	wild := name
	if w, ok := hostname.WildcardFor(name); ok && !hostname.IsWildcard(name) {
		wild = w
	}
	var c *store.Certificate
	err := s.query(ctx, func(q querier) error {
		var err error
		c, err = scanCertificate(q.QueryRow(ctx, `SELECT `+certColumns+`
			FROM name_links l JOIN certificates c ON c.id = l.cert_id
			WHERE l.name IN ($1, $2)
			ORDER BY l.name = $1 DESC
			LIMIT 1`, name, wild))
		return notFound(err)
	})
	if err != nil {
		return nil, fmt.Errorf("lookup certificate %s: %w", name, err)
	}
	return c, nil
}

// DeleteCertificate implements store.Store: names the record served fall
// back to the newest unexpired record that still lists them, if any, and
// a tombstone under the next version tells the fleet's local copies.
func (s *Store) DeleteCertificate(ctx context.Context, id string) error {
	err := s.versioned(ctx, func(tx pgx.Tx) (uint64, error) {
		var v *int64
		if err := tx.QueryRow(ctx, "SELECT certserver_delete_certificate($1, $2)", id, nanos(s.now())).Scan(&v); err != nil {
			return 0, err
		}
		if v == nil {
			return 0, store.ErrNotFound
		}
		return uint64(*v), nil
	})
	if err != nil {
		return fmt.Errorf("delete certificate %s: %w", id, err)
	}
	return nil
}

// ListCertificates implements store.Store. A limit below 1 returns nothing.
func (s *Store) ListCertificates(ctx context.Context, after string, limit int) ([]*store.Certificate, error) {
	if limit < 1 {
		return nil, nil
	}
	var out []*store.Certificate
	err := s.query(ctx, func(q querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, "SELECT "+certColumns+" FROM certificates c WHERE c.id > $1 ORDER BY c.id LIMIT $2", after, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			c, err := scanCertificate(rows)
			if err != nil {
				return err
			}
			out = append(out, c)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list certificates after %q: %w", after, err)
	}
	return out, nil
}

// idOf returns c.ID, or "<nil>" for a nil c.
func idOf(c *store.Certificate) string {
	if c == nil {
		return "<nil>"
	}
	return c.ID
}
