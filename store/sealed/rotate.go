package sealed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/certserver/certserver/store"
)

// Rotation is the outcome of one Rotate call: one batch.
type Rotation struct {
	// KeyID is the current key, the one every key is sealed under after
	// rotation.
	KeyID string
	// Kind is the kind of the records the batch read.
	Kind store.KeyKind
	// Total is how many records hold a private key (certificates,
	// accounts and the keys of the key pool), counted when Rotate starts
	// from the beginning (an empty cursor); 0 otherwise.
	Total int
	// Scanned is how many records the batch read, Resealed how many of
	// them it sealed under the current key (plain ones, and those sealed
	// under another key); the others were sealed under it already, or
	// are in Failed.
	Scanned, Resealed int
	// Failed are the records whose key could not be opened: they are left
	// as they are, and reported.
	Failed []RecordError
	// Next is the cursor to give the next call; "" once Done.
	Next string
	// Done says that every record has been read.
	Done bool
}

// RecordError is a record whose key could not be opened.
type RecordError struct {
	Kind store.KeyKind
	ID   string
	Err  error
}

// The order Rotate reads records in: certificates, accounts, then the
// keys of the key pool ([keys] reuse = "pool").
var rotateKinds = []store.KeyKind{store.KeyOfCertificate, store.KeyOfAccount, store.KeyOfPool}

// Rotate re-seals, under the keyring's current key, up to limit records
// after cursor ("" starts at the beginning), and returns what it did and
// the cursor to go on with, until Done. It reads certificates in ID order,
// then accounts, then the key pool's keys (by ID; a key that several
// slots hold is one record, rewritten in each). A key already sealed under the current key is opened (so
// that a damaged one is reported) and left as it is; a plain one and one
// sealed under another key are sealed anew; one that cannot be opened is
// reported in Failed and left as it is. Each batch is one atomic write of
// the wrapped store (store.KeyRewriter), so a record written meanwhile is
// never put back; a batch too large for one write is split. Rotate can be
// stopped at any point and started again, from the last cursor or from
// the beginning: it only ever rewrites what is not under the current key.
func (s *Store) Rotate(ctx context.Context, cursor string, limit int) (Rotation, error) {
	if s.kr == nil {
		return Rotation{}, errors.New("rotate keys: no key-encryption key file is configured ([store] key_encryption_key_file)")
	}
	rw, ok := store.As[store.KeyRewriter](s.inner)
	if !ok {
		return Rotation{}, fmt.Errorf("rotate keys: the store (%T) cannot rewrite keys in place", s.inner)
	}
	if limit < 1 {
		return Rotation{}, fmt.Errorf("rotate keys: batch size %d: want at least 1", limit)
	}
	kind, after, err := parseCursor(cursor)
	if err != nil {
		return Rotation{}, err
	}
	r := Rotation{KeyID: s.kr.Current(), Kind: kind}
	if cursor == "" {
		for _, k := range rotateKinds {
			n, err := rw.CountKeys(ctx, k)
			if err != nil {
				return Rotation{}, fmt.Errorf("rotate keys: %w", err)
			}
			r.Total += n
		}
	}
	var (
		last, prev string
		seen       map[string]bool
		resealed   map[string]bool
		failed     map[string]error
	)
	reset := func() {
		prev, seen, resealed, failed = "", map[string]bool{}, map[string]bool{}, map[string]error{}
	}
	for {
		reset()
		last, err = rw.RewriteKeys(ctx, kind, after, limit, func(id string, key []byte) ([]byte, error) {
			// IDs come in ascending order: one that does not follow the
			// previous one starts another attempt of the whole batch, and
			// only the last attempt's count is true.
			if prev != "" && id <= prev {
				reset()
			}
			prev = id
			seen[id] = true
			if len(key) == 0 {
				return nil, nil
			}
			plain, err := s.kr.Open(kind, id, key)
			if err != nil {
				failed[id] = err
				return nil, nil
			}
			if keyID, _ := KeyID(key); keyID == s.kr.Current() {
				return nil, nil
			}
			resealed[id] = true
			return s.kr.Seal(kind, id, plain)
		})
		if errors.Is(err, store.ErrBatchTooLarge) && limit > 1 {
			limit /= 2
			continue
		}
		break
	}
	if err != nil {
		return Rotation{}, fmt.Errorf("rotate keys: %w", err)
	}
	// The counts are those of the attempt that was committed.
	r.Scanned = len(seen)
	r.Resealed = len(resealed)
	for id, err := range failed {
		r.Failed = append(r.Failed, RecordError{Kind: kind, ID: id, Err: err})
	}
	slices.SortFunc(r.Failed, func(a, b RecordError) int { return strings.Compare(a.ID, b.ID) })
	switch i := slices.Index(rotateKinds, kind); {
	case last != "" && r.Scanned == limit:
		r.Next = string(kind) + "/" + last
	case i+1 < len(rotateKinds):
		r.Next = string(rotateKinds[i+1]) + "/"
	default:
		r.Done = true
	}
	return r, nil
}

// parseCursor reads a cursor of Rotate: "KIND/ID", or "" for the start.
func parseCursor(cursor string) (store.KeyKind, string, error) {
	if cursor == "" {
		return rotateKinds[0], "", nil
	}
	k, id, ok := strings.Cut(cursor, "/")
	if ok && slices.Contains(rotateKinds, store.KeyKind(k)) {
		return store.KeyKind(k), id, nil
	}
	return "", "", fmt.Errorf("rotate keys: cursor %q: %w: give the one the last batch returned, or none to start over", cursor, ErrCursor)
}

// ErrCursor is wrapped by the error of Rotate given a cursor it did not
// return.
var ErrCursor = errors.New("malformed cursor")
