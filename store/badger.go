package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// BadgerOptions configures OpenBadger. The zero value of every field but
// Logger selects its default.
type BadgerOptions struct {
	// Logger receives the store's own messages and Badger's warnings and
	// errors (Badger's info and debug chatter is dropped). Required.
	Logger *slog.Logger

	// NoSync turns off the fsync of every commit. The default (false) makes
	// every write that returned nil survive a crash of the machine, as the
	// Store contract promises; with NoSync a crash of the process still
	// loses nothing, a crash of the machine may lose the last writes.
	NoSync bool

	// MemTableSize is the size of one memtable in bytes; Badger keeps up to
	// 3 of them (its own default is 5 of 64 MiB), and one transaction holds
	// at most 15% of one. Default 32 MiB; at least 8 MiB. Smaller tables
	// cost bulk adds CPU in flushes and compactions: 500,000 domains take
	// about a fifth more CPU with 16 MiB.
	MemTableSize int64

	// GCInterval is how often the value log is garbage collected while the
	// store is open. Default 10 minutes; negative turns it off. Certificate
	// records live in the value log (see valueThreshold), so a renewal or a
	// removal leaves garbage there that the collection reclaims.
	GCInterval time.Duration

	// RecordCacheSize bounds the memory of the cache of the records
	// lookups read (recordcache.go), in bytes: the records themselves,
	// packed, and their index, and the small entries of names answered
	// from a record under another key (recordcache_fast.go). It fills
	// only with what LookupCertificate reads, so a store whose hot names
	// are few uses little of it.
	// Default DefaultRecordCacheSize (192 MiB); negative turns it off;
	// else from MinRecordCacheSize (1 MiB) to MaxRecordCacheSize (64 GiB).
	RecordCacheSize int64

	// Clock returns the current time; it decides when challenges expire
	// and stamps zero StoredAt, AddedAt and UpdatedAt fields. Default
	// time.Now.
	Clock func() time.Time

	// noUpgrade leaves records of an older format or layout as they
	// are, writeV1 writes them in formatV1, as certserver did before
	// formatV2, and writeUnhomed writes every record under its ID, as
	// certserver did before records moved into their name's link
	// (badger_home.go; writeV1 implies it) (tests and benchmarks).
	noUpgrade, writeV1, writeUnhomed bool
}

// Defaults of BadgerOptions.
const (
	defaultMemTableSize = 32 << 20
	minMemTableSize     = 8 << 20
	defaultGCInterval   = 10 * time.Minute
	gcDiscardRatio      = 0.5
	// valueThreshold is the size from which Badger keeps a value in its
	// value log, written once, and only a pointer to it in the LSM tree.
	// Certificate records (1.1 to 1.7 KB for an ECDSA certificate in
	// formatV2, 3 to 5 KB in formatV1) are mostly above it; domains,
	// claims, links and changes are below it and stay in the tree. With
	// the records in the tree, every flush and compaction copied their
	// PEM again: an import of 500,000 certificates spent most of its store
	// CPU there and gigabytes on level-0 table buffers.
	valueThreshold = 1 << 10
)

// A transaction that meets a conflict is tried up to maxAttempts times in
// all, after random pauses of up to 2, 4, 8 … milliseconds, at most
// maxBackoff.
const (
	maxAttempts = 10
	maxBackoff  = 100 * time.Millisecond
)

// Badger is the Store kept in an embedded Badger database on local disk.
// It is safe for concurrent use; Close ends it.
type Badger struct {
	db *badger.DB
	// writeMu serializes read-write transactions. Badger's transactions are
	// optimistic: writers of the same key (a domain the renewer and the
	// admin API both update, a name two certificates claim) conflict and
	// retry, and under load a writer can lose again and again. Writes are
	// rare next to lookups and each waits for its fsync anyway, so they
	// take turns instead; reads never wait for it.
	writeMu sync.Mutex
	log     *slog.Logger
	now     func() time.Time
	stop    chan struct{}  // closed by Close to end the GC loop
	done    sync.WaitGroup // the GC loop and the upgrade
	// cancel ends the upgrade of the records (upgrade.go), which closes
	// upgraded when it returns.
	cancel   context.CancelFunc
	upgraded chan struct{}
	writeV1  bool // BadgerOptions.writeV1
	// writeUnhomed is BadgerOptions.writeUnhomed or writeV1.
	writeUnhomed bool
	closed       sync.Once
	err          error // the result of closing, set once
	// writes counts the read-write transactions that ended (committed or
	// not), bumped after each: a read that saw the count unchanged before
	// and after has seen every write (challenges.go's cache).
	writes atomic.Uint64
	// applyHalvings counts the groups of Apply that did not fit one
	// transaction and were split (tests).
	applyHalvings atomic.Uint64
	// challengeLists caches ListChallenges (challenges.go).
	challengeLists challengeListCache
	// inters caches the intermediates of the chains (badger_chains.go).
	inters intermediateCache
	// records caches the records lookups read (recordcache.go); nil when
	// BadgerOptions.RecordCacheSize turned it off.
	records *recordCache
	// epochs tell lookups which names writes changed since the record
	// cache's entries were found current (recordcache_fast.go).
	epochs *nameEpochs
	// afterCommit, when set (tests), runs in update between an attempt's
	// commit and the bump of its epochs, still holding writeMu.
	afterCommit func()
}

