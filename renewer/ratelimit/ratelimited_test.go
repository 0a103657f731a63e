package ratelimit

import (
	"testing"
	"time"
)

func TestRateLimited(t *testing.T) {
	names := []string{"www.example.test"}
	tests := []struct {
		desc       string
		cfg        LimitsConfig
		detail     string
		retryAfter time.Duration
		limit      LimitID
		key        string
		wait       time.Duration
	}{
		{
			desc:       "new orders",
			detail:     "Error creating new order :: too many new orders (300) from this account in the last 3h0m0s, retry after 2025-06-01 12:10:00 UTC",
			retryAfter: 10 * time.Minute, limit: LimitNewOrders, wait: 10 * time.Minute,
		},
		{
			desc:       "new orders on an unlimited bucket still waits",
			cfg:        LimitsConfig{NewOrders: Limit{Burst: -1}},
			detail:     "too many new orders (300) from this account in the last 3h0m0s",
			retryAfter: 10 * time.Minute, limit: LimitNewOrders, wait: 10 * time.Minute,
		},
		{
			desc:       "registered domain named in the detail",
			detail:     `too many certificates (50) already issued for "example.test" in the last 168h0m0s, retry after 2025-06-02 12:00:00 UTC`,
			retryAfter: 24 * time.Hour, limit: LimitCertsPerRegisteredDomain, key: "example.test", wait: 24 * time.Hour,
		},
		{
			desc:       "registered domain quoted as something that is no name: the order's own",
			detail:     "too many certificates (50) already issued for \"exa\x00mple <b>\" in the last 168h0m0s",
			retryAfter: 24 * time.Hour, limit: LimitCertsPerRegisteredDomain, key: "example.test", wait: 24 * time.Hour,
		},
		{
			desc:       "exact set",
			detail:     "too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s",
			retryAfter: 30 * time.Hour, limit: LimitCertsPerExactSet, key: "www.example.test", wait: 30 * time.Hour,
		},
		{
			desc:       "exact set, older wording",
			detail:     "too many certificates already issued for exact set of domains: www.example.test",
			retryAfter: 30 * time.Hour, limit: LimitCertsPerExactSet, key: "www.example.test", wait: 30 * time.Hour,
		},
		{
			desc:       "failed authorizations",
			detail:     `too many failed authorizations (5) for "www.example.test" in the last 1h0m0s`,
			retryAfter: 40 * time.Minute, limit: LimitAuthzFailures, key: "www.example.test", wait: 40 * time.Minute,
		},
		{
			desc:       "paused",
			detail:     "Your account is temporarily prevented from requesting certificates for www.example.test and possibly others. Please visit: https://portal.test/",
			retryAfter: 48 * time.Hour, limit: LimitConsecutiveAuthzFailures, key: "www.example.test", wait: 48 * time.Hour,
		},
		{
			desc:       "unknown wording drains new orders",
			detail:     "slow down",
			retryAfter: 5 * time.Minute, limit: LimitNewOrders, wait: 5 * time.Minute,
		},
		{
			desc:   "no Retry-After: an hour",
			detail: "too many new orders recently",
			limit:  LimitNewOrders, wait: time.Hour,
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			l, clock := newTestLimiter(t, tc.cfg)
			start := clock.Now()
			if got, _ := l.RateLimited(names, tc.detail, tc.retryAfter); got != tc.limit {
				t.Fatalf("RateLimited = %s, want %s", got, tc.limit)
			}
			r := l.Reserve(names, OrderNew)
			if r.OK || r.Limit != tc.limit || r.Key != tc.key || !r.At.Equal(start.Add(tc.wait)) {
				t.Fatalf("Reserve = %+v (until +%s), want refused by %s %q until +%s", r, r.At.Sub(start), tc.limit, tc.key, tc.wait)
			}
			clock.Set(start.Add(tc.wait - time.Second))
			if r := l.Reserve(names, OrderNew); r.OK {
				t.Fatalf("allowed before Retry-After")
			}
			clock.Set(start.Add(tc.wait))
			if r := l.Reserve(names, OrderNew); !r.OK {
				t.Fatalf("refused at Retry-After: %+v", r)
			}
		})
	}
}
