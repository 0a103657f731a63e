package nginx_test

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// BenchmarkRenewalWave measures handshakes while a wave of hot names is
// renewed at once: the Lua module with pre-warming (the default: the new
// certificates are fetched and parsed in a timer, the old ones served
// meanwhile) and with `prewarm = false` (each worker's next handshake for
// a renewed name fetches and parses it), each in an nginx of its own with
// 2 workers that both hold every name. Clients make full handshakes over
// random names of the set, checking that each is served the name's old or
// new certificate: for `before` seconds, then the sidecar renews every
// name (one change feed version each) and they go on for `window`
// seconds (3 s and 4 s; 0.5 s and 1.5 s below 1,000 names). Run once
// (-benchtime 1x); CERTSERVER_BENCH_WAVE sets the number of names
// (default 1,000; 50 in scripts/bench.sh --short).
//
//	go test -run '^$' -bench RenewalWave -benchtime 1x ./nginx/
//
// Reported per side (on = pre-warm, off = prewarm = false): handshake p50
// and p99 before the wave and during it (µs), and the parses the workers
// did on the handshake path during it.
func BenchmarkRenewalWave(b *testing.B) {
	wave := 1000
	if s := os.Getenv("CERTSERVER_BENCH_WAVE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("CERTSERVER_BENCH_WAVE=%q: want a positive number of names", s)
		}
		wave = n
	}
	before, window := 3*time.Second, 4*time.Second
	if wave < 1000 { // scripts/bench.sh --short
		before, window = 500*time.Millisecond, 1500*time.Millisecond
	}
	const clients = 4

	ca := newTestCA(b)
	fbCert, fbKey := ca.issue(b, "fallback.invalid").writeFiles(b, b.TempDir(), "fallback")
	names := make([]string, wave)
	for i := range names {
		names[i] = fmt.Sprintf("wave%d.bench.test", i)
	}

	metrics := make(map[string]float64)
	for _, side := range []struct {
		label, configure string
	}{
		{"on", ""},
		{"off", "prewarm = false,"},
	} {
		sidecar := startFakeSidecar(b)
		sidecar.leafFormat = true
		old := make(map[string]*big.Int, wave)
		renewed := make(map[string]answer, wave)
		serials := make(map[string][2]*big.Int, wave)
		for _, name := range names {
			o, r := ca.issue(b, name), ca.issue(b, name)
			sidecar.set(name, certAnswer(o, 3600))
			old[name] = o.serial
			renewed[name] = certAnswer(r, 3600)
			serials[name] = [2]*big.Int{o.serial, r.serial}
		}
		ngx := nginxtest.Start(b, nginxtest.Options{
			Sidecar: "unix:" + sidecar.sock, FallbackCert: fbCert, FallbackKey: fbKey,
			Stats: true, Configure: side.configure,
		})
		feedsRunning(b, ngx)
		for _, name := range names {
			if err := allServe(ngx, name, old[name])(); err != nil {
				b.Fatal(err)
			}
		}

		quiet := randomHandshakes(b, ngx.HTTPSAddr(), names, serials, clients, before)
		statsBefore := statsSum(b, ngx)
		sidecar.changeAll(renewed)
		during := randomHandshakes(b, ngx.HTTPSAddr(), names, serials, clients, window)
		statsAfter := statsSum(b, ngx)

		metrics[side.label+"-before-p50-µs"] = percentile(quiet, 0.50)
		metrics[side.label+"-before-p99-µs"] = percentile(quiet, 0.99)
		metrics[side.label+"-wave-p50-µs"] = percentile(during, 0.50)
		metrics[side.label+"-wave-p99-µs"] = percentile(during, 0.99)
		metrics[side.label+"-wave-hs-parses"] = float64(statsAfter["parse_handshake"] - statsBefore["parse_handshake"])
		b.Logf("%s: %d handshakes before, %d during the wave of %d; parses on the handshake path %d, in timers %d; names pre-warmed %d, dropped %d",
			side.label, len(quiet), len(during), wave,
			statsAfter["parse_handshake"]-statsBefore["parse_handshake"], statsAfter["parse_timer"]-statsBefore["parse_timer"],
			statsAfter["prewarm_fetched"]+statsAfter["prewarm_loaded"]-statsBefore["prewarm_fetched"]-statsBefore["prewarm_loaded"],
			statsAfter["prewarm_dropped"]-statsBefore["prewarm_dropped"])
		ngx.AssertCleanErrorLog(b)
	}
	// Reported last: the timer's resets while nginx starts would drop them.
	for unit, v := range metrics {
		b.ReportMetric(v, unit)
	}
}

// randomHandshakes makes full handshakes with addr from the given number
// of clients, each for a random name of names, for d, checking that each
// leaf served is one of the name's serials. It returns the handshakes'
// durations in µs.
func randomHandshakes(b *testing.B, addr string, names []string, serials map[string][2]*big.Int, clients int, d time.Duration) []float64 {
	var (
		mu    sync.Mutex
		lat   []float64
		wg    sync.WaitGroup
		first error
	)
	end := time.Now().Add(d)
	for range clients {
		wg.Go(func() {
			var mine []float64
			for time.Now().Before(end) {
				name := names[rand.IntN(len(names))]
				start := time.Now()
				certs, err := handshake(addr, name, nil)
				took := time.Since(start)
				if err == nil {
					if s := certs[0].SerialNumber; s.Cmp(serials[name][0]) != 0 && s.Cmp(serials[name][1]) != 0 {
						err = fmt.Errorf("%s served serial %v, neither the old nor the new certificate", name, s)
					}
				}
				if err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					return
				}
				mine = append(mine, float64(took.Microseconds()))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
	if len(lat) == 0 {
		b.Fatal("no handshake finished")
	}
	return lat
}

// percentile returns the q-quantile of xs (nearest rank).
func percentile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
