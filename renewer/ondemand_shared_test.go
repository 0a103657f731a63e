package renewer

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// startOnDemand runs an OnDemand for policy over st (with a renewer that
// is not run: Expedite only queues) until the test ends.
func startOnDemand(t *testing.T, policy *Policy, st store.Store, logger *slog.Logger) *OnDemand {
	t.Helper()
	rn, err := New(Config{CAs: []CA{{Name: "test", Issuer: &scriptedIssuer{}}}}, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	od, err := NewOnDemand(OnDemandConfig{}, policy, st, rn, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { od.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return od
}

// idle reports whether o has no request waiting or being checked.
func (o *OnDemand) idle() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending) == 0 && len(o.queue) == 0
}

// TestOnDemandAcrossHosts: two hosts' OnDemands on one PostgreSQL, each
// asked for one allowed name many times, and for refused names: the
// allowed name is asked about once and added once; each refused name is
// asked about once and added nowhere.
func TestOnDemandAcrossHosts(t *testing.T) {
	var (
		mu    sync.Mutex
		asked = map[string]int{}
	)
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Query().Get("domain")
		mu.Lock()
		asked[name]++
		mu.Unlock()
		if !strings.HasPrefix(name, "yes.") {
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	t.Cleanup(ask.Close)

	url := pgtest.Start(t).NewDatabase(t)
	var (
		hosts []*OnDemand
		db    *postgres.Store
	)
	for _, h := range []string{"h1", "h2"} {
		s, err := postgres.Open(t.Context(), postgres.Options{URL: url, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		db = s
		p, err := NewPolicy(PolicyConfig{AskURL: ask.URL, Shared: s, Host: h, SharedWait: time.Minute}, nil, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, startOnDemand(t, p, s, discardLogger()))
	}
	refused := []string{"scan-1.example.test", "scan-2.example.test", "scan-3.example.test"}
	for range 50 {
		for _, o := range hosts {
			o.Request("yes.example.test")
			for _, n := range refused {
				o.Request(n)
			}
		}
	}
	waitFor(t, time.Minute, "the requests checked", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return asked["yes.example.test"] > 0 && len(asked) == 4 && hosts[0].idle() && hosts[1].idle()
	})
	// Ask again once everything settled: the verdicts stand.
	for _, o := range hosts {
		o.Request("yes.example.test")
		o.Request(refused[0])
	}
	waitFor(t, time.Minute, "the last requests checked", func() bool { return hosts[0].idle() && hosts[1].idle() })

	mu.Lock()
	for name, n := range asked {
		if n != 1 {
			t.Errorf("%s asked about %d times, want once for the fleet", name, n)
		}
	}
	mu.Unlock()
	if d, err := db.GetDomain(t.Context(), "yes.example.test"); err != nil || d.Source != "on-demand" {
		t.Errorf("the allowed name in the database: %+v, %v", d, err)
	}
	for _, n := range refused {
		if _, err := db.GetDomain(t.Context(), n); err == nil {
			t.Errorf("refused name %s was added", n)
		}
	}
}

// TestOnDemandWaitsForTheDatabase: while the fleet's database is down an
// on-demand request is dropped unchecked (nothing could be ordered); the
// outage is logged once, however many requests come, and its end once.
func TestOnDemandWaitsForTheDatabase(t *testing.T) {
	var asked atomic.Int32
	ask := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { asked.Add(1) }))
	t.Cleanup(ask.Close)
	st := &unreachableStore{Store: openStore(t)}
	st.down.Store(true)
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	p, err := NewPolicy(PolicyConfig{AskURL: ask.URL, Shared: switchedVerdicts{&st.down}, Host: "h1"}, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	od := startOnDemand(t, p, st, logger)
	for i := range 20 {
		od.Request("n" + string(rune('a'+i)) + ".example.test")
		waitFor(t, time.Minute, "the request handled", od.idle)
	}
	if n := strings.Count(logs.String(), "on-demand requests for unknown names wait"); n != 1 {
		t.Errorf("the outage logged %d times for 20 requests, want once:\n%s", n, logs.String())
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("ask URL asked %d times while the database is down, want 0", n)
	}

	st.down.Store(false)
	for range 3 {
		od.Request("back.example.test")
		waitFor(t, time.Minute, "the request handled", od.idle)
	}
	if n := strings.Count(logs.String(), "on-demand requests are checked again"); n != 1 {
		t.Errorf("the end of the outage logged %d times, want once:\n%s", n, logs.String())
	}
}

// switchedVerdicts is a store.Verdicts that is down while *down is set,
// and otherwise lets every host claim every check.
type switchedVerdicts struct{ down *atomic.Bool }

func (v switchedVerdicts) ClaimVerdict(ctx context.Context, name, host string, ttl time.Duration) (store.Verdict, bool, error) {
	if v.down.Load() {
		return (&downVerdicts{}).ClaimVerdict(ctx, name, host, ttl)
	}
	return store.Verdict{Name: name, State: store.VerdictChecking, Host: host}, true, nil
}

func (v switchedVerdicts) GetVerdict(ctx context.Context, name string) (store.Verdict, bool, error) {
	if v.down.Load() {
		return (&downVerdicts{}).GetVerdict(ctx, name)
	}
	return store.Verdict{}, false, nil
}

func (v switchedVerdicts) PutVerdict(ctx context.Context, vd store.Verdict, ttl time.Duration) (store.Verdict, error) {
	if v.down.Load() {
		return (&downVerdicts{}).PutVerdict(ctx, vd, ttl)
	}
	return vd, nil
}
