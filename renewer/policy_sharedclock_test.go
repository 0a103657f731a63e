package renewer

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/storetest"
)

// clockVerdicts is a store.Verdicts in memory whose clock (now) need not
// agree with its hosts'.
type clockVerdicts struct {
	mu     sync.Mutex
	now    func() time.Time
	rows   map[string]store.Verdict
	claims int
	gets   int
	puts   []store.Verdict
	// onRead, when set, runs before each ClaimVerdict and GetVerdict
	// (the lock held, the call counted).
	onRead func(f *clockVerdicts)
}

func (f *clockVerdicts) ClaimVerdict(_ context.Context, name, host string, ttl time.Duration) (store.Verdict, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims++
	if f.onRead != nil {
		f.onRead(f)
	}
	now := f.now()
	if v, ok := f.rows[name]; ok && v.Expires.After(now) {
		v.Left = v.Expires.Sub(now)
		return v, false, nil
	}
	v := store.Verdict{Name: name, State: store.VerdictChecking, Host: host, Expires: now.Add(ttl), Left: ttl}
	f.rows[name] = v
	return v, true, nil
}

func (f *clockVerdicts) GetVerdict(_ context.Context, name string) (store.Verdict, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	if f.onRead != nil {
		f.onRead(f)
	}
	now := f.now()
	v, ok := f.rows[name]
	if !ok || !v.Expires.After(now) {
		return store.Verdict{}, false, nil
	}
	v.Left = v.Expires.Sub(now)
	return v, true, nil
}

func (f *clockVerdicts) PutVerdict(_ context.Context, v store.Verdict, ttl time.Duration) (store.Verdict, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v.Expires, v.Left = f.now().Add(ttl), ttl
	f.rows[v.Name] = v
	f.puts = append(f.puts, v)
	return v, nil
}

// TestPolicySharedVerdictByTheStoreClock: a host remembers the fleet's
// verdict for as long as the store says it has left, not until its
// Expires read on the host's own clock, which here runs an hour ahead of
// the store's (so it would forget the verdict at once and claim again on
// every request).
func TestPolicySharedVerdictByTheStoreClock(t *testing.T) {
	ask := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(ask.Close)
	dbClock, hostClock := storetest.NewClock(), storetest.NewClock()
	hostClock.Advance(time.Hour)
	db := &clockVerdicts{now: dbClock.Now, rows: map[string]store.Verdict{}}
	const name = "yes.example.test"
	db.rows[name] = store.Verdict{Name: name, State: store.VerdictAllowed, Host: "h2", Expires: dbClock.Now().Add(time.Minute)}
	p, err := NewPolicy(PolicyConfig{AskURL: ask.URL, Shared: db, Host: "h1", Now: hostClock.Now}, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if d := p.Check(t.Context(), name); !d.Allow {
			t.Fatalf("Check = %+v, want the fleet's verdict", d)
		}
	}
	if db.claims != 1 {
		t.Errorf("%d claims for three requests within the verdict's minute, want 1", db.claims)
	}
	hostClock.Advance(time.Minute)
	dbClock.Advance(time.Minute)
	p.Check(t.Context(), name)
	if db.claims != 2 {
		t.Errorf("%d claims after the verdict lapsed, want 2", db.claims)
	}
}

