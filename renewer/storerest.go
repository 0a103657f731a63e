package renewer

import (
	"context"
	"errors"
	"time"

	"github.com/certserver/certserver/store"
)

// storeRest is the renewer's rest while its store cannot reach its
// database (store.ErrUnavailable: a fleet's PostgreSQL down or
// unreachable). Like a CA's rest it begins at the first failure that says
// so, is logged once when it begins and once when it ends, and ends by
// itself when a probe succeeds: meanwhile the dispatcher claims no name,
// neither from the due index nor from the urgent queue (which keeps its
// names for later), so that no order is placed that the fleet could not
// record. The probe is a read of the due index every storeErrorPause.
// Guarded by Renewer.mu.
type storeRest struct {
	since time.Time // zero while the store answers
}

// storeFailed notes a failure of the store and reports whether it says
// the store's database is unavailable; the first such failure starts the
// rest and is logged.
func (r *Renewer) storeFailed(err error) bool {
	if !errors.Is(err, store.ErrUnavailable) {
		return false
	}
	r.mu.Lock()
	first := r.rest.since.IsZero()
	if first {
		r.rest.since = r.cfg.Now()
	}
	r.mu.Unlock()
	if first {
		// A dispatcher waiting for due names or urgent ones goes to rest
		// now rather than hand out the next one.
		r.Wake()
		r.log.Warn("the store's database is unavailable: no name is claimed and nothing is ordered until it answers again",
			"error", err, "probe_every", storeErrorPause)
	}
	return true
}

// storeResting returns when the rest began, zero when the store answers.
func (r *Renewer) storeResting() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rest.since
}

// waitForStore waits until a probe of the store answers, probing every
// storeErrorPause, and ends the rest; it returns ctx's error when ctx
// ends first.
func (r *Renewer) waitForStore(ctx context.Context) error {
	for {
		if err := r.sleep(ctx, storeErrorPause); err != nil {
			return err
		}
		_, err := r.store.Due(ctx, r.cfg.Now(), 1)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil || !errors.Is(err, store.ErrUnavailable) {
			r.mu.Lock()
			since := r.rest.since
			r.rest.since = time.Time{}
			r.mu.Unlock()
			r.log.Info("the store's database answers again: claiming names", "unavailable_for", r.cfg.Now().Sub(since).Round(time.Second))
			return nil
		}
	}
}
