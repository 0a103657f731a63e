package store

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// The record cache keeps, in the process, the certificate records that
// lookups read, exactly as they are stored (a private key the store holds
// sealed stays sealed in it), so that a lookup of a hot name reads only
// the LSM tree's entry of its key and not the record's page in the value
// log. It exists for stores larger than the memory they may keep cached:
// a million names under a container's memory limit, which charges the
// page cache, need the value-log pages of 100,000 random records (about
// 550 MiB, most records straddling two pages) where the records
// themselves take 150 MB.
//
// An entry is the record of one Badger key at one version: the commit
// timestamp of the write, which txn.Get returns with the key's entry in
// the tree without reading the value log. A lookup decodes from the cache
// only the record of the version its transaction sees, so a record
// rewritten (a renewal, a rehome, an upgrade, a rekey) or deleted is never
// served from an entry of before: every write of a key gives it a new
// version, and a deleted key has no entry for txn.Get to return. Only
// read-only transactions use it (a read-write transaction's own writes
// carry its read timestamp, which a committed version may share), and
// only lookups fill it: a scan of every record must not push out the hot
// ones.
//
// A lookup of a name no write has changed since a lookup last found its
// record does not even read its key's entry in the tree: the cache then
// says which version of which key answers the name (the fast path,
// recordcache_fast.go). There, and only there, writes tell the cache what
// they changed: the epochs of the names they mark, which lookups compare
// with those their entries were validated at.
//
// The records live packed in one block of memory mapped outside the Go
// heap (recordcache_unix.go), divided into shards, each a ring: entries
// are appended at its head and evicted at its tail, except that an entry
// looked up since it was written or last passed the tail moves to the
// head instead (CLOCK's second chance). Being outside the heap, the cache
// neither doubles the garbage collector's goal (a heap goal is twice the
// live heap by default: 200 MB of records would make 400) nor costs it
// any marking; the cache's own memory is its size, once full.

// Defaults and bounds of BadgerOptions.RecordCacheSize.
const (
	// DefaultRecordCacheSize holds about 120,000 records of ECDSA
	// certificates (1.1 to 1.7 KB each).
	DefaultRecordCacheSize = 192 << 20
	// MinRecordCacheSize is the smallest cache OpenBadger accepts.
	MinRecordCacheSize = 1 << 20
	// MaxRecordCacheSize is the largest: far more than the records of any
	// store this sidecar serves, and it keeps each shard's ring (at most
	// a 64th of it) well under the 4 GiB its uint32 offsets address.
	MaxRecordCacheSize = 64 << 30
)

const (
	// cacheHeader is the size of an entry's header in its ring: the
	// version (8 bytes, at cacheVersion), the key's hash (8), the epoch the entry was last
	// found current at by a lookup of its name, plus one (8, at
	// cacheValid; 0 for never: recordcache_fast.go), the key's length (2,
	// at cacheKeyLen), the value's length (4, at cacheValLen), the
	// referenced flag (1, at cacheRef) and a byte of padding.
	cacheHeader  = 32
	cacheVersion = 0
	cacheValid   = 16
	cacheKeyLen  = 24
	cacheValLen  = 26
	cacheRef     = 30
	// cacheIndexCost is what an entry's slot in its shard's index (a Go
	// map from the key's hash to the entry's offset) costs at most: 12
	// bytes of key and value and a control byte in a table at least 7/8
	// full right after it doubles, with the table's own overhead. The
	// cache reserves 1/16 of its size for the indexes and bounds the
	// entries to fit it (cacheIndexShare).
	cacheIndexCost = 64
	// cacheIndexShare is the part of the cache's size (1/cacheIndexShare)
	// kept for the indexes: a shard holds at most that many bytes over
	// cacheIndexCost entries, so its ring fills first with records of
	// more than 1 KB (cacheIndexCost*(cacheIndexShare-1)).
	cacheIndexShare = 16
	// maxCacheShards bounds the shards, each with its own lock;
	// minShardRing is the smallest ring a shard is given.
	maxCacheShards = 64
	minShardRing   = 1 << 20
)

// recordCache is the cache of records; see above. It is safe for
// concurrent use. A nil *recordCache caches nothing.
type recordCache struct {
	seed   maphash.Seed
	shards []cacheShard
	mem    []byte // the memory the rings are cut from, freed by close
	size   int64  // the size it was given: the rings and the indexes
	bufs   sync.Pool
}

// cacheShard is one ring of entries with its index.
type cacheShard struct {
	mu    sync.Mutex
	ring  []byte
	index map[uint64]uint32 // the hash of a key → its entry's offset
	// The entries lie from tail to head; when wrapped, from tail to end
	// and then from 0 to head (head <= tail). Unwrapped with head == tail,
	// the ring is empty.
	head, tail, end uint32
	wrapped         bool
	entries         int // live entries: those in the index
	fastEntries     int // of which lookups' fast entries (recordcache_fast.go)
	maxEntries      int
	hits, misses    uint64
	fastHits        uint64 // of the hits, those of the fast path
	closed          bool
	_               [64]byte // keep shards' locks off each other's cache lines
}

