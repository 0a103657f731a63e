package nginx_test

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkPeers serves the same certificates from three servers side by
// side in one run and measures each the same way, at every size of
// CERTSERVER_BENCH_PEERS (names, default "10000,50000"), as a
// sub-benchmark names=N:
//
//   - certserver: `certserver serve` built from this tree with its default
//     configuration on a store holding the N certificates, and nginx with
//     the project's snippets as shipped (nginxtest: 2 workers, the
//     snippet's shared dict and the Lua module's default options);
//   - caddy: Caddy loading the same certificates from a folder of PEM
//     files (tls.certificates.load_folders, the cache sized to hold them
//     all; Caddy's default of 10,000 would drop the rest), the binary
//     CERTSERVER_BENCH_CADDY (default: caddy on the PATH);
//   - static: nginx with one server {} block per name, each with its own
//     ssl_certificate file, as a host of many sites is configured
//     without certserver (2 workers, no Lua module).
//
// The certificates are ECDSA P-256 leaves, each with its own key, signed
// by one ECDSA intermediate under a root, for random names; every server
// sends the leaf and the intermediate.
//
// For each server it reports:
//
//   - <server>-start-ms: from starting its processes until it serves the
//     right certificate for a name;
//   - <server>-first-p50-µs, -first-p99-µs: the first handshake for a
//     name the server has never been asked for, CERTSERVER_BENCH_PEER_FIRST
//     (1,000) names, one client, the three servers in turn;
//   - <server>-warm-passes: the warm-up's passes over every name. On the
//     certserver side each pass sends every name's handshake to one nginx
//     worker (from local ports the kernel routes to it: nginx listens
//     with reuseport), until the Lua module's parse counters (nginxtest
//     Options.Stats) say that every worker has parsed every name, the
//     steady state of a host whose names are all in use: with 2 workers,
//     2 passes. Caddy and static nginx get as many passes, so every name
//     has as many handshakes on each server;
//   - <server>-hs/s and <server>-cpu-µs/hs: handshakes per second over
//     random names from 4 concurrent clients, CERTSERVER_BENCH_PEER_HS
//     (12,000) per server in 6 rounds whose order rotates, after the
//     warm-up; and the CPU time its processes spent per handshake, which
//     the clients sharing the CPUs do not blur. certserver/caddy and
//     certserver/static are the ratios of the rates;
//   - certserver-wN-hs-parses, certserver-hs-parses: the records nginx
//     worker N (by process ID) parsed on the handshake path during the
//     rounds, and all workers together: 0 when every worker's LRU
//     (lru_size) holds every name. Caddy and static nginx parse every
//     certificate when they load it and never on a handshake;
//   - <server>-pss-MB, -rss-MB: the memory of all its processes after the
//     rounds (nginx master and workers, and the sidecar for certserver),
//     from /proc/PID/smaps_rollup: the sum of Pss (each shared page
//     counted once) and of Rss (shared pages once per process), and the
//     Pss split into anonymous, file-backed and shared memory (nginx's
//     lua_shared_dict) as -anon-MB, -file-MB, -shmem-MB;
//   - certserver-nginx-pss-MB, certserver-sidecar-pss-MB: certserver's
//     Pss split into nginx's processes and the sidecar's;
//     certserver-worker-anon-MB: an nginx worker's anonymous memory
//     (Anonymous in smaps_rollup, the mean of the workers), and
//     certserver-worker-KB/name the same divided by the names (every
//     worker holds every name; the worker's own base of a few MB
//     included);
//   - <server>-new-ms: from writing a certificate for a new name the way
//     that server takes it (certserver: POST /v1/certificates to the
//     admin API; caddy: a new file in the folder and POST /load to its
//     admin API; static: a new server block and file, and a reload with
//     SIGHUP) until a handshake for that name serves it.
//
// Every handshake is a new TCP connection without resumption whose leaf
// must be the name's own certificate: a fallback or another name's is a
// failure, not a handshake, counted in <server>-failures (with the
// first logged) and left out of every other figure. The client offers X25519 and P-256 (Go's
// default would prefer X25519MLKEM768, which OpenSSL 3.0 lacks) and the TLS
// version the certserver side negotiates; every handshake with every
// server must agree on both: kex-curve is the TLS group's code point (29:
// X25519), tls-version the protocol's (771: TLS 1.2, 772: TLS 1.3).
// One op is the whole scenario:
//
//	go test -run '^$' -bench '^BenchmarkPeers$' -benchtime 1x -timeout 60m ./nginx/
func BenchmarkPeers(b *testing.B) {
	sizes := peerSizes(b)
	caddy := caddyBinary(b)
	b.Logf("caddy: %s", caddy.version)
	for _, n := range sizes {
		b.Run(fmt.Sprintf("names=%d", n), func(b *testing.B) {
			if b.N != 1 {
				b.Fatalf("b.N = %d: run with -benchtime 1x; one op is the whole scenario", b.N)
			}
			benchPeers(b, caddy, n)
		})
	}
}

