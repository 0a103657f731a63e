// Package replica keeps a host's local copy of a fleet's shared store in
// step: a Follower applies to a store.Replica (the host's Badger) every
// change of a store.ReplicationSource (PostgreSQL), as it is announced,
// at start and after every reconnect, and reports the host to the fleet.
// While the source is down the local copy keeps everything it has, and
// the Follower catches up by itself when it is back.
//
// What it relies on: versions commit in order (a reader that sees version
// V sees every version below it, as store/postgres guarantees), and the
// store.Replica skips versions it already applied. An announcement can be
// lost (made while no connection listened, or while Listen was starting
// after a reconnect); the next announcement, or the poll every
// ReportInterval, brings the change then.
//
// A source that refuses to sync (store/postgres answers ErrPruned to a
// host that was away longer than its host retention, whose copy may hold
// records deleted since) is logged and retried; the copy keeps serving
// what it has. Such a copy must be rebuilt: stop the host, remove its
// store directory, start it again.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/certserver/certserver/store"
)

// Config configures New. Fields marked required must be set; a zero
// value of any other selects its default.
type Config struct {
	// Source is the fleet's shared store. Required.
	Source store.ReplicationSource
	// Replica is the host's local copy. Required.
	Replica store.Replica
	// Host is the host's name in the fleet ([fleet] host_name). Required.
	Host string
	// Renews says whether the host's renewer orders certificates; it is
	// reported with the host.
	Renews bool
	// InFlight, when set, returns how many orders the host's renewer has
	// under way; it is reported with the host (store.Host.InFlight) and
	// must not block. Default nil: 0 is reported.
	InFlight func() int
	// Logger receives the follower's messages. Required.
	Logger *slog.Logger
	// Clock returns the current time: it stamps reports, measures the
	// lag and an outage, and decides when a progress line is due.
	// Default time.Now.
	Clock func() time.Time

	// Batch is how many changes one ChangesAfter returns at most, and so
	// what one transaction of the local copy holds at most. Default 2000.
	Batch int
	// ReportInterval is how often the host reports itself and asks the
	// source for its latest version (which also catches a change whose
	// announcement was lost). Default 10 s.
	ReportInterval time.Duration
	// RetryMin and RetryMax bound the pause before the source is tried
	// again after a failure; it doubles from RetryMin to RetryMax.
	// Defaults 1 s and 5 s: one connection attempt per host every 5 s
	// costs a database nothing, and a host is back in step within about 5 s
	// of the database's return however long the outage was.
	RetryMin, RetryMax time.Duration
	// ProgressInterval is how often a long sync logs its progress.
	// Default 5 s.
	ProgressInterval time.Duration
}

// Defaults of Config.
const (
	DefaultBatch            = 2000
	DefaultReportInterval   = 10 * time.Second
	DefaultRetryMin         = time.Second
	DefaultRetryMax         = 5 * time.Second
	DefaultProgressInterval = 5 * time.Second
)

// reportGap is the least time between two reports made because a sync
// caught up: a busy fleet catches up several times a second.
const reportGap = time.Second

// Follower keeps a Replica in step with a ReplicationSource. Run does the
// work; Status may be called at any time from any goroutine.
type Follower struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	wake chan struct{} // a sync is due: an announcement, Listen (re)started or failed
	// relisten asks the listener to stop waiting and listen again at once
	// (the source is back).
	relisten chan struct{}
	ready    chan struct{} // closed when Ready becomes true

	mu sync.Mutex
	st state
}

// state is what Status reports, and what the follower decides on.
type state struct {
	ready     bool
	known     bool // the source answered at least once, or failed at least once
	up        bool
	downSince time.Time
	cause     string // the last failure of the current outage
	syncErr   string // the last other failure of a sync, "" after one works
	applied   uint64
	latest    uint64
	// synced says the local copy completed a sync, in this run or an
	// earlier one (recorded in it with MarkSynced): only such a copy is
	// ready while the source is down.
	synced bool
	// pending lists versions announced and not yet applied, with when
	// each was first known, oldest first (at most maxPending: later ones
	// merge into the last).
	pending    []learned
	lastReport time.Time
	reported   uint64 // the version the last report gave
	// listenFailures counts Listen's failures in a row, listenErr is the
	// last; listenWarned says the warning about them was logged.
	listenFailures int
	listenErr      error
	listenWarned   bool
}

type learned struct {
	version uint64
	at      time.Time
}

const maxPending = 64

