package certserver

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/sealed"
	"github.com/valyala/fasthttp"
)

// benchCerts is how many certificates the benchmark store holds.
const benchCerts = 100_000

// BenchmarkCertEndpoint measures GET /v1/certs/{sni} through a real fasthttp
// server and the real store, with benchCerts certificates stored, over
// loopback TCP and over a unix socket. Each lookup asks for a random stored
// name; parallel clients keep the server busy. It reports lookups/s and the
// 99th percentile latency seen by the client.
//
//	go test -run '^$' -bench BenchmarkCertEndpoint -benchtime 200000x ./certserver/
func BenchmarkCertEndpoint(b *testing.B) {
	st := newTestStore(b)
	start := time.Now()
	fillStore(b, st, benchCerts)
	b.Logf("stored %d certificates in %v", benchCerts, time.Since(start).Round(time.Millisecond))

	logger := slog.New(slog.DiscardHandler)
	sock := filepath.Join(b.TempDir(), "certs.sock")
	e, err := NewCertEndpoint(CertEndpointConfig{Socket: sock, Listen: "127.0.0.1:0"}, st, logger)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Listen(context.Background()); err != nil {
		b.Fatal(err)
	}
	serving(b, e.Serve)
	tcpAddr := e.Addrs()[1].String()

	// The handler and the store alone, without the network.
	b.Run("handler", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var rc fasthttp.RequestCtx
			rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			uri := make([]byte, 0, 64)
			for pb.Next() {
				uri = fmt.Appendf(uri[:0], "/v1/certs/%s", benchName(rng.IntN(benchCerts)))
				rc.Request.SetRequestURIBytes(uri)
				e.handle(&rc)
				if rc.Response.StatusCode() != fasthttp.StatusOK {
					b.Errorf("status %d for %s", rc.Response.StatusCode(), uri)
					return
				}
				rc.Response.Reset()
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
	})

	for _, tr := range []struct {
		name string
		dial fasthttp.DialFunc
	}{
		{"tcp", func(string) (net.Conn, error) { return net.Dial("tcp", tcpAddr) }},
		{"unix", func(string) (net.Conn, error) { return net.Dial("unix", sock) }},
	} {
		b.Run(tr.name, func(b *testing.B) {
			hc := &fasthttp.HostClient{Addr: "certs", Dial: tr.dial, MaxConns: 512, ReadTimeout: 5 * time.Second}
			var mu sync.Mutex
			var all []time.Duration
			// Two clients per CPU, about what nginx's workers (one per
			// CPU) send on cache misses under load.
			b.SetParallelism(2)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
				lat := make([]time.Duration, 0, 1<<14)
				uri := make([]byte, 0, 64)
				for pb.Next() {
					uri = fmt.Appendf(uri[:0], "http://certs/v1/certs/%s", benchName(rng.IntN(benchCerts)))
					req.SetRequestURIBytes(uri)
					t0 := time.Now()
					err := hc.Do(req, resp)
					lat = append(lat, time.Since(t0))
					if err != nil {
						b.Error(err)
						return
					}
					if resp.StatusCode() != fasthttp.StatusOK {
						b.Errorf("status %d for %s", resp.StatusCode(), uri)
						return
					}
				}
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			})
			b.StopTimer()
			if len(all) == 0 {
				return
			}
			slices.Sort(all)
			p99 := all[min(len(all)-1, len(all)*99/100)]
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
			b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
		})
	}
}

// benchName is the i-th stored name.
func benchName(i int) string { return fmt.Sprintf("host%06d.example.com", i) }

