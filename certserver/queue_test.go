package certserver

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

// fixedQueue is a renewer that always reports the same work.
type fixedQueue struct {
	inFlight   int
	throughput float64
}

func (q fixedQueue) InFlight() int       { return q.inFlight }
func (q fixedQueue) Throughput() float64 { return q.throughput }

// addAt adds names due at the given time, in the given state.
func addAt(t *testing.T, st store.Store, at time.Time, state store.State, failures int, names ...string) {
	t.Helper()
	var ds []*store.Domain
	for _, n := range names {
		ds = append(ds, &store.Domain{Name: n, State: state, Failures: failures, NextAttempt: at, AddedAt: at, UpdatedAt: at})
	}
	if _, _, err := st.AddDomains(context.Background(), ds); err != nil {
		t.Fatal(err)
	}
}

func numbered(prefix string, n int) []string {
	var s []string
	for i := range n {
		s = append(s, fmt.Sprintf("%s%d.example.com", prefix, i))
	}
	return s
}

func TestAdminQueue(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{Queue: fixedQueue{inFlight: 3, throughput: 2}, StateCountTTL: -1})
	now := env.now
	addAt(t, env.st, now.Add(-time.Hour), store.StatePending, 0, numbered("late", 4)...)
	addAt(t, env.st, now.Add(-time.Minute), store.StateFailing, 2, numbered("fail", 2)...)
	addAt(t, env.st, now.Add(30*time.Minute), store.StateValid, 0, numbered("hour", 3)...)
	addAt(t, env.st, now.Add(5*time.Hour), store.StateRenewing, 1, numbered("day", 2)...)
	addAt(t, env.st, now.Add(40*24*time.Hour), store.StateValid, 0, numbered("later", 5)...)
	addAt(t, env.st, time.Time{}, store.StateRemoved, 4, numbered("gone", 1)...)

	q, err := env.cl.Queue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !q.Now.Equal(now) || q.DueNow != (api.Count{N: 6}) || q.DueWithinHour != (api.Count{N: 9}) || q.DueWithinDay != (api.Count{N: 11}) {
		t.Errorf("due counts: now %+v, hour %+v, day %+v; want 6, 9, 11", q.DueNow, q.DueWithinHour, q.DueWithinDay)
	}
	if !q.Issuance || q.InFlight != 3 || q.Throughput != 2 || !q.BacklogDoneAt.Equal(now.Add(3*time.Second)) {
		t.Errorf("renewer: issuance %v, in flight %d, throughput %v, backlog done at %s", q.Issuance, q.InFlight, q.Throughput, q.BacklogDoneAt)
	}
	want := map[string]int{"pending": 4, "issuing": 0, "valid": 8, "renewing": 2, "failing": 2, "given_up": 0, "removed": 1}
	if fmt.Sprint(q.States) != fmt.Sprint(want) || q.StatesScanned != 17 || !q.StatesComplete || !q.StatesAt.Equal(now) {
		t.Errorf("states %v scanned %d complete %v at %s; want %v, 17, complete", q.States, q.StatesScanned, q.StatesComplete, q.StatesAt, want)
	}
	if q.Failing != (api.Count{N: 4}) || q.Pending != (api.Count{N: 4}) {
		t.Errorf("failing %+v pending %+v, want 4 (2 failing, 2 renewing after a failure) and 4", q.Failing, q.Pending)
	}

	// Every key is there for scripts, times in RFC 3339.
	_, raw, body := call(t, "GET", env.base+"/v1/queue", "Bearer "+testToken, "", "")
	for _, k := range []string{"now", "due_now", "due_within_hour", "due_within_day", "issuance", "in_flight", "throughput_per_second",
		"backlog_done_at", "states", "states_scanned", "states_complete", "states_at", "failing", "pending"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("key %q missing: %s", k, body)
		}
	}

	for _, tc := range []struct {
		method, path string
		status       int
		want         string
	}{
		{"GET", "/v1/queue?verbose=1", 400, "takes no query parameters"},
		{"POST", "/v1/queue", 405, "allowed: GET"},
		{"GET", "/v1/queue/x", 404, "no such endpoint"},
	} {
		resp, doc, raw := call(t, tc.method, env.base+tc.path, "Bearer "+testToken, "", "")
		if msg, _ := doc["error"].(string); resp.StatusCode != tc.status || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s: %d %s, want %d naming %q", tc.method, tc.path, resp.StatusCode, raw, tc.status, tc.want)
		}
	}
}

func TestAdminQueueWithoutRenewer(t *testing.T) {
	st := newTestStore(t)
	base := startAdmin(t, AdminConfig{Token: testToken}, st)
	cl, _ := client.New(base, testToken, nil)
	addAt(t, st, time.Now().Add(-time.Hour), store.StatePending, 0, numbered("wait", 3)...)
	q, err := cl.Queue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if q.Issuance || q.InFlight != 0 || q.Throughput != 0 || !q.BacklogDoneAt.IsZero() || q.DueNow.N != 3 || q.Pending.N != 3 {
		t.Errorf("%+v", q)
	}
	// The count by state is reused for StateCountTTL (default 10s).
	addAt(t, st, time.Now(), store.StatePending, 0, numbered("more", 2)...)
	q, err = cl.Queue(context.Background())
	if err != nil || q.Pending.N != 3 || q.DueNow.N != 5 {
		t.Errorf("second look: pending %+v (want the cached 3), due now %+v (want 5), %v", q.Pending, q.DueNow, err)
	}
}

