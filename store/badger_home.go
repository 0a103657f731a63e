package store

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Where a certificate record lives.
//
// The record of a certificate of one name that the name's link selects
// (nearly every certificate: one name, no other certificate claiming it)
// lives in the link itself: n/NAME holds the record, marked metaRecord
// in Badger's user meta byte, and c/ID holds NAME, marked metaHomed. A
// lookup of that name is then one get, and a lookup that misses the page
// cache reads the link's table block and the record's value-log page, where
// a link holding the ID took a second get and a second table block. Every
// other record (several names, or a name linked to another certificate)
// lives under c/ID, and its names' links hold the ID, as before.
//
// Records move in the transaction that changes their links: a link that
// goes to another certificate gives the record it held back to c/ID
// (setLink), a certificate whose one name links to it moves in
// (placeRecord, rehome). Stores written before hold every record under
// c/ID; they are served as they are, and the upgrade at the start moves
// the records in (upgrade.go).
const (
	// metaRecord marks a link (n/NAME) whose value is the record of the
	// certificate it links to; without it the value is the ID.
	metaRecord byte = 1
	// metaHomed marks a c/ID whose value is the name in whose link the
	// record lives; without it the value is the record.
	metaHomed byte = 2
)

// homedRecord returns the item of the link holding the record of the
// c/ID item, which is marked metaHomed. A link that does not hold it is an
// error wrapping errCorrupt.
func homedRecord(txn *badger.Txn, item *badger.Item) (*badger.Item, error) {
	id := item.Key()[len(prefixCert):]
	name, err := item.ValueCopy(nil)
	if err != nil {
		return nil, err
	}
	link, err := txn.Get(key(prefixLink, string(name)))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return nil, fmt.Errorf("certificate %s: its record should be in the link of %s, which is missing: %w", id, name, errCorrupt)
	case err != nil:
		return nil, err
	case link.UserMeta() != metaRecord:
		return nil, fmt.Errorf("certificate %s: its record should be in the link of %s, which holds an ID: %w", id, name, errCorrupt)
	}
	return link, nil
}

// linkedID returns the ID of the certificate the link in item selects.
func linkedID(item *badger.Item) (string, error) {
	v, err := item.ValueCopy(nil)
	if err != nil {
		return "", err
	}
	if item.UserMeta() != metaRecord {
		return string(v), nil
	}
	id, _, ok := recordHead(v)
	if !ok {
		return "", fmt.Errorf("link %s: the record it holds does not decode: %w", item.Key()[len(prefixLink):], errCorrupt)
	}
	return id, nil
}

// recordHead returns the ID and the names of an encoded certificate
// record of either format, without decoding the rest.
func recordHead(rec []byte) (id string, names []string, ok bool) {
	if len(rec) == 0 || (rec[0] != formatV1 && rec[0] != formatV2) {
		return "", nil, false
	}
	d := decoder{b: rec[1:]}
	var c Certificate
	decodeCertHead(&d, &c)
	return c.ID, c.Names, d.err == nil
}

// setLink links name to certificate id in txn. The record of another
// certificate that the link held goes back under that certificate's
// ID first; id's own record the caller writes again (placeRecord).
func (b *Badger) setLink(txn *badger.Txn, name, id string) error {
	b.touch(name) // a mark at each write site (recordcache_fast.go)
	item, err := txn.Get(key(prefixLink, name))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return err
	case item.UserMeta() == metaRecord:
		rec, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		other, _, ok := recordHead(rec)
		if !ok {
			return fmt.Errorf("link %s: the record it holds does not decode: %w", name, errCorrupt)
		}
		if other != id {
			if err := txn.Set(key(prefixCert, other), rec); err != nil {
				return err
			}
		}
	}
	return txn.Set(key(prefixLink, name), []byte(id))
}

// linksTo reports whether name's link in txn selects certificate id.
func linksTo(txn *badger.Txn, name, id string) (bool, error) {
	item, err := txn.Get(key(prefixLink, name))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, err
	case item.UserMeta() != metaRecord:
		linked := false
		err := item.Value(func(v []byte) error { linked = string(v) == id; return nil })
		return linked, err
	}
	// The link holds a record: id's when c/ID says it lives there.
	return homedIn(txn, id, name)
}

