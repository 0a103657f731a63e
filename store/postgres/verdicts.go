package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
)

var _ store.Verdicts = (*Store)(nil)

// verdictNowSQL is the time verdicts are claimed, recorded and compared
// at, in nanoseconds, in a statement whose argument n is verdictNow's: the
// database's clock when that is NULL, as for leases (see leaseNowSQL), so
// that a host whose own clock runs fast neither takes another host's
// claim early nor prunes live claims.
func verdictNowSQL(n int) string {
	return fmt.Sprintf("COALESCE($%d::bigint, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000)", n)
}

// verdictNow is the argument of verdictNowSQL: nil (the database's
// clock), unless the store was opened with a Clock (tests).
func (s *Store) verdictNow() *int64 {
	if s.dbClock {
		return nil
	}
	n := nanos(s.now())
	return &n
}

// ClaimVerdict implements store.Verdicts in one statement: the insert of
// a 'checking' row that takes the name only when it has none or its
// verdict has expired (ON CONFLICT ... WHERE), so that of the hosts
// claiming one name at once exactly one gets the row; the others read the
// row that won. A host that finds its own unexpired claim has claimed.
func (s *Store) ClaimVerdict(ctx context.Context, name, host string, ttl time.Duration) (store.Verdict, bool, error) {
	if name == "" || host == "" {
		return store.Verdict{}, false, fmt.Errorf("claim verdict: empty name or host: %w", store.ErrInvalid)
	}
	var (
		v       store.Verdict
		claimed bool
	)
	err := s.query(ctx, func(q querier) error {
		// A row read as expired, or gone, between the two statements is
		// claimed on the next round.
		for range 3 {
			v = store.Verdict{Name: name}
			var state string
			var exp, left int64
			err := q.QueryRow(ctx, `WITH clk AS (SELECT `+verdictNowSQL(4)+` AS t)
				INSERT INTO on_demand_verdicts (name, state, reason, host, expires_ns)
				SELECT $1, 'checking', '', $2, clk.t + $3::bigint FROM clk
				ON CONFLICT (name) DO UPDATE SET state = 'checking', reason = '', host = EXCLUDED.host, expires_ns = EXCLUDED.expires_ns
				WHERE on_demand_verdicts.expires_ns <= (SELECT t FROM clk)
				RETURNING state, reason, host, expires_ns, expires_ns - (SELECT t FROM clk)`,
				name, host, int64(ttl), s.verdictNow()).Scan(&state, &v.Reason, &v.Host, &exp, &left)
			if err == nil {
				v.State, v.Expires, v.Left, claimed = store.VerdictState(state), fromNanos(exp), time.Duration(left), true
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			err = q.QueryRow(ctx, `WITH clk AS (SELECT `+verdictNowSQL(2)+` AS t)
				SELECT state, reason, host, expires_ns, expires_ns - clk.t FROM on_demand_verdicts, clk WHERE name = $1`, name, s.verdictNow()).
				Scan(&state, &v.Reason, &v.Host, &exp, &left)
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			if left > 0 {
				// This host's own claim is its: a claim retried after its
				// insert committed but the reply was lost must not wait
				// on itself.
				v.State, v.Expires, v.Left = store.VerdictState(state), fromNanos(exp), time.Duration(left)
				claimed = v.State == store.VerdictChecking && v.Host == host
				return nil
			}
		}
		return fmt.Errorf("the verdict changed under three claims in a row")
	})
	if err != nil {
		return store.Verdict{}, false, fmt.Errorf("claim verdict on %s: %w", name, err)
	}
	return v, claimed, nil
}

// GetVerdict implements store.Verdicts.
func (s *Store) GetVerdict(ctx context.Context, name string) (store.Verdict, bool, error) {
	if name == "" {
		return store.Verdict{}, false, fmt.Errorf("get verdict: empty name: %w", store.ErrInvalid)
	}
	var (
		v  store.Verdict
		ok bool
	)
	err := s.query(ctx, func(q querier) error {
		v, ok = store.Verdict{Name: name}, false
		var state string
		var exp, left int64
		err := q.QueryRow(ctx, `WITH clk AS (SELECT `+verdictNowSQL(2)+` AS t)
			SELECT state, reason, host, expires_ns, expires_ns - clk.t FROM on_demand_verdicts, clk WHERE name = $1 AND expires_ns > clk.t`,
			name, s.verdictNow()).Scan(&state, &v.Reason, &v.Host, &exp, &left)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		v.State, v.Expires, v.Left, ok = store.VerdictState(state), fromNanos(exp), time.Duration(left), true
		return nil
	})
	if err != nil {
		return store.Verdict{}, false, fmt.Errorf("get verdict on %s: %w", name, err)
	}
	if !ok {
		return store.Verdict{}, false, nil
	}
	return v, true, nil
}

// PutVerdict implements store.Verdicts in one statement: an upsert that
// does not overwrite another host's unexpired claim.
func (s *Store) PutVerdict(ctx context.Context, v store.Verdict, ttl time.Duration) (store.Verdict, error) {
	switch {
	case v.Name == "" || v.Host == "":
		return store.Verdict{}, fmt.Errorf("put verdict: empty name or host: %w", store.ErrInvalid)
	case v.State != store.VerdictAllowed && v.State != store.VerdictRefused:
		return store.Verdict{}, fmt.Errorf("put verdict on %s: state %q is not %q or %q: %w", v.Name, v.State, store.VerdictAllowed, store.VerdictRefused, store.ErrInvalid)
	}
	err := s.query(ctx, func(q querier) error {
		var exp, left int64
		err := q.QueryRow(ctx, `WITH clk AS (SELECT `+verdictNowSQL(6)+` AS t)
			INSERT INTO on_demand_verdicts (name, state, reason, host, expires_ns)
			SELECT $1, $2, $3, $4, clk.t + $5::bigint FROM clk
			ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, host = EXCLUDED.host, expires_ns = EXCLUDED.expires_ns
			WHERE on_demand_verdicts.state <> 'checking' OR on_demand_verdicts.host = EXCLUDED.host
				OR on_demand_verdicts.expires_ns <= (SELECT t FROM clk)
			RETURNING expires_ns, expires_ns - (SELECT t FROM clk)`,
			v.Name, string(v.State), v.Reason, v.Host, int64(ttl), s.verdictNow()).Scan(&exp, &left)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrClaimLost
		}
		v.Expires, v.Left = fromNanos(exp), time.Duration(left)
		return err
	})
	if err != nil {
		return store.Verdict{}, fmt.Errorf("put verdict on %s: %w", v.Name, err)
	}
	return v, nil
}