// A count by state that runs out of time says it is a lower bound.
func TestStateCounterBudget(t *testing.T) {
	st := newTestStore(t)
	addAt(t, st, time.Now(), store.StatePending, 0, numbered("p", 25)...)
	sc := stateCounter{budget: -1, batch: 10}
	c, err := sc.get(context.Background(), st, time.Now(), -1)
	if err != nil {
		t.Fatal(err)
	}
	if c.complete || c.scanned != 10 || c.states[store.StatePending] != 10 {
		t.Errorf("complete %v scanned %d pending %d; want incomplete after one batch of 10", c.complete, c.scanned, c.states[store.StatePending])
	}
	sc = stateCounter{budget: time.Minute, batch: 10}
	if c, err = sc.get(context.Background(), st, time.Now(), -1); err != nil || !c.complete || c.scanned != 25 {
		t.Errorf("complete %v scanned %d, %v; want all 25", c.complete, c.scanned, err)
	}
}

func TestCountDue(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	due := []store.DueEntry{{Name: "a", At: t0}, {Name: "b", At: t0.Add(time.Minute)}, {Name: "c", At: t0.Add(time.Hour)}}
	tests := []struct {
		desc   string
		at     time.Time
		capped bool
		want   api.Count
	}{
		{desc: "before all", at: t0.Add(-time.Second), want: api.Count{N: 0}},
		{desc: "at the first", at: t0, want: api.Count{N: 1}},
		{desc: "some", at: t0.Add(30 * time.Minute), capped: true, want: api.Count{N: 2}},
		{desc: "all", at: t0.Add(2 * time.Hour), want: api.Count{N: 3}},
		{desc: "all of a capped read", at: t0.Add(2 * time.Hour), capped: true, want: api.Count{N: 3, AtLeast: true}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := countDue(due, tc.at, tc.capped); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// plannedQueue is a QueueStats that also plans, as the renewer does.
type plannedQueue struct {
	fixedQueue
	asked *int
}

func (q plannedQueue) Plan(pending int) api.Plan {
	*q.asked = pending
	return api.Plan{Pending: pending, Limited: true, DoneInSeconds: 208 * 86400, OrdersPerSecond: 1.0 / 36,
		CAs: []api.PlanCA{{Name: "letsencrypt", Room: 300, OrdersPerSecond: 1.0 / 36, Orders: pending}}}
}

// TestAdminQueuePlan: GET /v1/queue carries the renewer's plan for the
// pending names it counted, and leaves it out when the renewer cannot plan.
func TestAdminQueuePlan(t *testing.T) {
	asked := -1
	env := newDomainsEnv(t, AdminConfig{Queue: plannedQueue{fixedQueue{inFlight: 1, throughput: 1}, &asked}, StateCountTTL: -1})
	env.post(t, "text/plain", "a.example.com\nb.example.com\nc.example.com\n")
	q, err := env.cl.Queue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if asked != 3 || q.Plan == nil || q.Plan.Pending != 3 || q.Plan.DoneInSeconds != 208*86400 || len(q.Plan.CAs) != 1 || q.Plan.CAs[0].Orders != 3 {
		t.Fatalf("plan %+v (asked for %d pending), want the renewer's plan for the 3 pending names", q.Plan, asked)
	}

	plain := newDomainsEnv(t, AdminConfig{Queue: fixedQueue{}, StateCountTTL: -1})
	if q, err := plain.cl.Queue(context.Background()); err != nil || q.Plan != nil {
		t.Fatalf("plan %+v, %v; want none from a QueueStats that cannot plan", q.Plan, err)
	}
}

// TestAdminQueueFromInventory: in a store of 50,000 names or more the
// count by state comes from the metrics inventory while it is fresh (every
// record counted, no scan per request), and from a scan of its own once
// the inventory is stale.
func TestAdminQueueFromInventory(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	st := newTestStore(t)
	m := newTestMetrics(t, st, clock)
	// The stale-inventory count below must scan every record, however
	// loaded the machine: a budget no run reaches.
	base := startAdmin(t, AdminConfig{Token: testToken, Metrics: m, Queue: fixedQueue{}, StateCountTTL: -1, StateScanBudget: 10 * time.Minute, Now: clock}, st)
	cl, _ := client.New(base, testToken, nil)

	addAt(t, st, now, store.StatePending, 0, numbered("p", inventoryStatesMin)...)
	addAt(t, st, now, store.StateRenewing, 1, numbered("r", 3)...)
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	invAt := now
	addAt(t, st, now, store.StatePending, 0, numbered("late", 10)...) // after the inventory
	now = now.Add(30 * time.Second)

	q, err := cl.Queue(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if q.Pending != (api.Count{N: inventoryStatesMin}) || q.States["renewing"] != 3 || q.Failing != (api.Count{N: 3}) ||
		!q.StatesComplete || q.StatesScanned != inventoryStatesMin+3 || !q.StatesAt.Equal(invAt) {
		t.Errorf("from the inventory: pending %+v, renewing %d, failing %+v, complete %v, scanned %d, at %s; want %d, 3, 3, complete, %d, %s",
			q.Pending, q.States["renewing"], q.Failing, q.StatesComplete, q.StatesScanned, q.StatesAt, inventoryStatesMin, inventoryStatesMin+3, invAt)
	}

	// Three missed refreshes later the inventory is stale: a scan counts.
	inv := m.Inventory()
	now = invAt.Add(3*max(DefaultRefreshInterval, refreshCostFactor*inv.Took) + time.Minute)
	if q, err = cl.Queue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if q.Pending.N != inventoryStatesMin+10 || !q.StatesAt.Equal(now) {
		t.Errorf("with a stale inventory: pending %+v at %s, want %d counted now", q.Pending, q.StatesAt, inventoryStatesMin+10)
	}
}
