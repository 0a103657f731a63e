// Package renewer obtains and renews certificates over ACME. The due index
// of the store drives all of its work: a dispatcher takes the names that are
// due, earliest first, and hands them to a bounded pool of workers, each of
// which re-reads the name's record, orders a certificate and writes the
// outcome back with the name's next due time. Names asked for by a
// handshake (on demand) or by an operator go ahead of the index.
package renewer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certserver/certserver/store"
)

// Order is one certificate the renewer asks its Issuer for.
type Order struct {
	// Name is the normalized name the certificate is for: the managed
	// name, the certificate's first name.
	Name string
	// ExtraNames are the other names the certificate is for
	// (store.Domain.ExtraNames), in order; nil for a certificate for Name
	// alone.
	ExtraNames []string
	// Profile is the ACME profile to request ("" for the CA's default).
	Profile string
	// Replaces is the certificate being renewed, nil for a first order.
	Replaces *store.Certificate
	// NoReplaces keeps Replaces out of the order's "replaces" field
	// (RFC 9773 section 5): the CA refused to take an order as the
	// replacement of that certificate.
	NoReplaces bool
}

// Names returns every name of the order: Name followed by ExtraNames. The
// slice is new.
func (o Order) Names() []string {
	return append([]string{o.Name}, o.ExtraNames...)
}

// Issuer obtains a certificate for one order from a CA. It returns the new
// certificate record (not yet stored) or an error; an error that implements
// Permanent() bool or RetryAfter() time.Duration tells the renewer how to
// retry. Implementations must be safe for concurrent use.
type Issuer interface {
	Obtain(ctx context.Context, o Order) (*store.Certificate, error)
}

// Config tunes a Renewer. Zero fields take the defaults stated.
type Config struct {
	// Workers is how many orders run at once. Default 4.
	Workers int
	// OrderTimeout bounds one order from start to stored certificate.
	// Default 5 minutes.
	OrderTimeout time.Duration
	// IdleWait is the longest the dispatcher sleeps when nothing is due
	// before it reads the due index again. Default 1 minute.
	IdleWait time.Duration
	// DefaultProfile is the ACME profile for names that name none ("" asks
	// the CA for its default).
	DefaultProfile string
	// UrgentQueue bounds the names waiting to go ahead of the index (on
	// demand, renew now). Default 1,024; further requests are dropped and
	// logged.
	UrgentQueue int
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// Seed seeds the jitter. Default: random.
	Seed uint64
	// Preflight checks each name's DNS and CAA before it is ordered.
	// Default nil: no pre-flight.
	Preflight *Preflight
	// CAs are the CAs to order from, the primary first and the others in
	// order of preference, each with its own account (Issuer), Limiter,
	// CAA identities and renewal-information setting. Required: at least
	// one.
	CAs []CA
	// Selection says how orders are shared among CAs. Default
	// SelectFailover.
	Selection Selection
	// ARIPollInterval is how often the renewal information (RFC 9773) of
	// each certificate from a CA that offers it is fetched: every
	// interval ± 10%, or when the CA's Retry-After says, if later (capped
	// at a day). Default 12 hours: with N certificates, N/43,200 requests
	// a second (23 for a million).
	ARIPollInterval time.Duration
	// GiveUpAfter is how long a name may keep failing before it is parked
	// as given up, until an operator renews or re-adds it. Default 30
	// days; negative never gives up.
	GiveUpAfter time.Duration
	// Metrics is told when orders start and how they end
	// (PrometheusMetrics counts them). Default nil: nothing is told.
	Metrics Metrics
	// Leases, when set, makes the renewer share the due names with the
	// other renewing hosts of a fleet (store.Leaser: the fleet's
	// PostgreSQL): it works on a name only under a lease (claimDue,
	// Claim for the urgent ones), writes the name's outcome under it
	// (store.WithLease), renews its leases every LeaseTTL/3 while it
	// works, and gives up an order whose lease was lost. Default nil: a
	// single host, which reads the due index and needs no lease.
	Leases store.Leaser
	// Host is this host's name in its leases ([fleet] host_name).
	// Required with Leases.
	Host string
	// LeaseTTL is how long a lease lasts unless renewed: after a host
	// dies, how long its names wait before another host claims them.
	// Default 2 minutes; used only with Leases.
	LeaseTTL time.Duration
}

