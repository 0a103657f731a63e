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

// ClaimVerdict implements store.Verdicts in one statement: the insert of
// a 'checking' row that takes the name only when it has none or its
// verdict has expired (ON CONFLICT ... WHERE), so that of the hosts
// claiming one name at once exactly one gets the row; the others read the
// row that won.
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
			now := s.now()
			v = store.Verdict{Name: name}
			var state string
			var exp int64
			err := q.QueryRow(ctx, `INSERT INTO on_demand_verdicts (name, state, reason, host, expires_ns)
				VALUES ($1, 'checking', '', $2, $3)
				ON CONFLICT (name) DO UPDATE SET state = 'checking', reason = '', host = EXCLUDED.host, expires_ns = EXCLUDED.expires_ns
				WHERE on_demand_verdicts.expires_ns <= $4
				RETURNING state, reason, host, expires_ns`,
				name, host, nanos(now.Add(ttl)), nanos(now)).Scan(&state, &v.Reason, &v.Host, &exp)
			if err == nil {
				v.State, v.Expires, claimed = store.VerdictState(state), fromNanos(exp), true
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			err = q.QueryRow(ctx, `SELECT state, reason, host, expires_ns FROM on_demand_verdicts WHERE name = $1`, name).
				Scan(&state, &v.Reason, &v.Host, &exp)
			if errors.Is(err, pgx.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			if exp > nanos(s.now()) {
				v.State, v.Expires, claimed = store.VerdictState(state), fromNanos(exp), false
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

// PutVerdict implements store.Verdicts.
func (s *Store) PutVerdict(ctx context.Context, v store.Verdict, ttl time.Duration) (store.Verdict, error) {
	switch {
	case v.Name == "" || v.Host == "":
		return store.Verdict{}, fmt.Errorf("put verdict: empty name or host: %w", store.ErrInvalid)
	case v.State != store.VerdictAllowed && v.State != store.VerdictRefused:
		return store.Verdict{}, fmt.Errorf("put verdict on %s: state %q is not %q or %q: %w", v.Name, v.State, store.VerdictAllowed, store.VerdictRefused, store.ErrInvalid)
	}
	v.Expires = s.now().Add(ttl)
	err := s.query(ctx, func(q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO on_demand_verdicts (name, state, reason, host, expires_ns) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, host = EXCLUDED.host, expires_ns = EXCLUDED.expires_ns`,
			v.Name, string(v.State), v.Reason, v.Host, nanos(v.Expires))
		return err
	})
	if err != nil {
		return store.Verdict{}, fmt.Errorf("put verdict on %s: %w", v.Name, err)
	}
	v.Expires = fromNanos(nanos(v.Expires))
	return v, nil
}
