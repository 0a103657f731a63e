package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
)

// How the store serves the fleet's local copies (store.ReplicationSource):
//
//   - Every write of a certificate record or a challenge token takes the
//     next value of the sequence change_version, and versioned writes take
//     turns (the lock of replication_state's one row), so that they commit
//     in version order: a reader that sees version V has seen every version
//     below it, and ChangesAfter never skips a change that commits late.
//   - A record keeps only the version of its last write; a deletion leaves
//     a tombstone with its version. So ChangesAfter returns the latest
//     change of each record, in version order.
//   - A certificate's key rewrite (RewriteKeys) takes a version of its
//     own, key_version, and leaves version, that of the record's last
//     full write, as it was: a full write orders the links of its names
//     (the newest wins a name), a key rewrite changes none. ChangesAfter
//     returns a full put, at version and with the current key, when
//     version is above after, and a store.ChangeRewriteKey at key_version
//     when key_version is above both after and version.
//   - Tombstones are pruned by ReportHost: those every host has applied
//     (the lowest Applied of the hosts that reported within
//     Options.HostRetention). A host that comes back after more than
//     that is answered ErrPruned and must copy the store afresh. Expired
//     challenge tokens are removed then too, without tombstones: a local
//     copy lets them expire by itself.

// ErrPruned is wrapped by the error of ChangesAfter when tombstones after
// the version asked for may have been pruned: a host that was away for
// longer than Options.HostRetention. Its local copy may hold records
// deleted since, so it must empty it and copy the store from version 0.
var ErrPruned = errors.New("changes pruned")

// Listen pings its connection after listenIdle without a notification,
// and gives up on it when the ping takes longer than listenPing.
const (
	listenIdle = 30 * time.Second
	listenPing = 10 * time.Second
)

// challengeGrace is how long an expired challenge token stays before
// ReportHost removes it.
const challengeGrace = time.Hour

