package store

import (
	"encoding/binary"
	"hash/maphash"
	"sync/atomic"
)

// The fast path: a lookup that reads nothing from the store.
//
// With its record cached (recordcache.go), a lookup of a hot name still
// reads its key's entry in the LSM tree, for the version of the record
// its transaction sees; under a memory limit smaller than the store that
// is a table block or a bloom filter or an index page which the kernel
// may have dropped, and re-reading it from the disk is a lookup's tail
// latency. The fast path answers without a transaction: the cache itself
// says which version of which key is a name's answer, as long as no
// write has changed that name since a lookup found it so.
//
// Epochs. The store keeps a counter for each of epochSlots slots, a name
// taking the slot of its hash. A write transaction marks every name
// whose answer it may change: where it writes or deletes a name's link
// (setLink, unlink, unhome) or a certificate record (placeRecord, for
// each of the record's names; a record deleted has each of its names
// unlinked first). A record under c/ID is read only by lookups of the
// names whose links hold ID, and those are its names: a name a record
// drops is unlinked in the same transaction. The rule is a mark at each
// site that writes or deletes a link or a record, even where another
// mark of the same transaction covers it today (setLink's callers go on
// to placeRecord the same names, and unhome's name is one placeRecord or
// unlink marks): a repeated mark costs nothing (touch marks a slot once
// a transaction), and a new caller of a write site cannot forget one.
// Marking where the keys are
// written, rather than where the change feed is recorded (recordChange),
// is what makes every writer count: a new certificate for a name nothing
// served adds no feed entry, and neither do the upgrade, a key rotation
// or a fleet's rewrite of a key, yet each writes records. A slot's
// counter is odd while a write that marked it is under way: touch adds
// one at the slot's first mark in a transaction, inside it and so before
// its commit, and after the transaction ends, committed or not (a failed
// one changed nothing, and a needless bump only costs a fast hit), bump
// adds one again. Names of one slot share bumps, which only costs fast
// hits. Every write is a transaction of Badger.update, and the marks are
// kept under writeMu with it: one write at a time is under way.
//
// Validation. A lookup loads the epochs of its name (and of the wildcard
// it may fall back to) before it opens its read-only transaction. When
// it finds the record in its name's own link, it marks the cached record
// entry of that link at that version as valid at the epoch it loaded
// (cacheValid); when it reads the record elsewhere (under c/ID, or the
// wildcard's), it puts a small entry under fastEntryKey(name): the record's
// key and version and the epochs it loaded. A later lookup that loads
// the same epochs answers with that record, from the cache, and opens no
// transaction; a record entry evicted, a record of another version, an
// epoch changed, or a record that needs an intermediate the store's
// memory lacks, sends it the old way, which validates again.
//
// Why that never serves a stale answer. Badger makes a commit visible to
// new snapshots inside db.Update, before update returns: the change feed,
// a listing or GetCertificate may see a write before its bump. So the
// fast path must include every write any reader could have seen, not
// only those that had returned. A lookup that loaded an odd epoch uses
// no entry and validates none (readFast, validate). Let L be the lookup
// that validated an entry at an even epoch e, which it loaded before its
// snapshot, and L' a lookup that loaded the same e and uses the entry.
// Take a write W of the name (or of the wildcard, for an answer that
// came through it). If W marked it before L loaded e, W
// had also bumped before that (the epoch is odd in between), so W had
// committed before L's snapshot: L's record includes it. If W marked it
// after L loaded e, the epoch has gone past e for good, so L' loaded e
// before W's mark, hence before W's commit: no reader could have seen W
// when L' loaded its epoch. So a lookup answers from the fast path with a
// record that includes every write of its name that any reader could
// see before the lookup loaded its epochs: a lookup that begins after a
// write has committed, whatever the change feed or a listing has shown of
// it, never answers as before it; a write whose commit comes after the
// lookup began may be missed, as by a transaction that began before it.
// A slot shared with other names, or a bump of a write that changed
// nothing, only moves the epoch more often. The entries written by
// lookups racing each other: a record entry keeps the highest epoch it
// was validated at only for the version it holds, and a record put at a
// newer version starts unvalidated (put), so an older snapshot never
// validates a newer record; a fast entry's epochs are compared for
// equality, so one written late with old epochs is merely never used.
// Answers of "not found" are never kept.

// epochSlots is the number of the names' epoch counters (512 KiB).
const epochSlots = 1 << 16

// nameEpochs are the epochs of the names (above). Loading is safe for
// concurrent use; touch and bump are called under Badger.writeMu.
type nameEpochs struct {
	seed  maphash.Seed
	slots [epochSlots]atomic.Uint64
	// marked has the bit of each slot in touched, the slots the write
	// under way marked, each once.
	marked  [epochSlots / 64]uint64
	touched []uint32
}

func newNameEpochs() *nameEpochs { return &nameEpochs{seed: maphash.MakeSeed()} }

func (e *nameEpochs) slot(name string) uint32 {
	return uint32(maphash.String(e.seed, name)) & (epochSlots - 1)
}

// load returns name's epoch.
func (e *nameEpochs) load(name string) uint64 { return e.slots[e.slot(name)].Load() }

