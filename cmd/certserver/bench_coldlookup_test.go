package main

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/certserver/certserver/store"
)

// BenchmarkMillionColdLookup measures what one lookup of a name nobody
// asked for costs the store of BenchmarkMillion (CERTSERVER_BENCH_MILLION
// names, 1,000,000) when its pages are not in memory: the store is opened
// in this process after its files were dropped from the page cache
// (posix_fadvise DONTNEED), and LookupCertificate is called for
// CERTSERVER_BENCH_FRESH (2,000) distinct random names, one at a time,
// from one goroutine locked to its thread. It reports per lookup the
// bytes that thread read from the disk (read-KB/lookup,
// /proc/thread-self/io read_bytes) and its major page faults
// (majflt/lookup, getrusage RUSAGE_THREAD: each one page of a
// memory-mapped table or value-log file read synchronously, since the
// store advises the kernel not to read ahead), and the lookups' p50 and
// p99 (cold-p50-µs, cold-p99-µs). What Badger reads when it opens the
// store (its tables' indexes) and in its background compactions is not
// counted; the latencies include waiting for the disk behind them.
//
//	go test -run '^$' -bench '^BenchmarkMillionColdLookup$' -benchtime 1x ./cmd/certserver/
func BenchmarkMillionColdLookup(b *testing.B) {
	cfg := millionConfig(b)
	ds := loadDataset(b, cfg.n)
	evictFromPageCache(b, ds.Dir)
	st, err := store.OpenBadger(ds.Dir, store.BadgerOptions{Logger: slog.New(slog.DiscardHandler), GCInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	// Let the store's advice (MADV_RANDOM) reach its mappings.
	time.Sleep(time.Second)

	ctx := context.Background()
	lat := make([]time.Duration, 0, cfg.fresh)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	read0, flt0 := selfReadBytes(b), selfMajorFaults(b)
	for _, i := range rand.Perm(cfg.n)[:cfg.fresh] {
		t0 := time.Now()
		c, err := st.LookupCertificate(ctx, benchName(i))
		lat = append(lat, time.Since(t0))
		if err != nil || len(c.ChainPEM) == 0 {
			b.Fatalf("lookup %s: %v", benchName(i), err)
		}
	}
	read, flt := selfReadBytes(b)-read0, selfMajorFaults(b)-flt0
	l := latencies{lat: lat}
	b.ReportMetric(read/1e3/float64(len(lat)), "read-KB/lookup")
	b.ReportMetric(flt/float64(len(lat)), "majflt/lookup")
	b.ReportMetric(micros(l.percentile(50)), "cold-p50-µs")
	b.ReportMetric(micros(l.percentile(99)), "cold-p99-µs")
	b.ReportMetric(float64(cfg.n), "names")
}

// selfReadBytes returns read_bytes of /proc/thread-self/io: what the
// calling thread read from the disk.
func selfReadBytes(b *testing.B) float64 {
	b.Helper()
	return procReadBytes(b, "/proc/thread-self/io")
}

// selfMajorFaults returns the calling thread's major page faults so far.
func selfMajorFaults(b *testing.B) float64 {
	b.Helper()
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return float64(ru.Majflt)
}
