package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkImport times `certserver import` of CERTSERVER_BENCH_IMPORT
// (500,000) certbot lineages into `certserver serve` with a new Badger
// store on disk (synced commits, as in production), both built from this
// tree and run as their own processes on the same CPUs. It reports:
//
//   - certs/s and import-s: the whole command, from start to exit
//     (target: 500,000 in under a minute, at least 10,000 a second);
//   - cli-rss-MB: the command's peak resident memory (getrusage
//     ru_maxrss), which must not grow with the number of lineages;
//     sidecar-rss-MB: the sidecar's (VmHWM), with the largest of its
//     anonymous and file-backed parts seen every 100 ms (sidecar-anon-MB,
//     sidecar-file-MB: pages of Badger's memory-mapped tables and value
//     log, which the kernel reclaims at will);
//   - cli-cpu-µs/cert, sidecar-cpu-µs/cert: the CPU time (user and
//     system) each process spent per certificate, which says what the
//     import costs when other work shares the CPUs; 2 CPUs divided by
//     their sum is the rate an idle machine allows;
//   - again-s: the same import run again, every certificate unchanged.
//
// The lineages are laid out as certbot does (live/NAME/fullchain.pem and
// privkey.pem, symbolic links into archive/NAME/), with only the two files
// import reads, each a leaf of its own name under one intermediate with
// one shared ECDSA P-256 key (see newLeafFactory). They are built once and
// kept in the benchmark cache (bin/bench/cache/certbot-…; about 3 minutes
// and 8 GB at 500,000: 16 KB of blocks per lineage) for maxDatasetAge.
func BenchmarkImport(b *testing.B) {
	if b.N != 1 {
		b.Fatalf("b.N = %d: run with -benchtime 1x; one op is the whole import", b.N)
	}
	n := benchEnvInt(b, "CERTSERVER_BENCH_IMPORT", 500_000)
	tree := loadCertbotTree(b, n)
	bin := buildBenchBinary(b)
	side := startBenchSidecarOn(b, bin, filepath.Join(b.TempDir(), "store"), true)

	cpu0 := side.cpu(b)
	stopSampling := side.sampleMemory(100 * time.Millisecond)
	took, rss, cliCPU, out := runBenchImport(b, bin, side.admin, tree)
	sideCPU := side.cpu(b) - cpu0
	peak := stopSampling()
	if want := fmt.Sprintf("%d certificates: %d imported, 0 unchanged, 0 skipped", n, n); !strings.Contains(out, want) {
		b.Fatalf("import did not end with %q:\n%s", want, lastLines(out, 5))
	}
	b.ReportMetric(float64(n)/took.Seconds(), "certs/s")
	b.ReportMetric(took.Seconds(), "import-s")
	b.ReportMetric(rss, "cli-rss-MB")
	b.ReportMetric(side.memory(b).peak, "sidecar-rss-MB")
	b.ReportMetric(peak.anon, "sidecar-anon-MB")
	b.ReportMetric(peak.file, "sidecar-file-MB")
	b.ReportMetric(micros(cliCPU)/float64(n), "cli-cpu-µs/cert")
	b.ReportMetric(micros(sideCPU)/float64(n), "sidecar-cpu-µs/cert")

	again, _, _, out := runBenchImport(b, bin, side.admin, tree)
	if want := fmt.Sprintf("%d certificates: 0 imported, %d unchanged, 0 skipped", n, n); !strings.Contains(out, want) {
		b.Fatalf("second import did not end with %q:\n%s", want, lastLines(out, 5))
	}
	b.ReportMetric(again.Seconds(), "again-s")
	b.ReportMetric(float64(n), "lineages")
}

// runBenchImport runs `certserver import` of tree into the admin API at
// admin and returns how long it took, its peak resident memory in MB, the
// CPU time it used and its output (the report is written to a file, as a migration would keep
// it).
func runBenchImport(b *testing.B, bin, admin, tree string) (time.Duration, float64, time.Duration, string) {
	b.Helper()
	report := filepath.Join(b.TempDir(), "report.txt")
	f, err := os.Create(report)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "import", "--admin", admin, "--progress", "none", tree)
	cmd.Env = append(os.Environ(), "CERTSERVER_ADMIN_TOKEN="+testToken)
	cmd.Stdout, cmd.Stderr = f, &stderr
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start)
	out, _ := os.ReadFile(report)
	if err != nil {
		b.Fatalf("certserver import: %v\n%s\n%s", err, stderr.String(), lastLines(string(out), 10))
	}
	rss := float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) * 1024 / 1e6
	return took, rss, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), string(out)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// loadCertbotTree returns the cached certbot configuration directory of n
// lineages, building it first when the cache does not hold it complete.
func loadCertbotTree(b *testing.B, n int) string {
	b.Helper()
	base := filepath.Join(benchCacheDir(b), fmt.Sprintf("certbot-%s-n%d", benchDatasetVersion, n))
	tree := filepath.Join(base, "letsencrypt")
	marker := filepath.Join(base, "complete")
	if fi, err := os.Stat(marker); err == nil && time.Since(fi.ModTime()) < maxDatasetAge {
		return tree
	}
	if err := os.RemoveAll(base); err != nil {
		b.Fatal(err)
	}
	b.Logf("writing %d certbot lineages in %s (once; later runs reuse them)", n, tree)
	start := time.Now()
	if err := writeCertbotTree(tree, n, time.Now()); err != nil {
		b.Fatalf("write certbot tree: %v", err)
	}
	built := fmt.Sprintf("built %s in %v", time.Now().UTC().Format(time.RFC3339), time.Since(start).Round(time.Second))
	if err := os.WriteFile(marker, []byte(built+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("certbot tree %s", built)
	return tree
}

// writeCertbotTree writes n lineages, benchName(0) to benchName(n-1), in
// the certbot configuration directory root, on every CPU.
func writeCertbotTree(root string, n int, now time.Time) error {
	gen, err := newLeafFactory(now)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, "live"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "live", "README"), []byte("This directory contains your keys and certificates.\n"), 0o644); err != nil {
		return err
	}
	workers := runtime.GOMAXPROCS(0)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n && errs[w] == nil; i += workers {
				errs[w] = writeBenchLineage(root, benchName(i), gen.record(i).ChainPEM, gen.keyPEM)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// writeBenchLineage writes one lineage as certbot lays it out, with only
// the files import reads: archive/NAME/fullchain1.pem and privkey1.pem,
// and live/NAME/fullchain.pem and privkey.pem linking to them.
func writeBenchLineage(root, name string, chain, key []byte) error {
	archive, live := filepath.Join(root, "archive", name), filepath.Join(root, "live", name)
	for _, d := range []string{archive, live} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for base, data := range map[string][]byte{"fullchain": chain, "privkey": key} {
		if err := os.WriteFile(filepath.Join(archive, base+"1.pem"), data, 0o600); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, base+"1.pem"), filepath.Join(live, base+".pem")); err != nil {
			return err
		}
	}
	return nil
}

// sampleMemory reads the sidecar's memory every interval until the
// function it returns is called, which returns the largest anonymous and
// file-backed resident sizes seen.
func (s *benchSidecar) sampleMemory(interval time.Duration) func() procMemory {
	stop, done := make(chan struct{}), make(chan procMemory)
	go func() {
		var peak procMemory
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			// Errors end with the process; the last reading stands.
			m, _ := readProcMemory(s.cmd.Process.Pid)
			peak.anon, peak.file, peak.rss = max(peak.anon, m.anon), max(peak.file, m.file), max(peak.rss, m.rss)
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() procMemory { close(stop); return <-done }
}
