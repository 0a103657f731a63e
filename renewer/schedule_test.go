package renewer

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestRenewalTime(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		desc     string
		life     time.Duration
		fraction float64 // of the lifetime, before jitter
	}{
		{desc: "90-day certificate renews at two thirds", life: 90 * 24 * time.Hour, fraction: 2.0 / 3},
		{desc: "10-day certificate is not short-lived", life: 10 * 24 * time.Hour, fraction: 2.0 / 3},
		{desc: "6-day certificate renews at half", life: 6 * 24 * time.Hour, fraction: 0.5},
		{desc: "5-minute certificate renews at half", life: 5 * time.Minute, fraction: 0.5},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(1, 2))
			target := nb.Add(time.Duration(float64(tc.life) * tc.fraction))
			slack := tc.life / 20
			seen := map[time.Time]bool{}
			for range 200 {
				at := RenewalTime(nb, nb.Add(tc.life), rnd)
				if d := at.Sub(target); d < -slack || d > slack {
					t.Fatalf("RenewalTime = %v, want within %v of %v", at, slack, target)
				}
				seen[at] = true
			}
			if len(seen) < 100 {
				t.Errorf("only %d distinct times in 200 draws: jitter missing", len(seen))
			}
		})
	}
	t.Run("inverted validity returns notBefore", func(t *testing.T) {
		if at := RenewalTime(nb, nb.Add(-time.Hour), rand.New(rand.NewPCG(1, 2))); !at.Equal(nb) {
			t.Errorf("RenewalTime = %v, want %v", at, nb)
		}
	})
}

func TestWindowTime(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		desc       string
		start, end time.Time
		lo, hi     time.Time
	}{
		{desc: "future window", start: now.Add(time.Hour), end: now.Add(3 * time.Hour), lo: now.Add(time.Hour), hi: now.Add(3 * time.Hour)},
		{desc: "window already open", start: now.Add(-time.Hour), end: now.Add(time.Hour), lo: now, hi: now.Add(time.Hour)},
		{desc: "window already over", start: now.Add(-3 * time.Hour), end: now.Add(-time.Hour), lo: now, hi: now},
		{desc: "empty window", start: now.Add(time.Hour), end: now.Add(time.Hour), lo: now.Add(time.Hour), hi: now.Add(time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(3, 4))
			for range 100 {
				at := WindowTime(tc.start, tc.end, now, rnd)
				if at.Before(tc.lo) || at.After(tc.hi) {
					t.Fatalf("WindowTime = %v, want in [%v, %v]", at, tc.lo, tc.hi)
				}
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		desc     string
		failures int
		want     time.Duration
	}{
		{desc: "zero is treated as the first failure", failures: 0, want: time.Minute},
		{desc: "first failure", failures: 1, want: time.Minute},
		{desc: "second failure", failures: 2, want: 10 * time.Minute},
		{desc: "third failure", failures: 3, want: 100 * time.Minute},
		{desc: "fourth failure waits a day", failures: 4, want: 24 * time.Hour},
		{desc: "fortieth failure still waits a day", failures: 40, want: 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(5, 6))
			lo, hi := tc.want-tc.want/10, tc.want+tc.want/10
			lowest, highest := hi, lo
			for range 500 {
				d := Backoff(tc.failures, rnd)
				if d < lo || d > hi {
					t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", tc.failures, d, lo, hi)
				}
				lowest, highest = min(lowest, d), max(highest, d)
			}
			if highest-lowest < tc.want/10 {
				t.Errorf("Backoff(%d) spread %v..%v: jitter missing", tc.failures, lowest, highest)
			}
		})
	}
}

func TestCapWindow(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tests := []struct {
		desc               string
		life               time.Duration
		start, end         time.Duration // from notBefore
		wantStart, wantEnd time.Duration
	}{
		{desc: "ordinary window is untouched", life: 90 * day, start: 59 * day, end: 61 * day, wantStart: 59 * day, wantEnd: 61 * day},
		{desc: "window ending at expiry is cut to 5/6 of the lifetime", life: 300 * time.Second, start: 0, end: 300 * time.Second, wantStart: 0, wantEnd: 250 * time.Second},
		{desc: "window wholly after the cap collapses onto it", life: 60 * day, start: 55 * day, end: 59 * day, wantStart: 50 * day, wantEnd: 50 * day},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s, e := capWindow(nb.Add(tc.start), nb.Add(tc.end), nb, nb.Add(tc.life))
			if !s.Equal(nb.Add(tc.wantStart)) || !e.Equal(nb.Add(tc.wantEnd)) {
				t.Errorf("capWindow = [%v, %v], want [%v, %v]", s.Sub(nb), e.Sub(nb), tc.wantStart, tc.wantEnd)
			}
		})
	}
}
