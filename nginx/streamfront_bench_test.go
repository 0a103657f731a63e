package nginx_test

import (
	"testing"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// BenchmarkStreamFront measures what the TLS-ALPN-01 stream snippet
// (certserver-stream.conf) costs https connections: full TLS handshakes
// per second with one nginx's https server (the Lua hook serving the name
// from its per-worker cache) reached through the stream front (ssl_preread,
// then a local hop with a PROXY protocol header) and reached directly on a
// second listen of the same server, so the same certificate and the same
// workers. Every handshake is a new TCP connection without session
// resumption; the two alternate in rounds so that drift in the machine's
// load hits both alike. One op is one handshake on each side.
//
//	go test -run '^$' -bench StreamFront -benchtime 20000x ./nginx/
//
// Reported: front-hs/s, direct-hs/s and their ratio front/direct; and
// nginx's worker CPU per handshake on each side (front-cpu-µs/hs,
// direct-cpu-µs/hs: the front's includes the proxying) with the capacity
// ratio front/direct-cpu.
func BenchmarkStreamFront(b *testing.B) {
	const (
		name    = "bench.test"
		rounds  = 10
		clients = 2
	)
	ca := newTestCA(b)
	dir := b.TempDir()
	cert := ca.issue(b, name)
	fbCert, fbKey := ca.issue(b, "fallback.invalid").writeFiles(b, dir, "fallback")
	side := startFakeSidecar(b)
	side.set(name, certAnswer(cert, 3600))
	ngx := nginxtest.Start(b, nginxtest.Options{
		Sidecar:      "unix:" + side.sock,
		FallbackCert: fbCert,
		FallbackKey:  fbKey,
		TLSALPN:      freeLoopbackAddr(b),
	})
	frontAddr, directAddr := ngx.HTTPSAddr(), ngx.DirectHTTPSAddr()
	for range 20 {
		for _, addr := range []string{frontAddr, directAddr} {
			if err := expectSerial(addr, name, cert.serial)(); err != nil {
				b.Fatal(err)
			}
		}
	}

	front := &benchSide{addr: frontAddr}
	direct := &benchSide{addr: directAddr}
	per := max(b.N/rounds, clients)
	b.ResetTimer()
	for r := range rounds {
		order := []*benchSide{front, direct}
		if r%2 == 1 {
			order[0], order[1] = direct, front
		}
		for _, s := range order {
			before := workerCPU(b, ngx)
			s.wall += handshakes(b, s.addr, name, cert.serial, per, clients)
			s.cpu += workerCPU(b, ngx) - before
		}
	}
	b.StopTimer()

	total := float64(per * rounds)
	frontRate, directRate := total/front.wall.Seconds(), total/direct.wall.Seconds()
	b.ReportMetric(frontRate, "front-hs/s")
	b.ReportMetric(directRate, "direct-hs/s")
	b.ReportMetric(frontRate/directRate, "front/direct")
	frontCPU, directCPU := front.cpu.Seconds()/total, direct.cpu.Seconds()/total
	b.ReportMetric(frontCPU*1e6, "front-cpu-µs/hs")
	b.ReportMetric(directCPU*1e6, "direct-cpu-µs/hs")
	b.ReportMetric(directCPU/frontCPU, "front/direct-cpu")
	ngx.AssertCleanErrorLog(b)
}
