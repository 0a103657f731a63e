package dnszone

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
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

// loadEnv, set in the environment of the test binary run again by
// BenchmarkZoneTXT, makes TestZoneLoad the load generator:
// "ADDR N CLIENTS ANSWER_LENGTH QUESTION_HEX".
const loadEnv = "CERTSERVER_ZONE_LOAD"

// BenchmarkZoneTXT measures the zone's TXT answers over UDP on loopback:
// the server, with a Badger store on disk holding one order's two values
// (a wildcard and its apex) under one label, is asked b.N questions by
// benchClients clients at once, every answer checked (its ID, its
// length: both values, not truncated). The clients run in a process of
// their own (this test binary again, TestZoneLoad) on the same CPUs, so
// that the server's CPU is measured apart from theirs. It reports
// answers/s, the latency p50 and p99 under that load, the CPU per answer
// of the server and of the clients, and the rate the server's CPU alone
// allows on 2 CPUs nobody else uses: on a loaded machine answers/s shows
// the share of the CPUs the benchmark got.
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
	if want := exchange(b, s.Addr(), "udp", q); len(want.Answer) != 2 || want.Truncated {
		b.Fatalf("answer %v: want the 2 values", want)
	}
	wantLen := answerLen(b, s.Addr(), wire)

	cmd := exec.Command(os.Args[0], "-test.run=^TestZoneLoad$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d %x", loadEnv, s.Addr(), b.N, benchClients, wantLen, wire))
	b.ResetTimer()
	cpu0 := cpuTime(b)
	out, err := cmd.CombinedOutput()
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	if err != nil {
		b.Fatalf("load generator: %v\n%s", err, out)
	}
	var elapsed time.Duration
	var p50, p99 float64
	for line := range strings.Lines(string(out)) {
		if _, err := fmt.Sscanf(line, "zone-load %d %f %f", &elapsed, &p50, &p99); err == nil {
			break
		}
	}
	if elapsed == 0 {
		b.Fatalf("load generator said no figures:\n%s", out)
	}
	clientCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	serverPer := float64(cpu.Microseconds()) / float64(b.N)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "answers/s")
	b.ReportMetric(p50, "p50-µs")
	b.ReportMetric(p99, "p99-µs")
	b.ReportMetric(benchClients, "clients")
	b.ReportMetric(serverPer, "server-cpu-µs/answer")
	b.ReportMetric(float64(clientCPU.Microseconds())/float64(b.N), "client-cpu-µs/answer")
	b.ReportMetric(2e6/serverPer, "idle-2cpu-answers/s")
	if got := s.counted(b, "TXT", "answer"); int(got) != b.N+2 {
		b.Errorf("the server counted %v TXT answers, want %d", got, b.N+2)
	}
}

// TestZoneLoad is BenchmarkZoneTXT's load generator, run in a process of
// its own with loadEnv set; without it, it does nothing. It prints
// "zone-load ELAPSED_NS P50_µs P99_µs".
func TestZoneLoad(t *testing.T) {
	spec := os.Getenv(loadEnv)
	if spec == "" {
		return // not the load generator
	}
	var addr, hexWire string
	var n, clients, wantLen int
	if _, err := fmt.Sscanf(spec, "%s %d %d %d %s", &addr, &n, &clients, &wantLen, &hexWire); err != nil {
		t.Fatalf("%s=%q: %v", loadEnv, spec, err)
	}
	wire := make([]byte, len(hexWire)/2)
	for i := range wire {
		v, err := strconv.ParseUint(hexWire[2*i:2*i+2], 16, 8)
		if err != nil {
			t.Fatal(err)
		}
		wire[i] = byte(v)
	}
	per := make([]int, clients)
	for i := range n {
		per[i%clients]++
	}
	lat := make([][]time.Duration, clients)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Go(func() {
			conn, err := net.Dial("udp", addr)
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
					errs <- errors.New("unexpected answer (wrong ID or length)")
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[c] = l
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1000 }
	fmt.Printf("zone-load %d %.1f %.1f\n", elapsed.Nanoseconds(), pct(0.50), pct(0.99))
}

// cpuTime returns the CPU time this process has used, user and system.
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
