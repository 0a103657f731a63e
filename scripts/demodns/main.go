// Command demodns is the DNS server of the local demo (scripts/demo.sh): it
// answers every name under -zone with 127.0.0.1 (A), and with ::1 (AAAA)
// only when -aaaa is given, and every other name with NXDOMAIN, so that the demo's Pebble validates the
// demo names against the demo's nginx on loopback. It is not part of
// certserver.
//
// With -delegate ZONE=ADDR it also plays the customers' DNS of a hoster
// that uses certserver's own DNS-01 zone: questions for names under ZONE
// go to certserver's zone server at ADDR, and every
// _acme-challenge.NAME under -zone is the CNAME each customer creates
// once (`certserver domains show` prints it), into ZONE, followed as a
// recursive resolver does: the answer carries the CNAME and what the
// zone server answers for its target.
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

	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/miekg/dns"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8053", "UDP and TCP address to answer on")
	zone := flag.String("zone", "localhost", "names under this zone resolve to loopback")
	aaaa := flag.Bool("aaaa", false, "answer AAAA queries with ::1 too (Pebble then validates over IPv6)")
	delegate := flag.String("delegate", "", "ZONE=ADDR: certserver's DNS-01 zone and its server; _acme-challenge names are CNAMEs into it")
	flag.Parse()
	suffix := "." + strings.Trim(strings.ToLower(*zone), ".") + "."
	var acme *delegation
	if *delegate != "" {
		var err error
		if acme, err = newDelegation(*delegate); err != nil {
			log.Fatalf("demodns: -delegate %q: %v", *delegate, err)
		}
	}

	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if acme != nil && len(req.Question) == 1 {
			if m, ok := acme.answer(req); ok {
				_ = w.WriteMsg(m)
				return
			}
		}
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

// delegation is certserver's DNS-01 zone, asked at addr, with the
// customers' _acme-challenge CNAMEs into it.
type delegation struct {
	zone dnszone.Zone
	addr string
}

func newDelegation(spec string) (*delegation, error) {
	name, addr, ok := strings.Cut(spec, "=")
	if !ok || addr == "" {
		return nil, fmt.Errorf("want ZONE=ADDR")
	}
	z, err := dnszone.NewZone(name)
	if err != nil {
		return nil, err
	}
	return &delegation{zone: z, addr: addr}, nil
}

// answer answers req when its question is under the zone (relayed to the
// zone's server) or is an _acme-challenge name (the CNAME, then the
// zone's answer for its target); ok is false for any other question.
func (d *delegation) answer(req *dns.Msg) (*dns.Msg, bool) {
	q := req.Question[0]
	name := strings.TrimSuffix(strings.ToLower(q.Name), ".")
	if name == d.zone.Name() || strings.HasSuffix(name, "."+d.zone.Name()) {
		return d.ask(req, q), true
	}
	owner, ok := strings.CutPrefix(name, "_acme-challenge.")
	if !ok {
		return nil, false
	}
	target := dns.Fqdn(d.zone.Target(owner))
	cname := &dns.CNAME{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 5}, Target: target}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	m.Answer = []dns.RR{cname}
	if q.Qtype == dns.TypeCNAME {
		return m, true
	}
	sub := d.ask(req, dns.Question{Name: target, Qtype: q.Qtype, Qclass: q.Qclass})
	m.Rcode = sub.Rcode
	m.Answer = append(m.Answer, sub.Answer...)
	m.Ns = sub.Ns
	return m, true
}

// ask relays question q to the zone's server, and answers SERVFAIL when
// it does not answer.
func (d *delegation) ask(req *dns.Msg, q dns.Question) *dns.Msg {
	out := new(dns.Msg)
	out.Id = dns.Id()
	out.Question = []dns.Question{q}
	c := &dns.Client{Net: "tcp"}
	in, _, err := c.Exchange(out, d.addr)
	if err != nil {
		in = new(dns.Msg)
		in.Rcode = dns.RcodeServerFailure
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	m.Rcode = in.Rcode
	m.Answer, m.Ns = in.Answer, in.Ns
	return m
}
