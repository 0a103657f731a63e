package store

import "context"

// KeyKind names the records that hold a private key.
type KeyKind string

// The kinds of records that hold a private key (and KeyOfPool, a key of
// the key pool: PoolKey.KeyPEM).
const (
	KeyOfCertificate KeyKind = "certificate" // Certificate.KeyPEM
	KeyOfAccount     KeyKind = "account"     // Account.KeyPEM
)

// KeyRewriter is implemented by a Store that can rewrite the private keys
// it holds in place, so that they can be encrypted under a new key
// (store/sealed rotation) while other writers go on. It is an optional
// ability, found with As; Badger has it.
type KeyRewriter interface {
	// RewriteKeys reads up to limit records of kind in ID order, starting
	// after the ID after ("" starts at the beginning), and calls fn with
	// each record's ID and private key as stored. Where fn returns a
	// non-nil key the record's key is replaced by it; nothing else of the
	// record changes, and neither does what it serves (no entry in a
	// ChangeFeed; a shared store gives the rewrite a version of its own,
	// which its local copies apply as a ChangeRewriteKey). The reads and the writes are one atomic
	// step: no other write to those records comes between them, so a
	// record written meanwhile is never put back to what it was. fn may
	// be called more than once for a record and must not keep state
	// across calls; fn returning an error writes nothing and RewriteKeys
	// returns that error. It returns the ID of the last record read, ""
	// when there was none after after. A batch too large for one atomic
	// write returns ErrBatchTooLarge and writes nothing.
	//
	// A record of KeyOfPool is one key of the key pool, by its ID
	// (PoolKey.ID, which store/sealed binds a sealed pool key to): fn
	// is called once for it, with the key as the first slot holding it
	// (by key type, then slot) stores it, and what fn returns (the first
	// slot's key when fn returns nil) is written to every slot that holds
	// it and stores other bytes (a twin sealed under a retired key; one
	// slot, unless the same key was put in several); nothing else of a
	// slot changes.
	RewriteKeys(ctx context.Context, kind KeyKind, after string, limit int, fn func(id string, key []byte) ([]byte, error)) (last string, err error)

	// CountKeys returns how many records of kind there are (for
	// KeyOfPool, how many keys: the slots holding one count once).
	CountKeys(ctx context.Context, kind KeyKind) (int, error)
}
