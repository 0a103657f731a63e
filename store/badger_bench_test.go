package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The benchmarks build large fixtures. Their sizes come from environment
// variables so that a quick run can shrink them:
//
//	CERTSERVER_BENCH_CERTS   certificates for BenchmarkLookupCertificate (100000)
//	CERTSERVER_BENCH_ADD     domains per AddDomains call (500000)
//	CERTSERVER_BENCH_DUE     store sizes for BenchmarkDue ("100000,1000000")

// benchSizes reads a comma-separated list of sizes from the environment.
func benchSizes(b *testing.B, env string, def ...int) []int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	var sizes []int
	for f := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want positive sizes separated by commas", env, v)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// openBenchBadger opens a store in dir, a new temporary directory when
// empty; fixtures are written without fsync, which does not change what
// reads cost.
func openBenchBadger(b *testing.B, dir string, noSync bool) *Badger {
	b.Helper()
	if dir == "" {
		dir = b.TempDir()
	}
	s, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(b), NoSync: noSync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// fixture fills a new store with fill, then closes and reopens it, so that
// reads are measured on tables on disk as after a restart.
func fixture(b *testing.B, fill func(s *Badger)) *Badger {
	b.Helper()
	dir := b.TempDir()
	s := openBenchBadger(b, dir, true)
	fill(s)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return openBenchBadger(b, dir, true)
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

// BenchmarkLookupCertificate looks names up among CERTSERVER_BENCH_CERTS
// stored certificates, with PEM of realistic size (a 3,000-byte chain of
// leaf and intermediate, a 240-byte P-256 key). One in ten certificates is
// a wildcard.
func BenchmarkLookupCertificate(b *testing.B) {
	n := benchSizes(b, "CERTSERVER_BENCH_CERTS", 100000)[0]
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	s := fixture(b, func(s *Badger) {
		for i := range n {
			var names []string
			if i%10 == 0 {
				names = []string{fmt.Sprintf("*.zone%06d.example.com", i), fmt.Sprintf("zone%06d.example.com", i)}
			} else {
				names = []string{fmt.Sprintf("host%06d.example.com", i), fmt.Sprintf("www.host%06d.example.com", i)}
			}
			c := &Certificate{
				ID: names[0], Names: names, ChainPEM: fakePEM(r, 3000), KeyPEM: fakePEM(r, 240),
				NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour), Issuer: "CN=R11,O=Let's Encrypt,C=US",
				Serial: "4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b", KeyType: "ecdsa-p256", Source: "acme",
				Origin: "https://acme-v02.api.letsencrypt.org/directory", RenewAt: now.Add(60 * 24 * time.Hour),
			}
			if err := s.PutCertificate(ctx, c); err != nil {
				b.Fatal(err)
			}
		}
	})
	name := func(r *rand.Rand, kind string) string {
		i := r.IntN(n/10) * 10 // a wildcard certificate
		switch kind {
		case "exact":
			return fmt.Sprintf("www.host%06d.example.com", min(i+1+r.IntN(9), n-1))
		case "wildcard":
			return fmt.Sprintf("a%d.zone%06d.example.com", r.IntN(100), i)
		default:
			return fmt.Sprintf("a%d.missing%06d.example.com", r.IntN(100), i)
		}
	}
	for _, kind := range []string{"exact", "wildcard", "miss"} {
		names := make([]string, 1024)
		for i := range names {
			names[i] = name(r, kind)
		}
		b.Run(kind, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				_, err := s.LookupCertificate(ctx, names[i%len(names)])
				if (err != nil) != (kind == "miss") {
					b.Fatalf("LookupCertificate(%s): %v", names[i%len(names)], err)
				}
				i++
			}
		})
		b.Run(kind+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := rand.IntN(len(names))
				for pb.Next() {
					_, err := s.LookupCertificate(ctx, names[i%len(names)])
					if (err != nil) != (kind == "miss") {
						b.Errorf("LookupCertificate(%s): %v", names[i%len(names)], err)
						return
					}
					i++
				}
			})
		})
	}
}

// newDomains returns n pending domains due over the next hour.
func newDomains(n int, prefix string, now time.Time) []*Domain {
	ds := make([]*Domain, n)
	for i := range ds {
		ds[i] = &Domain{
			Name: fmt.Sprintf("%s%07d.example.com", prefix, i), State: StatePending, Source: "api",
			NextAttempt: now.Add(time.Duration(i) * time.Hour / time.Duration(n)),
		}
	}
	return ds
}

// BenchmarkAddDomains adds CERTSERVER_BENCH_ADD new domains in one call to
// an empty store, with and without fsync on commit.
func BenchmarkAddDomains(b *testing.B) {
	n := benchSizes(b, "CERTSERVER_BENCH_ADD", 500000)[0]
	ds := newDomains(n, "d", time.Now())
	for _, mode := range []struct {
		desc   string
		noSync bool
	}{{"sync", false}, {"nosync", true}} {
		b.Run(fmt.Sprintf("%s/domains=%d", mode.desc, n), func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s := openBenchBadger(b, "", mode.noSync)
				b.StartTimer()
				added, _, err := s.AddDomains(context.Background(), ds)
				if err != nil || added != n {
					b.Fatalf("AddDomains = %d, %v", added, err)
				}
				b.StopTimer()
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "domains/s")
		})
	}
}

// BenchmarkDue reads the same 1,000 due entries from stores of
// CERTSERVER_BENCH_DUE domains: the others are due in a month. Its cost
// should not grow with the store.
func BenchmarkDue(b *testing.B) {
	const dueSet = 1000
	ctx := context.Background()
	now := time.Now()
	for _, n := range benchSizes(b, "CERTSERVER_BENCH_DUE", 100000, 1000000) {
		b.Run(fmt.Sprintf("domains=%d", n), func(b *testing.B) {
			s := fixture(b, func(s *Badger) {
				ds := newDomains(n, "d", now.Add(30*24*time.Hour))
				for i, d := range ds[:dueSet] {
					d.NextAttempt = now.Add(-time.Duration(i) * time.Second)
				}
				if _, _, err := s.AddDomains(ctx, ds); err != nil {
					b.Fatal(err)
				}
			})
			b.ReportAllocs()
			for b.Loop() {
				es, err := s.Due(ctx, now, 10*dueSet)
				if err != nil || len(es) != dueSet {
					b.Fatalf("Due = %d entries, %v", len(es), err)
				}
			}
		})
	}
}
