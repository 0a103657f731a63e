package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
)

// PutDomain implements store.Store in one statement. Zero AddedAt (kept
// from the replaced record when there is one) and UpdatedAt are stored as
// the current time; d itself is not changed.
func (s *Store) PutDomain(ctx context.Context, d *store.Domain) error {
	if err := store.ValidateDomain(d); err != nil {
		return fmt.Errorf("put domain %s: %w", nameOf(d), err)
	}
	now := s.now()
	rec := *d
	keepAdded := rec.AddedAt.IsZero()
	if keepAdded {
		rec.AddedAt = now
	}
	if rec.UpdatedAt.IsZero() {
		rec.UpdatedAt = now
	}
	val, err := encodeDomain(&rec)
	if err != nil {
		return fmt.Errorf("put domain %s: %w", d.Name, err)
	}
	err = s.query(ctx, func(q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO domains AS d (name, due_ns, record) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET due_ns = EXCLUDED.due_ns,
				record = CASE WHEN $4 THEN jsonb_set(EXCLUDED.record, '{added_at}', d.record->'added_at')
				              ELSE EXCLUDED.record END`,
			rec.Name, dueNanos(rec.NextAttempt), val, keepAdded)
		return err
	})
	if err != nil {
		return fmt.Errorf("put domain %s: %w", d.Name, err)
	}
	return nil
}

// UpdateDomain implements store.Store: it reads the record with SELECT …
// FOR UPDATE, so that a concurrent writer of the same record waits for
// this one's commit and then reads what it wrote. A zero UpdatedAt, or
// one fn left as it was, is stored as the current time.
func (s *Store) UpdateDomain(ctx context.Context, name string, fn func(*store.Domain) error) error {
	err := s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		var val []byte
		if err := tx.QueryRow(ctx, "SELECT record FROM domains WHERE name = $1 FOR UPDATE", name).Scan(&val); err != nil {
			return notFound(err)
		}
		old, err := decodeDomain(val)
		if err != nil {
			return fmt.Errorf("decode domain: %w", err)
		}
		rec, err := decodeDomain(val) // fn's copy, sharing nothing with old
		if err != nil {
			return fmt.Errorf("decode domain: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
		if rec.Name != old.Name {
			return fmt.Errorf("%w: the update renamed the record to %q", store.ErrInvalid, rec.Name)
		}
		if err := store.ValidateDomain(rec); err != nil {
			return err
		}
		if rec.UpdatedAt.IsZero() || rec.UpdatedAt.Equal(old.UpdatedAt) {
			rec.UpdatedAt = s.now()
		}
		if val, err = encodeDomain(rec); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE domains SET due_ns = $2, record = $3 WHERE name = $1", name, dueNanos(rec.NextAttempt), val)
		return err
	})
	if err != nil {
		return fmt.Errorf("update domain %s: %w", name, err)
	}
	return nil
}

// AddDomains implements store.Store in one transaction: the records are
// copied (COPY) into a temporary table, then inserted where their name is
// not managed yet. Every domain is validated before anything is written;
// an error writes nothing. A name given twice counts as existing the
// second time. Zero AddedAt and UpdatedAt are stored as the current time.
func (s *Store) AddDomains(ctx context.Context, ds []*store.Domain) (added, existing int, err error) {
	for i, d := range ds {
		if err := store.ValidateDomain(d); err != nil {
			return 0, 0, fmt.Errorf("add domains: domain %d (%s): %w", i, nameOf(d), err)
		}
	}
	if len(ds) == 0 {
		return 0, 0, nil
	}
	now := s.now()
	rows := make([][]any, len(ds))
	for i, d := range ds {
		rec := *d
		if rec.AddedAt.IsZero() {
			rec.AddedAt = now
		}
		if rec.UpdatedAt.IsZero() {
			rec.UpdatedAt = now
		}
		val, err := encodeDomain(&rec)
		if err != nil {
			return 0, 0, fmt.Errorf("add domains: domain %d (%s): %w", i, d.Name, err)
		}
		rows[i] = []any{int64(i), rec.Name, dueNanos(rec.NextAttempt), val}
	}
	err = s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE new_domains (
			pos bigint NOT NULL, name text COLLATE "C" NOT NULL, due_ns bigint, record jsonb NOT NULL
		) ON COMMIT DROP`); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"new_domains"}, []string{"pos", "name", "due_ns", "record"}, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		// In input order, so that the first of a name given twice is
		// the one added.
		tag, err := tx.Exec(ctx, `INSERT INTO domains (name, due_ns, record)
			SELECT name, due_ns, record FROM new_domains ORDER BY pos
			ON CONFLICT (name) DO NOTHING`)
		added = int(tag.RowsAffected())
		return err
	})
	if err != nil {
		return 0, 0, fmt.Errorf("add %d domains: %w", len(ds), err)
	}
	return added, len(ds) - added, nil
}

// GetDomain implements store.Store.
func (s *Store) GetDomain(ctx context.Context, name string) (*store.Domain, error) {
	var d *store.Domain
	err := s.query(ctx, func(q querier) error {
		var val []byte
		if err := q.QueryRow(ctx, "SELECT record FROM domains WHERE name = $1", name).Scan(&val); err != nil {
			return notFound(err)
		}
		var err error
		d, err = decodeDomain(val)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get domain %s: %w", name, err)
	}
	return d, nil
}

// DeleteDomain implements store.Store.
func (s *Store) DeleteDomain(ctx context.Context, name string) error {
	err := s.query(ctx, func(q querier) error {
		tag, err := q.Exec(ctx, "DELETE FROM domains WHERE name = $1", name)
		if err == nil && tag.RowsAffected() == 0 {
			err = store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete domain %s: %w", name, err)
	}
	return nil
}

// ListDomains implements store.Store. A limit below 1 returns nothing.
func (s *Store) ListDomains(ctx context.Context, after string, limit int) ([]*store.Domain, error) {
	if limit < 1 {
		return nil, nil
	}
	var out []*store.Domain
	err := s.query(ctx, func(q querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, "SELECT record FROM domains WHERE name > $1 ORDER BY name LIMIT $2", after, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var val []byte
			if err := rows.Scan(&val); err != nil {
				return err
			}
			d, err := decodeDomain(val)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list domains after %q: %w", after, err)
	}
	return out, nil
}

// Due implements store.Store: an index range scan of domains_due, whose
// cost grows with the entries returned. A limit below 1 returns nothing.
func (s *Store) Due(ctx context.Context, before time.Time, limit int) ([]store.DueEntry, error) {
	if limit < 1 {
		return nil, nil
	}
	var out []store.DueEntry
	err := s.query(ctx, func(q querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, `SELECT name, due_ns FROM domains
			WHERE due_ns IS NOT NULL AND due_ns <= $1
			ORDER BY due_ns, name LIMIT $2`, nanos(before), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				e  store.DueEntry
				at int64
			)
			if err := rows.Scan(&e.Name, &at); err != nil {
				return err
			}
			e.At = fromNanos(at)
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("due before %s: %w", before.Format(time.RFC3339), err)
	}
	return out, nil
}

// nameOf returns d.Name, or "<nil>" for a nil d.
func nameOf(d *store.Domain) string {
	if d == nil {
		return "<nil>"
	}
	return d.Name
}
