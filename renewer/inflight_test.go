package renewer

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestCompletionsRate(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 30, 0, time.UTC)
	tests := []struct {
		desc  string
		since time.Time
		adds  []time.Duration // after start
		at    time.Duration   // after start
		want  float64
	}{
		{desc: "before Run", at: time.Minute, want: 0},
		{desc: "nothing finished", since: start, at: time.Minute, want: 0},
		{desc: "since Run started", since: start, adds: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}, at: 30 * time.Second, want: 0.1},
		{desc: "a full window", since: start.Add(-time.Hour), adds: []time.Duration{0, time.Minute, 2 * time.Minute}, at: 10 * time.Minute,
			want: 3.0 / (14*60 + 30)},
		{desc: "old minutes drop out", since: start.Add(-time.Hour), adds: []time.Duration{0, 0, 20 * time.Minute}, at: 20 * time.Minute,
			want: 1.0 / (14*60 + 30)},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c := completions{since: tc.since}
			for _, d := range tc.adds {
				c.add(start.Add(d))
			}
			if got := c.rate(start.Add(tc.at)); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("rate %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInFlightAndThroughput(t *testing.T) {
	st := badgerStore(t)
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }, delay: 200 * time.Millisecond}
	rn, err := New(Config{Workers: 2, IdleWait: 50 * time.Millisecond, CAs: []CA{{Issuer: iss}}}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if rn.InFlight() != 0 || rn.Throughput() != 0 {
		t.Fatalf("before Run: in flight %d, throughput %v", rn.InFlight(), rn.Throughput())
	}
	addPending(t, st, time.Now(), "a.example.com", "b.example.com", "c.example.com")
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = rn.Run(ctx)
	}()
	defer func() {
		cancel()
		<-stopped
	}()
	waitFor(t, 5*time.Second, "two orders in flight", func() bool { return rn.InFlight() == 2 })
	waitFor(t, 5*time.Second, "three names finished", func() bool { return iss.orderCount() == 3 && rn.InFlight() == 0 })
	waitFor(t, 5*time.Second, "a throughput", func() bool { return rn.Throughput() > 0 })
}
