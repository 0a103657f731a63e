package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/store"
)

// BenchmarkMillionInventory is the first inventory of BenchmarkMillion
// (what `certserver serve` scans at its start for the metrics and the
// status page) in the benchmark's own process, on the same cached store
// of CERTSERVER_BENCH_MILLION names: inventory-cold-s with the store's
// files dropped from the page cache first, inventory-s once they are in
// it (a second scan), each with the process's CPU time (user and system)
// and the page faults that read the disk while it ran. Run it alone,
// with -cpuprofile to see where a scan goes:
//
//	go test -run '^$' -bench '^BenchmarkMillionInventory$' -benchtime 1x -timeout 30m ./cmd/certserver/
func BenchmarkMillionInventory(b *testing.B) {
	cfg := millionConfig(b)
	ds := loadDataset(b, cfg.n)
	b.Logf("data set: %d names, %s", cfg.n, ds.Built)
	evictFromPageCache(b, ds.Dir)
	st, err := store.OpenBadger(ds.Dir, store.BadgerOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	m, err := certserver.NewMetrics(certserver.MetricsConfig{}, st, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	for _, run := range []string{"-cold", ""} {
		var before, after unix.Rusage
		if err := unix.Getrusage(unix.RUSAGE_SELF, &before); err != nil {
			b.Fatal(err)
		}
		if err := m.Refresh(context.Background()); err != nil {
			b.Fatal(err)
		}
		if err := unix.Getrusage(unix.RUSAGE_SELF, &after); err != nil {
			b.Fatal(err)
		}
		inv := m.Inventory()
		if inv.Certificates != cfg.n || inv.Domains != cfg.n {
			b.Fatalf("inventory: %d certificates and %d domains, want %d of each", inv.Certificates, inv.Domains, cfg.n)
		}
		cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
		b.ReportMetric(inv.Took.Seconds(), "inventory"+run+"-s")
		b.ReportMetric(cpu.Seconds(), "inventory"+run+"-cpu-s")
		b.ReportMetric(float64(after.Majflt-before.Majflt), "inventory"+run+"-major-faults")
	}
}
