package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// BenchmarkMillion runs `certserver serve`, built from this tree, as its
// own process on a store of CERTSERVER_BENCH_MILLION names (1,000,000),
// each with its own certificate and domain record (see
// bench_dataset_test.go: built once, cached on disk), with the default
// configuration, and measures what a host with that many names sees:
//
//   - start-cold-ms: from starting the process until the certificate
//     endpoint answers 200 for a stored name, with the store's files
//     dropped from the page cache first, as after a reboot (target <=
//     2 s); start-ms the same on a second start, the files cached;
//   - rss-warm-MB: the process's VmRSS once it answers, its first
//     inventory of the store (which serve runs at start for the metrics
//     and the status page, reading every record) is done (inventory-s)
//     and 10,000 lookups have been answered; rss-MB the same after the
//     lookup loads below, with its anonymous and file-backed parts
//     (rss-anon-MB, rss-file-MB: pages of Badger's memory-mapped tables)
//     (target <= 256 MB);
//   - lookups/s: GET /v1/certs/{name} for random stored names over the
//     unix socket from 4 clients that each send the next request as soon
//     as the last is answered (two per CPU; the CPUs are saturated), with
//     the p99 they see (sat-p99-µs) and the sidecar's CPU time per lookup
//     (sidecar-cpu-µs/lookup);
//   - lookup-p50-µs, lookup-p99-µs: the same lookups sent at a steady
//     CERTSERVER_BENCH_RATE (2,000) a second, each at its own time from
//     16 senders, for CERTSERVER_BENCH_LOAD (10s). Every lookup is one
//     nginx cache miss, that is one first handshake, and nginx on 2 CPUs
//     completes about 1,200 handshakes a second (BenchmarkHandshake): this
//     is more than nginx on the same host can ask (target p99 <= 1 ms);
//   - first-hs-*, cached-hs-*, static-hs-*: a real nginx with the
//     project's snippets in front of that sidecar. One client makes, in
//     turn, a full TLS handshake for a name nginx has never been asked
//     for (its Lua module fetches the certificate from the sidecar and
//     parses it), one for a name every worker has cached, and one with
//     nginx's static ssl_certificate (the same ECDSA P-256 key), each
//     CERTSERVER_BENCH_FRESH (2,000) times, with their p50 and p99; and
//     what a first handshake adds to a cached one, the difference of
//     those percentiles (added-p50-µs, added-p99-µs; target p99 added
//     <= 1 ms). The client makes one handshake at a time and waits for
//     it: no handshake queues behind another of the benchmark's, and
//     every handshake, first or cached, pays the same TCP connect, so
//     the difference is what a new name adds for a user;
//   - the first handshakes' split, as nginx's Lua module times it
//     (stats(), from every worker): fetch-* (GET /v1/certs from the
//     sidecar), cert-* (parsing the leaf), chain-* (adding the parsed
//     intermediate), parse_handshake-* (the whole parse: the leaf, the
//     chain, the key when new, and checking that they match); key-parses
//     is how many keys were parsed (every leaf of the data set has the
//     same key: once per worker, the key-pool case);
//   - first-* and cached-* nginx-run-µs, nginx-wait-µs, sidecar-run-µs,
//     sidecar-wait-µs: the same two kinds again, CERTSERVER_BENCH_FRESH/2
//     of each in a row, one at a time, split by the kernel's accounting
//     (/proc/PID/task/TID/schedstat) per handshake: the time nginx's
//     workers and the sidecar's threads ran on a CPU, and waited on a
//     run queue once woken (behind other processes on a shared machine);
//   - lookup-one-*: lookups of names nobody asked for, one every 2 ms
//     from one client, so that the sidecar is idle between them as
//     between nginx's first handshakes; their p50 and p99, and the
//     sidecar's CPU time and the times its threads were put on a CPU per
//     lookup (lookup-one-sidecar-run-µs, -switches): an idle Go process
//     wakes several threads for one request, where a saturated one
//     (sidecar-cpu-µs/lookup) does not.
//
// One op is the whole scenario, measured by its own clocks:
//
//	go test -run '^$' -bench '^BenchmarkMillion$' -benchtime 1x -timeout 60m ./cmd/certserver/
//
// It needs nginx with the lua module (make test installs it).
// BenchmarkMillionEndpoint is its lookup load with the endpoint in the
// benchmark's own process, for -cpuprofile.
func BenchmarkMillion(b *testing.B) {
	cfg := millionConfig(b)
	ds := loadDataset(b, cfg.n)
	b.Logf("data set: %d names, %s", cfg.n, ds.Built)
	if size, err := dirSize(ds.Dir); err == nil {
		// Certificate records and domain records, as the store holds them.
		b.ReportMetric(float64(size)/float64(cfg.n), "store-bytes/name")
	}
	bin := buildBenchBinary(b)

	// Started once with the store's files out of the page cache, and then
	// again with them in it, as a restart finds them; the second stays.
	evictFromPageCache(b, ds.Dir)
	side := startBenchSidecar(b, bin, ds.Dir)
	b.ReportMetric(float64(side.startup.Microseconds())/1000, "start-cold-ms")
	side.stop()
	side = startBenchSidecar(b, bin, ds.Dir)
	b.ReportMetric(float64(side.startup.Microseconds())/1000, "start-ms")

	b.ReportMetric(side.waitInventory(b).Seconds(), "inventory-s")
	side.lookups(b, cfg.n, 4, 10_000, 0)
	warm := side.memory(b)
	b.ReportMetric(warm.rss, "rss-warm-MB")

	cpu0 := side.cpu(b)
	sat := side.lookups(b, cfg.n, 4, 0, cfg.load)
	cpu := side.cpu(b) - cpu0
	b.ReportMetric(sat.rate(), "lookups/s")
	b.ReportMetric(micros(sat.percentile(99)), "sat-p99-µs")
	b.ReportMetric(micros(cpu)/float64(len(sat.lat)), "sidecar-cpu-µs/lookup")

	paced := side.paced(b, cfg.n, cfg.rate, cfg.load)
	b.ReportMetric(micros(paced.percentile(50)), "lookup-p50-µs")
	b.ReportMetric(micros(paced.percentile(99)), "lookup-p99-µs")
	b.ReportMetric(paced.rate(), "paced-lookups/s")

	mem := side.memory(b)
	b.ReportMetric(mem.rss, "rss-MB")
	b.ReportMetric(mem.anon, "rss-anon-MB")
	b.ReportMetric(mem.file, "rss-file-MB")
	b.Logf("memory after warm-up: %s; after %d more lookups: %s", warm, len(sat.lat)+len(paced.lat), mem)

	// One lookup at a time, of names nobody asked for, from one client,
	// every 2 ms: the fetch of a first handshake as nginx makes it, on a
	// sidecar idle in between, without nginx. These names are not among
	// the first handshakes' below.
	k := 0
	s0 := schedOf(b, []int{side.cmd.Process.Pid}, true)
	next := time.Now()
	one := side.driveNames(b, func(*rand.Rand) string { k++; return benchName(cfg.n - 1 - cfg.fresh - k) }, 1, false,
		func(_, i int) bool {
			next = next.Add(2 * time.Millisecond)
			time.Sleep(time.Until(next))
			return i < cfg.fresh
		})
	s1 := schedOf(b, []int{side.cmd.Process.Pid}, true)
	b.ReportMetric(micros(one.percentile(50)), "lookup-one-p50-µs")
	b.ReportMetric(micros(one.percentile(99)), "lookup-one-p99-µs")
	b.ReportMetric(micros(s1.run-s0.run)/float64(len(one.lat)), "lookup-one-sidecar-run-µs")
	b.ReportMetric(float64(s1.slices-s0.slices)/float64(len(one.lat)), "lookup-one-sidecar-switches")

	hs := side.firstHandshakes(b, bin, cfg.n, cfg.fresh)
	// Every leaf of the data set has the same key: each worker parses it
	// once (the key-pool case), and key-parses says how often.
	b.ReportMetric(float64(len(hs.steps["key"])), "key-parses")
	for _, step := range []string{"fetch", "cert", "key", "chain", "parse_handshake"} {
		if s := (latencies{lat: hs.steps[step]}); len(s.lat) >= cfg.fresh/2 {
			b.ReportMetric(micros(s.percentile(50)), step+"-p50-µs")
			b.ReportMetric(micros(s.percentile(99)), step+"-p99-µs")
		}
	}
	for _, s := range []struct {
		name string
		lat  []time.Duration
	}{{"first", hs.fresh}, {"cached", hs.cached}, {"static", hs.static}} {
		r := latencies{lat: s.lat}
		b.ReportMetric(micros(r.percentile(50)), s.name+"-hs-p50-µs")
		b.ReportMetric(micros(r.percentile(99)), s.name+"-hs-p99-µs")
	}
	for _, s := range []struct {
		name string
		t    schedSplit
	}{{"first", hs.firstSched}, {"cached", hs.cachedSched}} {
		b.ReportMetric(micros(s.t.nginxRun), s.name+"-nginx-run-µs")
		b.ReportMetric(micros(s.t.nginxWait), s.name+"-nginx-wait-µs")
		b.ReportMetric(micros(s.t.sideRun), s.name+"-sidecar-run-µs")
		b.ReportMetric(micros(s.t.sideWait), s.name+"-sidecar-wait-µs")
	}
	first, cached := latencies{lat: hs.fresh}, latencies{lat: hs.cached}
	b.ReportMetric(micros(first.percentile(50)-cached.percentile(50)), "added-p50-µs")
	b.ReportMetric(micros(first.percentile(99)-cached.percentile(99)), "added-p99-µs")
	b.ReportMetric(float64(cfg.n), "names")
}