// peerSizes reads CERTSERVER_BENCH_PEERS.
func peerSizes(b *testing.B) []int {
	v := os.Getenv("CERTSERVER_BENCH_PEERS")
	if v == "" {
		return []int{10_000, 50_000}
	}
	var sizes []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(f), "_", ""))
		if err != nil || n < 10 {
			b.Fatalf("CERTSERVER_BENCH_PEERS=%q: want sizes of at least 10 names, comma-separated", v)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// peerEnvInt reads a positive integer from env, def when it is unset.
func peerEnvInt(b *testing.B, env string, def int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", env, v)
	}
	return n
}

// peer is one of the servers compared: where it listens, which processes
// are its, and what was measured.
type peer struct {
	name  string
	addr  string
	pids  func() []int // its processes, for CPU and memory
	start time.Duration
	// failures are the handshakes that did not serve the name's own
	// certificate (a fallback, an error); firstErr the first of them.
	mu       sync.Mutex
	failures int
	firstErr error
	first    []time.Duration
	hs       int
	wall     time.Duration
	cpu      time.Duration
}

// fail counts a handshake that did not serve the name's certificate.
func (p *peer) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failures++
	if p.firstErr == nil {
		p.firstErr = err
	}
}

func benchPeers(b *testing.B, caddy caddyBin, n int) {
	const (
		rounds  = 6
		clients = 4
	)
	perSide := peerEnvInt(b, "CERTSERVER_BENCH_PEER_HS", 12_000)
	firsts := min(peerEnvInt(b, "CERTSERVER_BENCH_PEER_FIRST", 1000), n-1)

	t0 := time.Now()
	set := newPeerSet(b, n+3)
	// The last three are the new names of the -new-ms measurement, one
	// per server, asked for by nobody before.
	fresh := set.leaves[n:]
	set.leaves = set.leaves[:n]
	for _, l := range fresh {
		if err := os.Remove(l.file); err != nil { // Caddy would load it at start
			b.Fatal(err)
		}
	}
	b.Logf("%d certificates minted and written in %v", n, time.Since(t0).Round(time.Millisecond))

	cs := startPeerCertserver(b, set)
	static := startPeerStatic(b, set)
	cd := startPeerCaddy(b, caddy, set)
	peers := []*peer{cs.peer, cd.peer, static.peer}

	// The version the certserver side negotiates is the one every
	// handshake uses.
	st, err := probeTLS(cs.addr, set.leaves[0])
	if err != nil {
		b.Fatal(err)
	}
	hc := peerClient{version: st.Version}
	b.Logf("key exchange %s, %s, for all three", st.CurveID, tls.VersionName(st.Version))

	// First handshakes: names 1..firsts, never asked for before.
	for i := 1; i <= firsts; i++ {
		for k := range peers {
			p := peers[(i+k)%len(peers)]
			d, err := hc.handshake(p.addr, set.leaves[i])
			if err != nil {
				p.fail(err)
				continue
			}
			p.first = append(p.first, d)
		}
	}

	// The warm-up: every name through every nginx worker on the
	// certserver side, then as many handshakes of every name on the
	// others.
	t0 = time.Now()
	passes := cs.warm(b, hc, set)
	b.Logf("certserver: warmed in %d passes over the %d names (%v): every worker parsed every name", passes, n, time.Since(t0).Round(time.Millisecond))
	for _, p := range []*peer{cd.peer, static.peer} {
		t0 = time.Now()
		order := rand.Perm(n)
		_, failed := hc.run(p.addr, set, 8, passes*n, func(_, i int) int { return order[i%n] }, p.fail)
		b.Logf("%s: warmed in %d passes over the %d names (%v, %d failed)", p.name, passes, n, time.Since(t0).Round(time.Millisecond), failed)
	}
	parsed, err := cs.routes.parses(cs.addr)
	if err != nil {
		b.Fatal(err)
	}

	per := max(perSide/rounds, clients)
	b.ResetTimer()
	for r := range rounds {
		for k := range peers {
			p := peers[(r+k)%len(peers)]
			cpu0 := processCPU(b, p.pids())
			start := time.Now()
			ok, _ := hc.run(p.addr, set, clients, per, func(c, _ int) int { return rand.IntN(n) }, p.fail)
			p.wall += time.Since(start)
			p.cpu += processCPU(b, p.pids()) - cpu0
			p.hs += ok
		}
	}
	b.StopTimer()
	// Reported after the rounds: ResetTimer drops the metrics before it.
	for _, p := range peers {
		b.ReportMetric(float64(passes), p.name+"-warm-passes")
	}

	// Parses on the handshake path during the rounds, per nginx worker:
	// none when the warm-up left every name parsed in every worker and
	// its LRU (lru_size) holds them all.
	after, err := cs.routes.parses(cs.addr)
	if err != nil {
		b.Fatal(err)
	}
	total := 0
	for i, pid := range cs.routes.pids() {
		d := after[pid].handshake - parsed[pid].handshake
		total += d
		b.ReportMetric(float64(d), fmt.Sprintf("certserver-w%d-hs-parses", i+1))
		b.Logf("certserver: nginx worker %s parsed %d records on the handshake path during the rounds (%d in all since its start)", pid, d, after[pid].all)
	}
	b.ReportMetric(float64(total), "certserver-hs-parses")

	rate := map[string]float64{}
	for _, p := range peers {
		rate[p.name] = float64(p.hs) / p.wall.Seconds()
		b.ReportMetric(rate[p.name], p.name+"-hs/s")
		b.ReportMetric(float64(p.start.Microseconds())/1000, p.name+"-start-ms")
		b.ReportMetric(float64(p.failures), p.name+"-failures")
		if p.failures > 0 {
			b.Logf("%s: %d handshakes did not serve the name's certificate; the first: %v", p.name, p.failures, p.firstErr)
		}
		b.ReportMetric(micros(p.cpu)/float64(p.hs), p.name+"-cpu-µs/hs")
		f := latencies{lat: p.first}
		b.ReportMetric(micros(f.percentile(50)), p.name+"-first-p50-µs")
		b.ReportMetric(micros(f.percentile(99)), p.name+"-first-p99-µs")
		m := processMemory(b, p.pids())
		b.ReportMetric(m.pss, p.name+"-pss-MB")
		b.ReportMetric(m.rss, p.name+"-rss-MB")
		b.ReportMetric(m.pssAnon, p.name+"-anon-MB")
		b.ReportMetric(m.pssFile, p.name+"-file-MB")
		b.ReportMetric(m.pssShmem, p.name+"-shmem-MB")
		b.Logf("%s: %d processes, %s", p.name, len(p.pids()), m)
	}
	// certserver's memory split: nginx (master and workers) and the
	// sidecar; and what an nginx worker holds (its anonymous memory,
	// shared with none, and per name: every worker holds every name).
	nm := processMemory(b, processTree(cs.ngx.PID()))
	sm := processMemory(b, []int{cs.side.Process.Pid})
	b.ReportMetric(nm.pss, "certserver-nginx-pss-MB")
	b.ReportMetric(sm.pss, "certserver-sidecar-pss-MB")
	b.Logf("certserver: nginx %s; the sidecar %s", nm, sm)
	var workerAnon float64
	for _, pid := range cs.routes.pids() {
		id, err := strconv.Atoi(pid)
		if err != nil {
			b.Fatalf("worker process ID %q: %v", pid, err)
		}
		workerAnon += processMemory(b, []int{id}).anon
	}
	workerAnon /= float64(len(cs.routes))
	b.ReportMetric(workerAnon, "certserver-worker-anon-MB")
	b.ReportMetric(workerAnon*1000/float64(n), "certserver-worker-KB/name")
	b.ReportMetric(rate["certserver"]/rate["caddy"], "certserver/caddy")
	b.ReportMetric(rate["certserver"]/rate["static"], "certserver/static")
	b.ReportMetric(float64(st.CurveID), "kex-curve")
	b.ReportMetric(float64(st.Version), "tls-version")
	b.ReportMetric(float64(n), "names")

	// A new certificate, last: a reload changes what the memory figures
	// would show.
	for i, p := range []struct {
		p   *peer
		add func(peerLeaf) error
	}{{cs.peer, cs.add}, {cd.peer, cd.add}, {static.peer, static.add}} {
		l := fresh[i]
		start := time.Now()
		if err := p.add(l); err != nil {
			b.Fatalf("%s: add %s: %v", p.p.name, l.name, err)
		}
		deadline := start.Add(peerStartBound)
		for {
			_, err := hc.handshake(p.p.addr, l)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: a new certificate for %s not served within %v: %v", p.p.name, l.name, peerStartBound, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(start).Microseconds())/1000, p.p.name+"-new-ms")
	}
	cs.ngx.AssertCleanErrorLog(b)
}

// peerWarmPasses bounds the passes over every name the warm-up makes
// through one nginx worker.
const peerWarmPasses = 4

// warm makes handshakes for every name through each nginx worker, from
// local ports routed to it, until each worker's parse counters reach the
// names: every worker has parsed every name (the steady state of a host
// whose names are all in use). It returns the passes over the names it
// made, all workers together: how many handshakes each name got.
func (p *peerCertserver) warm(b *testing.B, hc peerClient, set *peerSet) int {
	b.Helper()
	n := len(set.leaves)
	done := make(map[string]int) // passes through each worker
	total := 0
	for {
		counts, err := p.routes.parses(p.addr)
		if err != nil {
			b.Fatalf("certserver warm-up: %v", err)
		}
		var short []string
		for _, pid := range p.routes.pids() {
			c := counts[pid].all
			if c >= n {
				continue
			}
			if done[pid] >= peerWarmPasses {
				b.Fatalf("certserver warm-up: nginx worker %s parsed %d records after %d passes of the %d names through it, want %d: "+
					"names dropped from its LRU (lru_size), or handshakes not reaching it", pid, c, done[pid], n, n)
			}
			short = append(short, pid)
		}
		if len(short) == 0 {
			for _, pid := range p.routes.pids() {
				b.Logf("certserver warm-up: nginx worker %s: %d passes of the names through it, %d records parsed", pid, done[pid], counts[pid].all)
			}
			p.checkHeld(b, hc, set, counts)
			return total
		}
		var wg sync.WaitGroup
		for _, pid := range short {
			order := rand.Perm(n)
			wg.Go(func() {
				hc.from(p.routes[pid]).run(p.addr, set, 0, n, func(_, i int) int { return order[i] }, p.fail)
			})
			done[pid]++
			total++
		}
		wg.Wait()
	}
}

// checkHeld makes handshakes for a sample of the names through each
// worker after the warm-up and logs the workers that parsed them again
// (counts: their parse counters before): a worker whose LRU (lru_size)
// is smaller than the names has dropped some, and the rounds will parse
// on the handshake path (certserver-hs-parses).
func (p *peerCertserver) checkHeld(b *testing.B, hc peerClient, set *peerSet, counts map[string]workerParses) {
	b.Helper()
	sample := rand.Perm(len(set.leaves))[:min(len(set.leaves), 1000)]
	var wg sync.WaitGroup
	for _, ports := range p.routes {
		wg.Go(func() {
			hc.from(ports).run(p.addr, set, 0, len(sample), func(_, i int) int { return sample[i] }, p.fail)
		})
	}
	wg.Wait()
	again, err := p.routes.parses(p.addr)
	if err != nil {
		b.Fatalf("certserver warm-up: %v", err)
	}
	for _, pid := range p.routes.pids() {
		if d := again[pid].all - counts[pid].all; d > 0 {
			b.Logf("certserver warm-up: nginx worker %s parsed %d of %d sampled names again: its LRU (lru_size) holds fewer than the %d names", pid, d, len(sample), len(set.leaves))
		}
	}
}

// peerCurves are the groups the client offers: X25519 for the key
// exchange, and P-256 because in TLS 1.2 a server picks an ECDSA
// certificate only for a client that lists its curve (RFC 8422 section
// 5.1.1; OpenSSL enforces it).
var peerCurves = []tls.CurveID{tls.X25519, tls.CurveP256}

// peerClient makes the handshakes of BenchmarkPeers: a new connection
// each, no resumption, X25519 (peerCurves), one TLS version (0: Go's default
// range); from the local ports in ports, one a client (nil: any port).
type peerClient struct {
	version uint16
	ports   []int
}

// from returns c with its connections made from ports, one a client.
func (c peerClient) from(ports []int) peerClient {
	c.ports = ports
	return c
}

// handshake makes one full handshake with addr for l's name and returns
// how long it took, from the dial until the handshake was done. The leaf
// must be l's own and valid for the name; the group must be X25519.
func (c peerClient) handshake(addr string, l peerLeaf) (time.Duration, error) {
	return c.handshakeFrom(0, addr, l)
}

// handshakeFrom is handshake from local port port (0: any).
func (c peerClient) handshakeFrom(port int, addr string, l peerLeaf) (time.Duration, error) {
	cfg := &tls.Config{
		ServerName:             l.name,
		InsecureSkipVerify:     true, // checked below: the leaf must be l's own
		SessionTicketsDisabled: true,
		CurvePreferences:       peerCurves,
		MinVersion:             c.version,
		MaxVersion:             c.version,
	}
	start := time.Now()
	conn, err := dialFrom(port, addr, cfg)
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("handshake for %s: %w", l.name, err)
	}
	defer conn.Close()
	st := conn.ConnectionState()
	leaf := st.PeerCertificates[0]
	if err := leaf.VerifyHostname(l.name); err != nil {
		return d, fmt.Errorf("handshake for %s: served a certificate for %v (a fallback?)", l.name, leaf.DNSNames)
	}
	if leaf.SerialNumber.Cmp(l.serial) != 0 {
		return d, fmt.Errorf("handshake for %s: served serial %x, want %x", l.name, leaf.SerialNumber, l.serial)
	}
	if st.CurveID != tls.X25519 || c.version != 0 && st.Version != c.version {
		return d, fmt.Errorf("handshake for %s: %s over %s, want X25519 over %s", l.name, st.CurveID, tls.VersionName(st.Version), tls.VersionName(c.version))
	}
	return d, nil
}

