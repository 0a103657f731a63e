// Command demodns is the DNS server of the local demo (scripts/demo.sh): it
// answers every name under -zone with 127.0.0.1 (A), and with ::1 (AAAA)
// only when -aaaa is given, and every other name with NXDOMAIN, so that the demo's Pebble validates the
// demo names against the demo's nginx on loopback. It is not part of
// certserver.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/miekg/dns"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8053", "UDP and TCP address to answer on")
	zone := flag.String("zone", "localhost", "names under this zone resolve to loopback")
	aaaa := flag.Bool("aaaa", false, "answer AAAA queries with ::1 too (Pebble then validates over IPv6)")
	flag.Parse()
	suffix := "." + strings.Trim(strings.ToLower(*zone), ".") + "."

	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Authoritative = true
		for _, q := range req.Question {
			name := strings.ToLower(q.Name)
			if !strings.HasSuffix(name, suffix) && name != suffix[1:] {
				m.Rcode = dns.RcodeNameError
				continue
			}
			hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 5, Rrtype: q.Qtype}
			switch q.Qtype {
			case dns.TypeA:
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 1)})
			case dns.TypeAAAA:
				if !*aaaa {
					continue
				}
				m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.IPv6loopback})
			}
		}
		_ = w.WriteMsg(m)
	})

	errs := make(chan error, 2)
	for _, network := range []string{"udp", "tcp"} {
		srv := &dns.Server{Addr: *addr, Net: network, Handler: handler}
		go func() { errs <- srv.ListenAndServe() }()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-errs:
		log.Fatalf("demodns: %v", err)
	case <-stop:
		fmt.Fprintln(os.Stderr, "demodns: stopped")
	}
}
