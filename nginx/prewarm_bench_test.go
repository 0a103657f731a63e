package nginx_test

import (
	"bytes"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// BenchmarkRenewalWave measures the handshake path while a wave of hot
// names is renewed at once: the Lua module with pre-warming (the default:
// the new certificates are fetched and parsed in a timer, the old ones
// served meanwhile) and with `prewarm = false` (each worker's next
// handshake for a renewed name fetches and parses it), each in an nginx
// of its own with 2 workers that both hold every name, both running
// throughout. The certificates come from the test's CA and sidecar (the
// fake one of lua_test.go, answering from memory, in this process): every
// new certificate is issued before the rounds, so no CA works while
// handshakes are measured; the sidecar's answers change, the change feed
// announces them (one version a name) and the workers fetch and parse
// them inside the measured window.
//
// Rounds alternate the two sides, each round quiet then wave: clients
// (4, in this process) make full handshakes over random names of the set
// for a window of 6 s (quiet), then every name is renewed (to the other
// of its two certificates) and they go on: the wave window is the 6 s
// from the renewal, on both sides. Windows of equal length at the same
// offered load are what is compared: the pre-warm spreads a wave over
// tens of seconds at a small share of a worker (see prewarm_rest in the
// module), and a window that lasted until the pre-warm finished would
// average its cost over a longer window than the one without the
// pre-warm, which parses most names in the first seconds, on the
// handshakes. With pre-warming the clients go on after the wave window
// until every worker has pre-warmed every name, so that the next window
// starts quiet; those handshakes are logged (their p99) but not pooled,
// and the time from the renewal until then is reported (asked only once
// the wave window is over, so never less than the window: a pre-warm
// that finishes within it shows as the window's length, and the
// stats() line prewarm_wait, the longest a name waited, tells more). Each served
// leaf is checked to be the name's old or new certificate. Between rounds
// every name is served once more by every worker, so that a quiet window
// parses nothing. 3 rounds (1 below 1,000 names, with 0.5 s windows);
// CERTSERVER_BENCH_WAVE sets the number of names (default 1,000; 50 in
// scripts/bench.sh --short). Run once (-benchtime 1x):
//
//	go test -run '^$' -bench RenewalWave -benchtime 1x ./nginx/
//
// Reported per side (on = pre-warm, off = prewarm = false), over the
// rounds' handshakes put together: p50 and p99 in the quiet windows and
// in the wave windows (µs); the parses on the handshake path per wave
// (in the wave window and after it, until the pre-warm finished);
// the median over the rounds of each round's wave p99 over its quiet p99
// (the rounds' p99s move with the machine's load; a round's two windows
// are seconds apart), and (on) the same of the handshakes after the wave
// window until the pre-warm finished; the median over the rounds of the workers' CPU
// time from the renewal until the clients stop beyond what its
// handshakes cost at the quiet window's rate, per parse of a renewed
// name (in a timer or on the handshake path; from /proc, so the
// machine's load blurs it less than latency; with the pre-warm spread
// over tens of seconds this is noise, a few percent of the handshakes'
// CPU); (on) the seconds from the renewal until every worker had
// pre-warmed the wave; and (on) the workers' CPU per name pre-warmed in
// a wave renewed once more after the rounds with no handshake made
// (on-prewarm-cpu-µs/name; by names pre-warmed, whether parsed again or
// not). Logged
// per window: its p99, the CPU of each nginx worker and of this process
// (the clients and the fake sidecar), the machine's busy CPUs and its
// load average, and the pre-warm's timings from the module's stats().
func BenchmarkRenewalWave(b *testing.B) {
	wave := 1000
	if s := os.Getenv("CERTSERVER_BENCH_WAVE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("CERTSERVER_BENCH_WAVE=%q: want a positive number of names", s)
		}
		wave = n
	}
	window, rounds := 6*time.Second, 3
	if wave < 1000 { // scripts/bench.sh --short
		window, rounds = 500*time.Millisecond, 1
	}
	const clients = 4

	ca := newTestCA(b)
	fbCert, fbKey := ca.issue(b, "fallback.invalid").writeFiles(b, b.TempDir(), "fallback")
	names := make([]string, wave)
	for i := range names {
		names[i] = fmt.Sprintf("wave%d.bench.test", i)
	}

	type side struct {
		label   string
		sidecar *fakeSidecar
		ngx     *nginxtest.Nginx
		certs   [2]map[string]answer // the two certificates of each name
		serials map[string][2]*big.Int
		quiet   []float64
		during  []float64
		parses  int
		ratios  []float64     // each round's wave p99 / quiet p99
		after   []float64     // the same of the handshakes after the window
		perName []float64     // each round's worker CPU a renewed name cost, µs
		prewarm time.Duration // summed over the rounds
	}
	var sides []*side
	for _, s := range []struct{ label, configure string }{
		{"on", ""},
		{"off", "prewarm = false,"},
	} {
		sd := &side{label: s.label, sidecar: startFakeSidecar(b), serials: make(map[string][2]*big.Int, wave)}
		sd.sidecar.leafFormat = true
		sd.certs = [2]map[string]answer{make(map[string]answer, wave), make(map[string]answer, wave)}
		for _, name := range names {
			o, r := ca.issue(b, name), ca.issue(b, name)
			sd.certs[0][name], sd.certs[1][name] = certAnswer(o, 3600), certAnswer(r, 3600)
			sd.sidecar.set(name, sd.certs[0][name])
			sd.serials[name] = [2]*big.Int{o.serial, r.serial}
		}
		sd.ngx = nginxtest.Start(b, nginxtest.Options{
			Sidecar: "unix:" + sd.sidecar.sock, FallbackCert: fbCert, FallbackKey: fbKey,
			Stats: true, Configure: s.configure,
		})
		feedsRunning(b, sd.ngx)
		sides = append(sides, sd)
	}
	// warm has every worker of sd serve every name its certificate i,
	// waiting for workers that have not applied the renewal yet: without
	// the pre-warm a worker drops a renewed name at its next poll of the
	// feed, which can come after a short wave window.
	warm := func(sd *side, i int) {
		for _, name := range names {
			eventually(b, 2*time.Minute, "every worker of the "+sd.label+" side serves "+name+"'s certificate "+strconv.Itoa(i),
				allServe(sd.ngx, name, sd.serials[name][i]))
		}
	}
	for _, sd := range sides {
		warm(sd, 0)
	}

	for r := range rounds {
		next := (r + 1) % 2 // the certificate each name is renewed to
		for _, sd := range sides {
			pids := processTree(sd.ngx.PID())[1:]
			c0 := takeCPU(b, pids)
			quiet := randomHandshakes(b, sd.ngx.HTTPSAddr(), names, sd.serials, clients, window, nil)
			c1 := takeCPU(b, pids)
			statsBefore := statsSum(b, sd.ngx)
			sd.sidecar.changeAll(sd.certs[next])
			var done func() bool
			if sd.label == "on" {
				done = func() bool {
					st := statsSum(b, sd.ngx)
					n := 0
					for _, k := range []string{"prewarm_fetched", "prewarm_loaded", "prewarm_dropped"} {
						n += st[k] - statsBefore[k]
					}
					return n >= wave*sd.ngx.Workers()
				}
			}
			start := time.Now()
			all := randomHandshakes(b, sd.ngx.HTTPSAddr(), names, sd.serials, clients, window, done)
			took := time.Since(start)
			c2 := takeCPU(b, pids)
			statsAfter := statsSum(b, sd.ngx)
			if done != nil {
				sd.prewarm += took
			}
			// The wave window: the handshakes started within window of
			// the renewal; after: those until the pre-warm finished (a
			// client may start one more as the window ends: the window's).
			during, after := all, []timedHandshake(nil)
			if done != nil {
				during = nil
				for _, h := range all {
					if h.at.Sub(start) < window {
						during = append(during, h)
					} else {
						after = append(after, h)
					}
				}
			}
			parses := statsAfter["parse_handshake"] - statsBefore["parse_handshake"]
			sd.quiet = append(sd.quiet, lats(quiet)...)
			sd.during = append(sd.during, lats(during)...)
			sd.parses += parses
			sd.ratios = append(sd.ratios, percentile(lats(during), 0.99)/percentile(lats(quiet), 0.99))
			// The workers' CPU in the wave beyond what its handshakes cost
			// at the quiet window's rate, per name a worker took in (a
			// pre-warm, or a parse on the handshake path).
			perHS := float64(c1.workerSum()-c0.workerSum()) / float64(len(quiet))
			extra := float64(c2.workerSum()-c1.workerSum()) - perHS*float64(len(all))
			taken := statsAfter["parse_timer"] + statsAfter["parse_handshake"] - statsBefore["parse_timer"] - statsBefore["parse_handshake"]
			if taken > 0 {
				sd.perName = append(sd.perName, extra/float64(taken)/float64(time.Microsecond))
			}
			b.Logf("round %d %s quiet: %d handshakes, p50 %.2f ms p99 %.2f ms; %s", r+1, sd.label,
				len(quiet), percentile(lats(quiet), 0.50)/1000, percentile(lats(quiet), 0.99)/1000, c1.since(c0))
			b.Logf("round %d %s wave: %d handshakes, p50 %.2f ms p99 %.2f ms, p99 per second %s", r+1, sd.label,
				len(during), percentile(lats(during), 0.50)/1000, percentile(lats(during), 0.99)/1000, perSecond(during, start))
			if len(after) > 0 {
				sd.after = append(sd.after, percentile(lats(after), 0.99)/percentile(lats(quiet), 0.99))
				b.Logf("round %d %s after the wave window, until the pre-warm finished: %d handshakes, p50 %.2f ms p99 %.2f ms, p99 per second %s",
					r+1, sd.label, len(after), percentile(lats(after), 0.50)/1000, percentile(lats(after), 0.99)/1000, perSecond(after, start.Add(window)))
			}
			b.Logf("round %d %s from the renewal on: %s", r+1, sd.label, c2.since(c1))
			b.Logf("round %d %s: parses on the handshake path %d, in timers %d; names pre-warmed %d, dropped %d; until the clients stopped %v",
				r+1, sd.label, parses, statsAfter["parse_timer"]-statsBefore["parse_timer"],
				statsAfter["prewarm_fetched"]+statsAfter["prewarm_loaded"]-statsBefore["prewarm_fetched"]-statsBefore["prewarm_loaded"],
				statsAfter["prewarm_dropped"]-statsBefore["prewarm_dropped"], took.Round(time.Millisecond))
			warm(sd, next)
		}
	}
	// The pre-warm's CPU a renewed name, measured apart: spread over tens
	// of seconds it is a few percent of what the handshakes cost in that
	// time, below what subtracting them at the quiet window's rate can
	// resolve. Every name renewed once more with no handshake made, the
	// workers' CPU until every worker has pre-warmed every name (asked
	// every 2 s), per name a worker pre-warmed (fetched, or loaded from
	// the shared dict: a version the worker still holds parsed is not
	// parsed again, so parses alone would undercount).
	prewarmCPU := func(sd *side) float64 {
		pids := processTree(sd.ngx.PID())[1:]
		st0 := statsSum(b, sd.ngx)
		c0 := takeCPU(b, pids)
		sd.sidecar.changeAll(sd.certs[(rounds+1)%2])
		var st map[string]int
		for end := time.Now().Add(3 * time.Minute); ; {
			time.Sleep(2 * time.Second)
			st = statsSum(b, sd.ngx)
			n := 0
			for _, k := range []string{"prewarm_fetched", "prewarm_loaded", "prewarm_dropped"} {
				n += st[k] - st0[k]
			}
			if n >= wave*sd.ngx.Workers() {
				break
			}
			if time.Now().After(end) {
				b.Fatalf("%d of %d names pre-warmed 3 minutes after the renewal", n, wave*sd.ngx.Workers())
			}
		}
		c1 := takeCPU(b, pids)
		warmed := st["prewarm_fetched"] + st["prewarm_loaded"] - st0["prewarm_fetched"] - st0["prewarm_loaded"]
		b.Logf("on, no handshakes: %d names pre-warmed (%d parsed) in %v; %s", warmed, st["parse_timer"]-st0["parse_timer"],
			c1.at.Sub(c0.at).Round(time.Millisecond), c1.since(c0))
		return float64(c1.workerSum()-c0.workerSum()) / float64(max(warmed, 1)) / float64(time.Microsecond)
	}
	idleCPU := prewarmCPU(sides[0])
	if samples, err := workerSamples(sides[0].ngx); err == nil {
		for _, k := range []string{"feed_poll", "prewarm_wait", "prewarm_fetched", "prewarm_loaded", "parse_timer", "fetch"} {
			if xs := samples[k]; len(xs) > 0 {
				b.Logf("on, stats() %s: last %d, p50 %.2f ms, p99 %.2f ms, max %.2f ms", k, len(xs),
					percentile(xs, 0.50)*1000, percentile(xs, 0.99)*1000, slices.Max(xs)*1000)
			}
		}
	}
	for _, sd := range sides {
		sd.ngx.AssertCleanErrorLog(b)
	}
	// Reported last: the timer's resets while nginx starts would drop them.
	for _, sd := range sides {
		b.ReportMetric(percentile(sd.quiet, 0.50), sd.label+"-before-p50-µs")
		b.ReportMetric(percentile(sd.quiet, 0.99), sd.label+"-before-p99-µs")
		b.ReportMetric(percentile(sd.during, 0.50), sd.label+"-wave-p50-µs")
		b.ReportMetric(percentile(sd.during, 0.99), sd.label+"-wave-p99-µs")
		b.ReportMetric(float64(sd.parses)/float64(rounds), sd.label+"-wave-hs-parses")
		b.ReportMetric(percentile(sd.ratios, 0.50), sd.label+"-wave-p99-ratio")
		if len(sd.after) > 0 {
			b.ReportMetric(percentile(sd.after, 0.50), sd.label+"-after-p99-ratio")
		}
		if len(sd.perName) > 0 {
			b.ReportMetric(percentile(sd.perName, 0.50), sd.label+"-wave-cpu-µs/name")
		}
	}
	b.ReportMetric(sides[0].prewarm.Seconds()/float64(rounds), "on-prewarm-s")
	b.ReportMetric(idleCPU, "on-prewarm-cpu-µs/name")
}