// Renewer schedules and runs certificate orders. Its methods are safe for
// concurrent use; Run is called once.
type Renewer struct {
	cfg   Config
	store store.Store
	cas   []*caState // in order of preference
	log   *slog.Logger
	// sleep waits for d or until ctx is done; tests replace it to move a
	// fake clock instead.
	sleep func(ctx context.Context, d time.Duration) error

	wake   chan struct{}
	urgent chan string

	// batch is the rest of the due entries nextDue read at batchAt; only
	// Run's goroutine uses them.
	batch   []store.DueEntry
	batchAt time.Time

	mu sync.Mutex
	// inflight holds the names a worker has now: the per-name lock that
	// keeps one order per name at a time.
	inflight map[string]*flight
	// queued holds the names waiting in urgent, each once, with whether
	// an operator forced it (Prioritize) rather than a handshake asking
	// for it (Expedite). Guarded by mu.
	queued   map[string]bool
	rnd      *rand.Rand  // guarded by mu
	finished completions // guarded by mu
	spread   []float64   // guarded by mu: the current weights of SelectSpread, by CA
	// refused maps a name to the serial of its certificate whose
	// replacement order the CA refused, so that the next order for the
	// name goes without "replaces". Guarded by mu.
	refused map[string]string
	// rest is set while the store's database is unavailable. Guarded
	// by mu.
	rest storeRest
	// claimed holds the names of leases claimDue took that no worker
	// has yet, in due order (each in inflight with its lease); only
	// Run's goroutine uses it.
	claimed []string
	// running is set while Run runs: a second Run would dispatch the same
	// names twice, and save stale buckets over the first one's.
	running atomic.Bool
}

