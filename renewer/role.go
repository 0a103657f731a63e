package renewer

import "context"

// A fleet has one active renewer at a time (until names are leased one by
// one): the hosts that renew contend for the role, and only the one that
// holds it claims work, from the due index and from the urgent queue
// alike. The others stand by: their dispatcher claims nothing, the
// urgent queue keeps its names, and a worker that has not yet sent its
// order gives the name back. A single host is always active.

// SetActive tells the renewer whether it may claim work: true when its
// host holds the fleet's renewer role, false when it has lost it or does
// not have it yet (Config.StandBy). Orders already sent run to their end.
// Each change is logged once. It never blocks and is safe for concurrent
// use.
func (r *Renewer) SetActive(active bool) {
	r.mu.Lock()
	changed := r.standby == active
	r.standby = !active
	r.mu.Unlock()
	if !changed {
		return
	}
	r.Wake()
	if active {
		r.log.Info("this host is the fleet's renewer now: claiming due and requested names")
	} else {
		r.log.Warn("this host is no longer the fleet's renewer: standing by, claiming nothing (orders already sent finish)")
	}
}

// Active reports whether the renewer may claim work (see SetActive).
func (r *Renewer) Active() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.standby
}

// waitForRole returns at once while the renewer is active, and otherwise
// waits until it is (SetActive wakes the dispatcher) or ctx ends. Having
// gained the role, it restores the rate-limit buckets saved since its
// start (restoreLimits: each bucket keeps the later of the two times), so
// that it goes on from what the previous holder spent of the account's
// limits rather than from what it knew when it started.
func (r *Renewer) waitForRole(ctx context.Context) error {
	if r.Active() {
		return nil
	}
	for !r.Active() {
		select {
		case <-r.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.restoreLimits(ctx)
	return nil
}
