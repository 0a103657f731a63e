package renewer

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// TestOneActiveRenewer: two renewers share one store, as the hosts of a
// fleet do; only the active one claims work. The one standing by orders
// nothing, not even a name an operator asks it for, so each due name is
// ordered exactly once. When the role moves, the other takes the work
// over, and each change is logged once.
func TestOneActiveRenewer(t *testing.T) {
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC))
	names := []string{"a.example.test", "b.example.test", "c.example.test", "d.example.test"}
	addPending(t, st, clock.Now(), names...)
	type host struct {
		r      *Renewer
		ca     *fakeCA
		logged *syncBuffer
	}
	var hosts [2]host
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	defer func() {
		cancel()
		for _, d := range done {
			<-d
		}
	}()
	for i := range hosts {
		h := &hosts[i]
		h.ca, h.logged = newFakeCA("https://ca.test/dir", clock), &syncBuffer{}
		r, err := New(Config{Workers: 2, IdleWait: time.Hour, Now: clock.Now, CAs: []CA{{Issuer: h.ca}}, StandBy: true},
			st, slog.New(slog.NewTextHandler(h.logged, nil)))
		if err != nil {
			t.Fatal(err)
		}
		h.r = r
		d := make(chan error, 1)
		done = append(done, d)
		go func() { d <- r.Run(ctx) }()
	}
	a, b := hosts[0], hosts[1]
	b.r.Prioritize("a.example.test") // standing by: kept for later
	a.r.SetActive(true)
	a.r.SetActive(true) // no change: not logged again

	valid := func(n int) func() bool {
		return func() bool {
			c := 0
			for _, name := range names {
				if d, err := st.GetDomain(context.Background(), name); err == nil && d.State == store.StateValid {
					c++
				}
			}
			return c >= n
		}
	}
	waitFor(t, 60*time.Second, "every name valid", valid(len(names)))
	if n := len(a.ca.orderList()); n != len(names) {
		t.Errorf("the active renewer sent %d orders, want %d (one per name)", n, len(names))
	}
	if n := len(b.ca.orderList()); n != 0 {
		t.Errorf("the renewer standing by sent %d orders, want none", n)
	}

	// The role moves to b: the name b was asked for waited for it, and a
	// name asked of a now waits.
	a.r.SetActive(false)
	b.r.SetActive(true)
	a.r.Prioritize("b.example.test")
	waitFor(t, 60*time.Second, "b ordering the name it was asked for", func() bool { return len(b.ca.orderList()) == 1 })
	b.r.Prioritize("c.example.test")
	waitFor(t, 60*time.Second, "b ordering a name asked of it", func() bool { return len(b.ca.orderList()) == 2 })
	if got := b.ca.orderList(); got[0].Name != "a.example.test" || got[1].Name != "c.example.test" {
		t.Errorf("b ordered %s then %s, want a.example.test then c.example.test", got[0].Name, got[1].Name)
	}
	if n := len(a.ca.orderList()); n != len(names) {
		t.Errorf("a sent %d orders after losing the role, want none", n-len(names))
	}
	for i, h := range hosts {
		if n := strings.Count(h.logged.String(), "is the fleet's renewer now"); n != 1 {
			t.Errorf("host %d logged gaining the role %d times, want once:\n%s", i, n, h.logged.String())
		}
	}
	if n := strings.Count(a.logged.String(), "no longer the fleet's renewer"); n != 1 {
		t.Errorf("a logged losing the role %d times, want once:\n%s", n, a.logged.String())
	}
}

// TestActiveRenewerTakesOverLimits: the renewer that gains the role goes
// on from the rate-limit buckets the previous holder spent and saved, not
// from the full ones it restored when it started.
func TestActiveRenewerTakesOverLimits(t *testing.T) {
	st := openStore(t)
	addPending(t, st, time.Now(), "a.example.test", "b.example.org")
	limits := ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 2, Per: 2 * time.Hour}}
	ctx, cancel := context.WithCancel(context.Background())
	var done []chan error
	defer func() {
		cancel()
		for _, d := range done {
			<-d
		}
	}()
	var rs [2]*Renewer
	var lims [2]*ratelimit.Limiter
	for i := range rs {
		lim, err := ratelimit.NewLimiter(limits, nil)
		if err != nil {
			t.Fatal(err)
		}
		iss := &scriptedIssuer{life: 90 * 24 * time.Hour, notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }}
		r, err := New(Config{Workers: 2, IdleWait: 50 * time.Millisecond, Seed: 3, CAs: []CA{{Issuer: iss, Limiter: lim}}, StandBy: true}, st, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		rs[i], lims[i] = r, lim
		d := make(chan error, 1)
		done = append(done, d)
		go func() { d <- r.Run(ctx) }()
	}
	rs[0].SetActive(true)
	waitFor(t, 30*time.Second, "the active renewer's spent bucket saved", func() bool {
		bs, err := st.RateBuckets(context.Background(), "ca:1")
		return err == nil && slices.ContainsFunc(bs, func(b store.RateBucket) bool {
			return b.Limit == string(ratelimit.LimitNewOrders) && b.Full.After(time.Now().Add(limits.NewOrders.Per-time.Minute))
		})
	})
	rs[0].SetActive(false)
	rs[1].SetActive(true)
	waitFor(t, 30*time.Second, "the new holder's bucket as spent as the saved one", func() bool {
		b := lims[1].Bucket(ratelimit.LimitNewOrders, "")
		return b.Tokens < 1 && b.Available.After(time.Now().Add(50*time.Minute))
	})
}