// RecordCacheStats are the record cache's counters.
type RecordCacheStats struct {
	// Size is the memory the cache may take, in bytes (0 when it is off);
	// Used the bytes its rings hold, entries and the space evicted
	// entries left before the next write reclaims it, Entries the
	// records it holds, and FastEntries the fast path's small entries,
	// which point a lookup of a name at a record kept under another key
	// (recordcache_fast.go): they count against the cache's size and its
	// bound on entries as records do.
	Size, Used           int64
	Entries, FastEntries int64
	// Hits and Misses count the lookups' record reads served from the
	// cache and from the store since it opened.
	Hits, Misses uint64
	// FastHits counts the hits of lookups that read nothing from the
	// store, not even their key's entry in the LSM tree: the fast path
	// (recordcache_fast.go).
	FastHits uint64
}

// newRecordCache returns a cache taking at most size bytes; nil for
// size <= 0.
func newRecordCache(size int64) (*recordCache, error) {
	if size <= 0 {
		return nil, nil
	}
	ringBytes := size - size/cacheIndexShare
	mem, err := mapCacheMemory(int(ringBytes))
	if err != nil {
		return nil, err
	}
	n := 1
	for n < maxCacheShards && ringBytes/int64(n*2) >= minShardRing {
		n *= 2
	}
	c := &recordCache{seed: maphash.MakeSeed(), shards: make([]cacheShard, n), mem: mem, size: size}
	per := ringBytes / int64(n)
	for i := range c.shards {
		s := &c.shards[i]
		s.ring = mem[int64(i)*per : int64(i+1)*per : int64(i+1)*per]
		s.index = make(map[uint64]uint32)
		s.maxEntries = max(1, int(size/cacheIndexShare/int64(n)/cacheIndexCost))
	}
	c.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	return c, nil
}

// shard returns the shard of the key of hash h.
func (c *recordCache) shard(h uint64) *cacheShard {
	return &c.shards[h>>32%uint64(len(c.shards))]
}

// read calls fn with the record in item, read in a read-only
// transaction: from the cache when it holds item's key at item's version,
// else from the store, and then keeps a copy. fn must not keep v.
func (c *recordCache) read(item *badger.Item, fn func(v []byte) error) error {
	if c == nil {
		return item.Value(fn)
	}
	key, version := item.Key(), item.Version()
	h := maphash.Bytes(c.seed, key)
	s := c.shard(h)
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	if v, ok := s.get(h, key, version, (*bp)[:0]); ok {
		*bp = v
		return fn(v)
	}
	return item.Value(func(v []byte) error {
		s.put(h, key, version, v)
		return fn(v)
	})
}

// drop removes the entry of key, if any: for keys being deleted, whose
// entries could never be read again, so that their records leave the
// memory sooner. A lookup that read the key before the delete committed
// may put it back; it is never read either, and goes as the ring turns.
func (c *recordCache) drop(key []byte) {
	if c == nil {
		return
	}
	h := maphash.Bytes(c.seed, key)
	s := c.shard(h)
	s.mu.Lock()
	if off, ok := s.find(h, key); ok {
		s.forget(h, off)
	}
	s.mu.Unlock()
}

// stats returns the cache's counters.
func (c *recordCache) stats() RecordCacheStats {
	if c == nil {
		return RecordCacheStats{}
	}
	st := RecordCacheStats{Size: c.size}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.Hits += s.hits
		st.Misses += s.misses
		st.FastHits += s.fastHits
		st.Entries += int64(s.entries - s.fastEntries)
		st.FastEntries += int64(s.fastEntries)
		st.Used += int64(s.used())
		s.mu.Unlock()
	}
	return st
}

// close frees the cache's memory; it caches nothing after.
func (c *recordCache) close() error {
	if c == nil {
		return nil
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.closed, s.ring, s.index = true, nil, nil
		s.mu.Unlock()
	}
	mem := c.mem
	c.mem = nil
	return unmapCacheMemory(mem)
}

// entry reads the header of the entry at off.
func (s *cacheShard) entry(off uint32) (version, hash uint64, klen, vlen uint32, referenced bool) {
	e := s.ring[off : off+cacheHeader]
	return binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint64(e[8:]),
		uint32(binary.LittleEndian.Uint16(e[cacheKeyLen:])), binary.LittleEndian.Uint32(e[cacheValLen:]), e[cacheRef] != 0
}

// key returns the key of the entry at off.
func (s *cacheShard) key(off uint32) []byte {
	_, _, klen, _, _ := s.entry(off)
	return s.ring[off+cacheHeader : off+cacheHeader+klen]
}

// get appends to dst the value of key at version, of hash h, and marks
// its entry referenced. Another key of the same hash, or another version
// (the key was rewritten, or this transaction is older than the
// entry's), is a miss, and put keeps what the store returns if it is
// newer.
func (s *cacheShard) get(h uint64, key []byte, version uint64, dst []byte) ([]byte, bool) {
	return s.take(h, key, cacheVersion, version, countRead, dst)
}

