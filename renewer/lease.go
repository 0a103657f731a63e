package renewer

import (
	"context"
	"errors"
	"time"

	"github.com/certserver/certserver/store"
)

// A fleet's renewing hosts share the due names through leases
// (Config.Leases, store.Leaser): the dispatcher claims due names from the
// shared store, as many as it has free workers, instead of reading the
// due index, and a name asked for (Expedite, Prioritize) is claimed by
// the worker that takes it. A worker runs under its name's lease: every
// write of the name's outcome carries it (store.WithLease) and is made
// only while the lease is still this host's. The renewer renews the
// leases it holds every LeaseTTL/3; a lease lost (another host claimed
// the name after it expired: this host was paused, or cut off from the
// database) stops the worker's order and its result is discarded. A
// worker done releases its lease. The in-process flight map still keeps
// one worker per name on this host.

// DefaultLeaseTTL is Config.LeaseTTL's default.
const DefaultLeaseTTL = 2 * time.Minute

// leaseReleaseTimeout bounds the release of a lease when its worker is
// done, which runs even when the renewer stops.
const leaseReleaseTimeout = 10 * time.Second

// claimDue is nextDue with leases: it claims up to as many due names as
// there are free workers (one at least: the dispatcher holds a free
// worker's slot), marks each in flight with its lease and hands out the
// first; nextClaimed hands out the others. When nothing could be
// claimed it returns "" and how long to wait: until the earliest entry
// of the due index that is not due yet, or IdleWait when the due names
// are all held (by other hosts, or by this one's workers), since a lease
// that expires frees its name without a write this host would see.
func (r *Renewer) claimDue(ctx context.Context) (string, time.Duration, error) {
	if n, ok := r.nextClaimed(); ok {
		return n, 0, nil
	}
	now := r.cfg.Now()
	r.mu.Lock()
	free := max(r.cfg.Workers-len(r.inflight), 1)
	r.mu.Unlock()
	ls, err := r.cfg.Leases.ClaimDue(ctx, r.cfg.Host, now, free, r.cfg.LeaseTTL)
	if err != nil {
		return "", 0, err
	}
	var extra []store.Lease // claimed, but this host has the name in flight
	for _, l := range ls {
		r.mu.Lock()
		if r.inflight[l.Name] != nil {
			extra = append(extra, l)
		} else {
			r.inflight[l.Name] = &flight{lease: l}
			r.claimed = append(r.claimed, l.Name)
		}
		r.mu.Unlock()
	}
	if len(extra) > 0 {
		r.releaseLeases(ctx, extra)
	}
	if n, ok := r.nextClaimed(); ok {
		return n, 0, nil
	}
	wait := r.cfg.IdleWait
	later, err := r.store.Due(ctx, now.Add(wait), dueBatch)
	if err != nil {
		return "", 0, err
	}
	for _, e := range later {
		if e.At.After(now) {
			wait = max(e.At.Sub(now), 10*time.Millisecond)
			break
		}
	}
	return "", wait, nil
}

// nextClaimed hands out the next name claimDue claimed, unless its
// lease was lost meanwhile (the name then leaves the flight map).
func (r *Renewer) nextClaimed() (string, bool) {
	for len(r.claimed) > 0 {
		name := r.claimed[0]
		r.claimed = r.claimed[1:]
		r.mu.Lock()
		lost := r.inflight[name] == nil || r.inflight[name].lost
		r.mu.Unlock()
		if !lost {
			return name, true
		}
		r.release(name)
	}
	return "", false
}

// releaseClaimed releases the leases claimDue claimed that no worker
// took (Run is stopping), so that other hosts need not wait for them to
// expire.
func (r *Renewer) releaseClaimed(ctx context.Context) {
	var ls []store.Lease
	r.mu.Lock()
	for _, name := range r.claimed {
		if f := r.inflight[name]; f != nil {
			if !f.lost {
				ls = append(ls, f.lease)
			}
			delete(r.inflight, name)
		}
	}
	r.mu.Unlock()
	r.claimed = nil
	r.releaseLeases(ctx, ls)
}

