package ratelimit

import (
	"testing"
	"time"
)

// TestLimiterStateInBuckets: a Limiter keeps every bucket in its Buckets
// and nothing beside them, so two Limiters on the same Buckets (as hosts
// sharing one back end would be) spend one budget between them.
func TestLimiterStateInBuckets(t *testing.T) {
	clock := newFakeClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	shared := NewMemoryBuckets()
	cfg := LimitsConfig{NewOrders: Limit{Burst: 2, Per: time.Hour}}
	a, err := NewLimiterWith(cfg, clock.Now, shared)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewLimiterWith(cfg, clock.Now, shared)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Reserve([]string{"a.example.com"}, OrderNew).OK || !b.Reserve([]string{"b.example.org"}, OrderNew).OK {
		t.Fatal("the first two orders should go: the burst is 2")
	}
	r := a.Reserve([]string{"c.example.net"}, OrderNew)
	if r.OK || r.Limit != LimitNewOrders || !r.At.Equal(clock.Now().Add(30*time.Minute)) {
		t.Fatalf("third order on the shared buckets: %+v; want held back by %s until a token in 30m", r, LimitNewOrders)
	}
	if _, ok := shared.Get(BucketKey{LimitCertsPerExactSet, "b.example.org"}); !ok {
		t.Error("the exact-set bucket b's order took is not in the shared buckets")
	}
	if _, err := NewLimiterWith(cfg, clock.Now, nil); err == nil {
		t.Error("NewLimiterWith accepted nil buckets")
	}
}
