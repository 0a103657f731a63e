package ratelimit

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTestLimiter(t *testing.T, cfg LimitsConfig) (*Limiter, *fakeClock) {
	t.Helper()
	clock := newFakeClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	l, err := NewLimiter(cfg, clock.Now)
	if err != nil {
		t.Fatalf("NewLimiter: %v", err)
	}
	return l, clock
}

func TestLetsEncryptLimits(t *testing.T) {
	le := LetsEncryptLimits()
	tests := []struct {
		desc     string
		limit    Limit
		burst    int
		interval time.Duration
	}{
		{desc: "new orders: 300 per 3 hours, one every 36 s", limit: le.NewOrders, burst: 300, interval: 36 * time.Second},
		{desc: "registered domain: 50 per week, one every 201.6 min", limit: le.CertsPerRegisteredDomain, burst: 50, interval: 201*time.Minute + 36*time.Second},
		{desc: "exact set: 5 per week, one every 33.6 h", limit: le.CertsPerExactSet, burst: 5, interval: 33*time.Hour + 36*time.Minute},
		{desc: "authorization failures: 5 per hour, one every 12 min", limit: le.AuthzFailures, burst: 5, interval: 12 * time.Minute},
		{desc: "consecutive failures: 1,152, one a day", limit: le.ConsecutiveAuthzFailures, burst: 1152, interval: 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.limit.Burst != tc.burst || tc.limit.Interval() != tc.interval {
				t.Errorf("got %v (one every %v), want burst %d, one every %v", tc.limit, tc.limit.Interval(), tc.burst, tc.interval)
			}
		})
	}
}

func TestNewLimiterValidates(t *testing.T) {
	tests := []struct {
		desc    string
		cfg     LimitsConfig
		wantErr bool
	}{
		{desc: "zero config is Let's Encrypt"},
		{desc: "unlimited", cfg: LimitsConfig{NewOrders: Limit{Burst: -1}}},
		{desc: "override", cfg: LimitsConfig{NewOrders: Limit{Burst: 3000, Per: 3 * time.Hour}}},
		{desc: "burst without period", cfg: LimitsConfig{NewOrders: Limit{Burst: 10}}, wantErr: true},
		{desc: "period without burst", cfg: LimitsConfig{AuthzFailures: Limit{Per: time.Hour}}, wantErr: true},
		{desc: "period shorter than a nanosecond per token", cfg: LimitsConfig{CertsPerExactSet: Limit{Burst: 10, Per: 5}}, wantErr: true},
		{desc: "bad domain override", cfg: LimitsConfig{RegisteredDomainOverrides: map[string]Limit{"example.com": {Burst: 5}}}, wantErr: true},
		{desc: "empty domain override key", cfg: LimitsConfig{RegisteredDomainOverrides: map[string]Limit{" ": {Burst: 5, Per: time.Hour}}}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := NewLimiter(tc.cfg, nil)
			if (err != nil) != tc.wantErr {
				t.Errorf("NewLimiter error = %v, want error %v", err, tc.wantErr)
			}
		})
	}
}

