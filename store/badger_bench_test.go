package store

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// letsEncryptSized returns a chain and a key shaped as Let's Encrypt's
// for an ECDSA P-256 certificate: a leaf with an opaque extension of
// sctBytes where real ones have their signed certificate timestamps (two
// SCTs take about 245 bytes; the million-name data set pads with 730 to
// make up the size of an RSA intermediate), an ECDSA intermediate signed
// by an RSA root, a 241-byte PKCS #8 key.
func letsEncryptSized(b *testing.B, sctBytes int) (chain, key []byte) {
	b.Helper()
	now := time.Now()
	rootKey, err := rsa.GenerateKey(crand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	root := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench root"}, NotBefore: now, NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	inter := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "bench E1", Organization: []string{"certserver"}, Country: []string{"US"}},
		NotBefore: now, NotAfter: now.AddDate(3, 0, 0), KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
		MaxPathLenZero: true, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IssuingCertificateURL: []string{"http://x1.i.bench.invalid/"},
		CRLDistributionPoints: []string{"http://x1.c.bench.invalid/"}, PolicyIdentifiers: []asn1.ObjectIdentifier{{2, 23, 140, 1, 2, 1}}}
	leaf := &x509.Certificate{SerialNumber: new(big.Int).Lsh(big.NewInt(1), 120), Subject: pkix.Name{CommonName: "h0000000.million.test"},
		DNSNames: []string{"h0000000.million.test"}, NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IssuingCertificateURL: []string{"http://e1.i.bench.invalid/"},
		CRLDistributionPoints: []string{"http://e1.c.bench.invalid/42.crl"}, PolicyIdentifiers: []asn1.ObjectIdentifier{{2, 23, 140, 1, 2, 1}},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: bytes.Repeat([]byte{0x5c}, sctBytes)}}}
	rootDER, err := x509.CreateCertificate(crand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		b.Fatal(err)
	}
	root, _ = x509.ParseCertificate(rootDER)
	interDER, err := x509.CreateCertificate(crand.Reader, inter, root, &interKey.PublicKey, rootKey)
	if err != nil {
		b.Fatal(err)
	}
	inter, _ = x509.ParseCertificate(interDER)
	leafDER, err := x509.CreateCertificate(crand.Reader, leaf, inter, &leafKey.PublicKey, interKey)
	if err != nil {
		b.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		b.Fatal(err)
	}
	chain = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})...)
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

// BenchmarkStoreSize stores CERTSERVER_BENCH_SIZE certificates of one
// intermediate, each an ECDSA P-256 chain and key shaped as Let's
// Encrypt's (letsEncryptSized, a leaf with two SCTs' worth of bytes)
// under a name of its own (the same leaf bytes in every record: the store
// does not look inside), in batches of 1,000, closes the store (which
// flushes it) and reports its directory's size per certificate
// (bytes/cert): as certserver writes them (format=v2), as it wrote them
// before (format=v1), a formatV1 store after the in-place upgrade at the
// next start (format=v1-upgraded, before the value-log GC reclaims the
// old records), and formatV2 with the million-name data set's bigger
// leaf (format=v2-million-leaf).
func BenchmarkStoreSize(b *testing.B) {
	n := benchSizes(b, "CERTSERVER_BENCH_SIZE", 100000)[0]
	chain, key := letsEncryptSized(b, 245)
	millionChain, millionKey := letsEncryptSized(b, 730)
	now := time.Now()
	for _, format := range []string{"v1", "v2", "v1-upgraded", "v2-million-leaf"} {
		b.Run("format="+format, func(b *testing.B) {
			chain, key := chain, key
			if format == "v2-million-leaf" {
				chain, key = millionChain, millionKey
			}
			var size int64
			for b.Loop() {
				dir := b.TempDir()
				v1 := format == "v1" || format == "v1-upgraded"
				opts := BadgerOptions{Logger: testLogger(b), NoSync: true, writeV1: v1, noUpgrade: v1}
				s, err := OpenBadger(dir, opts)
				if err != nil {
					b.Fatal(err)
				}
				batch := make([]*Certificate, 0, 1000)
				for i := range n {
					name := fmt.Sprintf("h%07d.million.test", i)
					batch = append(batch, &Certificate{
						ID: name, Names: []string{name}, ChainPEM: chain, KeyPEM: key,
						NotBefore: now, NotAfter: now.Add(90 * 24 * time.Hour), Issuer: "CN=bench E1,O=certserver,C=US",
						Serial: fmt.Sprintf("1000000000000000000000000%07x", i), KeyType: KeyECDSAP256, Source: SourceACME,
						Origin: "https://acme.bench.invalid/directory", RenewAt: now.Add(60 * 24 * time.Hour), StoredAt: now,
					})
					if len(batch) == cap(batch) || i == n-1 {
						if err := s.PutCertificates(context.Background(), batch); err != nil {
							b.Fatal(err)
						}
						batch = batch[:0]
					}
				}
				if v1 {
					if err := forgetUpgrade(s); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
				if format == "v1-upgraded" {
					s, err := OpenBadger(dir, BadgerOptions{Logger: testLogger(b), NoSync: true})
					if err != nil {
						b.Fatal(err)
					}
					<-s.upgraded
					if err := s.Close(); err != nil {
						b.Fatal(err)
					}
				}
				if size, err = dirSize(dir); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size)/float64(n), "bytes/cert")
		})
	}
}

// dirSize returns the bytes in the files under dir.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	return n, err
}