// homedIn reports whether c/ID in txn says that the record of certificate
// id lives in the link of name.
func homedIn(txn *badger.Txn, id, name string) (bool, error) {
	item, err := txn.Get(key(prefixCert, id))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	case err != nil || item.UserMeta() != metaHomed:
		return false, err
	}
	homed := false
	err = item.Value(func(v []byte) error { homed = string(v) == name; return nil })
	return homed, err
}

// placeRecord writes the encoded record rec of certificate id, whose
// names are names, in txn: in its name's link when it has one name and
// that link selects it, else under c/ID. Under writeUnhomed it goes under
// c/ID, and a link that held it holds the ID again (unhome).
func (b *Badger) placeRecord(txn *badger.Txn, id string, names []string, rec []byte) error {
	for _, name := range names {
		b.touch(name)
	}
	if b.writeUnhomed {
		if err := b.unhome(txn, id); err != nil {
			return err
		}
	} else if len(names) == 1 {
		home, err := linksTo(txn, names[0], id)
		if err != nil {
			return err
		}
		if home {
			if err := txn.SetEntry(badger.NewEntry(key(prefixLink, names[0]), rec).WithMeta(metaRecord)); err != nil {
				return err
			}
			// A record rewritten in its link (a new key) leaves c/ID as
			// it is.
			if homed, err := homedIn(txn, id, names[0]); err != nil || homed {
				return err
			}
			return txn.SetEntry(badger.NewEntry(key(prefixCert, id), []byte(names[0])).WithMeta(metaHomed))
		}
	}
	return txn.Set(key(prefixCert, id), rec)
}

// homeOf returns the link holding the record of certificate id, or nil
// when c/ID holds the record itself; badger.ErrKeyNotFound when there is
// no c/ID. A link that holds another certificate's record is an error
// wrapping errCorrupt.
func homeOf(txn *badger.Txn, id string) (*badger.Item, error) {
	item, err := txn.Get(key(prefixCert, id))
	if err != nil || item.UserMeta() != metaHomed {
		return nil, err
	}
	link, err := homedRecord(txn, item)
	if err != nil {
		return nil, err
	}
	owner, err := linkedID(link)
	if err != nil {
		return nil, err
	}
	if owner != id {
		return nil, fmt.Errorf("certificate %s: its record should be in the link %s, which holds the record of %s: %w", id, link.Key()[len(prefixLink):], owner, errCorrupt)
	}
	return link, nil
}

// unhome turns the link holding the record of certificate id, when one
// does, back into a link holding id; the caller writes the record under
// c/ID.
func (b *Badger) unhome(txn *badger.Txn, id string) error {
	link, err := homeOf(txn, id)
	if errors.Is(err, badger.ErrKeyNotFound) || (err == nil && link == nil) {
		return nil
	}
	if err != nil {
		return err
	}
	k := link.KeyCopy(nil)
	b.touch(string(k[len(prefixLink):])) // a mark at each write site (recordcache_fast.go)
	return txn.Set(k, []byte(id))
}

// rehome moves the record of certificate id into its name's link, when it
// is under c/ID in formatV2, has one name and that link selects it; it
// reports whether it moved it.
func (b *Badger) rehome(txn *badger.Txn, id string) (bool, error) {
	if b.writeUnhomed {
		return false, nil
	}
	item, err := txn.Get(key(prefixCert, id))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	case err != nil || item.UserMeta() == metaHomed:
		return false, err
	}
	rec, err := item.ValueCopy(nil)
	if err != nil || len(rec) == 0 || rec[0] != formatV2 {
		return false, err
	}
	_, names, ok := recordHead(rec)
	if !ok || len(names) != 1 {
		return false, nil
	}
	home, err := linksTo(txn, names[0], id)
	if err != nil || !home {
		return false, err
	}
	return true, b.placeRecord(txn, id, names, rec)
}