// ChangesAfter implements store.ReplicationSource, in one read-only
// snapshot: the certificate records, key rewrites, tokens and tombstones
// whose version is above after, in version order. An after below the
// pruned horizon (other than 0, a fresh copy) wraps ErrPruned.
func (s *Store) ChangesAfter(ctx context.Context, after uint64, limit int) ([]store.Change, error) {
	if limit < 1 {
		return nil, nil
	}
	var out []store.Change
	err := s.tx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		out = out[:0]
		var b pgx.Batch
		b.Queue("SELECT pruned_through FROM replication_state")
		b.Queue("SELECT "+certColumns+", c.version FROM certificates c WHERE c.version > $1 ORDER BY c.version LIMIT $2", int64(after), limit)
		b.Queue("SELECT version, token, key_auth, expires_ns FROM challenges WHERE version > $1 ORDER BY version LIMIT $2", int64(after), limit)
		b.Queue("SELECT version, kind, key FROM tombstones WHERE version > $1 ORDER BY version LIMIT $2", int64(after), limit)
		b.Queue("SELECT key_version, id, key_pem FROM certificates WHERE key_version > $1 AND key_version > version ORDER BY key_version LIMIT $2", int64(after), limit)
		res := tx.SendBatch(ctx, &b)
		defer res.Close()
		var pruned int64
		if err := res.QueryRow().Scan(&pruned); err != nil {
			return err
		}
		if after > 0 && after < uint64(pruned) {
			return fmt.Errorf("%w: tombstones through version %d are gone, the copy is at %d: empty it and copy the store afresh", ErrPruned, pruned, after)
		}
		rows, err := res.Query()
		if err != nil {
			return err
		}
		for rows.Next() {
			var v int64
			c, err := scanCertificate(rows, &v)
			if err != nil {
				return err
			}
			out = append(out, store.Change{Version: uint64(v), Kind: store.ChangePutCertificate, Certificate: c})
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = res.Query()
		if err != nil {
			return err
		}
		for rows.Next() {
			var (
				ch     = store.Change{Kind: store.ChangePutChallenge}
				v, exp int64
			)
			if err := rows.Scan(&v, &ch.Token, &ch.KeyAuth, &exp); err != nil {
				return err
			}
			ch.Version, ch.Expires = uint64(v), fromNanos(exp)
			out = append(out, ch)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = res.Query()
		if err != nil {
			return err
		}
		for rows.Next() {
			var (
				v         int64
				kind, key string
			)
			if err := rows.Scan(&v, &kind, &key); err != nil {
				return err
			}
			ch := store.Change{Version: uint64(v)}
			switch kind {
			case "certificate":
				ch.Kind, ch.ID = store.ChangeDeleteCertificate, key
			case "challenge":
				ch.Kind, ch.Token = store.ChangeDeleteChallenge, key
			default:
				return fmt.Errorf("tombstone of unknown kind %q", kind)
			}
			out = append(out, ch)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = res.Query()
		if err != nil {
			return err
		}
		for rows.Next() {
			var (
				ch = store.Change{Kind: store.ChangeRewriteKey}
				v  int64
			)
			if err := rows.Scan(&v, &ch.ID, &ch.KeyPEM); err != nil {
				return err
			}
			ch.Version = uint64(v)
			out = append(out, ch)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("changes after version %d: %w", after, err)
	}
	slices.SortFunc(out, func(a, b store.Change) int { return cmp.Compare(a.Version, b.Version) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// LatestVersion implements store.ReplicationSource: the version of the
// newest committed change.
func (s *Store) LatestVersion(ctx context.Context) (uint64, error) {
	var v int64
	err := s.query(ctx, func(q querier) error {
		return q.QueryRow(ctx, "SELECT latest_version FROM replication_state").Scan(&v)
	})
	if err != nil {
		return 0, fmt.Errorf("latest version: %w", err)
	}
	return uint64(v), nil
}

// Listen implements store.ReplicationSource on a connection of its own,
// outside the pool (LISTEN needs a session: a direct connection, or a
// PgBouncer in session mode, not in transaction mode). Its errors but
// ctx's wrap store.ErrUnavailable.
func (s *Store) Listen(ctx context.Context, notify func(version uint64)) error {
	conn, err := pgx.ConnectConfig(ctx, s.conf.Copy())
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("listen: %w", s.unreachable(err))
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		conn.Close(cctx)
		cancel()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{Channel}.Sanitize()); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("listen: %w", s.unreachable(err))
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdle)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && wctx.Err() != nil:
			// Quiet for listenIdle: is the server still there? A
			// connection that went away without a word (a host cut
			// off, a failover) says nothing until written to.
			pctx, cancel := context.WithTimeout(ctx, listenPing)
			err = conn.Ping(pctx)
			cancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				return fmt.Errorf("listen: no answer to a ping: %w", s.unreachable(err))
			}
			continue
		case err != nil:
			return fmt.Errorf("listen: %w", s.unreachable(err))
		}
		v, err := strconv.ParseUint(n.Payload, 10, 64)
		if err != nil {
			s.log.Warn("listen: ignoring a notification that is not a version", "channel", n.Channel, "payload_bytes", len(n.Payload))
			continue
		}
		notify(v)
	}
}

// unreachable wraps store.ErrUnavailable around err, whatever it is: a
// listening connection that fails is one to make again.
func (s *Store) unreachable(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w (postgres %s): %w", store.ErrUnavailable, s.where, err)
}

// ReportHost implements store.ReplicationSource. A zero SeenAt is stored
// as the current time (SeenAt is kept to the microsecond). It then prunes
// what every host has applied (see ErrPruned) and expired tokens.
func (s *Store) ReportHost(ctx context.Context, h store.Host) error {
	if h.Name == "" {
		return fmt.Errorf("report host: empty name: %w", store.ErrInvalid)
	}
	now := s.now()
	if h.SeenAt.IsZero() {
		h.SeenAt = now
	}
	err := s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO hosts (name, applied, seen_at, renews, in_flight, lag_seconds) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (name) DO UPDATE SET applied = EXCLUDED.applied, seen_at = EXCLUDED.seen_at, renews = EXCLUDED.renews,
				in_flight = EXCLUDED.in_flight, lag_seconds = EXCLUDED.lag_seconds`,
			h.Name, int64(h.Applied), h.SeenAt, h.Renews, h.InFlight, h.LagSeconds)
		return err
	})
	if err != nil {
		return fmt.Errorf("report host %s: %w", h.Name, err)
	}
	if err := s.prune(ctx, now); err != nil {
		return fmt.Errorf("report host %s: prune: %w", h.Name, err)
	}
	return nil
}

// prune removes the tombstones every host that reported within
// HostRetention has applied, challenge tokens expired for more than
// challengeGrace and expired on-demand verdicts (by the database's clock,
// see verdictNowSQL). The pruned horizon only grows.
func (s *Store) prune(ctx context.Context, now time.Time) error {
	return s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		var horizon *int64
		if err := tx.QueryRow(ctx, `SELECT min(applied) FROM hosts WHERE seen_at >= $1`, now.Add(-s.opts.HostRetention)).Scan(&horizon); err != nil {
			return err
		}
		if horizon != nil {
			// The horizon grows to the newest certificate tombstone
			// removed, not to the hosts' minimum: a copy behind it lacks
			// a removal only when a tombstone above its version is gone,
			// and a host that joins (copying from 0 in batches) must not
			// be refused for versions whose tombstones never existed.
			// A challenge's tombstone does not count: a copy that misses
			// the removal of a token keeps it only until it expires, and
			// every order removes its tokens, which would otherwise
			// refuse every host joining a fleet that issues.
			_, err := tx.Exec(ctx, `WITH gone AS (DELETE FROM tombstones WHERE version <= $1 RETURNING kind, version)
				UPDATE replication_state SET pruned_through = (SELECT max(version) FROM gone WHERE kind = 'certificate')
				WHERE (SELECT max(version) FROM gone WHERE kind = 'certificate') > pruned_through`, *horizon)
			if err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM challenges WHERE expires_ns < $1`, nanos(now.Add(-challengeGrace))); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM on_demand_verdicts WHERE expires_ns <= `+verdictNowSQL(1), s.verdictNow())
		return err
	})
}

// Hosts implements store.ReplicationSource.
func (s *Store) Hosts(ctx context.Context) ([]store.Host, error) {
	var out []store.Host
	err := s.query(ctx, func(q querier) error {
		out = out[:0]
		rows, err := q.Query(ctx, "SELECT name, applied, seen_at, renews, in_flight, lag_seconds FROM hosts ORDER BY name")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				h       store.Host
				applied int64
			)
			if err := rows.Scan(&h.Name, &applied, &h.SeenAt, &h.Renews, &h.InFlight, &h.LagSeconds); err != nil {
				return err
			}
			h.Applied, h.SeenAt = uint64(applied), h.SeenAt.UTC()
			out = append(out, h)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	return out, nil
}