// leased prepares the work on name, which the worker has just taken: on a
// single host it returns ctx as it is. With leases it claims the name
// when it came from the urgent queue (a name another host holds is left
// to it: that host reads the record anyway), and returns ctx carrying the
// lease (store.WithLease), cancelled should the lease be lost, with done,
// which releases the lease when the work is over. ok is false when there
// is no work: the name could not be claimed.
func (r *Renewer) leased(ctx context.Context, name string, forced bool) (wctx context.Context, done func(), ok bool) {
	if r.cfg.Leases == nil {
		return ctx, func() {}, true
	}
	r.mu.Lock()
	l := r.inflight[name].lease
	r.mu.Unlock()
	if l.Token == 0 {
		var err error
		l, err = r.cfg.Leases.Claim(ctx, r.cfg.Host, name, r.cfg.LeaseTTL)
		switch {
		case errors.Is(err, store.ErrLeased):
			r.log.Info("another host is working on the name; left to it", "name", name, "error", err)
			return nil, nil, false
		case errors.Is(err, store.ErrNotFound), ctx.Err() != nil:
			return nil, nil, false
		case err != nil:
			if !r.storeFailed(err) {
				r.log.Error("claim name", "name", name, "error", err)
			}
			if forced {
				// An operator's request is kept for when the store
				// answers (release queues it again).
				r.mu.Lock()
				r.inflight[name].again = true
				r.mu.Unlock()
			}
			r.pauseAfterStoreError(ctx)
			return nil, nil, false
		}
	}
	wctx, cancel := context.WithCancel(store.WithLease(ctx, l))
	r.mu.Lock()
	f := r.inflight[name]
	f.lease, f.cancel = l, cancel
	r.mu.Unlock()
	return wctx, func() {
		cancel()
		r.mu.Lock()
		lost := f.lost
		r.mu.Unlock()
		if !lost {
			r.releaseLeases(ctx, []store.Lease{l})
		}
	}, true
}

// releaseLeases releases ls, even when ctx is done.
func (r *Renewer) releaseLeases(ctx context.Context, ls []store.Lease) {
	if len(ls) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseReleaseTimeout)
	defer cancel()
	if err := r.cfg.Leases.Release(rctx, ls); err != nil && !r.storeFailed(err) {
		// The leases expire by themselves.
		r.log.Warn("release leases", "leases", len(ls), "error", err)
	}
}

// keepLeases renews the leases the renewer holds every LeaseTTL/3 until
// ctx ends.
func (r *Renewer) keepLeases(ctx context.Context) {
	for {
		if r.sleep(ctx, r.cfg.LeaseTTL/3) != nil {
			return
		}
		r.renewLeases(ctx)
	}
}

// renewLeases renews every lease the renewer holds once; a lease the
// store no longer holds is lost (leaseLost). A store that cannot be asked
// renews nothing: the leases are tried again next time, and a write made
// under one that another host claimed meanwhile is refused.
func (r *Renewer) renewLeases(ctx context.Context) {
	r.mu.Lock()
	var held []store.Lease
	for _, f := range r.inflight {
		if f.lease.Token != 0 && !f.lost {
			held = append(held, f.lease)
		}
	}
	r.mu.Unlock()
	if len(held) == 0 {
		return
	}
	renewed, err := r.cfg.Leases.Renew(ctx, held, r.cfg.LeaseTTL)
	if err != nil {
		if ctx.Err() == nil && !r.storeFailed(err) {
			r.log.Error("renew leases", "leases", len(held), "error", err)
		}
		return
	}
	kept := make(map[int64]store.Lease, len(renewed))
	for _, l := range renewed {
		kept[l.Token] = l
	}
	for _, l := range held {
		if nl, ok := kept[l.Token]; ok {
			r.mu.Lock()
			if f := r.inflight[l.Name]; f != nil && f.lease.Token == l.Token {
				f.lease = nl
			}
			r.mu.Unlock()
			continue
		}
		r.leaseLost(l.Name, l.Token, nil)
	}
}

// leaseLost records that the lease on name under token is lost (err, if
// not nil, is the write it refused): the worker's order is stopped and
// whatever it gets is not written. It is logged once.
func (r *Renewer) leaseLost(name string, token int64, err error) {
	r.mu.Lock()
	f := r.inflight[name]
	if f == nil || f.lease.Token != token || f.lost {
		r.mu.Unlock()
		return
	}
	f.lost = true
	cancel := f.cancel
	r.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	attrs := []any{"name", name, "token", token}
	if err != nil {
		attrs = append(attrs, "error", err)
	}
	r.log.Warn("lease on "+name+" lost to another host; result discarded", attrs...)
}

// lostLease reports whether err says that the lease ctx carries was
// lost, and if so records it (leaseLost).
func (r *Renewer) lostLease(ctx context.Context, err error) bool {
	if !errors.Is(err, store.ErrLeaseLost) {
		return false
	}
	if l, ok := store.LeaseFrom(ctx); ok {
		r.leaseLost(l.Name, l.Token, err)
	}
	return true
}

// leaseGone reports whether the lease ctx carries, if any, is known to
// be lost: the worker's context was cancelled for it.
func (r *Renewer) leaseGone(ctx context.Context) bool {
	l, ok := store.LeaseFrom(ctx)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.inflight[l.Name]
	return f != nil && f.lease.Token == l.Token && f.lost
}
