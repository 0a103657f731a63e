package nginx_test

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
)

// BenchmarkFleetConvergence measures the fleet's promise: a certificate
// written on one host (imported through its admin API, host 1, 2, 3 in
// turn) until every worker of every host's nginx serves it, for 200
// changes of one name (CERTSERVER_BENCH_FLEET_CHANGES), each measured
// from the write until the last nginx worker serves it, polled every
// 10 ms. Three hosts on 127.0.0.2-4, each a `certserver serve` with
// [fleet] and an nginx with two workers, one PostgreSQL. Reports p50,
// p99 and the slowest, in milliseconds. Target: p99 ≤ 2 s.
func BenchmarkFleetConvergence(b *testing.B) {
	changes := 200
	if s := os.Getenv("CERTSERVER_BENCH_FLEET_CHANGES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("CERTSERVER_BENCH_FLEET_CHANGES=%q: want a positive number", s)
		}
		changes = n
	}
	f := startFleet(b, 3)
	const name = "bench.fleet.test"
	var took []time.Duration
	b.ResetTimer()
	for range b.N {
		took = took[:0]
		for i := range changes {
			l := f.ca.issue(b, name)
			body, err := json.Marshal(api.ImportRequest{ChainPEM: string(l.chainPEM), KeyPEM: string(l.keyPEM), Source: "import", Origin: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			writer := f.hosts[i%len(f.hosts)]
			start := time.Now()
			if code, out := writer.side.adminPost(b, "/v1/certificates", string(body)); code != 200 && code != 201 {
				b.Fatalf("import on %s: %d %s", writer.name, code, out)
			}
			deadline := start.Add(fleetBound)
			for {
				err := f.allHostsServe(name, l.serial)()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("change %d: not served everywhere within %v: %v", i+1, fleetBound, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
			took = append(took, time.Since(start))
		}
	}
	b.StopTimer()
	slices.Sort(took)
	pct := func(p float64) float64 {
		return float64(took[min(len(took)-1, int(p*float64(len(took))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(len(took)), "changes")
}