// BenchmarkMillionEndpoint is BenchmarkMillion's saturating lookup load
// with the certificate endpoint in this process, on the same cached
// store, so that a CPU profile (-cpuprofile) shows the server's side:
//
//	go test -run '^$' -bench '^BenchmarkMillionEndpoint$' -benchtime 1x \
//	    -cpuprofile bin/bench/endpoint.cpu ./cmd/certserver/
//	go tool pprof -top bin/bench/endpoint.cpu
func BenchmarkMillionEndpoint(b *testing.B) {
	cfg := millionConfig(b)
	ds := loadDataset(b, cfg.n)
	st, err := store.OpenBadger(ds.Dir, store.BadgerOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	c := newCertClient(filepath.Join(b.TempDir(), "certs.sock"))
	e, err := certserver.NewCertEndpoint(certserver.CertEndpointConfig{Socket: c.sock}, st, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Listen(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()

	c.lookups(b, cfg.n, 4, 10_000, 0)
	sat := c.lookups(b, cfg.n, 4, 0, cfg.load)
	b.ReportMetric(sat.rate(), "lookups/s")
	b.ReportMetric(micros(sat.percentile(99)), "sat-p99-µs")
}

// millionBench holds the sizes of the million benchmarks, from the
// environment.
type millionBench struct {
	n, fresh, rate int
	load           time.Duration
}

func millionConfig(b *testing.B) millionBench {
	if b.N != 1 {
		b.Fatalf("b.N = %d: run with -benchtime 1x; one op is the whole scenario", b.N)
	}
	cfg := millionBench{
		n:     benchEnvInt(b, "CERTSERVER_BENCH_MILLION", 1_000_000),
		fresh: benchEnvInt(b, "CERTSERVER_BENCH_FRESH", 2000),
		rate:  benchEnvInt(b, "CERTSERVER_BENCH_RATE", 2000),
		load:  10 * time.Second,
	}
	if v := os.Getenv("CERTSERVER_BENCH_LOAD"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("CERTSERVER_BENCH_LOAD=%q: want a positive duration", v)
		}
		cfg.load = d
	}
	// BenchmarkMillion asks for 3 sets of names nobody asked for before,
	// of up to fresh names each, from the far end of the store.
	if 3*cfg.fresh+2 > cfg.n {
		b.Fatalf("CERTSERVER_BENCH_FRESH=%d: at most %d for %d names", cfg.fresh, (cfg.n-2)/3, cfg.n)
	}
	return cfg
}

// benchEnvInt reads a positive integer from the environment variable env,
// def when it is not set.
func benchEnvInt(b *testing.B, env string, def int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
	if err != nil || n < 2 {
		b.Fatalf("%s=%q: want an integer of at least 2", env, v)
	}
	return n
}

// buildBenchBinary builds certserver from this tree, as it is released
// (no race detector, no test code), and returns its path.
func buildBenchBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "certserver")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// certClient talks to a certificate endpoint on a unix socket.
type certClient struct {
	sock string
	hc   *fasthttp.HostClient
}

func newCertClient(sock string) *certClient {
	return &certClient{sock: sock, hc: &fasthttp.HostClient{
		Addr:        "certs",
		Dial:        func(string) (net.Conn, error) { return net.Dial("unix", sock) },
		MaxConns:    64,
		ReadTimeout: 10 * time.Second,
	}}
}

// benchSidecar is a running `certserver serve` process.
type benchSidecar struct {
	*certClient
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited
	admin   string        // http://host:port
	log     string        // its log file
	startup time.Duration
}

// startBenchSidecar runs `certserver serve` on the store in dir with the
// default configuration but for where it listens (the certificate
// endpoint on a unix socket, the admin API on a free loopback port, no
// challenge listener, no ACME: issuance off), and waits until the
// certificate endpoint serves the first name. The process is stopped with
// SIGTERM when the benchmark ends.
func startBenchSidecar(b *testing.B, bin, dir string) *benchSidecar {
	b.Helper()
	return startBenchSidecarOn(b, bin, dir, false)
}

// startBenchSidecarOn is startBenchSidecar; with empty set, the store
// holds no certificate yet and the endpoint answering 404 is enough.
func startBenchSidecarOn(b *testing.B, bin, dir string, empty bool) *benchSidecar {
	b.Helper()
	return startBenchSidecarIn(b, bin, dir, empty, "")
}

// startBenchSidecarIn is startBenchSidecarOn; with procs set (a cgroup's
// cgroup.procs file), the process enters that cgroup before it execs
// certserver, so that all its memory is charged there.
func startBenchSidecarIn(b *testing.B, bin, dir string, empty bool, procs string) *benchSidecar {
	b.Helper()
	tmp := b.TempDir()
	sockDir, err := os.MkdirTemp("", "csb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(sockDir) })
	s := &benchSidecar{certClient: newCertClient(filepath.Join(sockDir, "certs.sock")), log: filepath.Join(tmp, "certserver.log")}
	conf := filepath.Join(tmp, "certserver.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `
[store]
path = %q
[certs]
socket = %q
[challenge]
listen = ""
[admin]
listen = "127.0.0.1:0"
`, dir, s.sock), 0o600); err != nil {
		b.Fatal(err)
	}
	logFile, err := os.Create(s.log)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()

	s.cmd = exec.Command(bin, "serve", "--config", conf)
	if procs != "" {
		// The shell writes its own PID, which exec keeps.
		s.cmd = exec.Command("/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, procs, bin, "serve", "--config", conf)
	}
	s.cmd.Env = append(os.Environ(), "CERTSERVER_ADMIN_TOKEN="+testToken)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.exited = make(chan struct{})
	exited := s.exited
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		s.stop()
		if b.Failed() {
			out, _ := os.ReadFile(s.log)
			b.Logf("certserver log:\n%s", out)
		}
	})

	// Poll every millisecond: a dial of a socket nobody listens on yet
	// fails at once.
	name := benchName(0)
	for {
		if code, _, err := s.get(name); err == nil && (code == fasthttp.StatusOK || empty && code == fasthttp.StatusNotFound) {
			s.startup = time.Since(start)
			break
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(s.log)
			b.Fatalf("certserver serve exited: %v\n%s", s.cmd.ProcessState, out)
		case <-time.After(time.Millisecond):
		}
		if time.Since(start) > 2*time.Minute {
			b.Fatal("the certificate endpoint did not answer within 2 minutes")
		}
	}
	out, err := os.ReadFile(s.log)
	if err != nil {
		b.Fatal(err)
	}
	m := regexp.MustCompile(`admin=(http://127\.0\.0\.1:\d+)`).FindSubmatch(out)
	if m == nil {
		b.Fatalf("no admin address in the start line:\n%s", out)
	}
	s.admin = string(m[1])
	return s
}

// stop stops the sidecar with SIGTERM, and SIGKILL if it has not exited
// 30 seconds later, and waits for it. Calling it again does nothing.
func (s *benchSidecar) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// evictFromPageCache asks the kernel to drop the cached pages of every
// file under dir (POSIX_FADV_DONTNEED), as after a reboot or after memory
// pressure made it drop them; pages a process maps stay.
func evictFromPageCache(b *testing.B, dir string) {
	b.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	})
	if err != nil {
		b.Fatal(err)
	}
}

// get asks the certificate endpoint for name and returns the status and
// the body.
func (s *certClient) get(name string) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://certs/v1/certs/" + name)
	if err := s.hc.DoTimeout(req, resp, 5*time.Second); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), bytes.Clone(resp.Body()), nil
}