// timedHandshake is one handshake of randomHandshakes: when it started
// and how long it took.
type timedHandshake struct {
	at  time.Time
	lat time.Duration
}

// lats returns the latencies of hs in µs.
func lats(hs []timedHandshake) []float64 {
	xs := make([]float64, len(hs))
	for i, h := range hs {
		xs[i] = float64(h.lat.Microseconds())
	}
	return xs
}

// perSecond returns the p99 of the handshakes started in each second
// from start, in ms.
func perSecond(hs []timedHandshake, start time.Time) string {
	var bins [][]float64
	for _, h := range hs {
		i := max(int(h.at.Sub(start)/time.Second), 0)
		for len(bins) <= i {
			bins = append(bins, nil)
		}
		bins[i] = append(bins[i], float64(h.lat.Microseconds()))
	}
	var out []string
	for _, xs := range bins {
		if len(xs) > 0 {
			out = append(out, fmt.Sprintf("%.1f", percentile(xs, 0.99)/1000))
		}
	}
	return "[" + strings.Join(out, " ") + "] ms"
}

// randomHandshakes makes full handshakes with addr from the given number
// of clients, each for a random name of names, checking that each leaf
// served is one of the name's serials: for d, and with done, then until
// done (asked every 250 ms) says so, at most 3 minutes more.
func randomHandshakes(b *testing.B, addr string, names []string, serials map[string][2]*big.Int, clients int, d time.Duration, done func() bool) []timedHandshake {
	var (
		mu    sync.Mutex
		hs    []timedHandshake
		wg    sync.WaitGroup
		first error
		stop  = make(chan struct{})
	)
	if done == nil {
		time.AfterFunc(d, func() { close(stop) })
	} else {
		go func() {
			defer close(stop)
			time.Sleep(d)
			for end := time.Now().Add(3 * time.Minute); !done() && time.Now().Before(end); {
				time.Sleep(250 * time.Millisecond)
			}
		}()
	}
	for range clients {
		wg.Go(func() {
			var mine []timedHandshake
			for {
				select {
				case <-stop:
					mu.Lock()
					hs = append(hs, mine...)
					mu.Unlock()
					return
				default:
				}
				name := names[rand.IntN(len(names))]
				start := time.Now()
				certs, err := handshake(addr, name, nil)
				took := time.Since(start)
				if err == nil {
					if s := certs[0].SerialNumber; s.Cmp(serials[name][0]) != 0 && s.Cmp(serials[name][1]) != 0 {
						err = fmt.Errorf("%s served serial %v, neither of its certificates", name, s)
					}
				}
				if err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					<-stop
					return
				}
				mine = append(mine, timedHandshake{start, took})
			}
		})
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
	if len(hs) == 0 {
		b.Fatal("no handshake finished")
	}
	return hs
}