// New returns a Renewer that keeps its state in st and orders certificates
// from cfg.CAs.
func New(cfg Config, st store.Store, logger *slog.Logger) (*Renewer, error) {
	switch {
	case st == nil:
		return nil, errors.New("new renewer: nil store")
	case len(cfg.CAs) == 0:
		return nil, errors.New("new renewer: no CA to order from")
	case logger == nil:
		return nil, errors.New("new renewer: nil logger")
	}
	cas, err := newCAStates(cfg.CAs)
	if err != nil {
		return nil, fmt.Errorf("new renewer: %w", err)
	}
	switch cfg.Selection {
	case "":
		cfg.Selection = SelectFailover
	case SelectFailover, SelectSpread:
	default:
		return nil, fmt.Errorf("new renewer: unknown selection %q (want %q or %q)", cfg.Selection, SelectFailover, SelectSpread)
	}
	if cfg.ARIPollInterval <= 0 {
		cfg.ARIPollInterval = 12 * time.Hour
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.OrderTimeout <= 0 {
		cfg.OrderTimeout = 5 * time.Minute
	}
	if cfg.IdleWait <= 0 {
		cfg.IdleWait = time.Minute
	}
	if cfg.UrgentQueue <= 0 {
		cfg.UrgentQueue = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GiveUpAfter == 0 {
		cfg.GiveUpAfter = 30 * 24 * time.Hour
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64()
	}
	if cfg.Leases != nil && cfg.Host == "" {
		return nil, errors.New("new renewer: leases without a host name")
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	return &Renewer{
		cfg:      cfg,
		store:    st,
		cas:      cas,
		sleep:    sleep,
		log:      logger.With("subsystem", "renewer"),
		wake:     make(chan struct{}, 1),
		urgent:   make(chan string, cfg.UrgentQueue),
		inflight: map[string]*flight{},
		queued:   map[string]bool{},
		rnd:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		spread:   make([]float64, len(cas)),
		refused:  map[string]string{},
	}, nil
}

// Wake makes the dispatcher read the due index now, for example after names
// were added. It never blocks.
func (r *Renewer) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Prioritize is an operator's "renew now": name is worked on as soon as a
// worker is free and ordered even when its certificate is not due (only
// the rate limits can hold it back), and a name given up is tried again.
// A name already waiting is not queued twice; a name a worker has now is
// queued again when the worker is done, unless the worker obtained a
// certificate for it meanwhile. It never blocks; when the queue is full
// the request is dropped (the name keeps its place in the index) and
// false is returned.
func (r *Renewer) Prioritize(name string) bool {
	return r.enqueue(name, true)
}

// Expedite is a request that name be issued (a handshake asked for it on
// demand): the name is looked at as soon as a worker is free, ahead of the
// due index, and then treated exactly as if the index had handed it over.
// It is ordered only when its record says it is due, so a name with a
// certificate that is not due, a name whose order is held back by a rate
// limit and a failing name in its backoff are left as they are. However
// often it is asked, a name waiting or being worked on is queued once.
// It never blocks, and returns false when the queue is full.
func (r *Renewer) Expedite(name string) bool {
	return r.enqueue(name, false)
}

// flight is what the renewer keeps about a name a worker has.
type flight struct {
	again  bool // an operator forced the name meanwhile: queue it once more
	issued bool // the worker stored a new certificate for it
	// With Config.Leases: the lease the name is worked on under (a zero
	// Token until it is claimed), the cancellation of the worker's
	// context, and whether the lease was lost.
	lease  store.Lease
	cancel context.CancelFunc
	lost   bool
}

// enqueue puts name in the urgent queue unless it is there already or a
// worker has it; forced says it comes from Prioritize.
func (r *Renewer) enqueue(name string, forced bool) bool {
	r.mu.Lock()
	if f, ok := r.inflight[name]; ok {
		// The worker re-reads the record; only an operator's request
		// needs another look after it.
		f.again = f.again || forced
		r.mu.Unlock()
		return true
	}
	if was, ok := r.queued[name]; ok {
		r.queued[name] = was || forced
		r.mu.Unlock()
		return true
	}
	select {
	case r.urgent <- name:
		r.queued[name] = forced
	default:
		r.mu.Unlock()
		r.log.Warn("urgent queue full, name left to the due index", "name", name)
		return false
	}
	r.mu.Unlock()
	r.Wake()
	return true
}

// Run dispatches due work until ctx is done, then waits for the orders under
// way to stop, saves what the Limiters spent, and returns ctx's error. It
// restores the Limiters' saved buckets first. One Run at a time: a second
// call while one runs returns an error at once.
func (r *Renewer) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("renewer: Run called while it runs")
	}
	defer r.running.Store(false)
	r.restoreLimits(ctx)
	saverCtx, stopSaver := context.WithCancel(context.WithoutCancel(ctx))
	saved := make(chan struct{})
	go func() {
		defer close(saved)
		r.saveLimitsEvery(saverCtx, limitSaveEvery)
	}()
	// After the workers are done (the deferred wg.Wait below runs first),
	// the saver writes what they spent last and stops.
	defer func() {
		stopSaver()
		<-saved
	}()
	r.mu.Lock()
	r.finished.since = r.cfg.Now()
	r.mu.Unlock()
	slots := make(chan struct{}, r.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	if r.cfg.Leases != nil {
		r.log.Info("sharing the fleet's due names with its other renewing hosts: working on a name only under a lease",
			"host", r.cfg.Host, "lease_ttl", r.cfg.LeaseTTL)
		// The keeper stops with ctx, as the orders under way do; the
		// leases claimed but not handed out are released.
		keepCtx, stopKeeper := context.WithCancel(ctx)
		kept := make(chan struct{})
		go func() {
			defer close(kept)
			r.keepLeases(keepCtx)
		}()
		defer func() {
			stopKeeper()
			<-kept
		}()
		defer r.releaseClaimed(ctx)
	}
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		name, forced, err := r.next(ctx)
		if err != nil {
			<-slots
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer r.release(name)
			wctx, done, ok := r.leased(ctx, name, forced)
			if !ok {
				return
			}
			defer done()
			r.process(wctx, name, forced)
			if ctx.Err() == nil {
				r.mu.Lock()
				r.finished.add(r.cfg.Now())
				r.mu.Unlock()
			}
		}()
	}
}

// next blocks until a name is ready to be worked on and marks it in flight.
// Urgent names come first, then the due index, earliest first. forced
// says an operator asked for the name (Prioritize).
func (r *Renewer) next(ctx context.Context) (name string, forced bool, err error) {
	for {
		if !r.storeResting().IsZero() {
			if err := r.waitForStore(ctx); err != nil {
				return "", false, err
			}
		}
		if n, ok := r.nextClaimed(); ok {
			return n, false, nil
		}
		select {
		case n := <-r.urgent:
			if forced, ok := r.claimQueued(n); ok {
				return n, forced, nil
			}
			continue
		default:
		}
		n, wait, err := r.nextDue(ctx)
		if err != nil {
			if r.storeFailed(err) {
				continue // rest until the store answers
			}
			r.log.Error("read due index", "error", err)
			wait = time.Second
		} else if n != "" {
			return n, false, nil
		}
		timer := time.NewTimer(wait)
		select {
		case n := <-r.urgent:
			timer.Stop()
			if forced, ok := r.claimQueued(n); ok {
				return n, forced, nil
			}
		case <-r.wake:
			timer.Stop()
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return "", false, ctx.Err()
		}
	}
}

// dueBatch is how many entries of the due index the dispatcher reads at
// once, and dueBatchAge how long (wall clock) it hands them out before it
// reads the index again. Every read starts at the beginning of the index
// and steps over the entries moved away since the store last compacted
// (one for every name worked on lately: a mass renewal moves thousands
// from the front), so the cost is shared by a batch of names; the age
// bounds how long a name that came due meanwhile, ahead of the batch,
// waits behind it.
const (
	dueBatch    = 128
	dueBatchAge = time.Second
)

// nextDue returns the earliest due name not already in flight, or "" and
// how long to wait until the next entry is due. It hands out the entries
// of the batch it read last, in order, each once, until the batch is used
// up or older than dueBatchAge. A name rescheduled meanwhile is skipped
// by the worker, which reads its record again.
//
// A name keeps its due time while a worker has it, so the names in flight
// are among the first busy+1 entries and reading that many always finds a
// free one if there is one. It also means that an order cut off by a crash
// leaves its name due, and the next start picks it up again.
func (r *Renewer) nextDue(ctx context.Context) (string, time.Duration, error) {
	if r.cfg.Leases != nil {
		return r.claimDue(ctx)
	}
	if time.Since(r.batchAt) > dueBatchAge {
		r.batch = nil
	}
	for len(r.batch) > 0 {
		e := r.batch[0]
		r.batch = r.batch[1:]
		if r.claim(e.Name) {
			return e.Name, 0, nil
		}
	}
	now := r.cfg.Now()
	r.mu.Lock()
	busy := len(r.inflight)
	r.mu.Unlock()
	due, err := r.store.Due(ctx, now, busy+dueBatch)
	if err != nil {
		return "", 0, err
	}
	r.batchAt = time.Now()
	for i, e := range due {
		if r.claim(e.Name) {
			r.batch = due[i+1:]
			return e.Name, 0, nil
		}
	}
	wait := r.cfg.IdleWait
	if len(due) == 0 {
		later, err := r.store.Due(ctx, now.Add(wait), 1)
		if err != nil {
			return "", 0, err
		}
		if len(later) == 1 {
			wait = max(later[0].At.Sub(now), 10*time.Millisecond)
		}
	} else {
		// Everything due is in flight: look again when a worker finishes.
		wait = r.cfg.IdleWait
	}
	return "", wait, nil
}

// InFlight returns how many names the workers have now.
func (r *Renewer) InFlight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.inflight)
}