// TestLimiterPacing fills each bucket, checks the next order is refused
// until exactly one refill interval after the first token was taken (all are
// taken at the same instant), and that it goes through then.
func TestLimiterPacing(t *testing.T) {
	tests := []struct {
		desc    string
		cfg     LimitsConfig
		kind    OrderKind
		names   func(i int) []string
		allowed int
		limit   LimitID
		key     string
		wait    time.Duration
	}{
		{
			desc:    "301st new order in 3 hours waits 36 s",
			names:   func(i int) []string { return []string{fmt.Sprintf("site%d.test", i)} },
			allowed: 300, limit: LimitNewOrders, wait: 36 * time.Second,
		},
		{
			desc:    "6th certificate for the exact same set waits 33.6 h",
			names:   func(int) []string { return []string{"www.example.test", "example.test"} },
			allowed: 5, limit: LimitCertsPerExactSet, key: "example.test,www.example.test", wait: 33*time.Hour + 36*time.Minute,
		},
		{
			desc:    "exact set ignores order and case",
			names:   func(i int) []string { return [][]string{{"A.test", "b.test"}, {"b.test", "a.test"}}[i%2] },
			allowed: 5, limit: LimitCertsPerExactSet, key: "a.test,b.test", wait: 33*time.Hour + 36*time.Minute,
		},
		{
			desc:    "renewals count against the exact set too",
			kind:    OrderRenewal,
			names:   func(int) []string { return []string{"www.example.test"} },
			allowed: 5, limit: LimitCertsPerExactSet, key: "www.example.test", wait: 33*time.Hour + 36*time.Minute,
		},
		{
			desc:    "51st certificate under one registered domain waits 201.6 min",
			names:   func(i int) []string { return []string{fmt.Sprintf("n%d.example.co.uk", i)} },
			allowed: 50, limit: LimitCertsPerRegisteredDomain, key: "example.co.uk", wait: 201*time.Minute + 36*time.Second,
		},
		{
			desc:    "wildcards count against their registered domain",
			names:   func(i int) []string { return []string{fmt.Sprintf("*.n%d.example.test", i)} },
			allowed: 50, limit: LimitCertsPerRegisteredDomain, key: "example.test", wait: 201*time.Minute + 36*time.Second,
		},
		{
			desc:    "new orders override of 3,000 per 3 hours waits 3.6 s",
			cfg:     LimitsConfig{NewOrders: Limit{Burst: 3000, Per: 3 * time.Hour}},
			names:   func(i int) []string { return []string{fmt.Sprintf("site%d.test", i)} },
			allowed: 3000, limit: LimitNewOrders, wait: 3600 * time.Millisecond,
		},
		{
			desc: "registered domain override",
			cfg: LimitsConfig{RegisteredDomainOverrides: map[string]Limit{
				"Example.Test.": {Burst: 500, Per: 7 * 24 * time.Hour},
			}},
			names:   func(i int) []string { return []string{fmt.Sprintf("n%d.example.test", i)} },
			allowed: 300, limit: LimitNewOrders, wait: 36 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			l, clock := newTestLimiter(t, tc.cfg)
			start := clock.Now()
			for i := range tc.allowed {
				if r := l.Reserve(tc.names(i), tc.kind); !r.OK {
					t.Fatalf("order %d refused: %+v", i+1, r)
				}
			}
			r := l.Reserve(tc.names(tc.allowed), tc.kind)
			if r.OK {
				t.Fatalf("order %d allowed, want refused", tc.allowed+1)
			}
			if r.Limit != tc.limit || r.Key != tc.key || !r.At.Equal(start.Add(tc.wait)) {
				t.Errorf("refused by %s %q until %s, want %s %q until %s",
					r.Limit, r.Key, r.At.Sub(start), tc.limit, tc.key, tc.wait)
			}
			clock.Set(start.Add(tc.wait - time.Nanosecond))
			if r := l.Reserve(tc.names(tc.allowed), tc.kind); r.OK {
				t.Errorf("allowed a nanosecond before the refill")
			}
			clock.Set(start.Add(tc.wait))
			if r := l.Reserve(tc.names(tc.allowed), tc.kind); !r.OK {
				t.Errorf("refused at the refill: %+v", r)
			}
			if r := l.Reserve(tc.names(tc.allowed+1), tc.kind); r.OK {
				t.Errorf("a second order allowed right after one token refilled")
			}
		})
	}
}

// TestLimiterSteadyRate checks that pacing does not drift: with the bucket
// empty, one order goes through every 36 s for a simulated week.
func TestLimiterSteadyRate(t *testing.T) {
	l, clock := newTestLimiter(t, LimitsConfig{})
	for i := range 300 {
		l.Reserve([]string{fmt.Sprintf("burst%d.test", i)}, OrderNew)
	}
	start := clock.Now()
	const n = 7 * 24 * 100 // 100 per hour for a week
	for i := 1; i <= n; i++ {
		clock.Set(start.Add(time.Duration(i) * 36 * time.Second))
		if r := l.Reserve([]string{fmt.Sprintf("steady%d.test", i)}, OrderNew); !r.OK {
			t.Fatalf("order %d at +%s refused: %+v", i, time.Duration(i)*36*time.Second, r)
		}
		if r := l.Reserve([]string{fmt.Sprintf("extra%d.test", i)}, OrderNew); r.OK {
			t.Fatalf("a second order allowed at +%s", time.Duration(i)*36*time.Second)
		}
	}
}