var (
	_ Store      = (*Badger)(nil)
	_ ChangeFeed = (*Badger)(nil)
)

// OpenBadger opens (creating it if needed) the Badger database in the
// directory path. Only one process may open a directory at a time.
func OpenBadger(path string, opts BadgerOptions) (*Badger, error) {
	if path == "" {
		return nil, errors.New("open badger: empty path")
	}
	if opts.Logger == nil {
		return nil, errors.New("open badger: nil logger")
	}
	if opts.MemTableSize == 0 {
		opts.MemTableSize = defaultMemTableSize
	}
	if opts.MemTableSize < minMemTableSize {
		return nil, fmt.Errorf("open badger: memtable size %d below %d", opts.MemTableSize, minMemTableSize)
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = defaultGCInterval
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.RecordCacheSize == 0 {
		opts.RecordCacheSize = DefaultRecordCacheSize
	}
	if opts.RecordCacheSize > 0 && opts.RecordCacheSize < MinRecordCacheSize {
		return nil, fmt.Errorf("open badger: record cache size %d below %d", opts.RecordCacheSize, MinRecordCacheSize)
	}
	if opts.RecordCacheSize > MaxRecordCacheSize {
		return nil, fmt.Errorf("open badger: record cache size %d above %d", opts.RecordCacheSize, MaxRecordCacheSize)
	}
	records, err := newRecordCache(opts.RecordCacheSize)
	if err != nil {
		return nil, fmt.Errorf("open badger: %w", err)
	}
	log := opts.Logger.With("engine", "badger")

	// Badger's defaults are sized for a database server. For a sidecar:
	// fewer memtables; no compression, since PEM is base64 that Snappy
	// cannot shrink, and without compression there is no need for a block
	// cache either (tables are read through mmap and the page cache); no
	// index cache, which Badger uses only for encrypted tables (it reads
	// the indexes and bloom filters of others from their mapped files, so
	// they live in the page cache too); certificate records in the value log
	// (valueThreshold), in files of 64 MiB that the GC rewrites one at a
	// time; two compactors; no expvar metrics (process-global).
	bo := badger.DefaultOptions(path).
		WithLogger(badgerLogger{log}).
		WithLoggingLevel(badger.WARNING).
		WithSyncWrites(!opts.NoSync).
		WithMemTableSize(opts.MemTableSize).
		WithNumMemtables(3).
		WithCompression(options.None).
		WithBlockCacheSize(0).
		WithValueThreshold(valueThreshold).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithMetricsEnabled(false)
	db, err := badger.Open(bo)
	if err != nil {
		records.close()
		return nil, fmt.Errorf("open badger %s: %w", path, err)
	}
	b := &Badger{db: db, log: log, now: opts.Clock, stop: make(chan struct{}), upgraded: make(chan struct{}), writeV1: opts.writeV1,
		writeUnhomed: opts.writeUnhomed || opts.writeV1, records: records, epochs: newNameEpochs()}
	if err := b.initChangeLog(); err != nil {
		db.Close()
		records.close()
		return nil, fmt.Errorf("open badger %s: change log: %w", path, err)
	}
	// Records written before formatV2 are rewritten in the background:
	// both formats are served meanwhile.
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	if opts.noUpgrade {
		close(b.upgraded)
	} else {
		b.done.Add(1)
		go b.upgradeLoop(ctx)
	}
	if opts.GCInterval > 0 {
		b.done.Add(1)
		go b.gcLoop(opts.GCInterval)
	}
	b.done.Add(1)
	go b.adviseLoop(path)
	return b, nil
}

// adviseInterval is how often the store's memory mappings are advised
// random access again (adviseRandom), for the tables and value-log files
// Badger maps after the last time.
const adviseInterval = 10 * time.Second

// adviseLoop runs adviseRandom on the store's files at once and every
// adviseInterval until Close, logging the first failure only.
func (b *Badger) adviseLoop(dir string) {
	defer b.done.Done()
	t := time.NewTicker(adviseInterval)
	defer t.Stop()
	logged := false
	for {
		if err := adviseRandom(dir); err != nil && !logged {
			b.log.Warn("cannot advise the kernel that the store is read at random: a lookup that misses the page cache reads the disk's read-ahead around each page", "err", err)
			logged = true
		}
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
	}
}

// Close stops the value-log GC, the advice loop and the upgrade of the
// records (which goes on at the next start), flushes and closes the
// database. Later
// calls return the first call's result.
func (b *Badger) Close() error {
	b.closed.Do(func() {
		b.cancel()
		close(b.stop)
		b.done.Wait()
		if err := b.db.Close(); err != nil {
			b.err = fmt.Errorf("close badger: %w", err)
		}
		if err := b.records.close(); err != nil && b.err == nil {
			b.err = fmt.Errorf("close badger: %w", err)
		}
	})
	return b.err
}

// gcLoop runs the value-log GC every interval until Close.
func (b *Badger) gcLoop(interval time.Duration) {
	defer b.done.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			b.runGC()
		}
	}
}

