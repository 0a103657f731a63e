package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkMillionCgroup is BenchmarkMillion's `certserver serve` on the
// same store of CERTSERVER_BENCH_MILLION names (1,000,000), in a memory
// cgroup of its own limited to 512 MiB, which charges the page cache of
// the store's files as well as the process's own memory: what a
// container or a systemd MemoryMax= gives the sidecar. The cgroup is
// created for the run under /sys/fs/cgroup (cgroup v2 when the machine
// mounts it with the memory controller, else v1's memory hierarchy:
// cgroup-version says which) and removed after. It reports:
//
//   - cold-p50-µs, cold-p99-µs: endpoint lookups of random names at
//     CERTSERVER_BENCH_RATE (2,000) a second for CERTSERVER_BENCH_LOAD
//     (10 s), at once after a start whose store files were dropped from
//     the page cache first (posix_fadvise DONTNEED), while the first
//     inventory of the store reads every record alongside;
//   - hot-p50-µs, hot-p99-µs: the same lookups over a hot set of
//     CERTSERVER_BENCH_HOT (100,000; at most half the store) random names,
//     after one lookup of each (target p99 <= 1 ms);
//   - warm-p50-µs, warm-p99-µs: the same lookups over every name again,
//     after all of the above: what stays cached of a store larger than
//     the limit;
//   - cold-failed, hot-failed, warm-failed: lookups of each phase that
//     got no certificate (an error, such as the endpoint's own timeout
//     while the store's pages are read back); they count in the
//     percentiles with the time they took; and cold-lookups etc., the
//     lookups sent: fewer than the rate asks when the answers are so
//     slow that the senders fall behind (a phase stops sending after 3
//     times its duration);
//   - cold-read-KB/lookup etc.: what the sidecar read from the disk per
//     lookup in each phase (/proc/PID/io), and read-ahead-KB, the
//     read-ahead of the store's disk, which every page fault in Badger's
//     memory-mapped files reads around the page; hot-warmed, the hot
//     names looked up once before the hot phase (all of them unless
//     that took over 6 times CERTSERVER_BENCH_LOAD);
//   - hot-cache-hit-%: the hot phase's record reads served from the
//     sidecar's record cache ([store] record_cache, the default), and
//     hot-fast-%, those of them answered from the cache alone, with no
//     read of the store's index (the fast path); record-cache-MiB,
//     record-cache-used-MiB: its size and what it held at the end;
//   - hot-server-over-0.5ms, hot-server-over-1ms: the hot lookups that
//     took the endpoint itself, from the parsed request to the written
//     answer, over 0.5 and over 1 ms (its metrics' histogram), which
//     tells the sidecar's own time from the waits around it (the
//     socket, the CPUs other processes hold);
//   - oom-kills: the kernel's OOM kills in the cgroup (target 0: a kill
//     fails the benchmark as well), and the cgroup's memory at the end
//     and at its peak (cg-MiB, cg-peak-MiB; limit cg-limit-MiB), with the
//     end's anonymous and page-cache parts (cg-anon-MiB, cg-file-MiB).
//
// It needs root (to create the cgroup):
//
//	go test -run '^$' -bench '^BenchmarkMillionCgroup$' -benchtime 1x -timeout 60m ./cmd/certserver/
func BenchmarkMillionCgroup(b *testing.B) {
	cfg := millionConfig(b)
	hot := min(benchEnvInt(b, "CERTSERVER_BENCH_HOT", 100_000), cfg.n/2)
	ds := loadDataset(b, cfg.n)
	bin := buildBenchBinary(b)
	const limit = 512 << 20
	cg := newMemoryCgroup(b, limit)
	b.Logf("cgroup v%d %s, limit %d MiB", cg.version, cg.dir, limit>>20)

	evictFromPageCache(b, ds.Dir)
	side := startBenchSidecarIn(b, bin, ds.Dir, false, cg.procs())
	startup := side.startup
	pickAll := func(rng *rand.Rand) string { return benchName(rng.IntN(cfg.n)) }
	read := map[string]float64{}
	phase := func(name string, f func() latencies) latencies {
		r0 := side.readBytes(b)
		l := f()
		read[name] = (side.readBytes(b) - r0) / 1e3 / float64(max(len(l.lat), 1))
		return l
	}
	cold := phase("cold", func() latencies { return side.pacedNames(b, pickAll, cfg.rate, cfg.load, true) })
	inventory := side.waitInventory(b)
	b.Logf("first inventory of the store: %v", inventory.Round(time.Millisecond))

	hotNames := make([]string, hot)
	for i, k := range rand.Perm(cfg.n)[:hot] {
		hotNames[i] = benchName(k)
	}
	pickHot := func(rng *rand.Rand) string { return hotNames[rng.IntN(hot)] }
	// One lookup of each hot name, for at most 6 times the load's
	// duration: a cgroup that keeps too little of the store cached gets
	// through only part of them.
	var next atomic.Int64
	t0 := time.Now()
	once := side.driveNames(b, func(*rand.Rand) string { return hotNames[int(next.Add(1)-1)%hot] }, 4, true,
		func(w, i int) bool { return i < (hot+3-w)/4 && time.Since(t0) < 6*cfg.load })
	b.Logf("one lookup of %d of the %d hot names in %v (%d failed)", len(once.lat), hot, time.Since(t0).Round(time.Millisecond), once.failed)
	b.ReportMetric(float64(len(once.lat)), "hot-warmed")
	c0 := side.recordCache(b)
	hotLat := phase("hot", func() latencies { return side.pacedNames(b, pickHot, cfg.rate, cfg.load, true) })
	c1 := side.recordCache(b)
	b.ReportMetric(c1.over500us-c0.over500us, "hot-server-over-0.5ms")
	b.ReportMetric(c1.over1ms-c0.over1ms, "hot-server-over-1ms")
	warm := phase("warm", func() latencies { return side.pacedNames(b, pickAll, cfg.rate, cfg.load, true) })

	select {
	case <-side.exited:
		b.Fatalf("certserver serve died in the cgroup (OOM kills: %d): %v", cg.oomKills(b), side.cmd.ProcessState)
	default:
	}
	for _, r := range []struct {
		name string
		l    latencies
	}{{"cold", cold}, {"hot", hotLat}, {"warm", warm}} {
		b.ReportMetric(micros(r.l.percentile(50)), r.name+"-p50-µs")
		b.ReportMetric(micros(r.l.percentile(99)), r.name+"-p99-µs")
		b.ReportMetric(float64(r.l.failed), r.name+"-failed")
		b.ReportMetric(float64(len(r.l.lat)), r.name+"-lookups")
		b.ReportMetric(read[r.name], r.name+"-read-KB/lookup")
		if r.l.failed > 0 {
			b.Logf("%s: %d of %d lookups failed, the first: %v", r.name, r.l.failed, len(r.l.lat), r.l.firstErr)
		}
	}
	if n := c1.hits + c1.misses - c0.hits - c0.misses; n > 0 {
		b.ReportMetric(100*(c1.hits-c0.hits)/n, "hot-cache-hit-%")
		b.ReportMetric(100*(c1.fast-c0.fast)/n, "hot-fast-%")
	}
	b.ReportMetric(c1.size/(1<<20), "record-cache-MiB")
	b.ReportMetric(side.recordCache(b).used/(1<<20), "record-cache-used-MiB")
	m := cg.memory(b)
	kills := cg.oomKills(b)
	b.ReportMetric(float64(kills), "oom-kills")
	b.ReportMetric(float64(cg.version), "cgroup-version")
	b.ReportMetric(float64(limit)/(1<<20), "cg-limit-MiB")
	b.ReportMetric(m.usage, "cg-MiB")
	b.ReportMetric(m.peak, "cg-peak-MiB")
	b.ReportMetric(m.anon, "cg-anon-MiB")
	b.ReportMetric(m.file, "cg-file-MiB")
	b.ReportMetric(float64(hot), "hot-names")
	b.ReportMetric(float64(startup.Microseconds())/1000, "start-cold-ms")
	b.ReportMetric(readAheadKB(b, ds.Dir), "read-ahead-KB")
	b.ReportMetric(float64(cfg.n), "names")
	b.Logf("cgroup memory at the end %.0f MiB (anonymous %.0f, page cache %.0f), peak %.0f MiB; sidecar %s", m.usage, m.anon, m.file, m.peak, side.memory(b))
	if kills > 0 {
		b.Fatalf("the kernel OOM-killed %d processes in the cgroup", kills)
	}
}

