package nginx_test

import (
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// BenchmarkHandshake compares full TLS handshakes per second through one
// nginx for a name whose certificate the Lua module serves (from its
// per-worker cache, the steady state) and for the same ECDSA P-256
// certificate configured statically with ssl_certificate on a second
// server. Every handshake is a new TCP connection without session
// resumption. The two alternate in rounds so that drift in the machine's
// load hits both alike. One op is one handshake on each side.
//
//	go test -run '^$' -bench Handshake -benchtime 20000x ./nginx/
//
// Reported: lua-hs/s, static-hs/s and their ratio lua/static (the target
// is >= 0.97); and nginx's worker CPU per handshake on each side
// (lua-cpu-µs/hs, static-cpu-µs/hs) with the capacity ratio
// lua/static-cpu, which the client sharing the machine does not blur.
//
// Most of the difference is not the module's: an ssl_certificate_by_lua
// handler that does nothing, and one that only sets pre-parsed cdata with
// clear_certs/set_cert/set_priv_key, cost about as much as this one.
func BenchmarkHandshake(b *testing.B) {
	const (
		name    = "bench.test"
		rounds  = 10
		clients = 2
	)
	ca := newTestCA(b)
	dir := b.TempDir()
	cert := ca.issue(b, name)
	certFile, keyFile := cert.writeFiles(b, dir, "bench")
	fbCert, fbKey := ca.issue(b, "fallback.invalid").writeFiles(b, dir, "fallback")
	side := startFakeSidecar(b)
	side.set(name, certAnswer(cert, 3600))
	ngx := nginxtest.Start(b, nginxtest.Options{
		Sidecar:      "unix:" + side.sock,
		FallbackCert: fbCert,
		FallbackKey:  fbKey,
		StaticCert:   certFile,
		StaticKey:    keyFile,
	})
	luaAddr, staticAddr := ngx.HTTPSAddr(), ngx.StaticHTTPSAddr()

	// Warm up both (the Lua side fetches and caches the certificate in
	// every worker) and check that both serve it.
	for range 20 {
		for _, addr := range []string{luaAddr, staticAddr} {
			if err := expectSerial(addr, name, cert.serial)(); err != nil {
				b.Fatal(err)
			}
		}
	}

	lua := &benchSide{addr: luaAddr}
	static := &benchSide{addr: staticAddr}
	per := max(b.N/rounds, clients)
	b.ResetTimer()
	for r := range rounds {
		order := []*benchSide{lua, static}
		if r%2 == 1 {
			order[0], order[1] = static, lua
		}
		for _, side := range order {
			before := workerCPU(b, ngx)
			side.wall += handshakes(b, side.addr, name, cert.serial, per, clients)
			side.cpu += workerCPU(b, ngx) - before
		}
	}
	b.StopTimer()

	total := float64(per * rounds)
	luaRate, staticRate := total/lua.wall.Seconds(), total/static.wall.Seconds()
	b.ReportMetric(luaRate, "lua-hs/s")
	b.ReportMetric(staticRate, "static-hs/s")
	b.ReportMetric(luaRate/staticRate, "lua/static")
	// nginx's own CPU per handshake, which the client's share of this
	// machine does not blur: capacity per worker core.
	luaCPU, staticCPU := lua.cpu.Seconds()/total, static.cpu.Seconds()/total
	b.ReportMetric(luaCPU*1e6, "lua-cpu-µs/hs")
	b.ReportMetric(staticCPU*1e6, "static-cpu-µs/hs")
	b.ReportMetric(staticCPU/luaCPU, "lua/static-cpu")
	ngx.AssertCleanErrorLog(b)
}

// benchSide accumulates the wall-clock and nginx CPU time of one server.
type benchSide struct {
	addr      string
	wall, cpu time.Duration
}

func workerCPU(b *testing.B, ngx *nginxtest.Nginx) time.Duration {
	d, err := ngx.WorkerCPU()
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// handshakes makes n handshakes with addr for sni from the given number of
// concurrent clients, checking that each one is served the certificate
// with serial want, and returns the time they took.
func handshakes(b *testing.B, addr, sni string, want *big.Int, n, clients int) time.Duration {
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for c := range clients {
		count := n / clients
		if c < n%clients {
			count++
		}
		wg.Go(func() {
			for range count {
				certs, err := handshake(addr, sni, nil)
				if err == nil && certs[0].SerialNumber.Cmp(want) != 0 {
					err = fmt.Errorf("%s served serial %v, want %v", addr, certs[0].SerialNumber, want)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return elapsed
}
