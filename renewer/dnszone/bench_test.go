package dnszone

import (
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// benchClients is how many clients query at once, each waiting for its
// answer before it sends the next question (a closed loop): enough to
// keep both CPUs of the target machine busy.
const benchClients = 16

// BenchmarkZoneTXT measures the zone's TXT answers over UDP on loopback:
// the server with a Badger store on disk holding one order's two values
// (a wildcard and its apex) under one label, asked by benchClients
// clients at once, b.N questions in all, every answer checked (its ID,
// its length: both values, not truncated). The clients run on the same
// CPUs as the server, so the figure is what the machine does with both.
// It reports answers/s and the latency p50 and p99 under that load.
func BenchmarkZoneTXT(b *testing.B) {
	st := openStore(b)
	s := startServer(b, Config{Zone: mustZone(b, testZone)}, st)
	putValue(b, st, "*.shop.example", value(1))
	putValue(b, st, "shop.example", value(2))

	q := new(dns.Msg)
	q.SetQuestion(Label("shop.example")+"."+testZone+".", dns.TypeTXT)
	wire, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	// The expected answer, asked once the slow way.
	want := exchange(b, s.Addr(), "udp", q)
	if len(want.Answer) != 2 || want.Truncated {
		b.Fatalf("answer %v: want the 2 values", want)
	}
	wantLen := answerLen(b, s.Addr(), wire)

	per := make([]int, benchClients)
	for i := range b.N {
		per[i%benchClients]++
	}
	lat := make([][]time.Duration, benchClients)
	errs := make(chan error, benchClients)
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := cpuTime(b)
	start := time.Now()
	for c := range benchClients {
		wg.Go(func() {
			conn, err := net.Dial("udp", s.Addr())
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			msg := slices.Clone(wire)
			buf := make([]byte, 2048)
			l := make([]time.Duration, 0, per[c])
			for i := range per[c] {
				id := uint16(c<<12 | i&0xfff)
				binary.BigEndian.PutUint16(msg, id)
				t0 := time.Now()
				if _, err := conn.Write(msg); err != nil {
					errs <- err
					return
				}
				_ = conn.SetReadDeadline(t0.Add(10 * time.Second))
				n, err := conn.Read(buf)
				if err != nil {
					errs <- err
					return
				}
				if n != wantLen || binary.BigEndian.Uint16(buf) != id {
					errs <- errAnswer
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[c] = l
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1000 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "answers/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(benchClients, "clients")
	// The CPU of the whole process (server and clients) per answer, and
	// the rate it allows on 2 CPUs nobody else uses: on a loaded machine
	// answers/s shows the share of the CPUs the benchmark got.
	perAnswer := float64(cpu.Microseconds()) / float64(b.N)
	b.ReportMetric(perAnswer, "cpu-µs/answer")
	b.ReportMetric(2e6/perAnswer, "idle-2cpu-answers/s")
	if got := s.counted(b, "TXT", "answer"); int(got) != b.N+2 {
		b.Errorf("the server counted %v TXT answers, want %d", got, b.N+2)
	}
}

var errAnswer = &net.AddrError{Err: "unexpected answer (wrong ID or length)"}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// answerLen returns the length in bytes of the server's answer to wire.
func answerLen(b *testing.B, addr string, wire []byte) int {
	b.Helper()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(wire); err != nil {
		b.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil {
		b.Fatal(err)
	}
	return n
}
