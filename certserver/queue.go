package certserver

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// QueueStats is what GET /v1/queue asks of the renewer. renewer.Renewer
// implements it. Both methods must return at once and be safe for
// concurrent use.
type QueueStats interface {
	// InFlight returns how many names the workers have now.
	InFlight() int
	// Throughput returns how many names the workers finished per second
	// recently, whatever the outcome; 0 when none.
	Throughput() float64
}

// Planner is implemented by a QueueStats that can tell how long pending
// names take at the CAs' rate limits (GET /v1/queue's plan).
type Planner interface {
	// Plan returns the plan for pending names waiting for their first
	// certificate.
	Plan(pending int) api.Plan
}

// CAReporter is implemented by a QueueStats that can tell the state of
// the CAs it orders from (GET /v1/queue's cas).
type CAReporter interface {
	// CAs returns the CAs in the configured order.
	CAs() []api.CAStatus
}

// Defaults of the state count of GET /v1/queue.
const (
	// DefaultStateCountTTL is how long a count of names by state is
	// reused.
	DefaultStateCountTTL = 10 * time.Second
	// stateScanBudget bounds the time one count of names by state scans.
	stateScanBudget = 3 * time.Second
	// stateScanBatch is how many records the count reads at once.
	stateScanBatch = 2000
	// inventoryStatesMin is the number of names from which the count
	// comes from the metrics inventory, when it is fresh, instead of a
	// scan of its own: at that size a scan costs a noticeable part of the
	// budget on every request, and at a million names it runs out of it
	// and can only give a lower bound, while the inventory has counted
	// every record, at most a few minutes ago.
	inventoryStatesMin = 50_000
)

// stateCount is a count of the managed names by state.
type stateCount struct {
	at       time.Time // when the scan started, by the API's clock
	taken    time.Time // when the scan ended, by the wall clock
	states   map[store.State]int
	failing  int  // names in a run of failures (isFailing)
	scanned  int  // records read
	complete bool // every record was read
}

// stateCounter counts names by state for GET /v1/queue and keeps the
// count for a while. There is no index by state: a count scans the domain
// records, for at most stateScanBudget; the count of a store too large
// for that is a lower bound, and says so.
type stateCounter struct {
	// budget and batch are stateScanBudget and stateScanBatch unless a
	// test sets them.
	budget time.Duration
	batch  int
	// mu is held while counting: concurrent requests wait for one scan
	// instead of running their own.
	mu   sync.Mutex
	last *stateCount // nil before the first count
}

// get returns a count made at most ttl ago, counting again when there is
// none (ttl < 0: always).
func (sc *stateCounter) get(ctx context.Context, st store.Store, now time.Time, ttl time.Duration) (*stateCount, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.last != nil && ttl >= 0 && time.Since(sc.last.taken) <= ttl {
		return sc.last, nil
	}
	budget, batch := stateScanBudget, stateScanBatch
	if sc.batch > 0 {
		budget, batch = sc.budget, sc.batch
	}
	c := &stateCount{at: now, states: map[store.State]int{}}
	start := time.Now()
	after := ""
	for {
		ds, err := st.ListDomains(ctx, after, batch)
		if err != nil {
			return nil, fmt.Errorf("count domains by state: %w", err)
		}
		for _, d := range ds {
			c.states[d.State]++
			if isFailing(d) {
				c.failing++
			}
			after = d.Name
		}
		c.scanned += len(ds)
		if len(ds) < batch {
			c.complete = true
			break
		}
		if time.Since(start) > budget {
			break
		}
	}
	c.taken = time.Now()
	sc.last = c
	return c, nil
}

// countStates counts the names by state for GET /v1/queue: from the
// metrics inventory when it is fresh and the store holds at least
// inventoryStatesMin names, else from a bounded scan of its own, reused
// for StateCountTTL.
func (a *AdminAPI) countStates(ctx context.Context, now time.Time) (*stateCount, error) {
	if m := a.cfg.Metrics; m != nil {
		if inv := m.Inventory(); inv != nil && inv.Domains >= inventoryStatesMin && m.fresh(inv, now) {
			c := &stateCount{at: inv.At, states: inv.States, failing: inv.InFailure, scanned: inv.Domains, complete: true}
			return c, nil
		}
	}
	return a.states.get(ctx, a.store, now, a.cfg.StateCountTTL)
}

// showQueue answers GET /v1/queue: the counts of due names from the due
// index (capped at api.MaxDueCount), the renewer's work, and the names by
// state from a bounded, cached scan.
func (a *AdminAPI) showQueue(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	if len(rc.QueryArgs().QueryString()) > 0 {
		return errorf(fasthttp.StatusBadRequest, "GET /v1/queue takes no query parameters")
	}
	q, err := a.queue(ctx)
	if err != nil {
		return err
	}
	writeJSON(rc, fasthttp.StatusOK, q)
	return nil
}

// queue gathers the answer of GET /v1/queue.
func (a *AdminAPI) queue(ctx context.Context) (*api.Queue, error) {
	now := a.cfg.Now()
	q := &api.Queue{Now: now}

	// One read of the due index for the day answers all three counts: it
	// is in time order, so the first entries are the ones due now.
	due, err := a.store.Due(ctx, now.Add(24*time.Hour), api.MaxDueCount+1)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	capped := len(due) > api.MaxDueCount
	due = due[:min(len(due), api.MaxDueCount)]
	q.DueNow = countDue(due, now, capped)
	q.DueWithinHour = countDue(due, now.Add(time.Hour), capped)
	q.DueWithinDay = api.Count{N: len(due), AtLeast: capped}

	if s := a.cfg.Queue; s != nil {
		q.Issuance = true
		q.InFlight = s.InFlight()
		q.Throughput = s.Throughput()
		if q.DueNow.N > 0 && q.Throughput > 0 {
			secs := float64(q.DueNow.N) / q.Throughput
			q.BacklogDoneAt = now.Add(time.Duration(math.Min(secs, 100*365*24*3600) * float64(time.Second)))
		}
	}

	c, err := a.countStates(ctx, now)
	if err != nil {
		return nil, err
	}
	q.States = make(map[string]int, len(store.States))
	for _, st := range store.States {
		q.States[string(st)] = c.states[st]
	}
	q.StatesScanned, q.StatesComplete, q.StatesAt = c.scanned, c.complete, c.at
	q.Failing = api.Count{N: c.failing, AtLeast: !c.complete}
	q.Pending = api.Count{N: c.states[store.StatePending], AtLeast: !c.complete}
	if p, ok := a.cfg.Queue.(Planner); ok {
		plan := p.Plan(q.Pending.N)
		q.Plan = &plan
	}
	if c, ok := a.cfg.Queue.(CAReporter); ok {
		q.CAs = c.CAs()
	}
	return q, nil
}

// countDue counts the entries of due, in time order, at or before t. When
// due was cut at the cap and every entry is that early, the count is a
// lower bound.
func countDue(due []store.DueEntry, t time.Time, capped bool) api.Count {
	n := sort.Search(len(due), func(i int) bool { return due[i].At.After(t) })
	return api.Count{N: n, AtLeast: capped && n == len(due)}
}