// percentile returns the q-quantile of xs (nearest rank).
func percentile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// workerSamples reads every worker's stats() and returns, by step, the
// durations of all workers in seconds.
func workerSamples(ngx *nginxtest.Nginx) (map[string][]float64, error) {
	seen := make(map[string]bool)
	out := make(map[string][]float64)
	for range maxSweep {
		body, pid, err := statsBody(ngx.HTTPSAddr(), nginxtest.StatsPath)
		if err != nil {
			return nil, err
		}
		if seen[pid] {
			continue
		}
		seen[pid] = true
		steps, err := nginxtest.ParseStats(body)
		if err != nil {
			return nil, err
		}
		for k, st := range steps {
			for _, x := range st.Samples {
				out[k] = append(out[k], x.Seconds())
			}
		}
		if len(seen) == ngx.Workers() {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%d stats requests reached %d of %d workers", maxSweep, len(seen), ngx.Workers())
}

// cpuSnap is the CPU time used so far by nginx's workers, this process and
// the machine, and the load average, at one moment.
type cpuSnap struct {
	at          time.Time
	workers     []time.Duration
	self        time.Duration
	busy, total int64 // jiffies of all CPUs, from /proc/stat
	load        string
}

func takeCPU(b *testing.B, workers []int) cpuSnap {
	b.Helper()
	s := cpuSnap{at: time.Now(), self: processCPU(b, []int{os.Getpid()})}
	for _, p := range workers {
		s.workers = append(s.workers, processCPU(b, []int{p}))
	}
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := bytes.Cut(st, []byte("\n"))
	for i, f := range strings.Fields(string(line))[1:] {
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			b.Fatalf("/proc/stat: %v", err)
		}
		s.total += v
		if i != 3 && i != 4 { // idle, iowait
			s.busy += v
		}
	}
	la, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	s.load = strings.Join(strings.Fields(string(la))[:3], " ")
	return s
}

// workerSum is the CPU time of all the workers.
func (c cpuSnap) workerSum() time.Duration {
	var t time.Duration
	for _, w := range c.workers {
		t += w
	}
	return t
}

// since says what was used between o and c: each worker's and this
// process's CPU in % of one CPU, the machine's busy CPUs.
func (c cpuSnap) since(o cpuSnap) string {
	wall := c.at.Sub(o.at)
	var ws []string
	for i := range c.workers {
		if i < len(o.workers) {
			ws = append(ws, fmt.Sprintf("%.0f%%", 100*float64(c.workers[i]-o.workers[i])/float64(wall)))
		}
	}
	return fmt.Sprintf("CPU: workers %s, this process (clients, fake sidecar) %.0f%%, machine %.2f of %d CPUs busy; load %s",
		strings.Join(ws, " "), 100*float64(c.self-o.self)/float64(wall),
		float64(c.busy-o.busy)/float64(c.total-o.total)*float64(runtime.NumCPU()), runtime.NumCPU(), c.load)
}
