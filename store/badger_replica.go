package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

var _ Replica = (*Badger)(nil)

// keyApplied holds the highest version of a fleet's shared store that
// Apply wrote: 8 bytes, big-endian (see keys.go).
const keyApplied = "R/"

// keySynced says that the local copy completed a sync of a fleet's shared
// store: the version it held then, 8 bytes, big-endian (MarkSynced).
const keySynced = "S/"

// Apply implements Replica. It writes the changes through the code of
// PutCertificate, DeleteCertificate, PutChallenge and DeleteChallenge, so
// the change feed reports what a group of changes did as it does for a
// local write: one entry per atomic write, naming what a cache may hold
// stale (a new certificate for names nothing served is none; a write of
// more than MaxChanges names answers Reset, as a join's does). A
// ChangeRewriteKey replaces only the record's key, as RewriteKeys does:
// which record serves a name stays as it is, and the feed says nothing.
//
// The changes must have versions above 0, in ascending order (ErrInvalid,
// nothing written). Those at or below AppliedVersion were applied before
// and are skipped, so applying a batch twice, or a batch that overlaps
// the last one, is harmless. A delete of a missing certificate or token is
// not an error. A change the local store cannot hold (a certificate
// record without names, chain or key, a challenge without token) is
// logged as an error naming its version and skipped: one bad record of
// the shared store must not stop a host from following every later
// change.
//
// The changes are written in groups, each one transaction that also
// records its highest version: a crash or a cancelled ctx between groups
// leaves the store at the end of a group, and AppliedVersion says which.
// A group holds as many changes as fit one transaction: a few thousand
// certificates. Safe for concurrent use, but two callers applying the
// same versions gain nothing.
func (b *Badger) Apply(ctx context.Context, changes []Change) error {
	var prev uint64
	for i := range changes {
		v := changes[i].Version
		if v <= prev {
			return fmt.Errorf("apply %d changes: #%d has version %d, after %d: %w", len(changes), i+1, v, prev, ErrInvalid)
		}
		prev = v
	}
	held, err := b.namesHeld(ctx, changes)
	if err != nil {
		return fmt.Errorf("apply %d changes: %w", len(changes), err)
	}
	limits := groupLimits{entries: int(b.db.MaxBatchCount() * 3 / 4), bytes: applyGroupBytes, searching: applySearchPending}
	for start := 0; start < len(changes); {
		end := start + limits.size(changes[start:], held)
		if err := b.applyGroup(ctx, changes[start:end]); err != nil {
			return fmt.Errorf("apply changes %d to %d: %w", changes[start].Version, changes[end-1].Version, err)
		}
		start = end
	}
	return nil
}

// namesHeld returns how many names each record that changes delete holds
// now (missing records are left out).
func (b *Badger) namesHeld(ctx context.Context, changes []Change) (map[string]int, error) {
	held := make(map[string]int)
	err := b.view(ctx, func(txn *badger.Txn) error {
		for i := range changes {
			c := &changes[i]
			if c.Kind != ChangeDeleteCertificate || c.ID == "" {
				continue
			}
			item, err := txn.Get(key(prefixCert, c.ID))
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			var old Certificate
			if err := b.readCertificate(txn, item, &old); err != nil {
				return err
			}
			held[c.ID] = len(old.Names)
		}
		return nil
	})
	return held, err
}

// Bounds of one transaction of Apply (see groupLimits).
const (
	applyGroupBytes    = 32 << 20
	applySearchPending = 1024
)

// groupLimits bounds the changes of one transaction of Apply: entries, the
// key writes Badger allows in one transaction, with a margin; bytes, the
// certificate PEM held in memory until the commit; searching, the key
// writes a transaction may hold before a change that searches the claims
// on a name (a delete, which re-links each name of the record to another
// claim if there is one): Badger sorts every pending write of the
// transaction for each such search, which grows with the square of a
// group of deletes.
type groupLimits struct{ entries, bytes, searching int }

// size returns how many of the leading changes one transaction is expected
// to hold: at least one. The estimate counts what a new record writes or
// what a delete of a record with held[ID] names does, where records move
// (badger_home.go) included; a change that writes more than estimated (a
// replacement that drops many names) is caught by applyGroup, which halves
// the group.
func (l groupLimits) size(changes []Change, held map[string]int) int {
	entries, size := 2, 0 // the history entry and its header, the applied version
	for i, c := range changes {
		e, s, search := 2, 64, false
		switch {
		case c.Certificate != nil:
			// Its record (in its name's link: with the link's write, plus
			// c/ID naming it), a claim and a link per name, and per name
			// the record of another certificate its link may hold, which
			// goes back under that one's ID: some kilobytes like this one.
			n := len(c.Certificate.Names)
			e += 1 + 3*n
			if n == 1 {
				e++
			}
			s += (1 + n) * (len(c.Certificate.ChainPEM) + len(c.Certificate.KeyPEM))
		case c.Kind == ChangeDeleteCertificate:
			// Its record, and per name a claim and a link, which goes to
			// the next claim's certificate, whose record may move in
			// (rehome: the link again and c/ID), read whole.
			n := held[c.ID]
			e += 1 + 4*n
			s += n * 4096
			search = n > 0
		case c.Kind == ChangeRewriteKey:
			// The record is read and written whole: its chain, some
			// kilobytes, is not in the change.
			e++
			s += len(c.KeyPEM) + 4096
		}
		if i > 0 && (entries+e > l.entries || size+s > l.bytes || (search && entries > l.searching)) {
			return i
		}
		entries, size = entries+e, size+s
	}
	return len(changes)
}

