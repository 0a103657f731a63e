package replica

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/certserver/certserver/store"
)

// sync asks the source for its latest version, applies every change the
// local copy lacks, and reports the host when a report is due. A source
// that cannot be reached is marked down (logged once per outage); other
// failures are logged once per run of failures. The caller retries after
// an error, with a growing pause.
func (f *Follower) sync(ctx context.Context) error {
	latest, err := f.cfg.Source.LatestVersion(ctx)
	if err != nil {
		return f.failed(ctx, err, true)
	}
	f.learn(latest)
	// A host reports before it copies, and again as a long copy goes on
	// (catchUp), so that the source keeps the tombstones it still needs
	// (it prunes only what every reporting host has applied): a host
	// joining a large fleet is never refused halfway for a removal made
	// while it copied.
	if f.reportDue() {
		if err := f.report(ctx); err != nil {
			return f.failed(ctx, err, true)
		}
	}
	n, err := f.catchUp(ctx)
	if err != nil {
		return err
	}
	// The completed sync is recorded before the copy is declared ready, so
	// that whoever sees it ready (and stops this host) finds it recorded.
	err = f.markSynced(ctx)
	f.caughtUp(n)
	if err != nil {
		return f.failed(ctx, fmt.Errorf("record the completed sync in the local copy: %w", err), false)
	}
	if f.reportDue() {
		if err := f.report(ctx); err != nil {
			return f.failed(ctx, err, true)
		}
	}
	return nil
}

// catchUp applies the changes after the local copy's version until the
// source has none left, fetching the next batch while the last one is
// applied. It returns how many changes it applied.
func (f *Follower) catchUp(ctx context.Context) (int, error) {
	f.mu.Lock()
	from, target, ready := f.st.applied, f.st.latest, f.st.ready
	f.mu.Unlock()
	start := f.now()
	long := !ready && target > from
	if long {
		f.log.Info("fleet: syncing certificates from the database", "applied_version", from, "latest_version", target)
	}

	// The fetcher ends when the source has nothing more, fails, or fctx
	// ends; catchUp waits for it, so that no call to the source outlives
	// Run.
	fctx, cancel := context.WithCancel(ctx)
	var fetcher sync.WaitGroup
	defer func() {
		cancel()
		fetcher.Wait()
	}()
	type batch struct {
		changes []store.Change
		asked   uint64 // the latest version known when it was asked for
		err     error
	}
	batches := make(chan batch, 1)
	fetcher.Go(func() {
		defer close(batches)
		after := from
		for {
			asked := f.latestKnown()
			cs, err := f.cfg.Source.ChangesAfter(fctx, after, f.cfg.Batch)
			select {
			case batches <- batch{cs, asked, err}:
			case <-fctx.Done():
				return
			}
			if err != nil || len(cs) == 0 {
				return
			}
			after = cs[len(cs)-1].Version
			if len(cs) < f.cfg.Batch && f.latestKnown() <= after {
				return
			}
		}
	})

	applied, lastProgress := 0, start
	for b := range batches {
		if b.err != nil {
			return applied, f.failed(ctx, b.err, true)
		}
		if len(b.changes) == 0 {
			// The source has nothing after the local copy: versions known
			// but not returned were superseded or removed (an expired
			// token).
			f.through(b.asked)
			break
		}
		if err := f.cfg.Replica.Apply(ctx, b.changes); err != nil {
			return applied, f.failed(ctx, fmt.Errorf("apply to the local copy: %w", err), false)
		}
		applied += len(b.changes)
		done := f.appliedThrough(b.changes[len(b.changes)-1].Version)
		if now := f.now(); now.Sub(lastProgress) >= f.cfg.ProgressInterval {
			lastProgress = now
			f.mu.Lock()
			total := f.st.latest - from
			f.mu.Unlock()
			f.log.Info(fmt.Sprintf("fleet: syncing certificates: %s of %s changes applied", thousands(done-from), thousands(total)),
				"applied_version", done)
			// A report that fails here fails the next batch too, which
			// says so.
			_ = f.report(ctx)
		}
	}
	if long {
		f.log.Info("fleet: local copy in step with the database", "changes_applied", applied,
			"applied_version", f.Status().Applied, "took", f.now().Sub(start).Round(time.Millisecond))
	}
	return applied, nil
}

// latestKnown returns the latest version the source is known to hold.
func (f *Follower) latestKnown() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st.latest
}

// appliedThrough records that the local copy holds every change through
// version, and returns it.
func (f *Follower) appliedThrough(version uint64) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &f.st
	s.applied = max(s.applied, version)
	s.latest = max(s.latest, s.applied)
	s.dropPending(s.applied)
	return s.applied
}

// through records that the source holds nothing for the local copy up
// to version (a query started after version was known returned nothing):
// what was announced up to it was superseded or removed (an expired
// token), and the copy is in step through it. The local store keeps its
// own applied version; a restart asks again from there and finds
// nothing.
func (f *Follower) through(version uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &f.st
	s.applied = max(s.applied, version)
	s.latest = max(s.latest, s.applied)
	s.dropPending(s.applied)
}