// run makes count handshakes with addr from clients concurrent clients
// (one per port when c has ports); client c's i-th handshake is for the
// leaf at pick(c, i). It returns how many served the right certificate
// and how many did not, each of which it hands to fail.
func (c peerClient) run(addr string, set *peerSet, clients, count int, pick func(c, i int) int, fail func(error)) (ok, failed int) {
	if c.ports != nil {
		clients = len(c.ports)
	}
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for w := range clients {
		port := 0
		if c.ports != nil {
			port = c.ports[w]
		}
		wg.Go(func() {
			good, bad := 0, 0
			for i := w; i < count; i += clients {
				if _, err := c.handshakeFrom(port, addr, set.leaves[pick(w, i)]); err != nil {
					fail(err)
					bad++
				} else {
					good++
				}
			}
			mu.Lock()
			ok, failed = ok+good, failed+bad
			mu.Unlock()
		})
	}
	wg.Wait()
	return ok, failed
}

// probeTLS makes one handshake with addr for l with Go's defaults but for
// the groups (peerCurves) and returns what was negotiated.
func probeTLS(addr string, l peerLeaf) (tls.ConnectionState, error) {
	cfg := &tls.Config{ServerName: l.name, InsecureSkipVerify: true, SessionTicketsDisabled: true, CurvePreferences: peerCurves}
	conn, err := tls.DialWithDialer(peerDialer, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, fmt.Errorf("probe %s: %w", addr, err)
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

// latencies are a phase's latencies.
type latencies struct{ lat []time.Duration }

// percentile returns the p-th percentile (0 < p <= 100), nearest rank.
func (l latencies) percentile(p float64) time.Duration {
	if len(l.lat) == 0 {
		return 0
	}
	s := slices.Clone(l.lat)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