// applyGroup writes changes in one transaction, or, when they do not fit
// one, in two halves, each again so.
func (b *Badger) applyGroup(ctx context.Context, changes []Change) error {
	type skip struct {
		change *Change
		err    error
	}
	var skipped []skip
	err := b.update(ctx, func(txn *badger.Txn) error {
		applied, err := readApplied(txn)
		if err != nil {
			return err
		}
		last := changes[len(changes)-1].Version
		if last <= applied {
			return nil
		}
		var changed changeSet
		skipped = skipped[:0]
		for i := range changes {
			if changes[i].Version <= applied {
				continue
			}
			invalid, err := b.applyChange(txn, &changes[i], &changed)
			if err != nil {
				return err
			}
			if invalid != nil {
				skipped = append(skipped, skip{&changes[i], invalid})
			}
		}
		if err := recordChange(txn, changed.names); err != nil {
			return err
		}
		return txn.Set([]byte(keyApplied), binary.BigEndian.AppendUint64(nil, last))
	})
	if errors.Is(err, badger.ErrTxnTooBig) && len(changes) > 1 {
		b.applyHalvings.Add(1)
		half := len(changes) / 2
		if err := b.applyGroup(ctx, changes[:half]); err != nil {
			return err
		}
		return b.applyGroup(ctx, changes[half:])
	}
	if err != nil {
		return err
	}
	for _, s := range skipped {
		attrs := []any{"version", s.change.Version, "kind", string(s.change.Kind), "error", s.err}
		if c := s.change.Certificate; c != nil {
			attrs = append(attrs, "cert_id", c.ID)
		} else if s.change.ID != "" {
			attrs = append(attrs, "cert_id", s.change.ID)
		}
		b.log.Error("fleet: a change of the shared store was not applied: the local store cannot hold it", attrs...)
	}
	return nil
}

// applyChange writes one change in txn, adding to changed what the
// change feed must report. A change the store cannot hold is returned as
// invalid, and nothing of it written.
func (b *Badger) applyChange(txn *badger.Txn, c *Change, changed *changeSet) (invalid, err error) {
	switch c.Kind {
	case ChangePutCertificate:
		if err := validCertificate(c.Certificate); err != nil {
			return err, nil
		}
		rec := b.certRecord(c.Certificate)
		return nil, b.putCertificate(txn, &rec, changed)
	case ChangeDeleteCertificate:
		if c.ID == "" {
			return fmt.Errorf("no certificate id: %w", ErrInvalid), nil
		}
		_, err := b.deleteCertificate(txn, c.ID, changed)
		return nil, err
	case ChangePutChallenge:
		if err := ValidateChallenge(c.Token, c.KeyAuth); err != nil {
			return err, nil
		}
		return nil, b.putChallenge(txn, c.Token, c.KeyAuth, c.Expires)
	case ChangeDeleteChallenge:
		if c.Token == "" {
			return nil, nil
		}
		return nil, txn.Delete(key(prefixToken, c.Token))
	case ChangeRewriteKey:
		if c.ID == "" || len(c.KeyPEM) == 0 {
			return fmt.Errorf("no certificate id or no key: %w", ErrInvalid), nil
		}
		return nil, b.rewriteCertKey(txn, c.ID, c.KeyPEM, changed)
	}
	return fmt.Errorf("unknown kind %q: %w", c.Kind, ErrInvalid), nil
}

// rewriteCertKey replaces the key of the certificate record id in txn
// and writes nothing else, as RewriteKeys does: no claim, no link, no
// entry in the change feed (the key is the same key, sealed anew). A
// missing record is skipped.
func (b *Badger) rewriteCertKey(txn *badger.Txn, id string, keyPEM []byte, changed *changeSet) error {
	item, err := txn.Get(key(prefixCert, id))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil
	case err != nil:
		return err
	}
	var c Certificate
	if err := b.readCertificate(txn, item, &c); err != nil {
		return fmt.Errorf("certificate %s: %w", id, err)
	}
	c.KeyPEM = keyPEM
	return b.setCertificate(txn, &c, changed)
}

// readApplied returns the version keyApplied holds in txn, 0 when none.
func readApplied(txn *badger.Txn) (uint64, error) {
	item, err := txn.Get([]byte(keyApplied))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, err
	}
	var v uint64
	err = item.Value(func(val []byte) error {
		if len(val) != 8 {
			return fmt.Errorf("applied version of %d bytes, want 8: %w", len(val), errCorrupt)
		}
		v = binary.BigEndian.Uint64(val)
		return nil
	})
	return v, err
}

// AppliedVersion implements Replica.
func (b *Badger) AppliedVersion(ctx context.Context) (uint64, error) {
	var v uint64
	err := b.view(ctx, func(txn *badger.Txn) error {
		var err error
		v, err = readApplied(txn)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("applied version: %w", err)
	}
	return v, nil
}

// MarkSynced implements Replica.
func (b *Badger) MarkSynced(ctx context.Context, version uint64) error {
	val := binary.BigEndian.AppendUint64(nil, version)
	if err := b.update(ctx, func(txn *badger.Txn) error {
		return txn.Set([]byte(keySynced), val)
	}); err != nil {
		return fmt.Errorf("mark the local copy synced: %w", err)
	}
	return nil
}

// Synced implements Replica.
func (b *Badger) Synced(ctx context.Context) (bool, error) {
	var ok bool
	err := b.view(ctx, func(txn *badger.Txn) error {
		_, err := txn.Get([]byte(keySynced))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			return nil
		case err != nil:
			return err
		}
		ok = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("synced: %w", err)
	}
	return ok, nil
}
