package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
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
// token keys, or none: the answer of a scan is kept, and given again
// (without the records expired since) until the next write to the store.
// certserver's DNS zone asks once per query, and a scan costs more than
// the rest of the answer.
func (b *Badger) ListChallenges(ctx context.Context, prefix string, limit int) ([]Challenge, error) {
	if err := ValidateChallengePrefix(prefix); err != nil {
		return nil, fmt.Errorf("list challenges: %w", err)
	}
	if limit < 1 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list challenges %s: %w", prefix, err)
	}
	if b.db.IsClosed() {
		return nil, fmt.Errorf("list challenges %s: %w", prefix, badger.ErrDBClosed)
	}
	now := b.now()
	// The count is read before the scan, and a write bumps it after it
	// commits: a scan kept under a count still current missed no write.
	writes := b.writes.Load()
	if list, ok := b.challengeLists.get(prefix, writes); ok {
		return unexpired(list, now, limit), nil
	}
	var out []Challenge
	complete := false
	err := b.view(ctx, func(txn *badger.Txn) error {
		p := key(prefixToken, prefix)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: p, PrefetchValues: false})
		defer it.Close()
		it.Seek(p)
		for ; it.ValidForPrefix(p) && len(out) < limit; it.Next() {
			item := it.Item()
			var rec challengeRecord
			if err := readJSON(item, &rec); err != nil {
				return fmt.Errorf("challenge %s: %w", item.Key()[len(prefixToken):], err)
			}
			if now.Before(rec.Expires) {
				out = append(out, Challenge{Token: string(item.Key()[len(prefixToken):]), KeyAuth: rec.KeyAuth, Expires: rec.Expires})
			}
		}
		complete = !it.ValidForPrefix(p)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list challenges %s: %w", prefix, err)
	}
	if complete {
		b.challengeLists.put(prefix, writes, out)
	}
	return out, nil
}

// unexpired returns the first limit records of list whose expiry is after
// now, in a new slice.
func unexpired(list []Challenge, now time.Time, limit int) []Challenge {
	var out []Challenge
	for _, c := range list {
		if len(out) == limit {
			break
		}
		if now.Before(c.Expires) {
			out = append(out, c)
		}
	}
	return out
}

// maxCachedLists bounds the challengeListCache: past it the cache starts
// afresh (queries for many different labels at once gain nothing from it
// anyway).
const maxCachedLists = 4096

// challengeListCache keeps complete ListChallenges scans by prefix, each
// with the count of writes it was read under. It is safe for concurrent
// use; its zero value is empty.
type challengeListCache struct {
	mu sync.Mutex
	m  map[string]cachedList
}

type cachedList struct {
	writes uint64
	list   []Challenge
}

// get returns the kept scan of prefix when it was read under writes.
func (c *challengeListCache) get(prefix string, writes uint64) ([]Challenge, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[prefix]
	return e.list, ok && e.writes == writes
}

// put keeps list, the complete scan of prefix read under writes.
func (c *challengeListCache) put(prefix string, writes uint64, list []Challenge) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedLists {
		c.m = make(map[string]cachedList)
	}
	c.m[prefix] = cachedList{writes: writes, list: slices.Clone(list)}
}
