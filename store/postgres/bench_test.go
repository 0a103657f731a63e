package postgres_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// The benchmarks run against the test binary's PostgreSQL cluster
// (store/pgtest: fsync off, so they measure the store and the server's
// work, not the disk's flushes).
//
//	go test -run '^$' -bench . -benchtime 1x ./store/postgres/

// benchSize returns the number in the environment variable env, else def.
func benchSize(b *testing.B, env string, def int) int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", env, v)
	}
	return n
}

func openBench(b *testing.B, url string) *postgres.Store {
	b.Helper()
	s, err := postgres.Open(context.Background(), postgres.Options{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkAddDomains adds CERTSERVER_BENCH_ADD (500,000) new domains in
// one call to an empty database, as POST /v1/domains does.
func BenchmarkAddDomains(b *testing.B) {
	n := benchSize(b, "CERTSERVER_BENCH_ADD", 500000)
	now := time.Now()
	ds := make([]*store.Domain, n)
	for i := range ds {
		ds[i] = &store.Domain{
			Name: fmt.Sprintf("d%07d.example.com", i), State: store.StatePending, Source: "api",
			NextAttempt: now.Add(time.Duration(i) * time.Hour / time.Duration(n)),
		}
	}
	cluster := pgtest.Shared(b)
	b.Run(fmt.Sprintf("domains=%d", n), func(b *testing.B) {
		var client, server time.Duration
		for b.Loop() {
			b.StopTimer()
			s := openBench(b, cluster.NewDatabase(b))
			c0, s0 := cpu(b, cluster)
			b.StartTimer()
			added, _, err := s.AddDomains(context.Background(), ds)
			if err != nil || added != n {
				b.Fatalf("AddDomains = %d, %v", added, err)
			}
			b.StopTimer()
			c1, s1 := cpu(b, cluster)
			client, server = client+c1-c0, server+s1-s0
			b.StartTimer()
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "domains/s")
		b.ReportMetric(client.Seconds()/float64(b.N), "client-cpu-s/op")
		b.ReportMetric(server.Seconds()/float64(b.N), "server-cpu-s/op")
	})
}

// cpu returns the CPU time this process and the cluster have used so far:
// on a loaded machine a steadier measure of the work than the time it
// took.
func cpu(b *testing.B, c *pgtest.Cluster) (client, server time.Duration) {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	server, err := c.CPU()
	if err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), server
}

// fakePEM returns n bytes of PEM-looking base64 text.
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

// BenchmarkChangesAfter reads every change of a database holding
// CERTSERVER_BENCH_CHANGES (100,000) certificates of 3 KB of chain each,
// in batches of 1,000, as a host joining the fleet copies it; one op is
// the whole copy. It reports changes/s, and puts/s: how fast
// PutCertificates filled the database in batches of 1,000, with the CPU
// each put took in certserver and in PostgreSQL.
//
// Of the same database it then reads every certificate as a fleet host's
// metrics inventory does (sub-benchmarks inventory/…): scan is
// ScanCertificates, list the ListCertificates pages of 5,000 the
// inventory read before, chains and keys included; both report
// records/s, the CPU per record in certserver and in PostgreSQL, the
// bytes certserver allocated per record, and the most its heap held
// (live objects and garbage not yet collected, sampled every 1,000
// records): a scan holds the record it hands out, a listing a page of
// 5,000 with their chains and keys.
func BenchmarkChangesAfter(b *testing.B) {
	n := benchSize(b, "CERTSERVER_BENCH_CHANGES", 100000)
	const batch = 1000
	cluster := pgtest.Shared(b)
	s := openBench(b, cluster.NewDatabase(b))
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	start := time.Now()
	c0, s0 := cpu(b, cluster)
	for i := 0; i < n; i += batch {
		var cs []*store.Certificate
		for j := i; j < min(i+batch, n); j++ {
			names := []string{fmt.Sprintf("host%07d.example.com", j), fmt.Sprintf("www.host%07d.example.com", j)}
			cs = append(cs, &store.Certificate{
				ID: names[0], Names: names, ChainPEM: fakePEM(r, 3000), KeyPEM: fakePEM(r, 240),
				NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour), Issuer: "CN=R11,O=Let's Encrypt,C=US",
				Serial: "4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b", KeyType: store.KeyECDSAP256, Source: store.SourceACME,
				Origin: "https://acme-v02.api.letsencrypt.org/directory", RenewAt: now.Add(60 * 24 * time.Hour),
			})
		}
		if err := s.PutCertificates(ctx, cs); err != nil {
			b.Fatal(err)
		}
	}
	puts := float64(n) / time.Since(start).Seconds()
	c1, s1 := cpu(b, cluster)
	putClient, putServer := (c1-c0).Seconds()*1e6/float64(n), (s1-s0).Seconds()*1e6/float64(n)

	b.Run(fmt.Sprintf("certs=%d", n), func(b *testing.B) {
		for b.Loop() {
			var after uint64
			got := 0
			for {
				cs, err := s.ChangesAfter(ctx, after, batch)
				if err != nil {
					b.Fatal(err)
				}
				if len(cs) == 0 {
					break
				}
				got += len(cs)
				after = cs[len(cs)-1].Version
			}
			if got != n {
				b.Fatalf("read %d changes, want %d", got, n)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "changes/s")
		b.ReportMetric(puts, "puts/s")
		b.ReportMetric(putClient, "put-client-cpu-µs")
		b.ReportMetric(putServer, "put-server-cpu-µs")
	})

	for _, inv := range []struct {
		desc string
		read func(fn func(*store.Certificate)) error
	}{
		{"scan", func(fn func(*store.Certificate)) error {
			return s.ScanCertificates(ctx, func(c *store.Certificate) error { fn(c); return nil })
		}},
		{"list", func(fn func(*store.Certificate)) error {
			const page = 5000 // certserver's scanPage
			for after := ""; ; {
				cs, err := s.ListCertificates(ctx, after, page)
				if err != nil {
					return err
				}
				for _, c := range cs {
					fn(c)
				}
				if len(cs) < page {
					return nil
				}
				after = cs[len(cs)-1].ID
			}
		}},
	} {
		b.Run(fmt.Sprintf("inventory/%s/certs=%d", inv.desc, n), func(b *testing.B) {
			var client, server time.Duration
			var m0, m1 runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m0)
			heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			var peak uint64
			for b.Loop() {
				c0, s0 := cpu(b, cluster)
				got := 0
				if err := inv.read(func(*store.Certificate) {
					if got++; got%1000 == 0 {
						metrics.Read(heap)
						peak = max(peak, heap[0].Value.Uint64())
					}
				}); err != nil {
					b.Fatal(err)
				}
				if got != n {
					b.Fatalf("read %d certificates, want %d", got, n)
				}
				c1, s1 := cpu(b, cluster)
				client, server = client+c1-c0, server+s1-s0
			}
			runtime.ReadMemStats(&m1)
			records := float64(n) * float64(b.N)
			b.ReportMetric(records/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(client.Seconds()*1e6/records, "client-cpu-µs/record")
			b.ReportMetric(server.Seconds()*1e6/records, "server-cpu-µs/record")
			b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/records, "alloc-B/record")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}

// BenchmarkLatestVersion asks for the newest version, as each host does
// for its lag, of a database with a few changes.
func BenchmarkLatestVersion(b *testing.B) {
	s := openBench(b, pgtest.New(b))
	ctx := context.Background()
	for i := range 10 {
		if err := s.PutChallenge(ctx, fmt.Sprintf("tok%d", i), "auth", time.Now().Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if _, err := s.LatestVersion(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// BenchmarkClaimDue measures how fast a fleet's renewing hosts claim
// their work: a database of CERTSERVER_BENCH_CLAIM_NAMES (20,000; the
// issue's figure is for 1,000,000) managed names, of which
// CERTSERVER_BENCH_CLAIM_DUE (1,000; the 10,000) are due, is
// worked through by 3 hosts at once; one op is the whole due set.
//
//   - claim: each host claims (ClaimDue) up to 4 names at a time (a
//     renewer with 4 workers), moves their next attempt 60 days on in
//     one statement of its own and releases the leases: the leases'
//     own cost, what the claims/s asks for.
//   - cycle: each host as the renewer does it with 4 workers: its
//     dispatcher claims as many names as it has free workers, and each
//     worker writes its name's outcome under the lease (UpdateDomain
//     with store.WithLease, fenced) and releases it: the whole
//     bookkeeping of a name in a fleet, less the order.
//
// Each reports claims/s (due names per second), the mean time of one
// ClaimDue call, and the CPU each name took in the hosts and in
// PostgreSQL, with the rate that CPU allows on 2 idle CPUs (on a loaded
// machine a steadier measure than the time); cycle also the mean time of
// one fenced write and of one Release.
func BenchmarkClaimDue(b *testing.B) {
	n := benchSize(b, "CERTSERVER_BENCH_CLAIM_NAMES", 20000)
	due := benchSize(b, "CERTSERVER_BENCH_CLAIM_DUE", 1000)
	if due > n {
		b.Fatalf("CERTSERVER_BENCH_CLAIM_DUE %d above CERTSERVER_BENCH_CLAIM_NAMES %d", due, n)
	}
	const hosts, workers = 3, 4
	cluster := pgtest.Shared(b)
	url := cluster.NewDatabase(b)
	s := openBench(b, url)
	ctx := context.Background()
	now := time.Now()
	// Every (n/due)th name is due, somewhere in the last hour; the others
	// in the next 1,000 hours.
	step := n / due
	var dueNames []string
	const chunk = 100000
	for i := 0; i < n; i += chunk {
		var ds []*store.Domain
		for j := i; j < min(i+chunk, n); j++ {
			d := &store.Domain{Name: fmt.Sprintf("d%07d.example.com", j), State: store.StateValid, Source: "api",
				NextAttempt: now.Add(time.Duration(1+j%1000) * time.Hour)}
			if j%step == 0 && len(dueNames) < due {
				d.NextAttempt = now.Add(-time.Duration(1+j%3600) * time.Second)
				dueNames = append(dueNames, d.Name)
			}
			ds = append(ds, d)
		}
		if _, _, err := s.AddDomains(ctx, ds); err != nil {
			b.Fatal(err)
		}
	}
	conn := benchConn(b, url)
	if _, err := conn.Exec(ctx, "VACUUM ANALYZE domains"); err != nil {
		b.Fatal(err)
	}
	hs := make([]*postgres.Store, hosts)
	for i := range hs {
		hs[i] = openBench(b, url)
	}
	for _, mode := range []string{"claim", "cycle"} {
		b.Run(fmt.Sprintf("%s/names=%d/due=%d", mode, n, due), func(b *testing.B) {
			var (
				st             claimStats
				client, server time.Duration
			)
			for b.Loop() {
				b.StopTimer()
				// Every due name due again, as an hour ago.
				if _, err := conn.Exec(ctx, "UPDATE domains SET next_attempt = $1 WHERE name = ANY($2)", now.Add(-time.Hour), dueNames); err != nil {
					b.Fatal(err)
				}
				st.claimed.Store(0)
				c0, s0 := cpu(b, cluster)
				b.StartTimer()
				var wg sync.WaitGroup
				for h, hs := range hs {
					host := fmt.Sprintf("host%d", h+1)
					if mode == "claim" {
						mover := benchConn(b, url)
						wg.Go(func() { claimOnly(b, hs, mover, host, workers, &st) })
					} else {
						wg.Go(func() { claimCycle(b, hs, host, workers, &st) })
					}
				}
				wg.Wait()
				b.StopTimer()
				c1, s1 := cpu(b, cluster)
				client, server = client+c1-c0, server+s1-s0
				if got := st.claimed.Load(); got != int64(due) {
					b.Fatalf("%d names claimed, want the %d due", got, due)
				}
				b.StartTimer()
			}
			names := float64(due) * float64(b.N)
			b.ReportMetric(names/b.Elapsed().Seconds(), "claims/s")
			b.ReportMetric(float64(st.claimNanos.Load())/float64(st.calls.Load())/1000, "claim-µs")
			if mode == "cycle" {
				b.ReportMetric(float64(st.writeNanos.Load())/names/1000, "write-µs")
				b.ReportMetric(float64(st.releaseNanos.Load())/names/1000, "release-µs")
			}
			cpuPer := (client + server).Seconds() * 1e6 / names
			b.ReportMetric(client.Seconds()*1e6/names, "host-cpu-µs/claim")
			b.ReportMetric(server.Seconds()*1e6/names, "pg-cpu-µs/claim")
			b.ReportMetric(2e6/cpuPer, "cpu-bound-claims/s")
		})
	}
}

// benchConn returns a connection of its own to url, closed when b ends.
func benchConn(b *testing.B, url string) *pgx.Conn {
	b.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// claimStats are BenchmarkClaimDue's counters.
type claimStats struct {
	claimed, calls, claimNanos, writeNanos, releaseNanos atomic.Int64
}

// claim is one ClaimDue call of a host, counted.
func (st *claimStats) claim(s *postgres.Store, host string, limit int) ([]store.Lease, error) {
	t0 := time.Now()
	ls, err := s.ClaimDue(context.Background(), host, time.Now(), limit, 2*time.Minute)
	st.claimNanos.Add(int64(time.Since(t0)))
	st.calls.Add(1)
	st.claimed.Add(int64(len(ls)))
	return ls, err
}

// claimOnly is one host of BenchmarkClaimDue/claim: claims of up to
// workers names, each batch moved on by mover in one statement and
// released, until nothing is left to claim.
func claimOnly(b *testing.B, s *postgres.Store, mover *pgx.Conn, host string, workers int, st *claimStats) {
	ctx := context.Background()
	for {
		ls, err := st.claim(s, host, workers)
		if err != nil {
			b.Error(err)
			return
		}
		if len(ls) == 0 {
			return
		}
		names := make([]string, len(ls))
		for i, l := range ls {
			names[i] = l.Name
		}
		if _, err := mover.Exec(ctx, "UPDATE domains SET next_attempt = $1 WHERE name = ANY($2)", time.Now().Add(60*24*time.Hour), names); err != nil {
			b.Error(err)
			return
		}
		if err := s.Release(ctx, ls); err != nil {
			b.Error(err)
			return
		}
	}
}

// claimCycle is one host of BenchmarkClaimDue/cycle: a dispatcher
// claiming as many due names as it has free workers, and workers that
// write each name's outcome under its lease and release it, until
// nothing is left to claim.
func claimCycle(b *testing.B, s *postgres.Store, host string, workers int, st *claimStats) {
	ctx := context.Background()
	free := make(chan struct{}, workers)
	for range workers {
		free <- struct{}{}
	}
	jobs := make(chan store.Lease)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for l := range jobs {
				t0 := time.Now()
				next := t0.Add(60 * 24 * time.Hour)
				if err := s.UpdateDomain(store.WithLease(ctx, l), l.Name, func(d *store.Domain) error { d.NextAttempt = next; return nil }); err != nil {
					b.Error(err)
				}
				t1 := time.Now()
				if err := s.Release(ctx, []store.Lease{l}); err != nil {
					b.Error(err)
				}
				st.writeNanos.Add(int64(t1.Sub(t0)))
				st.releaseNanos.Add(int64(time.Since(t1)))
				free <- struct{}{}
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	for {
		<-free
		n := 1
	more:
		for n < workers {
			select {
			case <-free:
				n++
			default:
				break more
			}
		}
		ls, err := st.claim(s, host, n)
		if err != nil {
			b.Error(err)
			return
		}
		if len(ls) == 0 {
			return
		}
		for range n - len(ls) {
			free <- struct{}{}
		}
		for _, l := range ls {
			jobs <- l
		}
	}
}
