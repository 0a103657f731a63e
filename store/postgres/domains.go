package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/certserver/certserver/store"
)

// domainColumns are the columns of a domain record, in the order of
// domainValues and scanDomain.
const domainColumns = "name, state, profile, cert_id, next_attempt, failures, last_error, failing_since, source, added_at, updated_at, attempts, extra_names, managed_with"

// domainColumnList is domainColumns as a list, for COPY.
var domainColumnList = strings.Split(strings.ReplaceAll(domainColumns, " ", ""), ",")

// domainValues returns the column values of d: NULL for a zero time and
// for no attempts or extra names.
func domainValues(d *store.Domain) ([]any, error) {
	return appendDomainValues(make([]any, 0, 15), d)
}

// appendDomainValues appends the column values of d to dst.
func appendDomainValues(dst []any, d *store.Domain) ([]any, error) {
	var attempts []byte
	if len(d.Attempts) > 0 {
		as := slices.Clone(d.Attempts)
		for i := range as {
			utc(&as[i].At)
		}
		var err error
		if attempts, err = json.Marshal(as); err != nil {
			return nil, err
		}
	}
	var extra []string
	if len(d.ExtraNames) > 0 {
		extra = d.ExtraNames
	}
	return append(dst, d.Name, string(d.State), d.Profile, d.CertID, timeOrNull(d.NextAttempt), d.Failures, d.LastError,
		timeOrNull(d.FailingSince), d.Source, d.AddedAt, d.UpdatedAt, attempts, extra, d.ManagedWith), nil
}

