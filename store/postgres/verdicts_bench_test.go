package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
)

// BenchmarkVerdictScan is a scanner's random names reaching three hosts
// at once: each of CERTSERVER_BENCH_VERDICT_NAMES (3,000) names is
// claimed by all three (each its own store and pool, 8 checkers each, as
// OnDemand runs them) and its verdict recorded by the host that won, as
// the on-demand policy does before it asks anything. It reports the
// names settled per second for the fleet, which bounds how fast a scan
// is absorbed by the database, and fails if a name is claimed twice.
func BenchmarkVerdictScan(b *testing.B) {
	n := benchSize(b, "CERTSERVER_BENCH_VERDICT_NAMES", 3000)
	url := pgtest.New(b)
	type host struct {
		name string
		s    store.Verdicts
	}
	var hosts []host
	for _, name := range []string{"h1", "h2", "h3"} {
		hosts = append(hosts, host{name, openBench(b, url)})
	}
	ctx := context.Background()
	var took time.Duration
	for i := 0; b.Loop(); i++ {
		var (
			wins atomic.Int64
			wg   sync.WaitGroup
		)
		start := time.Now()
		for _, h := range hosts {
			names := make(chan string)
			for range 8 {
				wg.Go(func() {
					for name := range names {
						_, claimed, err := h.s.ClaimVerdict(ctx, name, h.name, 12*time.Second)
						if err != nil {
							b.Error(err)
							return
						}
						if !claimed {
							continue
						}
						wins.Add(1)
						if _, err := h.s.PutVerdict(ctx, store.Verdict{Name: name, State: store.VerdictRefused, Reason: "ask URL answered 403", Host: h.name}, time.Minute); err != nil {
							b.Error(err)
						}
					}
				})
			}
			wg.Go(func() {
				defer close(names)
				for j := range n {
					names <- fmt.Sprintf("scan-%d-%d.example.com", i, j)
				}
			})
		}
		wg.Wait()
		took += time.Since(start)
		if w := wins.Load(); w != int64(n) {
			b.Fatalf("%d claims won for %d names, want one each", w, n)
		}
	}
	b.ReportMetric(float64(n*b.N)/took.Seconds(), "names/s")
}