// touch marks name as changed by the write under way, and makes its
// epoch odd until bump.
func (e *nameEpochs) touch(name string) {
	s := e.slot(name)
	if e.marked[s/64]&(1<<(s%64)) != 0 {
		return
	}
	e.marked[s/64] |= 1 << (s % 64)
	e.touched = append(e.touched, s)
	e.slots[s].Add(1) // odd: a write of the name is under way
}

// bump advances the epochs of the names the write that just ended
// marked, even again, and clears the marks.
func (e *nameEpochs) bump() {
	for _, s := range e.touched {
		e.slots[s].Add(1)
		e.marked[s/64] &^= 1 << (s % 64)
	}
	e.touched = e.touched[:0]
}

// touch marks name as changed by the write under way (above): callers
// hold writeMu, inside Badger.update.
func (b *Badger) touch(name string) { b.epochs.touch(name) }

// lookupEpochs are the epochs a lookup loaded before its transaction.
type lookupEpochs struct {
	name, wild uint64
}

// fastEntryMark starts the key of a fast entry: no Badger key of the store
// starts with it.
const fastEntryMark = 0

// fastEntryKey returns the key of the fast entry of name.
func fastEntryKey(name string) []byte {
	return append([]byte{fastEntryMark, 'f', '/'}, name...)
}

func isFastEntryKey(key []byte) bool { return len(key) > 0 && key[0] == fastEntryMark }

// A fast entry's value: the version of the record (8 bytes), the name's
// epoch plus one (8), the wildcard's epoch plus one, or 0 when the
// record is the name's own (8), then the record's key.
const fastEntryHead = 24

// foundRecord says where a lookup found its record: the key and version
// of the item it decoded, whether that is the name's own link (direct),
// and whether it came through the wildcard.
type foundRecord struct {
	key     []byte
	version uint64
	direct  bool
	wild    bool
}

// validate keeps what lookup of name found, at the epochs it loaded
// before its transaction, for the fast path (above).
// Nothing is kept when an epoch the answer depends on is odd: a write of
// that name was under way, its commit perhaps seen by some readers.
func (c *recordCache) validate(name string, at lookupEpochs, found *foundRecord) {
	if c == nil || found.key == nil || at.name&1 != 0 || found.wild && at.wild&1 != 0 {
		return
	}
	if found.direct {
		h := maphash.Bytes(c.seed, found.key)
		c.shard(h).validate(h, found.key, found.version, at.name+1)
		return
	}
	val := make([]byte, fastEntryHead, fastEntryHead+len(found.key))
	binary.LittleEndian.PutUint64(val, found.version)
	binary.LittleEndian.PutUint64(val[8:], at.name+1)
	if found.wild {
		binary.LittleEndian.PutUint64(val[16:], at.wild+1)
	}
	val = append(val, found.key...)
	k := fastEntryKey(name)
	h := maphash.Bytes(c.seed, k)
	c.shard(h).put(h, k, 0, val)
}

// readFast calls fn with the record that answers a lookup of name whose
// link key is link, when the fast path has it at the epochs at; it
// reports whether it did. fn must not keep v. It has nothing while an
// epoch the answer depends on is odd (validate keeps nothing then
// either, so the equality of epochs below would refuse it anyway).
func (c *recordCache) readFast(name string, link []byte, at lookupEpochs, fn func(v []byte) error) (bool, error) {
	if c == nil || at.name&1 != 0 {
		return false, nil
	}
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	h := maphash.Bytes(c.seed, link)
	if v, ok := c.shard(h).take(h, link, cacheValid, at.name+1, countFast, (*bp)[:0]); ok {
		*bp = v
		return true, c.shard(h).uncountIf(fn(v))
	}
	k := fastEntryKey(name)
	h = maphash.Bytes(c.seed, k)
	v, ok := c.shard(h).take(h, k, cacheVersion, 0, countNothing, (*bp)[:0])
	if !ok || len(v) < fastEntryHead {
		return false, nil
	}
	*bp = v
	wild := binary.LittleEndian.Uint64(v[16:])
	if binary.LittleEndian.Uint64(v[8:]) != at.name+1 || (wild != 0 && (at.wild&1 != 0 || wild != at.wild+1)) {
		return false, nil
	}
	version, key := binary.LittleEndian.Uint64(v), v[fastEntryHead:]
	h = maphash.Bytes(c.seed, key)
	// The record's bytes go after the fast entry's in the same buffer.
	rec, ok := c.shard(h).take(h, key, cacheVersion, version, countFast, v)
	if !ok {
		return false, nil
	}
	*bp = rec
	return true, c.shard(h).uncountIf(fn(rec[len(v):]))
}

// uncountIf takes back the fast hit take counted when the
// record failed to decode (err), for the lookup goes the old way and
// counts there: a lookup counts once. It returns err.
func (s *cacheShard) uncountIf(err error) error {
	if err != nil {
		s.mu.Lock()
		s.hits--
		s.fastHits--
		s.mu.Unlock()
	}
	return err
}

// validate sets the valid epoch of key's entry at version to valid,
// unless it holds a higher one.
func (s *cacheShard) validate(h uint64, key []byte, version, valid uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	off, ok := s.find(h, key)
	if !ok {
		return
	}
	e := s.ring[off:]
	if binary.LittleEndian.Uint64(e) == version && binary.LittleEndian.Uint64(e[cacheValid:]) < valid {
		binary.LittleEndian.PutUint64(e[cacheValid:], valid)
	}
}