// recordCacheMetrics are the sidecar's record cache counters, and the
// endpoint's answers that took it over 0.5 and over 1 ms.
type recordCacheMetrics struct {
	hits, misses, fast, used, size float64
	over500us, over1ms             float64
}

// recordCache reads the sidecar's record cache counters from its
// metrics ([store] record_cache; zero when it has none).
func (s *benchSidecar) recordCache(b *testing.B) recordCacheMetrics {
	b.Helper()
	var m recordCacheMetrics
	const hist = "certserver_cert_request_duration_seconds"
	all := s.metrics(b)
	m.over500us = all[hist+"_count"] - all[hist+`_bucket{le="0.0005"}`]
	m.over1ms = all[hist+"_count"] - all[hist+`_bucket{le="0.001"}`]
	for name, f := range all {
		switch name {
		case "certserver_record_cache_hits_total":
			m.hits = f
		case "certserver_record_cache_misses_total":
			m.misses = f
		case "certserver_record_cache_fast_hits_total":
			m.fast = f
		case `certserver_record_cache_bytes{part="used"}`:
			m.used = f
		case `certserver_record_cache_bytes{part="size"}`:
			m.size = f
		}
	}
	return m
}

// readBytes returns the bytes the sidecar has caused to be read from
// the disk so far (/proc/PID/io read_bytes: its page faults and reads
// that missed the page cache, with the read-ahead around them).
func (s *benchSidecar) readBytes(b *testing.B) float64 {
	b.Helper()
	return procReadBytes(b, fmt.Sprintf("/proc/%d/io", s.cmd.Process.Pid))
}