// dropPending forgets the announced versions up to version.
func (s *state) dropPending(version uint64) {
	i := 0
	for i < len(s.pending) && s.pending[i].version <= version {
		i++
	}
	s.pending = append(s.pending[:0], s.pending[i:]...)
}

// caughtUp records a sync that applied n changes and found nothing more:
// the source is up, the copy ready.
func (f *Follower) caughtUp(n int) {
	f.mu.Lock()
	s := &f.st
	wasDown, since := s.known && !s.up, s.downSince
	s.known, s.up, s.downSince, s.cause, s.syncErr = true, true, time.Time{}, "", ""
	becameReady := !s.ready
	s.ready = true
	warnListen := !s.listenWarned && s.listenFailures >= 3
	if warnListen {
		s.listenWarned = true
	}
	listenErr := s.listenErr
	f.mu.Unlock()
	if becameReady {
		close(f.ready)
	}
	if wasDown {
		f.log.Info("fleet: database back; the local copy caught up", "down_for", f.now().Sub(since).Round(time.Second), "changes_applied", n)
		f.poke(f.relisten)
	}
	if warnListen {
		f.log.Warn("fleet: the database answers but listening for its announcements keeps failing; changes arrive by polling every report interval (LISTEN needs a direct connection, or a PgBouncer in session mode)",
			"error", listenErr, "interval", f.cfg.ReportInterval)
	}
}

// markSynced records in the local copy, the first time a sync completes,
// that it did: a later run whose source is down at start is ready on
// that copy. A copy whose first sync was cut short is not.
func (f *Follower) markSynced(ctx context.Context) error {
	f.mu.Lock()
	synced, applied := f.st.synced, f.st.applied
	f.mu.Unlock()
	if synced {
		return nil
	}
	if err := f.cfg.Replica.MarkSynced(ctx, applied); err != nil {
		return err
	}
	f.mu.Lock()
	f.st.synced = true
	f.mu.Unlock()
	return nil
}

// failed records a failure of the source (source true) or of the local
// copy and returns err. A source that cannot be reached
// (store.ErrUnavailable) is down: logged when the outage begins, not at
// every retry. A local copy that completed a sync before, in this run or
// an earlier one, is ready then, if it was not: the host serves what it
// has. One whose first sync was cut short holds only part of the fleet's
// certificates and stays not ready. Other failures are logged at
// the first of a run.
func (f *Follower) failed(ctx context.Context, err error, source bool) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	now := f.now()
	f.mu.Lock()
	s := &f.st
	first := !s.known
	var wentDown, logErr, becameReady bool
	if source && errors.Is(err, store.ErrUnavailable) {
		wentDown = first || s.up
		if wentDown {
			s.downSince = now
		}
		s.known, s.up, s.cause = true, false, err.Error()
		if !s.ready && s.synced {
			s.ready, becameReady = true, true
		}
	} else {
		logErr = s.syncErr == ""
		s.syncErr = err.Error()
	}
	applied := s.applied
	f.mu.Unlock()
	if becameReady {
		close(f.ready)
	}
	switch {
	case wentDown && first:
		f.log.Error("fleet: database unreachable at start; serving the local copy as it is", "error", err, "applied_version", applied)
	case wentDown:
		f.log.Error("fleet: database down; serving from the local copy until it is back", "error", err, "applied_version", applied)
	case logErr && source:
		f.log.Error("fleet: the database refused to sync the local copy; retrying", "error", err)
	case logErr:
		f.log.Error("fleet: cannot write the local copy; retrying", "error", err)
	}
	return err
}

// reportDue says whether the host should report now: every
// ReportInterval, and after a sync that applied something, at most once
// a reportGap.
func (f *Follower) reportDue() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	since := f.now().Sub(f.st.lastReport)
	return f.st.lastReport.IsZero() || since >= f.cfg.ReportInterval ||
		(f.st.applied != f.st.reported && since >= reportGap)
}

// report records the host in the source: what its copy applied and how
// long the oldest change it lacks has waited, and the orders in flight.
func (f *Follower) report(ctx context.Context) error {
	now := f.now()
	st := f.Status()
	h := store.Host{Name: f.cfg.Host, Applied: st.Applied, SeenAt: now, Renews: f.cfg.Renews, LagSeconds: st.LagSeconds}
	if f.cfg.InFlight != nil {
		h.InFlight = f.cfg.InFlight()
	}
	applied := h.Applied
	if err := f.cfg.Source.ReportHost(ctx, h); err != nil {
		return err
	}
	f.mu.Lock()
	f.st.lastReport, f.st.reported = now, applied
	f.mu.Unlock()
	return nil
}

// thousands formats n with commas between groups of three digits.
func thousands(n uint64) string {
	s := fmt.Sprint(n)
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
