package ratelimit

import (
	"fmt"
	"math"
	"testing"
	"time"
)

func TestBacklog(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		desc  string
		cfg   LimitsConfig
		used  int // new orders sent just before
		n     int
		want  time.Duration
		about float64 // days, for the record
	}{
		{desc: "nothing to send", n: 0, want: 0},
		{desc: "within the burst", n: 300, want: 0},
		{desc: "one past the burst", n: 301, want: 36 * time.Second},
		{desc: "after using the burst, one order", used: 300, n: 1, want: 36 * time.Second},
		{desc: "500,000 at 300 per 3 hours", n: 500_000, want: 500_000*36*time.Second - 3*time.Hour, about: 208.2},
		{desc: "500,000 at an override of 3,000 per 3 hours", cfg: LimitsConfig{NewOrders: Limit{Burst: 3000, Per: 3 * time.Hour}},
			n: 500_000, want: 500_000*3600*time.Millisecond - 3*time.Hour, about: 20.7},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			l, _ := newTestLimiter(t, tc.cfg)
			for i := range tc.used {
				l.Reserve([]string{fmt.Sprintf("used%d.test", i)}, OrderNew)
			}
			got := l.Backlog(tc.n)
			if got != tc.want {
				t.Errorf("Backlog(%d) = %s, want %s", tc.n, got, tc.want)
			}
			if tc.about != 0 && math.Abs(got.Hours()/24-tc.about) > 0.05 {
				t.Errorf("Backlog(%d) = %.2f days, want about %.1f", tc.n, got.Hours()/24, tc.about)
			}
		})
	}

	t.Run("names under one registered domain wait for its bucket", func(t *testing.T) {
		l, _ := newTestLimiter(t, LimitsConfig{})
		var names []string
		for i := range 2000 {
			names = append(names, fmt.Sprintf("shop%d.example.test", i))
		}
		names = append(names, "a.other.test", "b.third.test")
		want := 1950 * (201*time.Minute + 36*time.Second) // 2,000 less the burst of 50
		if got := l.BacklogFor(names); got != want {
			t.Errorf("BacklogFor = %s (%.1f weeks), want %s", got, got.Hours()/24/7, want)
		}
		if got := l.BacklogFor(names); got < 38*7*day || got > 40*7*day {
			t.Errorf("BacklogFor = %.1f weeks, want about 39", got.Hours()/24/7)
		}
	})
}

func TestLimiterStatus(t *testing.T) {
	l, clock := newTestLimiter(t, LimitsConfig{})
	now := clock.Now()
	for i := range 50 {
		l.Reserve([]string{fmt.Sprintf("n%d.example.test", i)}, OrderNew)
	}
	for range 5 {
		l.AuthzFailed("bad.example.test")
	}
	byID := map[LimitID]LimitStatus{}
	for _, s := range l.Status() {
		byID[s.Limit] = s
	}
	orders := byID[LimitNewOrders]
	if len(orders.Buckets) != 1 || orders.Buckets[0].Tokens != 250 || orders.Blocked != 0 || orders.Tracked != 1 {
		t.Errorf("new orders status %+v, want 250 of 300 tokens, not blocked", orders)
	}
	if b := orders.Buckets[0]; !b.Available.Equal(now) || !b.Full.Equal(now.Add(50*36*time.Second)) {
		t.Errorf("new orders available %s, full %s; want now and +30m", b.Available.Sub(now), b.Full.Sub(now))
	}
	domains := byID[LimitCertsPerRegisteredDomain]
	if domains.Tracked != 1 || domains.Blocked != 1 || len(domains.Buckets) != 1 || domains.Buckets[0].Key != "example.test" {
		t.Errorf("registered domain status %+v, want example.test blocked", domains)
	}
	sets := byID[LimitCertsPerExactSet]
	if sets.Tracked != 50 || sets.Blocked != 0 || len(sets.Buckets) != 0 {
		t.Errorf("exact set status: %d tracked, %d blocked, %d listed; want 50, 0, 0", sets.Tracked, sets.Blocked, len(sets.Buckets))
	}
	failures := byID[LimitAuthzFailures]
	if failures.Blocked != 1 || failures.Buckets[0].Key != "bad.example.test" || failures.Buckets[0].Tokens != 0 ||
		!failures.Buckets[0].Available.Equal(now.Add(12*time.Minute)) {
		t.Errorf("failure status %+v, want bad.example.test empty until +12m", failures)
	}
	if b := l.Bucket(LimitCertsPerExactSet, "N3.Example.Test"); b.Tokens != 4 || b.Burst != 5 {
		t.Errorf("exact set bucket %+v, want 4 of 5 tokens", b)
	}
	if b := l.Bucket(LimitAuthzFailures, "untouched.test"); b.Tokens != 5 || !b.Full.Equal(now) {
		t.Errorf("untouched bucket %+v, want full", b)
	}
}