func TestAuthzFailures(t *testing.T) {
	const name = "broken.example.test"
	tests := []struct {
		desc     string
		cfg      LimitsConfig
		failures int
		every    time.Duration
		allowed  bool
		wait     time.Duration // from the last failure
		limit    LimitID
	}{
		{desc: "4 failures in an hour: allowed", failures: 4, every: time.Minute, allowed: true},
		{desc: "5 failures at once: refused for 12 min", failures: 5, allowed: false, wait: 12 * time.Minute, limit: LimitAuthzFailures},
		{desc: "5 failures a minute apart: refused until 12 min after the first", failures: 5, every: time.Minute,
			allowed: false, wait: 8 * time.Minute, limit: LimitAuthzFailures},
		{desc: "5 failures 12 min apart: never refused", failures: 5, every: 12 * time.Minute, allowed: true},
		{desc: "consecutive limit pauses the name", cfg: LimitsConfig{
			AuthzFailures:            Limit{Burst: -1},
			ConsecutiveAuthzFailures: Limit{Burst: 3, Per: 3 * 24 * time.Hour},
		}, failures: 3, allowed: false, wait: 24 * time.Hour, limit: LimitConsecutiveAuthzFailures},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			l, clock := newTestLimiter(t, tc.cfg)
			for i := range tc.failures {
				if i > 0 {
					clock.Advance(tc.every)
				}
				l.AuthzFailed(name)
			}
			last := clock.Now()
			ok, at := l.FailuresAllowed(name)
			if ok != tc.allowed {
				t.Fatalf("FailuresAllowed = %v until %s, want %v", ok, at.Sub(last), tc.allowed)
			}
			r := l.Reserve([]string{name}, OrderNew)
			if r.OK != tc.allowed {
				t.Fatalf("Reserve = %+v, want OK %v", r, tc.allowed)
			}
			if tc.allowed {
				return
			}
			if !at.Equal(last.Add(tc.wait)) || !r.At.Equal(at) || r.Limit != tc.limit || r.Key != name {
				t.Errorf("refused until +%s (Reserve: %s %q until +%s), want %s until +%s",
					at.Sub(last), r.Limit, r.Key, r.At.Sub(last), tc.limit, tc.wait)
			}
			if r := l.Reserve([]string{"other.example.test"}, OrderNew); !r.OK {
				t.Errorf("another name refused: %+v", r)
			}
			clock.Set(at)
			if ok, _ := l.FailuresAllowed(name); !ok {
				t.Errorf("still refused at the refill")
			}
		})
	}
}

func TestAuthzValidResetsConsecutive(t *testing.T) {
	l, _ := newTestLimiter(t, LimitsConfig{
		AuthzFailures:            Limit{Burst: -1},
		ConsecutiveAuthzFailures: Limit{Burst: 3, Per: 3 * 24 * time.Hour},
	})
	for range 3 {
		l.AuthzFailed("a.test")
	}
	if ok, _ := l.FailuresAllowed("a.test"); ok {
		t.Fatal("not paused after 3 consecutive failures")
	}
	l.AuthzValid("A.test.")
	if ok, _ := l.FailuresAllowed("a.test"); !ok {
		t.Fatal("still paused after a valid authorization")
	}
}