// fillStore stores n certificates with small fake PEM bodies (the endpoint
// does not parse them), from several goroutines so the store can batch.
func fillStore(b *testing.B, st store.Store, n int) {
	ctx := context.Background()
	notAfter := time.Now().Add(60 * 24 * time.Hour)
	const workers = 32
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				name := benchName(i)
				c := &store.Certificate{
					ID: name, Names: []string{name},
					ChainPEM: []byte("-----BEGIN CERTIFICATE-----\nfake " + name + "\n-----END CERTIFICATE-----\n"),
					KeyPEM:   []byte("-----BEGIN PRIVATE KEY-----\nfake " + name + "\n-----END PRIVATE KEY-----\n"),
					NotAfter: notAfter, Issuer: "CN=bench", Serial: fmt.Sprintf("%x", i+1),
					Source: "import", StoredAt: time.Now(),
				}
				if err := st.PutCertificate(ctx, c); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCertEndpointSealed measures the cost of private keys encrypted
// at rest on the certificate endpoint's lookup: the handler and the real
// store, without the network, with sealedBenchCerts certificates whose
// keys are the size of a PKCS #8 P-256 key, stored in clear ("plain", the
// store wrapped without a keyring, as serve runs without one) and sealed
// under AES-256-GCM ("sealed": each lookup decrypts the key), with the
// 99th percentile of a lookup's time. A fleet host's endpoint is the
// "sealed" case: it reads its local Badger copy through the same
// decorator, never the shared database, so its p99 against "plain" is the
// fleet's cost on the handshake path.
//
//	go test -run '^$' -bench BenchmarkCertEndpointSealed -benchtime 200000x ./certserver/
func BenchmarkCertEndpointSealed(b *testing.B) {
	const n = sealedBenchCerts
	for _, tc := range []struct {
		name string
		kr   *sealed.Keyring
	}{
		{"plain", nil},
		{"sealed", testKeyring(b, kek{"bench", 1})},
	} {
		b.Run(tc.name, func(b *testing.B) {
			st := sealed.Wrap(newTestStore(b), tc.kr)
			fillStoreKeys(b, st, n)
			// A generous lookup bound: the machine running it may be loaded.
			e, err := NewCertEndpoint(CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: 10 * time.Second}, st, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			var (
				mu  sync.Mutex
				all []time.Duration
			)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var rc fasthttp.RequestCtx
				rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
				uri := make([]byte, 0, 64)
				lat := make([]time.Duration, 0, 1<<14)
				for pb.Next() {
					uri = fmt.Appendf(uri[:0], "/v1/certs/%s", benchName(rng.IntN(n)))
					rc.Request.SetRequestURIBytes(uri)
					t0 := time.Now()
					e.handle(&rc)
					lat = append(lat, time.Since(t0))
					if rc.Response.StatusCode() != fasthttp.StatusOK {
						b.Errorf("status %d for %s", rc.Response.StatusCode(), uri)
						return
					}
					rc.Response.Reset()
				}
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
			if len(all) > 0 {
				slices.Sort(all)
				b.ReportMetric(float64(all[min(len(all)-1, len(all)*99/100)].Microseconds()), "p99-µs")
			}
		})
	}
}

// sealedBenchCerts is how many certificates BenchmarkCertEndpointSealed
// stores.
const sealedBenchCerts = 20_000

// fillStoreKeys stores n certificates as fillStore does, with keys of the
// size of a PEM PKCS #8 P-256 key (241 bytes).
func fillStoreKeys(b *testing.B, st store.Store, n int) {
	ctx := context.Background()
	notAfter := time.Now().Add(60 * 24 * time.Hour)
	body := strings.Repeat("MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg", 4)[:184]
	const batch = 500
	for i := 0; i < n; i += batch {
		var cs []*store.Certificate
		for j := i; j < min(n, i+batch); j++ {
			name := benchName(j)
			cs = append(cs, &store.Certificate{
				ID: name, Names: []string{name},
				ChainPEM: []byte("-----BEGIN CERTIFICATE-----\nfake " + name + "\n-----END CERTIFICATE-----\n"),
				KeyPEM:   []byte("-----BEGIN PRIVATE KEY-----\n" + body[:64] + "\n" + body[64:128] + "\n" + body[128:] + "\n-----END PRIVATE KEY-----\n"),
				NotAfter: notAfter, Issuer: "CN=bench", Serial: fmt.Sprintf("%x", j+1),
				Source: "import", StoredAt: time.Now(),
			})
		}
		if err := st.PutCertificates(ctx, cs); err != nil {
			b.Fatal(err)
		}
	}
}
