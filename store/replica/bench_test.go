package replica_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/replica"
)

// BenchmarkJoin measures a new host joining a fleet: a Follower with an
// empty local Badger store (synced commits, as `certserver serve` opens
// it) on a PostgreSQL store holding CERTSERVER_BENCH_JOIN certificates
// (default 1,000,000), from Run until Ready. Each record has two names and
// PEM of a Let's Encrypt chain's and key's size (3,000 and 240 bytes),
// shared by every record: the stores keep PEM as bytes, so what it says
// does not change the cost. Filling PostgreSQL is not measured.
//
// Reported: join-s, the time until ready (target ≤ 60 s at 1,000,000);
// certs/s; and the CPU time per certificate of the follower's process
// (cpu-µs/cert: the Badger copy, pgx) and of PostgreSQL's
// (pg-cpu-µs/cert), which a loaded machine does not inflate as it does
// the wall time.
func BenchmarkJoin(b *testing.B) {
	n := 1000000
	if v := os.Getenv("CERTSERVER_BENCH_JOIN"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("CERTSERVER_BENCH_JOIN=%q: want a positive count", v)
		}
	}
	cluster := pgtest.Shared(b)
	pg := openPostgres(b, cluster.NewDatabase(b))
	fillStart := time.Now()
	fillPostgres(b, pg, n)
	b.Logf("filled PostgreSQL with %d certificates in %v", n, time.Since(fillStart).Round(time.Second))

	b.ResetTimer()
	var took, cpu, pgCPU time.Duration
	for i := range b.N {
		log := slog.New(slog.NewTextHandler(b.Output(), nil))
		local, err := store.OpenBadger(b.TempDir(), store.BadgerOptions{Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		f, err := replica.New(replica.Config{Source: pg, Replica: local, Host: fmt.Sprintf("bench-%d", i), Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start, cpuStart, pgStart := time.Now(), processCPU(b), clusterCPU(b, cluster)
		go func() { done <- f.Run(ctx) }()
		select {
		case <-f.Ready():
		case err := <-done:
			b.Fatalf("Run ended before ready: %v", err)
		}
		took += time.Since(start)
		cpu += processCPU(b) - cpuStart
		pgCPU += clusterCPU(b, cluster) - pgStart
		b.StopTimer()
		cancel()
		<-done
		if st := f.Status(); st.LagVersions != 0 {
			b.Fatalf("ready with lag: %+v", st)
		}
		if got, err := local.ListCertificates(context.Background(), fmt.Sprintf("h%07d.join.test", n-2), 10); err != nil || len(got) != 1 {
			b.Fatalf("the last certificate is missing after the join: %d, %v", len(got), err)
		}
		local.Close()
		b.StartTimer()
	}
	secs := took.Seconds() / float64(b.N)
	b.ReportMetric(secs, "join-s")
	b.ReportMetric(float64(n)/secs, "certs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "cpu-µs/cert")
	b.ReportMetric(float64(pgCPU.Microseconds())/float64(b.N*n), "pg-cpu-µs/cert")
}

// clusterCPU returns the CPU time the cluster's processes used so far.
func clusterCPU(b *testing.B, c *pgtest.Cluster) time.Duration {
	d, err := c.CPU()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// processCPU returns the user and system CPU time the process used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fillPostgres writes n certificates into pg, h0000000.join.test to
// h(n-1).join.test, from a few goroutines in batches.
func fillPostgres(b *testing.B, pg store.Store, n int) {
	r := rand.New(rand.NewPCG(1, 2))
	chain, key := fakePEM(r, 3000), fakePEM(r, 240)
	now := time.Now()
	const batch, workers = 1000, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for start := w * batch; start < n; start += workers * batch {
				cs := make([]*store.Certificate, 0, batch)
				for i := start; i < min(start+batch, n); i++ {
					name := fmt.Sprintf("h%07d.join.test", i)
					cs = append(cs, &store.Certificate{
						ID: name, Names: []string{name, "www." + name}, ChainPEM: chain, KeyPEM: key,
						NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour), Issuer: "CN=R11,O=Let's Encrypt,C=US",
						Serial: "4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b", KeyType: store.KeyECDSAP256, Source: store.SourceACME,
						Origin: "https://acme-v02.api.letsencrypt.org/directory", RenewAt: now.Add(60 * 24 * time.Hour),
					})
				}
				if err := pg.PutCertificates(context.Background(), cs); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// fakePEM returns n bytes that look like base64, the size of real PEM.
func fakePEM(r *rand.Rand, n int) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	p := make([]byte, n)
	for i := range p {
		if i%65 == 64 {
			p[i] = '\n'
		} else {
			p[i] = alphabet[r.IntN(len(alphabet))]
		}
	}
	return p
}
