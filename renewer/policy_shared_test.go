package renewer

import (
	"context"
	"fmt"
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

// TestPolicySharedVerdicts: two hosts' policies on one PostgreSQL and a
// counting ask URL. Many requests for one name on both hosts at once make
// one ask, and every request gets its verdict; each refused name is
// asked once for the fleet, and so is a name whose fleet verdict a host
// finds later.
func TestPolicySharedVerdicts(t *testing.T) {
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
	asks := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		return asked[name]
	}

	url := pgtest.Start(t).NewDatabase(t)
	var hosts []*Policy
	for _, h := range []string{"h1", "h2"} {
		db, err := postgres.Open(t.Context(), postgres.Options{URL: url, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		// A wait far longer than any check takes: a host that finds the
		// other checking always gets its verdict, whatever the load.
		p, err := NewPolicy(PolicyConfig{AskURL: ask.URL, Shared: db, Host: h, SharedWait: time.Minute}, nil, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, p)
	}

	// checkAll checks name n times on each host at once and returns the
	// decisions.
	checkAll := func(name string, n int) []Decision {
		var (
			wg  sync.WaitGroup
			dmu sync.Mutex
			out []Decision
		)
		for _, p := range hosts {
			for range n {
				wg.Go(func() {
					d := p.Check(t.Context(), name)
					dmu.Lock()
					out = append(out, d)
					dmu.Unlock()
				})
			}
		}
		wg.Wait()
		return out
	}

	t.Run("one allowed name, many requests on both hosts", func(t *testing.T) {
		for _, d := range checkAll("yes.example.test", 25) {
			if !d.Allow {
				t.Errorf("decision %+v, want allowed", d)
			}
		}
		if n := asks("yes.example.test"); n != 1 {
			t.Errorf("ask URL asked %d times, want once for the fleet", n)
		}
	})
	t.Run("refused names are checked once each", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Go(func() {
				name := fmt.Sprintf("scan-%d.example.test", i)
				for _, d := range checkAll(name, 2) {
					if d.Allow || !strings.Contains(d.Reason, "answered 403") {
						t.Errorf("%s: decision %+v, want refused by the ask URL", name, d)
					}
				}
			})
		}
		wg.Wait()
		for i := range 20 {
			if n := asks(fmt.Sprintf("scan-%d.example.test", i)); n != 1 {
				t.Errorf("scan-%d asked %d times, want 1", i, n)
			}
		}
	})
	t.Run("a host finds the fleet's verdict later", func(t *testing.T) {
		if d := hosts[0].Check(t.Context(), "no.example.test"); d.Allow {
			t.Fatalf("h1: %+v, want refused", d)
		}
		if d := hosts[1].Check(t.Context(), "no.example.test"); d.Allow || !strings.Contains(d.Reason, "403") {
			t.Fatalf("h2: %+v, want h1's refusal", d)
		}
		if n := asks("no.example.test"); n != 1 {
			t.Errorf("asked %d times, want 1", n)
		}
	})
}

// downVerdicts is a store.Verdicts whose database is down.
type downVerdicts struct{ claims atomic.Int32 }

func (d *downVerdicts) ClaimVerdict(context.Context, string, string, time.Duration) (store.Verdict, bool, error) {
	d.claims.Add(1)
	return store.Verdict{}, false, fmt.Errorf("claim verdict: %w", store.ErrUnavailable)
}

func (d *downVerdicts) GetVerdict(context.Context, string) (store.Verdict, bool, error) {
	return store.Verdict{}, false, fmt.Errorf("get verdict: %w", store.ErrUnavailable)
}

func (d *downVerdicts) PutVerdict(context.Context, store.Verdict, time.Duration) (store.Verdict, error) {
	return store.Verdict{}, fmt.Errorf("put verdict: %w", store.ErrUnavailable)
}

// TestPolicySharedDatabaseDown: with the fleet's database down a name is
// neither checked nor refused: it is left undecided, nothing is
// remembered, and the next request asks the database again.
func TestPolicySharedDatabaseDown(t *testing.T) {
	var asked atomic.Int32
	ask := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { asked.Add(1) }))
	t.Cleanup(ask.Close)
	db := &downVerdicts{}
	p, err := NewPolicy(PolicyConfig{AskURL: ask.URL, Shared: db, Host: "h1"}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		d := p.Check(t.Context(), "yes.example.test")
		if d.Allow || !d.Undecided || d.Err == nil {
			t.Errorf("Check = %+v, want undecided with the store's error", d)
		}
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("ask URL asked %d times while the database is down, want 0", n)
	}
	if n := db.claims.Load(); n != 2 {
		t.Errorf("%d claims for two requests, want 2 (nothing remembered)", n)
	}
	if _, err := NewPolicy(PolicyConfig{AskURL: ask.URL, Shared: db}, nil, discardLogger()); err == nil {
		t.Error("NewPolicy with Shared and no Host: no error")
	}
}
