package nginx_test

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store/certtest"
)

// BenchmarkLuaNewNames serves b.N names new to nginx, one handshake each,
// through one nginx worker and the Lua module in the leaf format (a fake
// sidecar answers from memory), and reports what a cached name costs the
// worker and how its first handshake's work splits:
//
//	go test -run '^$' -bench LuaNewNames -benchtime 20000x ./nginx/
//
// Every name has its own ECDSA P-256 leaf under one intermediate; with
// keys=unique each has its own key (the default), with keys=shared all
// share one (a key pool: `[keys] reuse = "pool"`).
//
// Reported: anon-B/name, the growth of the worker's private anonymous
// memory (RssAnon of /proc/PID/status: the Lua heap and OpenSSL's parsed
// leaves and keys) over the names divided by their number, after a full
// Lua garbage collection (the target is <= 4096); lua-B/name, the part of
// it that is the Lua heap (collectgarbage("count"): the module's tables,
// strings and cdata); heap-B/name and mmap-B/name, the same growth split
// by where it lies (see anonSplit): glibc's heap (OpenSSL's parsed leaves
// and keys) and LuaJIT's own mappings (the Lua heap and the memory its
// garbage collector freed but keeps); shm-B/name, the growth
// of the shared dict's resident pages (RssShmem), which all workers share;
// and the p50 and p99 of each step of a first handshake as the module
// times it (stats()): fetch (GET /v1/certs), cert (parsing the leaf), key
// (parsing the key, when no name before had it), chain (adding the
// parsed intermediate). The 4 clients share the one worker, so a fetch,
// which yields to the event loop until the answer is read, also waits
// for the other clients' handshakes the worker runs meanwhile; the
// parses, which do not yield, do not. BenchmarkMillion (cmd/certserver)
// times the same steps one handshake at a time, against the real sidecar
// on a million names: the fetch a user's first handshake waits for.
func BenchmarkLuaNewNames(b *testing.B) {
	for _, keys := range []string{"unique", "shared"} {
		b.Run("keys="+keys, func(b *testing.B) { benchNewNames(b, keys == "shared") })
	}
}

