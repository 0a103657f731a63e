package nginx_test

import (
	"encoding/json"
	"fmt"
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

// BenchmarkFleetIssuance compares issuance through three fleet hosts
// with issuance through one, the same number of renewer workers in all
// (12: 4 on each of three hosts, or 12 on one): one PostgreSQL, one Pebble
// whose HTTP-01 validations reach a different host each time (three per
// challenge), every host a `certserver serve` with [fleet] and an nginx.
// One op is one certificate: b.N new names are added at once on host 1,
// and the time is until the admin API reports every one valid; the ACME
// account is registered, with a first certificate, before the clock
// starts. Reported: certs/s; scripts/bench.sh divides hosts=3 by hosts=1.
//
//	go test -run '^$' -bench FleetIssuance -benchtime 48x ./nginx/
//
// The work is split by leases, so three hosts should keep one host's pace
// (a ratio near 1 on one machine, where all of them share its CPUs with
// Pebble and PostgreSQL); a ratio well below 1 is time lost to claiming.
func BenchmarkFleetIssuance(b *testing.B) {
	e := startFleetACMEEnv(b)
	const totalWorkers = 12
	run := 0
	for _, hosts := range []int{1, 3} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			run++
			f := e.fleet(b, fleetACMEOptions{Hosts: hosts, Workers: totalWorkers / hosts})
			label := fmt.Sprintf("bench%d", run)
			e.pointAt(label, f.hosts) // the names point at the fleet's hosts only
			names := fleetNames(label, b.N)
			warm := "warm." + label + ".fleet.test"
			admin := newAdminClient(b, f.hosts[0].side)
			f.hosts[0].side.addDomains(b, warm)
			admin.waitValid(b, []string{warm}, issueBound)

			b.ResetTimer()
			f.hosts[0].side.addDomains(b, names...)
			admin.waitValid(b, names, time.Duration(b.N)*10*time.Second+issueBound)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
			if err := e.servesVerified(b, f, names[:1])(); err != nil {
				b.Error(err)
			}
		})
	}
}
