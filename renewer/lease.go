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
// lease that cannot be renewed (the database does not answer) and lapses
// within LeaseTTL/3 stops the name's orders at the CA (doubtLeases)
// before another host may claim it; a certificate obtained already is
// still stored if the database answers in time. A worker done releases
// its lease. The in-process flight map still keeps
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
			r.inflight[l.Name] = &flight{lease: l, until: now.Add(r.cfg.LeaseTTL)}
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
// to it: that host reads the record anyway; an operator's request for it
// is asked again once the lease can have ended, forceAfterLease), and returns ctx carrying the
// lease (store.WithLease), cancelled should the lease be lost, with done,
// which releases the lease when the work is over. ok is false when there
// is no work: the name could not be claimed.
func (r *Renewer) leased(ctx context.Context, name string, forced bool) (wctx context.Context, done func(), ok bool) {
	if r.cfg.Leases == nil {
		return ctx, func() {}, true
	}
	r.mu.Lock()
	l, until := r.inflight[name].lease, r.inflight[name].until
	r.mu.Unlock()
	if l.Token == 0 {
		var err error
		until = r.cfg.Now().Add(r.cfg.LeaseTTL)
		l, err = r.cfg.Leases.Claim(ctx, r.cfg.Host, name, r.cfg.LeaseTTL)
		switch {
		case errors.Is(err, store.ErrLeased) && forced:
			r.log.Info("another host is working on the name; the operator's request is kept for when its lease ends",
				"name", name, "error", err, "retry_in", r.forceAfterLease(ctx, name))
			return nil, nil, false
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
	if r.cfg.Now().After(until.Add(-r.cfg.LeaseTTL / 3)) {
		// Claimed a while ago and not renewed since (the database does
		// not answer): too close to lapsing to start an order under it.
		r.log.Warn("the lease on "+name+" could not be renewed and lapses soon: not starting its work; the name stays due",
			"name", name, "token", l.Token, "lapses", until.UTC())
		return nil, nil, false
	}
	wctx, cancel := context.WithCancel(store.WithLease(ctx, l))
	octx, stopOrders := context.WithCancelCause(wctx)
	wctx = context.WithValue(wctx, ordersKey{}, octx)
	r.mu.Lock()
	f := r.inflight[name]
	f.lease, f.cancel, f.until, f.stopOrders = l, cancel, until, stopOrders
	r.mu.Unlock()
	return wctx, func() {
		stopOrders(nil)
		cancel()
		r.mu.Lock()
		lost := f.lost
		f.releasing = true
		r.mu.Unlock()
		if !lost {
			r.releaseLeases(ctx, []store.Lease{l})
		}
	}, true
}

// forceAfterLease asks for name again, as an operator's request
// (Prioritize), once the lease another host holds on it can have ended,
// and returns how long that is: LeaseTTL and its grace (half of it,
// store.Leaser), the longest a lease claimed now lasts unless renewed. A
// holder still working then keeps it, and the request waits once more;
// the name is waited for once at a time. ctx is Run's: a renewer that
// stops forgets the request, as it forgets its urgent queue.
func (r *Renewer) forceAfterLease(ctx context.Context, name string) time.Duration {
	wait := r.cfg.LeaseTTL + r.cfg.LeaseTTL/2
	r.mu.Lock()
	waiting := r.forcedLater[name]
	r.forcedLater[name] = true
	r.mu.Unlock()
	if waiting {
		return wait
	}
	go func() {
		err := r.sleep(ctx, wait)
		r.mu.Lock()
		delete(r.forcedLater, name)
		r.mu.Unlock()
		if err == nil {
			r.enqueue(name, true)
		}
	}()
	return wait
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
		if f.lease.Token != 0 && !f.lost && !f.releasing {
			held = append(held, f.lease)
		}
	}
	r.mu.Unlock()
	if len(held) == 0 {
		return
	}
	sent := r.cfg.Now()
	renewed, err := r.cfg.Leases.Renew(ctx, held, r.cfg.LeaseTTL)
	if err != nil {
		if ctx.Err() == nil {
			if !r.storeFailed(err) {
				r.log.Error("renew leases", "leases", len(held), "error", err)
			}
			r.doubtLeases(held, err)
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
				f.lease, f.until = nl, sent.Add(r.cfg.LeaseTTL)
			}
			r.mu.Unlock()
			continue
		}
		r.leaseLost(l.Name, l.Token, nil)
	}
}

// errLeaseInDoubt is the cause of the cancellation of a name's orders
// when its lease could not be renewed and is about to lapse
// (doubtLeases).
var errLeaseInDoubt = errors.New("the lease could not be renewed and is about to lapse")

// ordersKey is the key of the context of a name's orders in its worker's
// context (leased, orderContext).
type ordersKey struct{}

// orderContext returns the context in which the worker of ctx sends its
// orders to the CA: with leases, one that is also cancelled, with
// errLeaseInDoubt as its cause, when the host can no longer be sure it
// holds the name's lease (doubtLeases); ctx itself otherwise. The rest of
// the work, the storing of a certificate obtained (storeIssued) above
// all, runs under ctx, which only a lease known lost cancels.
func orderContext(ctx context.Context) context.Context {
	if octx, ok := ctx.Value(ordersKey{}).(context.Context); ok {
		return octx
	}
	return ctx
}

// doubtLeases is called when held, the leases renewLeases tried to renew,
// could not be renewed (err): the store did not answer. Each lease that
// lapses within LeaseTTL/3 as far as this host can tell (flight.until)
// may be claimed by another host soon after, which would then order the
// name while this host's order runs: its orders are stopped
// (orderContext), once, and the name stays due. A certificate the CA
// has issued already is still stored if the store answers while the
// lease is held (the claims' grace gives the holder that time).
func (r *Renewer) doubtLeases(held []store.Lease, err error) {
	now := r.cfg.Now()
	for _, l := range held {
		r.mu.Lock()
		f := r.inflight[l.Name]
		if f == nil || f.lease.Token != l.Token || f.lost || f.releasing || f.doubted || f.stopOrders == nil || f.until.Sub(now) > r.cfg.LeaseTTL/3 {
			r.mu.Unlock()
			continue
		}
		f.doubted = true
		stop, until := f.stopOrders, f.until
		r.mu.Unlock()
		stop(errLeaseInDoubt)
		r.log.Warn("cannot renew the lease on "+l.Name+" and it lapses soon: stopping its order, so that no other host orders the name at the same time; the name stays due",
			"name", l.Name, "token", l.Token, "lapses", until.UTC(), "error", err)
	}
}

// leaseLost records that the lease on name under token is lost (err, if
// not nil, is the write it refused): the worker's order is stopped and
// whatever it gets is not written. It is logged once.
func (r *Renewer) leaseLost(name string, token int64, err error) {
	r.mu.Lock()
	f := r.inflight[name]
	if f == nil || f.lease.Token != token || f.lost || f.releasing {
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
