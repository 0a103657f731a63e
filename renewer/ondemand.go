package renewer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/certserver/certserver/store"
)

// OnDemand turns handshakes for names without a certificate into orders,
// for the names its Policy allows. The certificate endpoint calls Request
// and never waits: the policy check (allow list, DNS, ask URL) and the store
// write happen on OnDemand's own goroutines, and the handshake is served the
// fallback meanwhile. Safe for concurrent use.
type OnDemand struct {
	policy  *Policy
	store   store.Store
	renewer *Renewer
	log     *slog.Logger
	now     func() time.Time
	workers int

	queue   chan string
	mu      sync.Mutex
	pending map[string]bool
	// down is set while the store's database is unavailable, so that the
	// outage is logged once and its end once. Guarded by mu.
	down bool
}

// OnDemandConfig tunes an OnDemand. Zero fields take the defaults stated.
type OnDemandConfig struct {
	// Queue bounds the names waiting for a policy check. Default 4,096;
	// requests beyond it are dropped (the next handshake asks again).
	Queue int
	// Checkers is how many policy checks run at once. Default 8.
	Checkers int
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// NewOnDemand returns an OnDemand that checks names with policy, records
// allowed ones in st and hands them to rn ahead of its due index
// (Renewer.Expedite: an on-demand request never orders a name that is not
// due). rn is nil on a fleet host that does not renew: the allowed names
// are only recorded in the fleet's store, whose renewing hosts order them
// from the due index.
func NewOnDemand(cfg OnDemandConfig, policy *Policy, st store.Store, rn *Renewer, logger *slog.Logger) (*OnDemand, error) {
	switch {
	case policy == nil:
		return nil, errors.New("new on-demand: nil policy")
	case st == nil:
		return nil, errors.New("new on-demand: nil store")
	case logger == nil:
		return nil, errors.New("new on-demand: nil logger")
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	if cfg.Checkers <= 0 {
		cfg.Checkers = 8
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &OnDemand{
		policy:  policy,
		store:   st,
		renewer: rn,
		log:     logger.With("subsystem", "on_demand"),
		now:     cfg.Now,
		workers: cfg.Checkers,
		queue:   make(chan string, cfg.Queue),
		pending: map[string]bool{},
	}, nil
}

// Request asks for a certificate for name, a normalized host name that has
// none. It returns at once; a name already waiting is not queued twice.
func (o *OnDemand) Request(name string) {
	if !o.policy.Enabled() {
		return
	}
	o.mu.Lock()
	if o.pending[name] {
		o.mu.Unlock()
		return
	}
	o.pending[name] = true
	o.mu.Unlock()
	select {
	case o.queue <- name:
	default:
		o.done(name)
		o.log.Warn("on-demand queue full, request dropped", "name", name)
	}
}

// Run checks queued names with Checkers goroutines until ctx is done.
func (o *OnDemand) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range o.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case name := <-o.queue:
					o.handle(ctx, name)
					o.done(name)
				}
			}
		}()
	}
	wg.Wait()
}

func (o *OnDemand) done(name string) {
	o.mu.Lock()
	delete(o.pending, name)
	o.mu.Unlock()
}

func (o *OnDemand) handle(ctx context.Context, name string) {
	d, err := o.store.GetDomain(ctx, name)
	if o.unavailable(err) {
		return
	}
	switch {
	case err == nil:
		// Already managed: the renewer looks at it sooner, and orders it
		// only if its record says it is due (Expedite), so a failing name
		// keeps its backoff and a name being ordered is not ordered again.
		if d.State != store.StateRemoved {
			o.expedite(name)
		}
		return
	case !errors.Is(err, store.ErrNotFound):
		o.log.Error("read domain", "name", name, "error", err)
		return
	}
	dec := o.policy.Check(ctx, name)
	if o.unavailable(dec.Err) {
		return
	}
	if dec.Undecided {
		o.log.Debug("on-demand request left undecided; the next one asks again", "name", name, "reason", dec.Reason)
		return
	}
	if !dec.Allow {
		o.log.Debug("on-demand request refused", "name", name, "reason", dec.Reason)
		return
	}
	now := o.now()
	added, _, err := o.store.AddDomains(ctx, []*store.Domain{{
		Name: name, State: store.StatePending, Source: "on-demand",
		NextAttempt: now, AddedAt: now, UpdatedAt: now,
	}})
	if o.unavailable(err) {
		return
	}
	if err != nil {
		o.log.Error("add on-demand name", "name", name, "error", err)
		return
	}
	if added == 1 {
		o.log.Info("on-demand name accepted", "name", name)
	}
	o.expedite(name)
}

// expedite hands name to this host's renewer, if it has one.
func (o *OnDemand) expedite(name string) {
	if o.renewer != nil {
		o.renewer.Expedite(name)
	}
}

// unavailable reports whether err says the store's database is
// unavailable (a fleet's PostgreSQL down): the request is dropped, since
// no order could be made, and the next handshake asks again. The outage
// is logged once, and its end once (on the first request that reaches the
// database again).
func (o *OnDemand) unavailable(err error) bool {
	down := errors.Is(err, store.ErrUnavailable)
	answered := err == nil || errors.Is(err, store.ErrNotFound)
	o.mu.Lock()
	was := o.down
	if down || answered {
		o.down = down
	}
	o.mu.Unlock()
	switch {
	case down && !was:
		o.log.Warn("the fleet's database is unavailable: on-demand requests for unknown names wait for it (nothing can be ordered meanwhile)", "error", err)
	case answered && was:
		o.log.Info("the fleet's database answers: on-demand requests are checked again")
	}
	return down
}