// procReadBytes returns read_bytes of the /proc io file at path (a
// process's or a thread's).
func procReadBytes(b *testing.B, path string) float64 {
	b.Helper()
	io, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(io), "\n") {
		if v, ok := strings.CutPrefix(line, "read_bytes: "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("%s %q: %v", path, line, err)
			}
			return n
		}
	}
	b.Fatalf("no read_bytes in %s", path)
	return 0
}

// readAheadKB returns the read-ahead of the block device dir is on
// (read_ahead_kb), which a page fault in a memory-mapped file also reads
// around the page; 0 when it cannot tell.
func readAheadKB(b *testing.B, dir string) float64 {
	b.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		b.Fatal(err)
	}
	dev := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	for _, f := range []string{dev + "/queue/read_ahead_kb", dev + "/../queue/read_ahead_kb"} {
		if v, err := os.ReadFile(f); err == nil {
			if n, err := strconv.ParseFloat(strings.TrimSpace(string(v)), 64); err == nil {
				return n
			}
		}
	}
	return 0
}

// memoryCgroup is a memory cgroup made for one benchmark.
type memoryCgroup struct {
	version int    // 1 or 2
	dir     string // its directory under /sys/fs/cgroup
}

// newMemoryCgroup creates a cgroup with a memory limit of limit bytes,
// in cgroup v2 when /sys/fs/cgroup is v2 with the memory controller,
// else in v1's memory hierarchy; it is removed when the benchmark ends,
// after the processes started in it (register it before them).
func newMemoryCgroup(b *testing.B, limit int64) *memoryCgroup {
	b.Helper()
	name := fmt.Sprintf("certserver-bench-%d", os.Getpid())
	cg := &memoryCgroup{}
	if ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(" "+string(ctl)+" ", " memory ") {
		cg.version, cg.dir = 2, filepath.Join("/sys/fs/cgroup", name)
		// Children of the root get the memory controller only when the
		// root hands it down.
		if err := os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte("+memory"), 0); err != nil {
			b.Fatalf("enable the memory controller for /sys/fs/cgroup's children: %v", err)
		}
	} else if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		cg.version, cg.dir = 1, filepath.Join("/sys/fs/cgroup/memory", name)
	} else {
		b.Fatal("no memory cgroup: neither cgroup v2 with the memory controller at /sys/fs/cgroup nor v1's /sys/fs/cgroup/memory")
	}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		b.Fatalf("create the cgroup (needs root): %v", err)
	}
	b.Cleanup(func() {
		// The processes have exited by now (their cleanups ran first);
		// the kernel may take a moment to let the group go.
		for range 100 {
			if err := os.Remove(cg.dir); err == nil || errors.Is(err, os.ErrNotExist) {
				return
			} else if !errors.Is(err, syscall.EBUSY) {
				b.Errorf("remove cgroup %s: %v", cg.dir, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.Errorf("remove cgroup %s: still busy", cg.dir)
	})
	file := "memory.max"
	if cg.version == 1 {
		file = "memory.limit_in_bytes"
	}
	if err := os.WriteFile(filepath.Join(cg.dir, file), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		b.Fatalf("set the cgroup's memory limit: %v", err)
	}
	if cg.version == 2 {
		// No swapping around the limit (v1's limit already covers only
		// memory, and the machine may have no swap).
		_ = os.WriteFile(filepath.Join(cg.dir, "memory.swap.max"), []byte("0"), 0)
	}
	return cg
}

// procs is the file a process writes its PID into to enter the cgroup.
func (cg *memoryCgroup) procs() string { return filepath.Join(cg.dir, "cgroup.procs") }

// cgroupMemory is a cgroup's memory in MiB, as its limit is given.
type cgroupMemory struct{ usage, peak, anon, file float64 }

// memory reads the cgroup's charged memory, its peak and its anonymous
// and page-cache parts.
func (cg *memoryCgroup) memory(b *testing.B) cgroupMemory {
	b.Helper()
	read := func(file string) float64 {
		v, err := os.ReadFile(filepath.Join(cg.dir, file))
		if err != nil {
			b.Fatalf("cgroup: %v", err)
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(string(v)), 64)
		if err != nil {
			b.Fatalf("cgroup %s: %q: %v", file, v, err)
		}
		return n / (1 << 20)
	}
	stat := cg.keyed(b, "memory.stat")
	var m cgroupMemory
	if cg.version == 2 {
		m.usage, m.anon, m.file = read("memory.current"), stat["anon"]/(1<<20), stat["file"]/(1<<20)
		if _, err := os.Stat(filepath.Join(cg.dir, "memory.peak")); err == nil {
			m.peak = read("memory.peak")
		}
	} else {
		m.usage, m.peak = read("memory.usage_in_bytes"), read("memory.max_usage_in_bytes")
		m.anon, m.file = stat["total_rss"]/(1<<20), stat["total_cache"]/(1<<20)
	}
	return m
}

// oomKills returns how many processes the kernel OOM-killed in the
// cgroup.
func (cg *memoryCgroup) oomKills(b *testing.B) int {
	b.Helper()
	if cg.version == 2 {
		return int(cg.keyed(b, "memory.events")["oom_kill"])
	}
	return int(cg.keyed(b, "memory.oom_control")["oom_kill"])
}

// keyed reads a cgroup file of "key value" lines.
func (cg *memoryCgroup) keyed(b *testing.B, file string) map[string]float64 {
	b.Helper()
	v, err := os.ReadFile(filepath.Join(cg.dir, file))
	if err != nil {
		b.Fatalf("cgroup: %v", err)
	}
	m := map[string]float64{}
	for line := range strings.SplitSeq(string(v), "\n") {
		k, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseFloat(val, 64); err == nil {
			m[k] = n
		}
	}
	return m
}