// What take counts.
const (
	countNothing = iota // a fast entry's read: its record's read counts
	countRead           // a read of the old path: a hit or a miss
	countFast           // a fast path's read: a hit, and a fast one (a miss goes the old path, which counts it)
)

// take appends to dst the value of key's entry, of hash h, when the
// 8-byte field at field of its header (cacheVersion, cacheValid) is want;
// it marks the entry referenced and counts the read as count says. Every
// read of the cache is one.
func (s *cacheShard) take(h uint64, key []byte, field uint32, want uint64, count int, dst []byte) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	off, ok := s.find(h, key)
	if !ok || binary.LittleEndian.Uint64(s.ring[off+field:]) != want {
		if count == countRead {
			s.misses++
		}
		return nil, false
	}
	s.ring[off+cacheRef] = 1
	switch count {
	case countRead:
		s.hits++
	case countFast:
		s.hits++
		s.fastHits++
	}
	return append(dst, s.value(off)...), true
}

// put stores val as key's value at version, of hash h, in place of the
// entry of that hash unless that is a newer version of key. A value too
// large for a quarter of the ring is not kept.
func (s *cacheShard) put(h uint64, key []byte, version uint64, val []byte) {
	size := uint32(cacheHeader + len(key) + len(val))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(key) > 0xffff || uint64(size) > uint64(len(s.ring)/4) {
		return
	}
	if off, ok := s.index[h]; ok {
		if ver, _, _, _, _ := s.entry(off); ver > version && bytes.Equal(s.key(off), key) {
			return
		}
		s.forget(h, off)
	}
	// Each entry evict moves had been looked up since it last moved, and
	// moves unreferenced: the moves are at most one for each hit, and a
	// put that meets only referenced entries moves each once at most
	// before it reaches one it evicts.
	for !s.room(size) || s.entries >= s.maxEntries {
		s.evict()
	}
	off := s.head
	e := s.ring[off : off+size]
	binary.LittleEndian.PutUint64(e, version)
	binary.LittleEndian.PutUint64(e[8:], h)
	binary.LittleEndian.PutUint64(e[cacheValid:], 0)
	binary.LittleEndian.PutUint16(e[cacheKeyLen:], uint16(len(key)))
	binary.LittleEndian.PutUint32(e[cacheValLen:], uint32(len(val)))
	e[cacheRef], e[cacheRef+1] = 0, 0
	copy(e[cacheHeader:], key)
	copy(e[cacheHeader+len(key):], val)
	s.head += size
	s.index[h] = off
	s.entries++
	if isFastEntryKey(key) {
		s.fastEntries++
	}
}

// find returns the offset of key's entry, of hash h. s.mu must be held.
func (s *cacheShard) find(h uint64, key []byte) (uint32, bool) {
	off, ok := s.index[h]
	if !ok || s.closed || !bytes.Equal(s.key(off), key) {
		return 0, false
	}
	return off, true
}

// forget removes the entry at off, of hash h, from the index: its bytes
// stay in the ring until the tail passes them. s.mu must be held.
func (s *cacheShard) forget(h uint64, off uint32) {
	if isFastEntryKey(s.key(off)) {
		s.fastEntries--
	}
	delete(s.index, h)
	s.entries--
}

// value returns the value of the entry at off, in the ring.
func (s *cacheShard) value(off uint32) []byte {
	_, _, klen, vlen, _ := s.entry(off)
	start := off + cacheHeader + klen
	return s.ring[start : start+vlen]
}

// used returns the bytes between tail and head.
func (s *cacheShard) used() uint32 {
	if s.wrapped {
		return s.end - s.tail + s.head
	}
	return s.head - s.tail
}

// room reports whether size bytes fit at the head, wrapping the head to
// the ring's start when they fit there and not at its end.
func (s *cacheShard) room(size uint32) bool {
	if s.wrapped {
		return s.tail-s.head >= size
	}
	if s.head == s.tail {
		s.head, s.tail = 0, 0
	}
	if uint32(len(s.ring))-s.head >= size {
		return true
	}
	if s.tail >= size {
		s.end, s.head, s.wrapped = s.head, 0, true
		return true
	}
	return false
}

// evict frees the entry at the tail; or, when the entry is live and
// referenced, moves it to the head unreferenced (its second chance),
// which frees nothing. The ring must not be empty.
func (s *cacheShard) evict() {
	off := s.tail
	_, h, klen, vlen, referenced := s.entry(off)
	size := cacheHeader + klen + vlen
	at, live := s.index[h]
	live = live && at == off
	switch {
	case live && referenced:
		// The entry's own space is what it moves into: the head is
		// right behind the tail, or at the end with room, or wraps to
		// the start, below the tail (copy moves overlapping bytes).
		dst := s.head
		if !s.wrapped && uint32(len(s.ring))-s.head < size {
			s.end, dst, s.wrapped = s.head, 0, true
		}
		copy(s.ring[dst:dst+size], s.ring[off:off+size])
		s.ring[dst+cacheRef] = 0
		s.index[h] = dst
		s.head = dst + size
	case live:
		s.forget(h, off)
	}
	s.tail += size
	if s.wrapped && s.tail == s.end {
		s.tail, s.wrapped = 0, false
	}
}
