package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// bucketBatch bounds the buckets PutRateBuckets writes in one transaction.
const bucketBatch = 1000

// bucketKey returns the key of bucket (limit, k) of scope.
func bucketKey(scope, limit, k string) []byte {
	return key(prefixBucket, scope+"\x00"+limit+"\x00"+k)
}

// PutRateBuckets implements Store. Each bucket is written with a Badger
// TTL a second past its Full time, so that compaction drops it once it is
// full again; a bucket already full is deleted.
func (b *Badger) PutRateBuckets(ctx context.Context, scope string, bs []RateBucket) error {
	if err := ValidateRateScope(scope); err != nil {
		return fmt.Errorf("put rate buckets: %w", err)
	}
	for _, rb := range bs {
		if err := ValidateRateBucket(rb); err != nil {
			return fmt.Errorf("put rate buckets of %s: %w", scope, err)
		}
	}
	for len(bs) > 0 {
		batch := bs[:min(len(bs), bucketBatch)]
		bs = bs[len(batch):]
		now := b.now()
		err := b.update(ctx, func(txn *badger.Txn) error {
			for _, rb := range batch {
				k := bucketKey(scope, rb.Limit, rb.Key)
				ttl := rb.Full.Sub(now)
				if ttl <= 0 {
					if err := txn.Delete(k); err != nil {
						return err
					}
					continue
				}
				v := binary.BigEndian.AppendUint64(nil, uint64(rb.Full.UnixNano()))
				if err := txn.SetEntry(badger.NewEntry(k, v).WithTTL(ttl + time.Second)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("put rate buckets of %s: %w", scope, err)
		}
	}
	return nil
}

// RateBuckets implements Store.
func (b *Badger) RateBuckets(ctx context.Context, scope string) ([]RateBucket, error) {
	if err := ValidateRateScope(scope); err != nil {
		return nil, fmt.Errorf("rate buckets: %w", err)
	}
	prefix := append(key(prefixBucket, scope), 0)
	now := b.now()
	var out []RateBucket
	err := b.view(ctx, func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			rest := item.Key()[len(prefix):]
			i := bytes.IndexByte(rest, 0)
			v, err := item.ValueCopy(nil)
			if err != nil {
				return err
			}
			if i < 0 || len(v) != 8 {
				// Not a bucket this code wrote: losing a saved bucket
				// costs less than refusing the scope's others.
				b.log.Warn("rate buckets: skipping a malformed record", "key", fmt.Sprintf("%q", item.Key()), "value_bytes", len(v))
				continue
			}
			full := time.Unix(0, int64(binary.BigEndian.Uint64(v)))
			if !full.After(now) {
				continue
			}
			out = append(out, RateBucket{Limit: string(rest[:i]), Key: string(rest[i+1:]), Full: full})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rate buckets of %s: %w", scope, err)
	}
	return out, nil
}