// waitInventory waits until the sidecar's first inventory of the store is
// complete and returns how long it took, from the admin API's metrics.
func (s *benchSidecar) waitInventory(b *testing.B) time.Duration {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for {
		if f, ok := s.metrics(b)["certserver_inventory_duration_seconds"]; ok {
			return time.Duration(f * float64(time.Second))
		}
		if time.Now().After(deadline) {
			b.Fatal("no inventory of the store within 10 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// metrics returns the sidecar's metrics from its admin API, each sample
// by its name and labels as the text format writes them
// (`certserver_record_cache_bytes{part="used"}`).
func (s *benchSidecar) metrics(b *testing.B) map[string]float64 {
	b.Helper()
	req, err := http.NewRequest(http.MethodGet, s.admin+"/metrics", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ') // label values may hold spaces
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		if f, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = f
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatalf("metrics: %v", err)
	}
	return out
}

// latencies are the latencies of one phase, and how long it ran; failed
// lookups (counted only by a tolerant driveNames) are among them.
type latencies struct {
	lat      []time.Duration
	wall     time.Duration
	failed   int
	firstErr error
}

func (l latencies) rate() float64 { return float64(len(l.lat)) / l.wall.Seconds() }

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

// lookups asks for random stored names from clients concurrent clients,
// count lookups in all or, with count 0, for dur, and returns their
// latencies. Every answer must be a 200 with a certificate.
func (s *certClient) lookups(b *testing.B, n, clients, count int, dur time.Duration) latencies {
	b.Helper()
	start := time.Now()
	return s.drive(b, n, clients, func(c, i int) bool {
		if count > 0 {
			return i < (count+clients-1-c)/clients
		}
		return i%64 != 0 || time.Since(start) < dur
	})
}

// paced sends lookups for random stored names at rate a second for dur,
// each at its scheduled time, from 16 senders (more than the rate ever
// keeps busy), and returns their latencies. Every answer must be a 200
// with a certificate.
func (s *certClient) paced(b *testing.B, n, rate int, dur time.Duration) latencies {
	b.Helper()
	return s.pacedNames(b, func(rng *rand.Rand) string { return benchName(rng.IntN(n)) }, rate, dur, false)
}

// pacedNames is paced with the name of each lookup from pick; tolerant
// as for driveNames. When the answers are so slow that the 16 senders
// fall behind, no lookup is sent after 3 times dur: the result then
// holds fewer than rate times dur lookups.
func (s *certClient) pacedNames(b *testing.B, pick func(*rand.Rand) string, rate int, dur time.Duration, tolerant bool) latencies {
	b.Helper()
	total := int(dur.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	var next atomic.Int64
	start := time.Now()
	return s.driveNames(b, pick, 16, tolerant, func(int, int) bool {
		k := int(next.Add(1)) - 1
		if k >= total || time.Since(start) > 3*dur {
			return false
		}
		time.Sleep(time.Until(start.Add(time.Duration(k) * interval)))
		return true
	})
}

// drive runs workers senders of lookups for random names among the n
// stored ones; worker w sends its i-th lookup when more(w, i) says so, and
// stops at the first false. It returns the latencies of all lookups, and
// fails b at the first that is not a 200 with a certificate.
func (s *certClient) drive(b *testing.B, n, workers int, more func(w, i int) bool) latencies {
	b.Helper()
	return s.driveNames(b, func(rng *rand.Rand) string { return benchName(rng.IntN(n)) }, workers, false, more)
}

// driveNames is drive with the name of each lookup from pick. When
// tolerant, a lookup that is not a 200 with a certificate is counted in
// the result's failed, with the first such error, instead of failing b.
func (s *certClient) driveNames(b *testing.B, pick func(*rand.Rand) string, workers int, tolerant bool, more func(w, i int) bool) latencies {
	b.Helper()
	var (
		mu   sync.Mutex
		all  []time.Duration
		wg   sync.WaitGroup
		errs = make(chan error, workers)
		// with tolerant
		failed   int
		firstErr error
	)
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			lat := make([]time.Duration, 0, 1<<12)
			uri := make([]byte, 0, 64)
			for i := 0; more(w, i); i++ {
				uri = fmt.Appendf(uri[:0], "http://certs/v1/certs/%s", pick(rng))
				req.SetRequestURIBytes(uri)
				t0 := time.Now()
				err := s.hc.Do(req, resp)
				lat = append(lat, time.Since(t0))
				if err == nil && (resp.StatusCode() != fasthttp.StatusOK || len(resp.Body()) < 2000) {
					err = fmt.Errorf("GET %s: status %d, %d bytes", uri, resp.StatusCode(), len(resp.Body()))
				}
				if err != nil && tolerant {
					mu.Lock()
					failed++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				} else if err != nil {
					errs <- err
					return
				}
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	wall := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return latencies{lat: all, wall: wall, failed: failed, firstErr: firstErr}
}

// procMemory is a process's resident memory in MB (10^6 bytes).
type procMemory struct{ rss, anon, file, peak float64 }

func (m procMemory) String() string {
	return fmt.Sprintf("VmRSS %.0f MB (anonymous %.0f MB, file-backed %.0f MB)", m.rss, m.anon, m.file)
}

// memory reads the sidecar's resident memory from /proc/PID/status.
func (s *benchSidecar) memory(b *testing.B) procMemory {
	b.Helper()
	m, err := readProcMemory(s.cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// readProcMemory reads the resident memory of process pid from
// /proc/PID/status.
func readProcMemory(pid int) (procMemory, error) {
	var m procMemory
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	for line := range strings.SplitSeq(string(f), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *float64
		switch k {
		case "VmRSS":
			dst = &m.rss
		case "RssAnon":
			dst = &m.anon
		case "RssFile":
			dst = &m.file
		case "VmHWM":
			dst = &m.peak
		default:
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return m, fmt.Errorf("/proc status %q: %w", line, err)
		}
		*dst = kb * 1024 / 1e6
	}
	return m, nil
}

// cpu returns the CPU time the sidecar has used, user and system.
func (s *benchSidecar) cpu(b *testing.B) time.Duration {
	b.Helper()
	f, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	fields := strings.Fields(string(f[bytes.LastIndexByte(f, ')')+1:]))
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc stat: %q", f)
	}
	// USER_HZ is 100 on every Linux platform Go supports.
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// handshakeTimes are the latencies of the three kinds of handshake, and
// the Lua module's timings of the steps of the first ones, by step of its
// stats() (fetch, cert, key, chain), from all the workers.
type handshakeTimes struct {
	fresh, cached, static []time.Duration
	steps                 map[string][]time.Duration
	// firstSched and cachedSched split first and cached handshakes
	// made one at a time by the kernel's accounting.
	firstSched, cachedSched schedSplit
}

// firstHandshakes starts nginx with the project's snippets in front of the
// sidecar, with a second server whose ssl_certificate is the chain and key
// of a stored name, and makes fresh rounds of three handshakes from one
// client: a name not asked for before, a name every worker has cached, and
// that cached name on the static server, in an order that rotates.
func (s *benchSidecar) firstHandshakes(b *testing.B, bin string, n, fresh int) handshakeTimes {
	b.Helper()
	dir := b.TempDir()
	if out, err := exec.Command(bin, "fallback-cert", "--out", dir).CombinedOutput(); err != nil {
		b.Fatalf("certserver fallback-cert: %v\n%s", err, out)
	}
	warm := benchName(0)
	code, pemBody, err := s.get(warm)
	if err != nil || code != fasthttp.StatusOK {
		b.Fatalf("GET %s: %d %v", warm, code, err)
	}
	// The body is the chain, then the key.
	at := bytes.Index(pemBody, []byte("-----BEGIN PRIVATE KEY-----"))
	if at < 0 {
		b.Fatalf("GET %s: no key in the answer", warm)
	}
	staticCert, staticKey := filepath.Join(dir, "static.crt"), filepath.Join(dir, "static.key")
	if err := os.WriteFile(staticCert, pemBody[:at], 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(staticKey, pemBody[at:], 0o600); err != nil {
		b.Fatal(err)
	}
	ngx := nginxtest.Start(b, nginxtest.Options{
		Sidecar:      "unix:" + s.sock,
		FallbackCert: filepath.Join(dir, "fallback.crt"),
		FallbackKey:  filepath.Join(dir, "fallback.key"),
		StaticCert:   staticCert,
		StaticKey:    staticKey,
		Stats:        true,
	})
	luaAddr, staticAddr := ngx.HTTPSAddr(), ngx.StaticHTTPSAddr()
	// Enough handshakes that every worker has the warm name cached.
	for range 50 {
		for _, addr := range []string{luaAddr, staticAddr} {
			if _, err := benchHandshake(addr, warm); err != nil {
				b.Fatal(err)
			}
		}
	}

	var t handshakeTimes
	for i := range fresh {
		kinds := []func() error{
			func() error { // a name from the far end of the store, never asked for
				d, err := benchHandshake(luaAddr, benchName(n-1-i))
				t.fresh = append(t.fresh, d)
				return err
			},
			func() error {
				d, err := benchHandshake(luaAddr, warm)
				t.cached = append(t.cached, d)
				return err
			},
			func() error {
				d, err := benchHandshake(staticAddr, warm)
				t.static = append(t.static, d)
				return err
			},
		}
		for k := range kinds {
			if err := kinds[(i+k)%len(kinds)](); err != nil {
				b.Fatal(err)
			}
		}
	}
	t.steps = workerSteps(b, ngx, luaAddr, warm)

	// Where a first handshake's time goes, by the kernel's accounting
	// (schedstat): fresh/2 first handshakes in a row, of names asked for
	// by nobody yet, then as many of the cached name, one at a time; the
	// time nginx's workers and the sidecar ran, and waited to run once
	// woken (on a shared machine, behind other processes), for each.
	workers := childPIDs(b, ngx.PID())
	side := []int{s.cmd.Process.Pid}
	m := max(fresh/2, 1)
	for _, kind := range []struct {
		into *schedSplit
		name func(i int) string
	}{
		{&t.firstSched, func(i int) string { return benchName(n - 2 - 2*fresh - i) }},
		{&t.cachedSched, func(int) string { return warm }},
	} {
		n0, s0 := schedOf(b, workers, false), schedOf(b, side, true)
		for i := range m {
			if _, err := benchHandshake(luaAddr, kind.name(i)); err != nil {
				b.Fatal(err)
			}
		}
		n1, s1 := schedOf(b, workers, false), schedOf(b, side, true)
		per := func(d time.Duration) time.Duration { return d / time.Duration(m) }
		*kind.into = schedSplit{nginxRun: per(n1.run - n0.run), nginxWait: per(n1.wait - n0.wait),
			sideRun: per(s1.run - s0.run), sideWait: per(s1.wait - s0.wait)}
	}
	ngx.AssertCleanErrorLog(b)
	return t
}

// schedSplit is the time processes ran on a CPU and waited for one (woken,
// on the run queue), per handshake: nginx's workers and the sidecar.
type schedSplit struct{ nginxRun, nginxWait, sideRun, sideWait time.Duration }

// schedTimes is what /proc/PID/task/TID/schedstat counts: the time a
// task ran, and waited on a run queue to run.
type schedTimes struct {
	run, wait time.Duration
	slices    int64 // times a task was put on a CPU
}

// schedOf sums schedstat over the processes pids: their main threads, or
// with threads all their threads.
func schedOf(b *testing.B, pids []int, threads bool) schedTimes {
	b.Helper()
	var t schedTimes
	for _, pid := range pids {
		tids := []string{strconv.Itoa(pid)}
		if threads {
			ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
			if err != nil {
				b.Fatal(err)
			}
			tids = tids[:0]
			for _, e := range ents {
				tids = append(tids, e.Name())
			}
		}
		for _, tid := range tids {
			f, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, tid))
			if err != nil {
				continue // a thread that ended
			}
			var run, wait, slices int64
			if _, err := fmt.Sscan(string(f), &run, &wait, &slices); err != nil {
				b.Fatalf("/proc/%d/task/%s/schedstat %q: %v", pid, tid, f, err)
			}
			t.run += time.Duration(run)
			t.wait += time.Duration(wait)
			t.slices += slices
		}
	}
	return t
}

// childPIDs returns the child processes of pid (nginx's workers).
func childPIDs(b *testing.B, pid int) []int {
	b.Helper()
	c, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		b.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(c)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			b.Fatal(err)
		}
		pids = append(pids, p)
	}
	if len(pids) == 0 {
		b.Fatalf("nginx %d has no workers", pid)
	}
	return pids
}

// workerSteps returns the samples of every step of the Lua module's
// stats() of every nginx worker, pooled: it asks for nginxtest.StatsPath
// on new connections (with the name warm, which every worker holds) until
// each worker has answered once.
func workerSteps(b *testing.B, ngx *nginxtest.Nginx, addr, warm string) map[string][]time.Duration {
	b.Helper()
	steps := make(map[string][]time.Duration)
	seen := make(map[string]bool)
	for try := 0; len(seen) < ngx.Workers(); try++ {
		if try == 1000 {
			b.Fatalf("stats from %d of %d nginx workers after %d connections", len(seen), ngx.Workers(), try)
		}
		pid, body := workerStats(b, addr, warm)
		if seen[pid] {
			continue
		}
		seen[pid] = true
		st, err := nginxtest.ParseStats(body)
		if err != nil {
			b.Fatal(err)
		}
		for step, s := range st {
			steps[step] = append(steps[step], s.Samples...)
		}
	}
	return steps
}

// workerStats asks addr for nginxtest.StatsPath over a new TLS connection
// for name and returns the PID of the worker that answered and the body.
func workerStats(b *testing.B, addr, name string) (string, string) {
	b.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", nginxtest.StatsPath, name)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s from %s: %d %v", nginxtest.StatsPath, addr, resp.StatusCode, err)
	}
	return resp.Header.Get(nginxtest.WorkerHeader), string(body)
}

// benchHandshake makes one full TLS handshake (a new connection, no
// resumption) with addr for name and returns how long it took, from the
// dial to the end of the handshake. The leaf served must be name's own.
func benchHandshake(addr, name string) (time.Duration, error) {
	cfg := &tls.Config{ServerName: name, InsecureSkipVerify: true, SessionTicketsDisabled: true}
	start := time.Now()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("handshake with %s for %s: %w", addr, name, err)
	}
	defer conn.Close()
	if leaf := conn.ConnectionState().PeerCertificates[0]; !slices.Equal(leaf.DNSNames, []string{name}) {
		return d, fmt.Errorf("handshake with %s for %s: served a certificate for %v", addr, name, leaf.DNSNames)
	}
	return d, nil
}
