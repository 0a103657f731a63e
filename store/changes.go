package store

import (
	"crypto/rand"
	"encoding/hex"
	"sync"
)

// ChangeFeed is implemented by a Store that can tell its readers which
// names' certificates changed, so that caches of what it served (nginx's)
// can drop them at once instead of waiting for their max-age. It is an
// optional ability, found by type assertion; Badger has it.
type ChangeFeed interface {
	// CertChanges returns the names whose certificate changed since the
	// point since of a previous answer: every name of a record stored,
	// replaced or deleted (the names it had and the names it has) and the
	// record's ID. A zero Cursor, a cursor of another epoch (the store was
	// reopened since) or one older than the history kept answers with
	// Reset set: the caller must treat everything it cached as stale. It
	// never waits and is safe for concurrent use.
	CertChanges(since Cursor) Changes
}

// Cursor is a point in a store's change feed: an epoch that is new each
// time the store is opened, and the version of the last change seen.
type Cursor struct {
	Epoch   string
	Version uint64
}

// Changes is an answer of ChangeFeed.
type Changes struct {
	// Next is the cursor to ask with next time.
	Next Cursor
	// Reset says that changes since the cursor asked with are not known:
	// whatever the caller cached before must be looked up again. Names is
	// empty then.
	Reset bool
	// Names are the names changed after the cursor asked with, each once,
	// oldest change first.
	Names []string
}

// MaxChanges is how many changed names a change log keeps. Older changes
// are forgotten; a reader that falls further behind is told to Reset.
const MaxChanges = 4096

// changeLog is the in-memory history behind ChangeFeed: a ring of the last
// MaxChanges changed names, numbered from 1 in the order recorded.
type changeLog struct {
	epoch string

	mu      sync.Mutex
	version uint64   // of the last name recorded
	ring    []string // name of version v at ring[v % len(ring)]
}

func newChangeLog() *changeLog {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("store: no randomness for the change feed's epoch: " + err.Error())
	}
	return &changeLog{epoch: hex.EncodeToString(b[:]), ring: make([]string, MaxChanges)}
}

// record appends names, each a name whose certificate changed.
func (l *changeLog) record(names ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range names {
		l.version++
		l.ring[l.version%uint64(len(l.ring))] = n
	}
}

// since answers CertChanges.
func (l *changeLog) since(c Cursor) Changes {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := Cursor{Epoch: l.epoch, Version: l.version}
	n := uint64(len(l.ring))
	if c.Epoch != l.epoch || c.Version > l.version || l.version-c.Version > n {
		return Changes{Next: next, Reset: true}
	}
	var names []string
	seen := make(map[string]bool)
	for v := c.Version + 1; v <= l.version; v++ {
		name := l.ring[v%n]
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	return Changes{Next: next, Names: names}
}
