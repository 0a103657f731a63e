package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
)

var _ store.Leaser = (*Store)(nil)

// ClaimDue implements store.Leaser in one statement: an index range scan
// of domains_due, earliest first, that locks each due row it takes (FOR
// UPDATE SKIP LOCKED: a row another host is claiming or writing at this
// moment is passed over, not waited for), leaves out the names with an
// unexpired lease, and writes a lease with a new token for each of the
// others. A lease that another claim wrote since the statement's snapshot
// is not replaced (the upsert checks the row as committed), so two hosts
// never hold one name. A limit below 1 claims nothing. The leases are
// returned earliest due first. A lapsed lease is taken only after its
// grace (leaseGrace).
func (s *Store) ClaimDue(ctx context.Context, host string, before time.Time, limit int, ttl time.Duration) ([]store.Lease, error) {
	if limit < 1 {
		return nil, nil
	}
	if err := checkLeaseArgs(host, ttl); err != nil {
		return nil, fmt.Errorf("claim due names: %w", err)
	}
	now := s.leaseNow()
	var out []store.Lease
	err := s.query(ctx, func(q querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, `WITH clk AS (SELECT `+leaseNowSQL(2)+` AS t),
			due AS (
				SELECT d.name, d.next_attempt FROM domains d
				WHERE d.next_attempt IS NOT NULL AND d.next_attempt <= $1
				  AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = d.name AND l.expires > (SELECT t FROM clk) - $6::bigint * interval '1 microsecond')
				ORDER BY d.next_attempt, d.name
				LIMIT $3
				FOR UPDATE OF d SKIP LOCKED
			), claimed AS (
				INSERT INTO leases AS l (name, host, token, expires)
				SELECT name, $4, nextval('lease_token'), (SELECT t FROM clk) + $5::bigint * interval '1 microsecond' FROM due
				ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, token = EXCLUDED.token, expires = EXCLUDED.expires
				WHERE l.expires <= (SELECT t FROM clk) - $6::bigint * interval '1 microsecond'
				RETURNING l.name, l.token, l.expires
			)
			SELECT c.name, c.token, c.expires FROM claimed c JOIN due USING (name)
			ORDER BY due.next_attempt, due.name`,
			clampTime(before), now, limit, host, ttl.Microseconds(), leaseGrace(ttl).Microseconds())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			l := store.Lease{Host: host}
			if err := rows.Scan(&l.Name, &l.Token, &l.Expires); err != nil {
				return err
			}
			l.Expires = l.Expires.UTC()
			out = append(out, l)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim due names for %s: %w", host, err)
	}
	return out, nil
}