func TestLimiterRefunds(t *testing.T) {
	tests := []struct {
		desc  string
		kind  OrderKind
		undo  func(l *Limiter, names []string, kind OrderKind) error
		after map[LimitID]float64 // tokens left after the reserve and the undo
	}{
		{
			desc: "refund returns every token", kind: OrderNew,
			undo: (*Limiter).Refund,
			after: map[LimitID]float64{
				LimitNewOrders: 300, LimitCertsPerRegisteredDomain: 50, LimitCertsPerExactSet: 5,
			},
		},
		{
			desc: "not issued keeps the order but returns the certificate tokens", kind: OrderNew,
			undo: (*Limiter).NotIssued,
			after: map[LimitID]float64{
				LimitNewOrders: 299, LimitCertsPerRegisteredDomain: 50, LimitCertsPerExactSet: 5,
			},
		},
		{
			desc: "issued keeps everything", kind: OrderNew,
			undo: func(*Limiter, []string, OrderKind) error { return nil },
			after: map[LimitID]float64{
				LimitNewOrders: 299, LimitCertsPerRegisteredDomain: 49, LimitCertsPerExactSet: 4,
			},
		},
		{
			desc: "renewal refund returns the exact-set token", kind: OrderRenewal,
			undo: (*Limiter).Refund,
			after: map[LimitID]float64{
				LimitNewOrders: 300, LimitCertsPerRegisteredDomain: 50, LimitCertsPerExactSet: 5,
			},
		},
		{
			desc: "refund of a refund does not overfill", kind: OrderNew,
			undo: func(l *Limiter, names []string, kind OrderKind) error {
				l.Refund(names, kind)
				return l.Refund(names, kind)
			},
			after: map[LimitID]float64{
				LimitNewOrders: 300, LimitCertsPerRegisteredDomain: 50, LimitCertsPerExactSet: 5,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			l, _ := newTestLimiter(t, LimitsConfig{})
			names := []string{"www.example.test"}
			if r := l.Reserve(names, tc.kind); !r.OK {
				t.Fatalf("Reserve: %+v", r)
			}
			tc.undo(l, names, tc.kind)
			keys := map[LimitID]string{LimitCertsPerRegisteredDomain: "example.test", LimitCertsPerExactSet: "www.example.test"}
			for id, want := range tc.after {
				if got := l.Bucket(id, keys[id]).Tokens; math.Abs(got-want) > 1e-9 {
					t.Errorf("%s: %v tokens, want %v", id, got, want)
				}
			}
		})
	}
}

func TestRenewalExemptions(t *testing.T) {
	const name = "www.example.test"
	tests := []struct {
		desc    string
		cfg     LimitsConfig
		exhaust func(l *Limiter)
		want    map[OrderKind]bool
	}{
		{
			desc: "new orders exhausted",
			exhaust: func(l *Limiter) {
				for i := range 300 {
					l.Reserve([]string{fmt.Sprintf("site%d.other", i)}, OrderNew)
				}
			},
			want: map[OrderKind]bool{OrderNew: false, OrderRenewal: true, OrderARIRenewal: true},
		},
		{
			desc: "registered domain exhausted",
			exhaust: func(l *Limiter) {
				for i := range 50 {
					l.Reserve([]string{fmt.Sprintf("n%d.example.test", i)}, OrderNew)
				}
			},
			want: map[OrderKind]bool{OrderNew: false, OrderRenewal: true, OrderARIRenewal: true},
		},
		{
			desc: "exact set exhausted",
			exhaust: func(l *Limiter) {
				for range 5 {
					l.Reserve([]string{name}, OrderRenewal)
				}
			},
			want: map[OrderKind]bool{OrderNew: false, OrderRenewal: false, OrderARIRenewal: true},
		},
		{
			desc: "authorization failures exhausted",
			exhaust: func(l *Limiter) {
				for range 5 {
					l.AuthzFailed(name)
				}
			},
			want: map[OrderKind]bool{OrderNew: false, OrderRenewal: false, OrderARIRenewal: true},
		},
		{
			desc: "name paused",
			cfg:  LimitsConfig{ConsecutiveAuthzFailures: Limit{Burst: 2, Per: 48 * time.Hour}},
			exhaust: func(l *Limiter) {
				l.AuthzFailed(name)
				l.AuthzFailed(name)
			},
			want: map[OrderKind]bool{OrderNew: false, OrderRenewal: false, OrderARIRenewal: false},
		},
	}
	for _, tc := range tests {
		for kind, want := range tc.want {
			t.Run(tc.desc+"/"+kind.String(), func(t *testing.T) {
				l, _ := newTestLimiter(t, tc.cfg)
				tc.exhaust(l)
				if r := l.Reserve([]string{name}, kind); r.OK != want {
					t.Errorf("Reserve(%s) = %+v, want OK %v", kind, r, want)
				}
			})
		}
	}
}