// queryDomains runs sql, which selects domainColumns, and returns the
// records of its rows in their order.
func queryDomains(ctx context.Context, q querier, sql string, args ...any) ([]*store.Domain, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*store.Domain
	for rows.Next() {
		d, err := scanDomain(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// scanDomain reads the domainColumns of row.
func scanDomain(row pgx.Row) (*store.Domain, error) {
	var (
		d                  store.Domain
		state              string
		next, failingSince *time.Time
		attempts           []byte
	)
	if err := row.Scan(&d.Name, &state, &d.Profile, &d.CertID, &next, &d.Failures, &d.LastError,
		&failingSince, &d.Source, &d.AddedAt, &d.UpdatedAt, &attempts, &d.ExtraNames, &d.ManagedWith); err != nil {
		return nil, err
	}
	d.State = store.State(state)
	if next != nil {
		d.NextAttempt = *next
	}
	if failingSince != nil {
		d.FailingSince = *failingSince
	}
	if attempts != nil {
		if err := json.Unmarshal(attempts, &d.Attempts); err != nil {
			return nil, fmt.Errorf("decode attempts of %s: %w", d.Name, err)
		}
	}
	utcDomain(&d)
	return &d, nil
}

// The range of PostgreSQL's timestamptz (4713 BC to 294276 AD), a little
// inside it.
var (
	minTimestamp = time.Date(-4000, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTimestamp = time.Date(294000, 1, 1, 0, 0, 0, 0, time.UTC)
)

// clampTime returns t within the range of timestamptz.
func clampTime(t time.Time) time.Time {
	switch {
	case t.Before(minTimestamp):
		return minTimestamp
	case t.After(maxTimestamp):
		return maxTimestamp
	}
	return t
}

// timeOrNull returns t, or nil (NULL) for the zero time.
func timeOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// PutDomain implements store.Store in one statement (and the check of
// the lease ctx carries, if any: store.WithLease). Zero AddedAt (kept
// from the replaced record when there is one) and UpdatedAt are stored as
// the current time; d itself is not changed. Times are kept to the
// microsecond.
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
	vals, err := domainValues(&rec)
	if err != nil {
		return fmt.Errorf("put domain %s: %w", d.Name, err)
	}
	err = s.write(ctx, func(q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO domains AS d (`+domainColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
			ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, profile = EXCLUDED.profile,
				cert_id = EXCLUDED.cert_id, next_attempt = EXCLUDED.next_attempt, failures = EXCLUDED.failures,
				last_error = EXCLUDED.last_error, failing_since = EXCLUDED.failing_since, source = EXCLUDED.source,
				added_at = CASE WHEN $15 THEN d.added_at ELSE EXCLUDED.added_at END,
				updated_at = EXCLUDED.updated_at, attempts = EXCLUDED.attempts,
				extra_names = EXCLUDED.extra_names, managed_with = EXCLUDED.managed_with`,
			append(vals, keepAdded)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("put domain %s: %w", d.Name, err)
	}
	return nil
}

// UpdateDomain implements store.Store: it reads the record with SELECT …
// FOR UPDATE, so that a concurrent writer of the same record waits for
// this one's commit and then reads what it wrote, and then checks the
// lease ctx carries, if any (store.WithLease). A zero UpdatedAt, or
// one fn left as it was, is stored as the current time.
func (s *Store) UpdateDomain(ctx context.Context, name string, fn func(*store.Domain) error) error {
	err := s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		// The record's lock first, then the lease's (as a claim takes
		// them), so that the two never wait for each other; in one round
		// trip.
		var b pgx.Batch
		b.Queue("SELECT "+domainColumns+" FROM domains WHERE name = $1 FOR UPDATE", name)
		fenced := queueFence(ctx, &b)
		res := tx.SendBatch(ctx, &b)
		old, err := scanDomain(res.QueryRow())
		if err != nil {
			res.Close()
			return notFound(err)
		}
		if fenced {
			if err := checkFence(ctx, res.QueryRow()); err != nil {
				res.Close()
				return err
			}
		}
		if err := res.Close(); err != nil {
			return err
		}
		rec := *old
		rec.Attempts = slices.Clone(old.Attempts)
		rec.ExtraNames = slices.Clone(old.ExtraNames)
		if err := fn(&rec); err != nil {
			return err
		}
		if rec.Name != old.Name {
			return fmt.Errorf("%w: the update renamed the record to %q", store.ErrInvalid, rec.Name)
		}
		if err := store.ValidateDomain(&rec); err != nil {
			return err
		}
		if rec.UpdatedAt.IsZero() || rec.UpdatedAt.Equal(old.UpdatedAt) {
			rec.UpdatedAt = s.now()
		}
		vals, err := domainValues(&rec)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE domains SET state = $2, profile = $3, cert_id = $4, next_attempt = $5,
			failures = $6, last_error = $7, failing_since = $8, source = $9, added_at = $10, updated_at = $11,
			attempts = $12, extra_names = $13, managed_with = $14
			WHERE name = $1`, vals...)
		return err
	})
	if err != nil {
		return fmt.Errorf("update domain %s: %w", name, err)
	}
	return nil
}

// AddDomains implements store.Store in one transaction: it looks up which
// names are managed already and copies (COPY) the others' records into
// the table; should another writer add one of them meanwhile, it copies
// them all into a temporary table instead and inserts those whose name is
// not managed yet. Every domain is validated before anything is
// written; an error writes nothing. A name given twice counts as existing
// the second time. Zero AddedAt and UpdatedAt are stored as the current
// time.
func (s *Store) AddDomains(ctx context.Context, ds []*store.Domain) (added, existing int, err error) {
	for i, d := range ds {
		if err := store.ValidateDomain(d); err != nil {
			return 0, 0, fmt.Errorf("add domains: domain %d (%s): %w", i, nameOf(d), err)
		}
	}
	// The first of a name given twice is the one added.
	first := make([]*store.Domain, 0, len(ds))
	seen := make(map[string]struct{}, len(ds))
	for _, d := range ds {
		if _, dup := seen[d.Name]; !dup {
			seen[d.Name] = struct{}{}
			first = append(first, d)
		}
	}
	seen = nil
	if len(first) == 0 {
		return 0, len(ds), nil
	}
	now := s.now()
	err = s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		added = 0
		// The names managed already, by one index probe each; the others
		// are copied straight into the table.
		names := make([]string, len(first))
		for i, d := range first {
			names[i] = d.Name
		}
		managed, err := tx.Query(ctx, "SELECT name FROM domains WHERE name = ANY($1)", names)
		if err != nil {
			return err
		}
		skip := make(map[string]struct{})
		for managed.Next() {
			var n string
			if err := managed.Scan(&n); err != nil {
				managed.Close()
				return err
			}
			skip[n] = struct{}{}
		}
		if err := managed.Err(); err != nil {
			return err
		}
		fresh := make([]int, 0, len(first)-len(skip))
		for i, d := range first {
			if _, ok := skip[d.Name]; !ok {
				fresh = append(fresh, i)
			}
		}
		if len(fresh) == 0 {
			return nil
		}
		n, err := tx.CopyFrom(ctx, pgx.Identifier{"domains"}, domainColumnList, &newDomainRows{ds: first, only: fresh, now: now})
		added = int(n)
		return err
	})
	if isUniqueViolation(err) {
		// A writer added one of the names between the probe and the
		// copy: add them the slower way, which skips whatever exists.
		err = s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
			added = 0
			if _, err := tx.Exec(ctx, "CREATE TEMPORARY TABLE new_domains (LIKE domains) ON COMMIT DROP"); err != nil {
				return err
			}
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"new_domains"}, domainColumnList, &newDomainRows{ds: first, now: now}); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, "INSERT INTO domains SELECT * FROM new_domains ON CONFLICT (name) DO NOTHING")
			added = int(tag.RowsAffected())
			return err
		})
	}
	if err != nil {
		return 0, 0, fmt.Errorf("add %d domains: %w", len(ds), err)
	}
	return added, len(ds) - added, nil
}

// GetDomain implements store.Store.
func (s *Store) GetDomain(ctx context.Context, name string) (*store.Domain, error) {
	var d *store.Domain
	err := s.query(ctx, func(q querier) error {
		var err error
		d, err = scanDomain(q.QueryRow(ctx, "SELECT "+domainColumns+" FROM domains WHERE name = $1", name))
		return notFound(err)
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
		var err error
		out, err = queryDomains(ctx, q, "SELECT "+domainColumns+" FROM domains WHERE name > $1 ORDER BY name LIMIT $2", after, limit)
		return err
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
		rows, err := q.Query(ctx, `SELECT name, next_attempt FROM domains
			WHERE next_attempt IS NOT NULL AND next_attempt <= $1
			ORDER BY next_attempt, name LIMIT $2`, clampTime(before), limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e store.DueEntry
			if err := rows.Scan(&e.Name, &e.At); err != nil {
				return err
			}
			e.At = e.At.UTC()
			out = append(out, e)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("due before %s: %w", before.Format(time.RFC3339), err)
	}
	return out, nil
}

// newDomainRows is the pgx.CopyFromSource of AddDomains: the records of
// ds (of ds[i] for each i of only, when only is set), zero AddedAt and
// UpdatedAt set to now, in one reused row.
type newDomainRows struct {
	ds   []*store.Domain
	only []int
	now  time.Time
	next int
	row  []any
	err  error
}

func (r *newDomainRows) Next() bool {
	n := len(r.ds)
	if r.only != nil {
		n = len(r.only)
	}
	if r.err != nil || r.next >= n {
		return false
	}
	d := r.ds[r.next]
	if r.only != nil {
		d = r.ds[r.only[r.next]]
	}
	r.next++
	rec := *d
	if rec.AddedAt.IsZero() {
		rec.AddedAt = r.now
	}
	if rec.UpdatedAt.IsZero() {
		rec.UpdatedAt = r.now
	}
	r.row, r.err = appendDomainValues(r.row[:0], &rec)
	return r.err == nil
}

func (r *newDomainRows) Values() ([]any, error) { return r.row, r.err }
func (r *newDomainRows) Err() error             { return r.err }

// isUniqueViolation reports whether err is PostgreSQL's unique_violation.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// nameOf returns d.Name, or "<nil>" for a nil d.
func nameOf(d *store.Domain) string {
	if d == nil {
		return "<nil>"
	}
	return d.Name
}

var _ store.DomainsReader = (*Store)(nil)

// GetDomains implements store.DomainsReader in one statement.
func (s *Store) GetDomains(ctx context.Context, names []string) ([]*store.Domain, error) {
	var out []*store.Domain
	err := s.query(ctx, func(q querier) error {
		var err error
		out, err = queryDomains(ctx, q, "SELECT "+domainColumns+" FROM domains WHERE name = ANY($1)", names)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get %d domains: %w", len(names), err)
	}
	return out, nil
}