// Throughput returns the names the workers finished per second over the
// last throughputWindow (less when Run started more recently), whatever
// the outcome: an estimate of how fast the due backlog drains. It is 0
// before Run and until a name is finished.
func (r *Renewer) Throughput() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.finished.rate(r.cfg.Now())
}

// throughputWindow is how far back Throughput looks, in whole minutes.
const throughputWindow = 15 * time.Minute

// completions counts finished names per minute over throughputWindow: a
// ring of per-minute counters indexed by the Unix minute.
type completions struct {
	minute [throughputWindow / time.Minute]int64 // the Unix minute each slot counts
	count  [throughputWindow / time.Minute]int
	since  time.Time // when Run started; zero before
}

func (c *completions) add(now time.Time) {
	m := now.Unix() / 60
	i := m % int64(len(c.minute))
	if c.minute[i] != m {
		c.minute[i], c.count[i] = m, 0
	}
	c.count[i]++
}

func (c *completions) rate(now time.Time) float64 {
	if c.since.IsZero() {
		return 0
	}
	m, slots := now.Unix()/60, int64(len(c.minute))
	n := 0
	for i, sm := range c.minute {
		if sm > m-slots && sm <= m {
			n += c.count[i]
		}
	}
	// The window starts at the oldest minute a slot can count.
	start := time.Unix((m-slots+1)*60, 0)
	if c.since.After(start) {
		start = c.since
	}
	return float64(n) / max(now.Sub(start).Seconds(), 1)
}

// claim marks name in flight unless a worker has it already.
func (r *Renewer) claim(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[name] != nil {
		return false
	}
	r.inflight[name] = &flight{}
	return true
}

// claimQueued takes name, just read from the urgent queue, off the queue
// and claims it. A name a worker took from the due index meanwhile is not
// claimed; an operator's request for it is kept for when the worker is
// done.
func (r *Renewer) claimQueued(name string) (forced, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	forced = r.queued[name]
	delete(r.queued, name)
	if f := r.inflight[name]; f != nil {
		f.again = f.again || forced
		return false, false
	}
	r.inflight[name] = &flight{}
	return forced, true
}

// issued notes that a certificate was stored for name, which a worker has.
func (r *Renewer) issued(name string) {
	r.mu.Lock()
	if f := r.inflight[name]; f != nil {
		f.issued = true
	}
	r.mu.Unlock()
}

// release ends a worker's hold on name. An operator's request that came
// meanwhile queues it again, unless the worker stored a new certificate,
// which is what the operator asked for.
func (r *Renewer) release(name string) {
	r.mu.Lock()
	f := r.inflight[name]
	delete(r.inflight, name)
	r.mu.Unlock()
	if f != nil && f.again && !f.issued {
		r.enqueue(name, true)
	}
	r.Wake()
}

func (r *Renewer) jitterRand(f func(*rand.Rand) time.Duration) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r.rnd)
}

func (r *Renewer) timeRand(f func(*rand.Rand) time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f(r.rnd)
}

// sleep waits for d, or until ctx is done and returns its error.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
