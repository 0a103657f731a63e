package store

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Export is what a copy of a store into another one (`certserver fleet
// migrate`) needs to know beyond what the Store methods list: the IDs of
// the ACME accounts, the scopes of the rate-limit buckets and the HTTP-01
// challenges, which Store only reads by their key.
type Export struct {
	// AccountIDs are the IDs of every account, in ID order.
	AccountIDs []string
	// RateScopes are the scopes that hold a bucket not yet full, in
	// order.
	RateScopes []string
	// Challenges are the challenges not yet expired, in token order.
	Challenges []ExportedChallenge
}

// ExportedChallenge is one HTTP-01 challenge of an Export.
type ExportedChallenge struct {
	Token   string
	KeyAuth string
	Expires time.Time
}

// Export lists the accounts, rate-limit scopes and challenges of the store,
// in one read transaction.
func (b *Badger) Export(ctx context.Context) (*Export, error) {
	out := &Export{}
	now := b.now()
	err := b.view(ctx, func(txn *badger.Txn) error {
		keys := func(prefix string, fn func(item *badger.Item, rest []byte) error) error {
			p := []byte(prefix)
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: false})
			defer it.Close()
			for it.Seek(p); it.ValidForPrefix(p); it.Next() {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := fn(it.Item(), it.Item().Key()[len(p):]); err != nil {
					return err
				}
			}
			return nil
		}
		if err := keys(prefixAccount, func(_ *badger.Item, rest []byte) error {
			out.AccountIDs = append(out.AccountIDs, string(rest))
			return nil
		}); err != nil {
			return err
		}
		if err := keys(prefixBucket, func(_ *badger.Item, rest []byte) error {
			scope, _, ok := bytes.Cut(rest, []byte{0})
			if ok && (len(out.RateScopes) == 0 || out.RateScopes[len(out.RateScopes)-1] != string(scope)) {
				out.RateScopes = append(out.RateScopes, string(scope))
			}
			return nil
		}); err != nil {
			return err
		}
		return keys(prefixToken, func(item *badger.Item, rest []byte) error {
			var rec challengeRecord
			if err := readJSON(item, &rec); err != nil {
				return fmt.Errorf("challenge %s: %w", rest, err)
			}
			if now.Before(rec.Expires) {
				out.Challenges = append(out.Challenges, ExportedChallenge{Token: string(rest), KeyAuth: rec.KeyAuth, Expires: rec.Expires})
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	return out, nil
}