// TestPolicySharedCheckEndsWithinItsClaim: a check whose DNS lookup
// hangs (a server that never answers, with a resolver that would wait a
// minute) is cut off before the host's claim of it lapses, so no other
// host checks the name at the same time.
func TestPolicySharedCheckEndsWithinItsClaim(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	res, err := NewResolver([]string{pc.LocalAddr().String()}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	db := &clockVerdicts{now: time.Now, rows: map[string]store.Verdict{}}
	p, err := NewPolicy(PolicyConfig{Targets: []string{"192.0.2.1"}, AskTimeout: 10 * time.Millisecond, Shared: db, Host: "h1"}, res, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	p.claimMargin = 200 * time.Millisecond // a claim of 210ms; the check is cut off after 110ms
	done := make(chan Decision, 1)
	go func() { done <- p.Check(t.Context(), "hang.example.test") }()
	select {
	case d := <-done:
		if d.Allow || d.Undecided {
			t.Errorf("Check = %+v, want refused", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the check outlived its claim (210ms) by 30s")
	}
	if p.checkBound() >= p.claimTTL() {
		t.Errorf("check bound %s, claim %s: the check may outlive its claim", p.checkBound(), p.claimTTL())
	}
}

// TestPolicySharedTransientRefusal: a refusal that is one host's failure
// to check the name (its ask URL down) is shared with the fleet, and
// remembered, for transientTTL only; a definite refusal for DenyTTL.
func TestPolicySharedTransientRefusal(t *testing.T) {
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Query().Get("domain"), "down.") {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		http.Error(w, "no", http.StatusForbidden)
	}))
	t.Cleanup(ask.Close)
	clock := storetest.NewClock()
	db := &clockVerdicts{now: clock.Now, rows: map[string]store.Verdict{}}
	p, err := NewPolicy(PolicyConfig{AskURL: ask.URL, Shared: db, Host: "h1", DenyTTL: time.Hour, Now: clock.Now}, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ttl  time.Duration
	}{{"down.example.test", transientTTL}, {"no.example.test", time.Hour}} {
		d := p.Check(t.Context(), c.name)
		if d.Allow || d.Undecided {
			t.Fatalf("Check(%s) = %+v, want refused", c.name, d)
		}
		put := db.puts[len(db.puts)-1]
		if put.Name != c.name || put.Left != c.ttl {
			t.Errorf("shared %+v, want %s refused for %s", put, c.name, c.ttl)
		}
	}
	// Past transientTTL this host checks the name it failed to check again,
	// not the one refused.
	clock.Advance(transientTTL)
	claims := db.claims
	p.Check(t.Context(), "down.example.test")
	p.Check(t.Context(), "no.example.test")
	if db.claims != claims+1 {
		t.Errorf("%d claims past transientTTL, want 1 (the name that failed)", db.claims-claims)
	}
}

// TestPolicySharedWaitReads: a host waiting for another host's check
// reads the verdict (GetVerdict) and claims the check (a write) only
// once the other host's claim lapsed.
func TestPolicySharedWaitReads(t *testing.T) {
	ask := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(ask.Close)
	clock := storetest.NewClock()
	db := &clockVerdicts{now: clock.Now, rows: map[string]store.Verdict{}}
	p, err := NewPolicy(PolicyConfig{AskURL: ask.URL, Shared: db, Host: "h1", SharedWait: time.Hour, Now: clock.Now}, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	// h2 checks a.example.test and records its verdict before the fourth
	// call.
	const a = "a.example.test"
	db.rows[a] = store.Verdict{Name: a, State: store.VerdictChecking, Host: "h2", Expires: clock.Now().Add(time.Minute)}
	db.onRead = func(f *clockVerdicts) {
		if f.claims+f.gets == 4 {
			f.rows[a] = store.Verdict{Name: a, State: store.VerdictRefused, Reason: "no", Host: "h2", Expires: clock.Now().Add(time.Minute)}
		}
	}
	if d := p.Check(t.Context(), a); d.Allow || d.Reason != "no" {
		t.Errorf("Check(%s) = %+v, want h2's refusal", a, d)
	}
	if db.claims != 1 || db.gets != 3 {
		t.Errorf("%d claims and %d reads while h2 checked, want 1 claim, then 3 reads", db.claims, db.gets)
	}
	// h2 dies checking b.example.test: its claim lapses, and h1 claims.
	const b = "b.example.test"
	db.rows[b] = store.Verdict{Name: b, State: store.VerdictChecking, Host: "h2", Expires: clock.Now().Add(time.Minute)}
	db.claims, db.gets = 0, 0
	db.onRead = func(f *clockVerdicts) {
		if f.claims+f.gets == 3 {
			clock.Advance(time.Minute)
		}
	}
	if d := p.Check(t.Context(), b); !d.Allow {
		t.Errorf("Check(%s) = %+v, want h1's own check", b, d)
	}
	if db.claims != 2 || db.gets != 2 {
		t.Errorf("%d claims and %d reads with h2's claim lapsing, want 2 claims (before and after), 2 reads", db.claims, db.gets)
	}
}