func benchNewNames(b *testing.B, sharedKey bool) {
	n := b.N
	pki := newChainPKI(b, "bench")
	fb := newTestCA(b).issue(b, "fallback.invalid")
	fbCert, fbKey := fb.writeFiles(b, b.TempDir(), "fallback")
	side := startFakeSidecar(b)
	side.leafFormat = true
	var pool *certtest.Cert
	if sharedKey {
		pool = certtest.New(b, certtest.Template{DNSNames: []string{"pool.invalid"}}, pki.inter)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = "n" + strconv.Itoa(i) + ".bench.test"
		_, body := pki.issue(b, names[i], pool)
		side.set(names[i], answer{status: 200, body: body, maxAge: 3600})
	}
	ngx := nginxtest.Start(b, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey,
		Workers: 1, Stats: true, CertsDict: "512m", Configure: fmt.Sprintf("lru_size = %d, read_timeout_ms = 5000, lock_timeout_ms = 10000,", n+1000)})
	worker := workerPID(b, ngx)

	// One name first, so that the intermediate, the module and OpenSSL's
	// first allocations are not counted per name.
	warm := "warm.bench.test"
	_, body := pki.issue(b, warm, pool)
	side.set(warm, answer{status: 200, body: body, maxAge: 3600})
	if _, err := handshake(ngx.HTTPSAddr(), warm, pki.roots); err != nil {
		b.Fatal(err)
	}
	lua0 := statsGC(b, ngx, pki)[nginxtest.LuaHeapStat].N
	anon0, shm0 := memOf(b, worker, "RssAnon"), memOf(b, worker, "RssShmem")
	heap0, mmap0 := anonSplit(b, worker)

	b.ResetTimer()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for c := range 4 {
		wg.Go(func() {
			for i := c; i < n; i += 4 {
				certs, err := handshake(ngx.HTTPSAddr(), names[i], pki.roots)
				if err == nil && len(certs) != 2 {
					err = fmt.Errorf("%s: %d certificates served", names[i], len(certs))
				}
				if err != nil {
					errs <- fmt.Errorf("%w\nerror log:\n%s", err, ngx.ErrorLog())
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	st := statsGC(b, ngx, pki)
	anon, shm := memOf(b, worker, "RssAnon"), memOf(b, worker, "RssShmem")
	b.ReportMetric(float64(anon-anon0)/float64(n), "anon-B/name")
	b.ReportMetric(float64(shm-shm0)/float64(n), "shm-B/name")
	b.ReportMetric(float64(st[nginxtest.LuaHeapStat].N-lua0)/float64(n), "lua-B/name")
	heap, mmap := anonSplit(b, worker)
	b.ReportMetric(float64(heap-heap0)/float64(n), "heap-B/name")
	b.ReportMetric(float64(mmap-mmap0)/float64(n), "mmap-B/name")
	for _, step := range []string{"fetch", "cert", "key", "chain"} {
		s := st[step].Samples
		if len(s) == 0 {
			continue
		}
		slices.Sort(s)
		b.ReportMetric(float64(s[len(s)/2])/float64(time.Microsecond), step+"-p50-µs")
		b.ReportMetric(float64(s[len(s)*99/100])/float64(time.Microsecond), step+"-p99-µs")
	}
	if got := st["fetch"].N; got < n {
		b.Errorf("%d fetches for %d names", got, n)
	}
	ngx.AssertCleanErrorLog(b)
}

// statsGC runs a full Lua garbage collection in the worker and returns
// its stats.
func statsGC(b *testing.B, ngx *nginxtest.Nginx, pki *chainPKI) map[string]nginxtest.Stats {
	b.Helper()
	_, _, body, err := verifiedBy(ngx.HTTPSAddr(), "warm.bench.test", pki.roots, nginxtest.StatsPath+"?gc=1")
	if err != nil {
		b.Fatal(err)
	}
	st, err := nginxtest.ParseStats(body)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// workerPID returns the process ID of nginx's only worker.
func workerPID(b *testing.B, ngx *nginxtest.Nginx) string {
	b.Helper()
	var pid string
	eventually(b, 10*time.Second, "nginx's worker started", func() error {
		c, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", ngx.PID(), ngx.PID()))
		if err != nil {
			return err
		}
		f := strings.Fields(string(c))
		if len(f) != 1 {
			return fmt.Errorf("nginx has workers %q, want one", f)
		}
		pid = f[0]
		return nil
	})
	return pid
}

// memOf returns a "kB" field of /proc/PID/status in bytes.
func memOf(b *testing.B, pid, field string) int64 {
	b.Helper()
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s, err := io.ReadAll(f)
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/%s/status", field, pid)
	return 0
}

// anonSplit returns the resident bytes of a process's private anonymous
// memory in two parts, from /proc/PID/smaps: heap, the [heap] mapping,
// where glibc's malloc keeps small allocations (OpenSSL's parsed leaves
// and keys, nginx's own); and mmap, the anonymous mappings without a
// name, which hold LuaJIT's heap (its allocator maps its own memory) and
// large allocations.
func anonSplit(b *testing.B, pid string) (heap, mmap int64) {
	b.Helper()
	c, err := os.ReadFile("/proc/" + pid + "/smaps")
	if err != nil {
		b.Fatal(err)
	}
	var in *int64
	for _, line := range strings.Split(string(c), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") {
			// A mapping's first line: range, perms, offset, dev, inode[, name].
			switch {
			case len(f) == 6 && f[5] == "[heap]":
				in = &heap
			case len(f) == 5 && f[4] == "0":
				in = &mmap
			default:
				in = nil
			}
			continue
		}
		if len(f) == 3 && f[0] == "Rss:" && in != nil {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				b.Fatalf("/proc/%s/smaps: %q: %v", pid, line, err)
			}
			*in += kb << 10
		}
	}
	return heap, mmap
}
