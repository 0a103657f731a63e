package renewer

import (
	"fmt"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
)

func TestPlan(t *testing.T) {
	t.Parallel()
	le := &ratelimit.LimitsConfig{}
	tests := []struct {
		desc    string
		limits  []*ratelimit.LimitsConfig
		used    []int // new orders already sent, per CA
		pending int
		want    time.Duration // DoneIn, ± a minute
		limited bool
		orders  []int
	}{
		{desc: "500,000 names at 300 per 3 hours", limits: []*ratelimit.LimitsConfig{le}, pending: 500_000,
			want: time.Duration(500_000-300) * 36 * time.Second, limited: true, orders: []int{500_000}},
		{desc: "fits in the burst", limits: []*ratelimit.LimitsConfig{le}, pending: 200, limited: true, orders: []int{200}},
		{desc: "burst spent", limits: []*ratelimit.LimitsConfig{le}, used: []int{300}, pending: 100,
			want: 100 * 36 * time.Second, limited: true, orders: []int{100}},
		{desc: "two accounts share the work", limits: []*ratelimit.LimitsConfig{le, {NewOrders: ratelimit.Limit{Burst: 600, Per: 3 * time.Hour}}}, pending: 500_000,
			want: time.Duration(float64(500_000-900) / (1.0/36 + 1.0/18) * float64(time.Second)), limited: true, orders: []int{166_667, 333_333}},
		{desc: "a CA without a limit", limits: []*ratelimit.LimitsConfig{le, nil}, pending: 500_000, orders: []int{0, 500_000}},
		{desc: "nothing pending", limits: []*ratelimit.LimitsConfig{le}, limited: true, orders: []int{0}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			e := newMultiEnv(t, Config{}, tc.limits...)
			for i, n := range tc.used {
				for j := range n {
					if !e.lims[i].Reserve([]string{fmt.Sprintf("n%d.test", j)}, ratelimit.OrderNew).OK {
						t.Fatalf("order %d refused", j)
					}
				}
			}
			p := e.r.Plan(tc.pending)
			if p.Limited != tc.limited || (p.DoneIn-tc.want).Abs() > time.Minute || !p.DoneAt.Equal(e.clock.Now().Add(p.DoneIn)) {
				t.Fatalf("plan %+v: done in %s (%.1f days), want %s (%.1f days), limited %v",
					p, p.DoneIn, p.DoneIn.Hours()/24, tc.want, tc.want.Hours()/24, tc.limited)
			}
			for i, want := range tc.orders {
				if got := p.CAs[i].Orders; got < want-1 || got > want+1 {
					t.Errorf("CA %s takes %d names, want %d", p.CAs[i].Name, got, want)
				}
			}
		})
	}
	// The figure of the issue: 500,000 new names at Let's Encrypt's
	// default limit take about 208 days.
	e := newMultiEnv(t, Config{}, le)
	if days := e.r.Plan(500_000).DoneIn.Hours() / 24; days < 208 || days > 208.5 {
		t.Errorf("500,000 names: %.1f days, want about 208", days)
	} else {
		t.Logf("500,000 new names at 300 per 3 hours: %.1f days", days)
	}
}