// New returns a Follower for cfg, refusing a missing Source, Replica,
// Host or Logger and negative settings.
func New(cfg Config) (*Follower, error) {
	switch {
	case cfg.Source == nil:
		return nil, errors.New("replica: nil source")
	case cfg.Replica == nil:
		return nil, errors.New("replica: nil replica")
	case cfg.Host == "":
		return nil, errors.New("replica: empty host name")
	case cfg.Logger == nil:
		return nil, errors.New("replica: nil logger")
	case cfg.Batch < 0, cfg.ReportInterval < 0, cfg.RetryMin < 0, cfg.RetryMax < 0, cfg.ProgressInterval < 0:
		return nil, errors.New("replica: negative batch or interval")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.ReportInterval == 0 {
		cfg.ReportInterval = DefaultReportInterval
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryMax < cfg.RetryMin {
		return nil, fmt.Errorf("replica: retry max %v below retry min %v", cfg.RetryMax, cfg.RetryMin)
	}
	if cfg.ProgressInterval == 0 {
		cfg.ProgressInterval = DefaultProgressInterval
	}
	return &Follower{
		cfg:      cfg,
		log:      cfg.Logger,
		now:      cfg.Clock,
		wake:     make(chan struct{}, 1),
		relisten: make(chan struct{}, 1),
		ready:    make(chan struct{}),
	}, nil
}

// Ready returns a channel closed when the local copy is ready to serve
// (Status.Ready).
func (f *Follower) Ready() <-chan struct{} { return f.ready }

// Run follows the source until ctx ends, then returns ctx.Err(). Failures
// of the source or of the local copy are logged and retried, never
// returned. Run must be called once.
func (f *Follower) Run(ctx context.Context) error {
	applied, synced, err := f.localState(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st.applied, f.st.latest, f.st.synced = applied, applied, synced
	f.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() { f.listen(ctx) })
	defer wg.Wait()

	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.wake:
		case <-timer.C:
		}
		next := f.cfg.ReportInterval
		if err := f.sync(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failures++
			next = retryPause(failures, f.cfg.RetryMin, f.cfg.RetryMax)
		} else {
			failures = 0
		}
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		timer.Reset(next)
	}
}

// localState reads the local copy's version and whether it completed a
// sync before, retrying while it fails (a local store that cannot be
// read is reported, not fatal).
func (f *Follower) localState(ctx context.Context) (uint64, bool, error) {
	for failures := 1; ; failures++ {
		v, err := f.cfg.Replica.AppliedVersion(ctx)
		var synced bool
		if err == nil {
			synced, err = f.cfg.Replica.Synced(ctx)
		}
		if err == nil {
			return v, synced, nil
		}
		if ctx.Err() != nil {
			return 0, false, ctx.Err()
		}
		if failures == 1 {
			f.log.Error("fleet: cannot read the local copy's applied version; retrying", "error", err)
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(retryPause(failures, f.cfg.RetryMin, f.cfg.RetryMax)):
		}
	}
}

// retryPause is the pause after the n-th failure in a row (n ≥ 1): min,
// doubled at each further failure, at most max.
func retryPause(n int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}

// listen calls Source.Listen until ctx ends, waking the sync loop after
// every (re)start, since announcements made while nobody listened are
// lost, and after every failure, so that an outage is noticed at once.
// After a failure it waits retryPause, or until relisten says the source
// is back.
func (f *Follower) listen(ctx context.Context) {
	failures := 0
	for {
		f.poke(f.wake)
		started := time.Now()
		err := f.cfg.Source.Listen(ctx, f.announced)
		if ctx.Err() != nil {
			return
		}
		worked := time.Since(started) >= f.cfg.RetryMax
		if worked {
			failures = 0 // it worked for a while: start the pauses over
		}
		failures++
		f.listenFailed(err, worked)
		f.poke(f.wake)
		t := time.NewTimer(retryPause(failures, f.cfg.RetryMin, f.cfg.RetryMax))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-f.relisten:
		case <-t.C:
		}
		t.Stop()
	}
}

// Retry asks for a sync and a new Listen now, without waiting out the
// pause after a failure: the caller knows the source answers again (a
// fleet host whose database was opened after its start).
func (f *Follower) Retry() {
	f.poke(f.relisten)
	f.poke(f.wake)
}

// poke sends on a channel of one slot without waiting: a signal already
// pending stands for this one too (a burst of announcements is one sync).
func (f *Follower) poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// announced is Listen's notify: it notes the version and wakes the sync
// loop when it is not applied yet.
func (f *Follower) announced(version uint64) {
	if f.learn(version) {
		f.poke(f.wake)
	}
}

// learn notes that the source holds version; it reports whether the local
// copy lacks it.
func (f *Follower) learn(version uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &f.st
	if version <= s.applied {
		return false
	}
	if version > s.latest {
		s.latest = version
		if n := len(s.pending); n < maxPending {
			s.pending = append(s.pending, learned{version, f.now()})
		} else {
			s.pending[n-1].version = version
		}
	}
	return true
}

// listenFailed records a failure of Listen. An outage is logged by
// sync; Listen failing again and again while the source answers (a
// PgBouncer in transaction mode cannot carry LISTEN) is logged there
// too, once.
func (f *Follower) listenFailed(err error, worked bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if worked {
		f.st.listenFailures, f.st.listenWarned = 0, false
	}
	f.st.listenFailures++
	f.st.listenErr = err
}
