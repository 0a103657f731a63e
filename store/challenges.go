package store

import (
	"context"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ChallengeLister is implemented by a Store that can list the challenge
// records whose tokens share a prefix. It is an optional ability, found
// with As; Badger and store/postgres have it. certserver's DNS zone
// (renewer/dnszone) reads with it every TXT value stored under one label,
// "dns-01:<label>:…", since one name may carry several at once.
type ChallengeLister interface {
	// ListChallenges returns the challenge records whose token begins
	// with prefix (byte for byte) and whose expiry has not passed by the
	// store's clock, in token order, at most limit of them. prefix must
	// be non-empty and free of NUL bytes (ErrInvalid). It is safe for
	// concurrent use.
	ListChallenges(ctx context.Context, prefix string, limit int) ([]Challenge, error)
}

// Challenge is one challenge record, as PutChallenge stored it.
type Challenge struct {
	Token   string
	KeyAuth string
	Expires time.Time
}

var _ ChallengeLister = (*Badger)(nil)

// ValidateChallengePrefix checks the prefix of ListChallenges: non-empty
// and free of NUL bytes.
func ValidateChallengePrefix(prefix string) error {
	if err := ValidateChallenge(prefix, "-"); err != nil {
		return fmt.Errorf("bad challenge prefix %q: %w", prefix, ErrInvalid)
	}
	return nil
}

// ListChallenges implements ChallengeLister with one prefix scan of the
// token keys.
func (b *Badger) ListChallenges(ctx context.Context, prefix string, limit int) ([]Challenge, error) {
	if err := ValidateChallengePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list challenges: %w", err)
	}
	if limit < 1 {
		return nil, nil
	}
	now := b.now()
	var out []Challenge
	err := b.view(ctx, func(txn *badger.Txn) error {
		p := key(prefixToken, prefix)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: false})
		defer it.Close()
		for it.Seek(p); it.ValidForPrefix(p) && len(out) < limit; it.Next() {
			item := it.Item()
			var rec challengeRecord
			if err := readJSON(item, &rec); err != nil {
				return fmt.Errorf("challenge %s: %w", item.Key()[len(prefixToken):], err)
			}
			if now.Before(rec.Expires) {
				out = append(out, Challenge{Token: string(item.Key()[len(prefixToken):]), KeyAuth: rec.KeyAuth, Expires: rec.Expires})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list challenges %s: %w", prefix, err)
	}
	return out, nil
}
