package postgres

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
)

var _ store.KeyRewriter = (*Store)(nil)

// maxRewriteKeys bounds one RewriteKeys batch, as maxBatchCerts bounds a
// PutCertificates batch: its rows stay locked until it commits.
const maxRewriteKeys = maxBatchCerts

// RewriteKeys implements store.KeyRewriter in one transaction that locks
// the rows it reads (FOR UPDATE). A certificate whose key is rewritten
// takes the next version as its key_version, not as its version (that of
// its last full write, which orders the links of its names): the hosts'
// local copies apply it as a store.ChangeRewriteKey, which changes no
// link. Accounts and the key pool are not replicated: every host reads
// them from the database.
func (s *Store) RewriteKeys(ctx context.Context, kind store.KeyKind, after string, limit int, fn func(id string, key []byte) ([]byte, error)) (string, error) {
	if limit < 1 {
		return "", nil
	}
	if limit > maxRewriteKeys {
		return "", fmt.Errorf("rewrite %d %s keys (at most %d in one): %w", limit, kind, maxRewriteKeys, store.ErrBatchTooLarge)
	}
	var (
		last string
		err  error
	)
	switch kind {
	case store.KeyOfCertificate:
		err = s.versioned(ctx, func(tx pgx.Tx) (uint64, error) {
			l, v, err := rewriteCertKeys(ctx, tx, after, limit, fn)
			last = l
			return v, err
		})
	case store.KeyOfAccount:
		err = s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
			var err error
			last, err = rewriteAccountKeys(ctx, tx, after, limit, fn)
			return err
		})
	case store.KeyOfPool:
		err = s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
			var err error
			last, err = rewritePoolKeys(ctx, tx, after, limit, fn)
			return err
		})
	default:
		return "", fmt.Errorf("unknown kind of key record %q: %w", kind, store.ErrInvalid)
	}
	if err != nil {
		return "", fmt.Errorf("rewrite %s keys after %q: %w", kind, after, err)
	}
	return last, nil
}

// keyRow is one record's ID and key as stored.
type keyRow struct {
	id  string
	key []byte
}

// lockRows reads the rows query selects, (id, key) pairs.
func lockRows(ctx context.Context, tx pgx.Tx, query, after string, limit int) ([]keyRow, error) {
	rows, err := tx.Query(ctx, query, after, limit)
	if err != nil {
		return nil, err
	}
	var out []keyRow
	for rows.Next() {
		var r keyRow
		if err := rows.Scan(&r.id, &r.key); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// rewriteCertKeys rewrites the certificate keys of one batch in tx and
// returns the last ID read and the highest version a rewrite took (0 for
// none).
func rewriteCertKeys(ctx context.Context, tx pgx.Tx, after string, limit int, fn func(string, []byte) ([]byte, error)) (string, uint64, error) {
	rows, err := lockRows(ctx, tx, "SELECT id, key_pem FROM certificates WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE", after, limit)
	if err != nil {
		return "", 0, err
	}
	var (
		last string
		v    int64
	)
	for _, r := range rows {
		last = r.id
		key, err := fn(r.id, r.key)
		if err != nil {
			return "", 0, err
		}
		if key == nil {
			continue
		}
		if err := tx.QueryRow(ctx, "UPDATE certificates SET key_pem = $2, key_version = nextval('change_version') WHERE id = $1 RETURNING key_version",
			r.id, key).Scan(&v); err != nil {
			return "", 0, err
		}
	}
	return last, uint64(v), nil
}

// rewriteAccountKeys rewrites the account keys of one batch in tx and
// returns the last ID read.
func rewriteAccountKeys(ctx context.Context, tx pgx.Tx, after string, limit int, fn func(string, []byte) ([]byte, error)) (string, error) {
	rows, err := lockRows(ctx, tx, "SELECT id, record FROM accounts WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE", after, limit)
	if err != nil {
		return "", err
	}
	var last string
	for _, r := range rows {
		last = r.id
		var a store.Account
		if err := json.Unmarshal(r.key, &a); err != nil {
			return "", fmt.Errorf("account %s: %w", r.id, err)
		}
		key, err := fn(r.id, a.KeyPEM)
		if err != nil {
			return "", err
		}
		if key == nil {
			continue
		}
		a.KeyPEM = key
		val, err := json.Marshal(&a)
		if err != nil {
			return "", fmt.Errorf("account %s: %w", r.id, err)
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET record = $2 WHERE id = $1", r.id, val); err != nil {
			return "", err
		}
	}
	return last, nil
}

// rewritePoolKeys rewrites the pool keys of one batch in tx, every slot
// holding one of them, and returns the last key ID read. The rows stay
// locked until tx ends: a slot another host swaps meanwhile waits, and
// then swaps the key it read (its ID is unchanged).
func rewritePoolKeys(ctx context.Context, tx pgx.Tx, after string, limit int, fn func(string, []byte) ([]byte, error)) (string, error) {
	// The first slot of each key (by key type, then slot) gives the key
	// fn sees.
	rows, err := lockRows(ctx, tx, `SELECT id, key_pem FROM key_pool
		WHERE id IN (SELECT DISTINCT id FROM key_pool WHERE id > $1 ORDER BY id LIMIT $2)
		ORDER BY id, key_type, slot FOR UPDATE`, after, limit)
	if err != nil {
		return "", err
	}
	var last string
	for _, r := range rows {
		if r.id == last {
			continue
		}
		last = r.id
		key, err := fn(r.id, r.key)
		if err != nil {
			return "", err
		}
		if key == nil {
			// The first slot is as fn wants it; a twin sealed
			// otherwise (under a retired KEK) still gets it.
			key = r.key
		}
		if _, err := tx.Exec(ctx, "UPDATE key_pool SET key_pem = $2 WHERE id = $1 AND key_pem <> $2", r.id, key); err != nil {
			return "", fmt.Errorf("pool key %s: %w", r.id, err)
		}
	}
	return last, nil
}

// CountKeys implements store.KeyRewriter.
func (s *Store) CountKeys(ctx context.Context, kind store.KeyKind) (int, error) {
	var table string
	switch kind {
	case store.KeyOfCertificate:
		table = "certificates"
	case store.KeyOfAccount:
		table = "accounts"
	case store.KeyOfPool:
		table = "(SELECT DISTINCT id FROM key_pool) AS pool_keys"
	default:
		return 0, fmt.Errorf("unknown kind of key record %q: %w", kind, store.ErrInvalid)
	}
	var n int
	err := s.query(ctx, func(q querier) error {
		return q.QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("count %s keys: %w", kind, err)
	}
	return n, nil
}