// Claim implements store.Leaser in one transaction: it locks the name's
// record (waiting for a claim or a write of it under way), then writes
// the lease unless another host holds one that has not lapsed, or lapsed
// less than its grace ago (leaseGrace).
func (s *Store) Claim(ctx context.Context, host, name string, ttl time.Duration) (store.Lease, error) {
	if err := checkLeaseArgs(host, ttl); err != nil {
		return store.Lease{}, fmt.Errorf("claim %s: %w", name, err)
	}
	l := store.Lease{Name: name, Host: host}
	err := s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT 1 FROM domains WHERE name = $1 FOR UPDATE", name); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `WITH clk AS (SELECT `+leaseNowSQL(5)+` AS t),
			d AS (SELECT name FROM domains WHERE name = $1)
			INSERT INTO leases AS l (name, host, token, expires)
			SELECT name, $2, nextval('lease_token'), (SELECT t FROM clk) + $3::bigint * interval '1 microsecond' FROM d
			ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, token = EXCLUDED.token, expires = EXCLUDED.expires
			WHERE l.expires <= (SELECT t FROM clk) - $4::bigint * interval '1 microsecond' OR l.host = $2
			RETURNING l.token, l.expires`, name, host, ttl.Microseconds(), leaseGrace(ttl).Microseconds(), s.leaseNow()).Scan(&l.Token, &l.Expires)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// Either the name is not managed, or another host holds it.
		var (
			holder  string
			expires time.Time
		)
		err = tx.QueryRow(ctx, `SELECT l.host, l.expires FROM domains d JOIN leases l USING (name) WHERE d.name = $1`, name).Scan(&holder, &expires)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("held by %s until %s: %w", holder, expires.UTC().Format(time.RFC3339), store.ErrLeased)
	})
	if err != nil {
		return store.Lease{}, fmt.Errorf("claim %s for %s: %w", name, host, err)
	}
	l.Expires = l.Expires.UTC()
	return l, nil
}

// Renew implements store.Leaser in one statement.
func (s *Store) Renew(ctx context.Context, ls []store.Lease, ttl time.Duration) ([]store.Lease, error) {
	if len(ls) == 0 {
		return nil, nil
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("renew %d leases: ttl %s is not positive", len(ls), ttl)
	}
	names, tokens := leaseKeys(ls)
	var out []store.Lease
	err := s.query(ctx, func(q querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, `UPDATE leases l SET expires = `+leaseNowSQL(4)+` + $3::bigint * interval '1 microsecond'
			FROM unnest($1::text[], $2::bigint[]) AS r(name, token)
			WHERE l.name = r.name AND l.token = r.token
			RETURNING l.name, l.host, l.token, l.expires`, names, tokens, ttl.Microseconds(), s.leaseNow())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var l store.Lease
			if err := rows.Scan(&l.Name, &l.Host, &l.Token, &l.Expires); err != nil {
				return err
			}
			l.Expires = l.Expires.UTC()
			out = append(out, l)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("renew %d leases: %w", len(ls), err)
	}
	return out, nil
}

// Release implements store.Leaser in one statement.
func (s *Store) Release(ctx context.Context, ls []store.Lease) error {
	if len(ls) == 0 {
		return nil
	}
	names, tokens := leaseKeys(ls)
	err := s.query(ctx, func(q querier) error {
		_, err := q.Exec(ctx, `DELETE FROM leases l USING unnest($1::text[], $2::bigint[]) AS r(name, token)
			WHERE l.name = r.name AND l.token = r.token`, names, tokens)
		return err
	})
	if err != nil {
		return fmt.Errorf("release %d leases: %w", len(ls), err)
	}
	return nil
}

// Leases implements store.Leaser.
func (s *Store) Leases(ctx context.Context) ([]store.Lease, error) {
	var out []store.Lease
	err := s.query(ctx, func(q querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, "SELECT name, host, token, expires FROM leases WHERE expires > "+leaseNowSQL(1)+" ORDER BY host, name", s.leaseNow())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var l store.Lease
			if err := rows.Scan(&l.Name, &l.Host, &l.Token, &l.Expires); err != nil {
				return err
			}
			l.Expires = l.Expires.UTC()
			out = append(out, l)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	return out, nil
}

// LeaseCounts implements store.LeaseCounter in one statement that
// returns one row per host, not one per lease.
func (s *Store) LeaseCounts(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	err := s.query(ctx, func(q querier) error {
		clear(out)
		rows, err := q.Query(ctx, "SELECT host, count(*) FROM leases WHERE expires > "+leaseNowSQL(1)+" GROUP BY host", s.leaseNow())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var host string
			var n int64
			if err := rows.Scan(&host, &n); err != nil {
				return err
			}
			out[host] = int(n)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("count leases: %w", err)
	}
	return out, nil
}

// fenceSQL takes a share lock on a lease's row and reads it while the
// lease's token is still the name's.
const fenceSQL = "SELECT true FROM leases WHERE name = $1 AND token = $2 FOR SHARE"

// fence is the check of a write made under a lease (store.WithLease),
// run in the write's transaction before it writes: a share lock on the
// lease's row, which a claim of the name (an update of the row) then
// waits for until the write commits, and the token compared. A lease that
// is no longer held returns an error wrapping store.ErrLeaseLost, and
// the caller's transaction writes nothing. Without a lease in ctx it
// does nothing.
func fence(ctx context.Context, q querier) error {
	l, ok := store.LeaseFrom(ctx)
	if !ok {
		return nil
	}
	return checkFence(ctx, q.QueryRow(ctx, fenceSQL, l.Name, l.Token))
}

// queueFence queues fence's statement in b when ctx carries a lease, and
// reports whether it did; checkFence reads its result.
func queueFence(ctx context.Context, b *pgx.Batch) bool {
	l, ok := store.LeaseFrom(ctx)
	if ok {
		b.Queue(fenceSQL, l.Name, l.Token)
	}
	return ok
}

// checkFence reads the row of fence's statement for the lease ctx
// carries.
func checkFence(ctx context.Context, row pgx.Row) error {
	l, _ := store.LeaseFrom(ctx)
	var held bool
	err := row.Scan(&held)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("the lease of %s on %s (token %d) is no longer held: another host has claimed the name since, or the lease was released: %w",
			l.Host, l.Name, l.Token, store.ErrLeaseLost)
	}
	return err
}

// leaseNowSQL is the time leases are claimed, renewed and compared at,
// in a statement whose argument n is leaseNow's: the database's clock
// (clock_timestamp()) when that is NULL, so that every host of the fleet
// goes by one clock and a host whose own clock runs fast does not take
// another's lease early.
func leaseNowSQL(n int) string {
	return fmt.Sprintf("COALESCE($%d::timestamptz, clock_timestamp())", n)
}

// leaseNow is the argument of leaseNowSQL: nil (the database's clock),
// unless the store was opened with a Clock (tests).
func (s *Store) leaseNow() *time.Time {
	if s.dbClock {
		return nil
	}
	t := s.now()
	return &t
}

// leaseGrace is how long after a lease lapsed a claim of ttl may take
// its name: half the TTL. A holder that was cut off from the database
// stops its order before its lease lapses (see renewer's lease doubt),
// but a certificate it obtained just then is still worth storing; in the
// grace it can renew the lease and write, rather than have another host
// order the name again and the CA's certificate thrown away. A host that
// died gives up its names TTL*1.5 after its last renewal.
func leaseGrace(ttl time.Duration) time.Duration { return ttl / 2 }

// checkLeaseArgs checks the arguments of a claim.
func checkLeaseArgs(host string, ttl time.Duration) error {
	switch {
	case host == "":
		return errors.New("empty host name")
	case ttl <= 0:
		return fmt.Errorf("ttl %s is not positive", ttl)
	}
	return nil
}

// leaseKeys returns the names and tokens of ls, in order.
func leaseKeys(ls []store.Lease) ([]string, []int64) {
	names := make([]string, len(ls))
	tokens := make([]int64, len(ls))
	for i, l := range ls {
		names[i], tokens[i] = l.Name, l.Token
	}
	return names, tokens
}