// runGC rewrites value-log files until none is worth rewriting.
func (b *Badger) runGC() {
	for {
		select {
		case <-b.stop:
			return
		default:
		}
		err := b.db.RunValueLogGC(gcDiscardRatio)
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
		default:
			b.log.Warn("value log gc failed", "err", err)
		}
		return
	}
}

// update runs fn in a read-write transaction and commits it, one such
// transaction at a time. Should the transaction still conflict (it cannot
// while this process is the only writer), it is retried whole; fn must
// not keep state across attempts. Every write to the database goes
// through here: the count of writes it keeps is what tells
// ListChallenges that a scan it kept is still current, and the epochs of
// the names fn marks (touch) tell lookups' fast path that its answer may
// have changed (recordcache_fast.go): each marked name's epoch is odd
// from its first mark in fn, before the commit can be seen by any
// reader, until the attempt has ended, committed or not, failed or
// panicked, and even again before the next write begins.
func (b *Badger) update(ctx context.Context, fn func(txn *badger.Txn) error) error {
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := b.attempt(fn)
		if !errors.Is(err, badger.ErrConflict) || attempt == maxAttempts {
			return err
		}
		// Back off at random, exponentially, so that writers of the same
		// keys do not meet again.
		pause := time.Duration(rand.Int64N(int64(min(maxBackoff, time.Millisecond<<attempt))))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// attempt runs one attempt of update. What follows the commit is
// deferred, so that a panic in fn (Badger discards its transaction)
// neither leaves writeMu locked nor the epochs of the names it marked
// odd.
func (b *Badger) attempt(fn func(txn *badger.Txn) error) error {
	b.writeMu.Lock()
	defer func() {
		b.epochs.bump()
		b.writes.Add(1)
		b.writeMu.Unlock()
	}()
	err := b.db.Update(fn)
	if b.afterCommit != nil {
		b.afterCommit()
	}
	return err
}

// view runs fn in a read-only transaction.
func (b *Badger) view(ctx context.Context, fn func(txn *badger.Txn) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(fn)
}

// notFound turns Badger's missing key into ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	return err
}

// badgerLogger passes Badger's warnings and errors to a slog.Logger.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, args ...any) {
	l.log.Error(strings.TrimSpace(fmt.Sprintf(f, args...)))
}

func (l badgerLogger) Warningf(f string, args ...any) {
	l.log.Warn(strings.TrimSpace(fmt.Sprintf(f, args...)))
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}

// RecordCacheStats returns the counters of the cache of the records
// lookups read (BadgerOptions.RecordCacheSize): zero when it is off.
func (b *Badger) RecordCacheStats() RecordCacheStats { return b.records.stats() }

// Size returns the bytes the store takes on disk: its sorted tables (the
// LSM tree) and its value log (where certificate records live), as the
// sizes of their files. Badger's own DB.Size needs its metrics, which
// OpenBadger turns off, and its tables' OnDiskSize counts the values they
// point to in the value log. The active value log file is preallocated,
// so vlog starts near its file size (64 MiB), and lsm stays 0 until the
// first memtable is flushed.
func (b *Badger) Size() (lsm, vlog int64) {
	return filesSize(b.db.Opts().Dir, "*.sst"), filesSize(b.db.Opts().ValueDir, "*.vlog")
}

// filesSize returns the total size of the files in dir that match pattern.
func filesSize(dir, pattern string) int64 {
	var n int64
	files, _ := filepath.Glob(filepath.Join(dir, pattern))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}
