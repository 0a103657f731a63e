package postgres

import (
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/certserver/certserver/store"
)

var _ store.ChallengeLister = (*Store)(nil)

// ListChallenges implements store.ChallengeLister. The tokens are a
// COLLATE "C" primary key, so the prefix is the range [prefix, the prefix
// with its last byte raised) of that index: no table scan, no migration.
func (s *Store) ListChallenges(ctx context.Context, prefix string, limit int) ([]store.Challenge, error) {
	if err := store.ValidateChallengePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list challenges: %w", err)
	}
	if limit < 1 {
		return nil, nil
	}
	end := prefixEnd(prefix)
	var out []store.Challenge
	err := s.query(ctx, func(q querier) error {
		out = out[:0]
		sql, args := `SELECT token, key_auth, expires_ns FROM challenges
			WHERE token >= $1 AND token < $4 AND expires_ns > $2 ORDER BY token LIMIT $3`,
			[]any{prefix, nanos(s.now()), limit, end}
		if end == "" {
			sql, args = `SELECT token, key_auth, expires_ns FROM challenges
			WHERE token >= $1 AND expires_ns > $2 ORDER BY token LIMIT $3`, args[:3]
		}
		rows, err := q.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var c store.Challenge
			var expires int64
			if err := rows.Scan(&c.Token, &c.KeyAuth, &expires); err != nil {
				return err
			}
			c.Expires = fromNanos(expires)
			out = append(out, c)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list challenges %s: %w", prefix, err)
	}
	return out, nil
}

// prefixEnd returns the least string above every string that begins with
// prefix, in byte order: prefix with its last character raised by one
// code point and what follows dropped (UTF-8 keeps code-point order in
// byte order, and the bound stays valid text for PostgreSQL). Surrogates
// are skipped; a last character of U+10FFFF is dropped and the one before
// raised. A prefix made only of U+10FFFF has no end: "" then means none.
func prefixEnd(prefix string) string {
	for prefix != "" {
		r, size := utf8.DecodeLastRuneInString(prefix)
		prefix = prefix[:len(prefix)-size]
		if r == utf8.RuneError && size <= 1 || r == utf8.MaxRune {
			continue
		}
		r++
		if r == 0xd800 {
			r = 0xe000
		}
		return prefix + string(r)
	}
	return ""
}
