package certserver

import (
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

func TestCacheMaxAge(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	const minAge, maxAge = 10 * time.Second, 10 * time.Minute
	tests := []struct {
		desc     string
		notAfter time.Time
		renewAt  time.Time
		want     time.Duration
	}{
		{desc: "long-lived, not managed: capped at max", notAfter: now.Add(60 * 24 * time.Hour), want: maxAge},
		{desc: "renewal far away: capped at max", notAfter: now.Add(60 * 24 * time.Hour), renewAt: now.Add(30 * 24 * time.Hour), want: maxAge},
		{desc: "renewal due in 3m: until renewal", notAfter: now.Add(60 * 24 * time.Hour), renewAt: now.Add(3 * time.Minute), want: 3 * time.Minute},
		{desc: "expires in 5m, no renewal: until expiry", notAfter: now.Add(5 * time.Minute), want: 5 * time.Minute},
		{desc: "expiry before renewal: until expiry", notAfter: now.Add(4 * time.Minute), renewAt: now.Add(7 * time.Minute), want: 4 * time.Minute},
		{desc: "fractional seconds are dropped", notAfter: now.Add(90*time.Second + 900*time.Millisecond), want: 90 * time.Second},
		{desc: "renewal due in 3s: floored at min", notAfter: now.Add(60 * 24 * time.Hour), renewAt: now.Add(3 * time.Second), want: minAge},
		{desc: "expires in 2s: floored at min", notAfter: now.Add(2 * time.Second), want: minAge},
		{desc: "renewal due now: min", notAfter: now.Add(60 * 24 * time.Hour), renewAt: now, want: minAge},
		{desc: "renewal overdue: min", notAfter: now.Add(20 * 24 * time.Hour), renewAt: now.Add(-time.Hour), want: minAge},
		{desc: "expires now: min", notAfter: now, want: minAge},
		{desc: "expired: min", notAfter: now.Add(-24 * time.Hour), renewAt: now.Add(-30 * 24 * time.Hour), want: minAge},
		{desc: "zero NotAfter counts as expired: min", want: minAge},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c := &store.Certificate{NotAfter: tc.notAfter, RenewAt: tc.renewAt}
			if got := CacheMaxAge(c, now, minAge, maxAge); got != tc.want {
				t.Errorf("CacheMaxAge = %v, want %v", got, tc.want)
			}
		})
	}
}