func TestARIRenewalTakesNothing(t *testing.T) {
	l, _ := newTestLimiter(t, LimitsConfig{})
	for range 1000 {
		if r := l.Reserve([]string{"www.example.test"}, OrderARIRenewal); !r.OK {
			t.Fatalf("ARI renewal refused: %+v", r)
		}
	}
	for _, s := range l.Status() {
		if s.Tracked != 0 {
			t.Errorf("%s: %d buckets charged by ARI renewals", s.Limit, s.Tracked)
		}
	}
}

func TestUnlimited(t *testing.T) {
	off := Limit{Burst: -1}
	l, _ := newTestLimiter(t, LimitsConfig{
		NewOrders: off, CertsPerRegisteredDomain: off, CertsPerExactSet: off,
		AuthzFailures: off, ConsecutiveAuthzFailures: off,
	})
	for i := range 10_000 {
		l.AuthzFailed("x.example.test")
		if r := l.Reserve([]string{"x.example.test", fmt.Sprintf("n%d.example.test", i%3)}, OrderNew); !r.OK {
			t.Fatalf("order %d refused with every limit off: %+v", i, r)
		}
	}
	if got := l.Backlog(500_000); got != 0 {
		t.Errorf("Backlog = %s, want 0", got)
	}
	for _, s := range l.Status() {
		if s.Tracked != 0 || s.Burst != -1 {
			t.Errorf("%s: burst %d, %d buckets tracked; want -1 and none", s.Limit, s.Burst, s.Tracked)
		}
	}
}

func TestLimiterForgetsFullBuckets(t *testing.T) {
	l, clock := newTestLimiter(t, LimitsConfig{NewOrders: Limit{Burst: -1}})
	const n = 20_000
	for i := range n {
		name := fmt.Sprintf("n%d.customer%d.test", i, i)
		l.AuthzFailed(name)
		l.Reserve([]string{name}, OrderNew)
	}
	sizes := func() [4]int {
		l.mu.Lock()
		defer l.mu.Unlock()
		var n [4]int
		for i, id := range []LimitID{LimitCertsPerRegisteredDomain, LimitCertsPerExactSet, LimitAuthzFailures, LimitConsecutiveAuthzFailures} {
			l.buckets.Range(id, func(string, time.Duration) { n[i]++ })
		}
		return n
	}
	if got := sizes(); got != [4]int{n, n, n, n} {
		t.Fatalf("bucket counts %v, want %d each", got, n)
	}
	// An hour later the failure buckets are full; a week later all are.
	clock.Advance(time.Hour)
	l.AuthzFailed("trigger.test")
	if got := sizes(); got[2] != 1 || got[0] != n {
		t.Errorf("after an hour: bucket counts %v, want the failure buckets gone", got)
	}
	clock.Advance(7 * 24 * time.Hour)
	l.Reserve([]string{"trigger2.test"}, OrderARIRenewal)
	if got := sizes(); got != [4]int{} {
		t.Errorf("after a week: bucket counts %v, want none", got)
	}
	for _, s := range l.Status() {
		if s.Tracked != 0 || s.Blocked != 0 {
			t.Errorf("%s: %d tracked, %d blocked; want none", s.Limit, s.Tracked, s.Blocked)
		}
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l, clock := newTestLimiter(t, LimitsConfig{})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				names := []string{fmt.Sprintf("w%d-%d.test", w, i)}
				switch i % 4 {
				case 0:
					l.AuthzFailed(names[0])
				case 1:
					l.Status()
				case 2:
					l.Backlog(1000)
				}
				if r := l.Reserve(names, OrderNew); r.OK {
					allowed.Add(1)
					if i%10 == 0 {
						l.NotIssued(names, OrderNew)
					}
				}
				clock.Advance(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	// 1,600 orders in 1.6 s: the burst of 300, plus nothing refilled (one
	// token takes 36 s).
	if got := allowed.Load(); got != 300 {
		t.Errorf("%d orders allowed, want exactly 300", got)
	}
}
