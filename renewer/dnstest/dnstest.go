// Package dnstest runs a DNS server for tests: it answers from records the
// test sets at run time, on 127.0.0.1 over UDP and TCP on one port picked at
// run time, and stops when the test ends.
//
// It stands in for the whole DNS: Pebble's validation authority
// (pebble -dnsserver) and the renewer's pre-flight checks ask it directly.
// It answers like a recursive resolver would: a CNAME chain is followed
// within the records set here and the final rcode is that of the target.
//
// A zone can be forwarded to another server (Forward): questions for it,
// asked directly or reached through a CNAME, are asked there, as a
// resolver following a delegation would, so that a test can put the
// customer's _acme-challenge CNAME here and certserver's own DNS zone
// (renewer/dnszone) behind it.
//
// A name with no records answers NXDOMAIN (so "the name points nowhere" can
// be tested) unless Options.DefaultAddrs is set. A name that has no records
// of its own but has records below it (an empty non-terminal, such as
// "example.test" when only "www.example.test" is set) answers NOERROR with no
// records, as real DNS does.
package dnstest

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// ttl is the TTL of every answer, in seconds. Tests change records while
// they run, so nothing should cache them for long.
const ttl = 1

// maxChain bounds how many CNAMEs one answer follows.
const maxChain = 8

// Options configures a Server. The zero value is ready to use.
type Options struct {
	// DefaultAddrs answers A and AAAA queries for names that have no
	// records (nor a wildcard covering them): IPv4 addresses for A, IPv6
	// for AAAA. Default nil: such names answer NXDOMAIN.
	DefaultAddrs []netip.Addr
}

// CAA is one CAA record (RFC 8659 section 4).
type CAA struct {
	Flag  uint8  // 128 marks the property critical
	Tag   string // "issue", "issuewild", "iodef", …
	Value string // e.g. "letsencrypt.org"
}

// Server is a running DNS server. Its methods are safe for concurrent use,
// also while queries are being answered.
type Server struct {
	addr string
	opts Options

	mu       sync.RWMutex
	zone     map[string]*node  // lowercase FQDN -> records
	queries  map[string]int    // lowercase FQDN -> queries received
	forwards map[string]string // lowercase FQDN of a zone -> "host:port"
}

// node holds the records of one owner name.
type node struct {
	a     []netip.Addr
	aaaa  []netip.Addr
	cname string
	caa   []CAA
	txt   []string
	rcode int // answered instead of records when not RcodeSuccess
	// rotate makes each answer of a (of aaaa) start one address further
	// along than the one before (SetRotation); turn4 (turn6) counts those
	// answers.
	rotate       bool
	turn4, turn6 atomic.Uint64
}

// Start starts a server on 127.0.0.1, UDP and TCP on the same port, and
// stops it in t.Cleanup. It fails the test when it cannot listen.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{
		opts:     opts,
		zone:     make(map[string]*node),
		queries:  make(map[string]int),
		forwards: make(map[string]string),
	}
	pc, ln, err := listenPair()
	if err != nil {
		t.Fatalf("dnstest: listen: %v", err)
	}
	s.addr = pc.LocalAddr().String()

	handler := dns.HandlerFunc(s.serveDNS)
	servers := []*dns.Server{
		{PacketConn: pc, Handler: handler},
		{Listener: ln, Handler: handler},
	}
	for _, srv := range servers {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go func() { _ = srv.ActivateAndServe() }()
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatalf("dnstest: server on %s did not start", s.addr)
		}
		t.Cleanup(func() { _ = srv.Shutdown() })
	}
	return s
}

// listenPair opens a UDP socket on a free loopback port and a TCP listener
// on the same port, trying again when the TCP port is taken.
func listenPair() (net.PacketConn, net.Listener, error) {
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		lastErr = err
		_ = pc.Close()
	}
	return nil, nil, fmt.Errorf("no port free for both udp and tcp: %w", lastErr)
}

// Addr returns the server's address, "127.0.0.1:PORT", the same for UDP and
// TCP.
func (s *Server) Addr() string { return s.addr }

// SetA replaces the A records of name. It panics when an address is not
// IPv4.
func (s *Server) SetA(name string, addrs ...netip.Addr) {
	for _, a := range addrs {
		if !a.Is4() {
			panic(fmt.Sprintf("dnstest: SetA(%q): %s is not an IPv4 address", name, a))
		}
	}
	s.update(name, func(n *node) { n.a = append([]netip.Addr(nil), addrs...) })
}

// SetRotation makes name answer its A and AAAA records in rotation, as a
// round-robin DNS server does: each answer lists the addresses starting one
// further along than the answer before, so that a client that takes the
// first address (Pebble's validation authority does) reaches a different
// one each time, and n queries reach each of n addresses once. false
// restores the order the records were set in. It applies to name's own
// records, or, for "*.example.test", to every name the wildcard answers.
func (s *Server) SetRotation(name string, on bool) {
	s.update(name, func(n *node) { n.rotate = on })
}

// SetAAAA replaces the AAAA records of name. It panics when an address is
// not IPv6.
func (s *Server) SetAAAA(name string, addrs ...netip.Addr) {
	for _, a := range addrs {
		if !a.Is6() || a.Is4In6() {
			panic(fmt.Sprintf("dnstest: SetAAAA(%q): %s is not an IPv6 address", name, a))
		}
	}
	s.update(name, func(n *node) { n.aaaa = append([]netip.Addr(nil), addrs...) })
}

// SetAddrs replaces the A and AAAA records of name with addrs, split by
// family.
func (s *Server) SetAddrs(name string, addrs ...netip.Addr) {
	var v4, v6 []netip.Addr
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	s.update(name, func(n *node) { n.a, n.aaaa = v4, v6 })
}

// SetCNAME makes name an alias of target ("" removes the alias). A name
// with a CNAME answers every other type through its target.
func (s *Server) SetCNAME(name, target string) {
	if target != "" {
		target = canonical(target)
	}
	s.update(name, func(n *node) { n.cname = target })
}

// SetCAA replaces the CAA records of name.
func (s *Server) SetCAA(name string, records ...CAA) {
	s.update(name, func(n *node) { n.caa = append([]CAA(nil), records...) })
}

// AddTXT adds a TXT record holding value at name (a second value gives
// the name two records, as a wildcard and its apex need in one order).
func (s *Server) AddTXT(name, value string) {
	s.update(name, func(n *node) { n.txt = append(n.txt, value) })
}

// RemoveTXT removes name's TXT records holding value.
func (s *Server) RemoveTXT(name, value string) {
	s.update(name, func(n *node) {
		n.txt = slices.DeleteFunc(n.txt, func(v string) bool { return v == value })
	})
}

// TXT returns the values of name's TXT records.
func (s *Server) TXT(name string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if n := s.zone[canonical(name)]; n != nil {
		return slices.Clone(n.txt)
	}
	return nil
}

// SetRcode makes every query for name answer rcode (dns.RcodeServerFailure,
// dns.RcodeRefused, …) with no records; dns.RcodeSuccess restores normal
// answers.
func (s *Server) SetRcode(name string, rcode int) {
	s.update(name, func(n *node) { n.rcode = rcode })
}

// Delete removes every record of name; it answers NXDOMAIN again (or the
// defaults).
func (s *Server) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.zone, canonical(name))
}

// Forward sends every question for zone and the names below it, asked
// directly or reached through a CNAME, to the DNS server at addr
// ("host:port"), and answers with what it says (its records after the
// CNAMEs that led there, its rcode), as a resolver following a delegation
// would. "" stops forwarding zone. Records set here below zone are not
// used while it is forwarded.
func (s *Server) Forward(zone, addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if addr == "" {
		delete(s.forwards, canonical(zone))
		return
	}
	s.forwards[canonical(zone)] = addr
}

// forwardFor returns the server that name's zone is forwarded to, "" for
// none. The caller holds s.mu.
func (s *Server) forwardFor(name string) string {
	for zone := name; ; {
		if addr, ok := s.forwards[zone]; ok {
			return addr
		}
		i := strings.IndexByte(zone, '.')
		if i < 0 || i == len(zone)-1 {
			return ""
		}
		zone = zone[i+1:]
	}
}

// forward asks addr about name and qtype: over UDP with EDNS0, again over
// TCP when the answer was truncated. A server that does not answer is
// SERVFAIL, as a resolver says.
func forward(addr, name string, qtype uint16) ([]dns.RR, int) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(1232, false)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second, UDPSize: 1232}).Exchange(q, addr)
	if err == nil && r.Truncated {
		r, _, err = (&dns.Client{Net: "tcp", Timeout: 5 * time.Second}).Exchange(q, addr)
	}
	if err != nil {
		return nil, dns.RcodeServerFailure
	}
	return r.Answer, r.Rcode
}

// Queries returns how many queries for name (of any type) the server has
// received.
func (s *Server) Queries(name string) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.queries[canonical(name)]
}

func (s *Server) update(name string, f func(*node)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := canonical(name)
	n := s.zone[key]
	if n == nil {
		n = &node{}
		s.zone[key] = n
	}
	f(n)
}

// canonical returns name in lowercase with a trailing dot. A leading "*."
// is kept: "*.example.test" sets a wildcard (RFC 4592) covering every name
// one or more labels below example.test that has no records of its own.
func canonical(name string) string { return dns.Fqdn(strings.ToLower(name)) }

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		resp.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(resp)
		return
	}
	q := req.Question[0]
	qname := canonical(q.Name)

	s.mu.Lock()
	s.queries[qname]++
	s.mu.Unlock()

	s.mu.RLock()
	resp.Answer, resp.Rcode = s.answer(qname, q.Qtype)
	s.mu.RUnlock()
	// Over UDP an answer must fit the client's buffer, as a real server's
	// must: 512 bytes, or what its EDNS0 record offers; a longer one is
	// cut and flagged truncated (RFC 1035 section 4.1.1, RFC 6891), and
	// the client is to ask again over TCP.
	if w.LocalAddr().Network() == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
			resp.SetEdns0(opt.UDPSize(), false)
		}
		resp.Truncate(size)
	}
	_ = w.WriteMsg(resp)
}

// answer resolves qname/qtype from the records. The caller holds s.mu.
func (s *Server) answer(qname string, qtype uint16) ([]dns.RR, int) {
	var answers []dns.RR
	name := qname
	for range maxChain {
		if addr := s.forwardFor(name); addr != "" {
			rrs, rcode := forward(addr, name, qtype)
			return append(answers, rrs...), rcode
		}
		n, exists := s.lookup(name)
		if n == nil {
			if exists {
				return answers, dns.RcodeSuccess
			}
			if len(s.opts.DefaultAddrs) > 0 {
				return append(answers, addrRecords(name, qtype, s.opts.DefaultAddrs, s.opts.DefaultAddrs)...), dns.RcodeSuccess
			}
			return answers, dns.RcodeNameError
		}
		if n.rcode != dns.RcodeSuccess {
			return nil, n.rcode
		}
		if n.cname != "" && qtype != dns.TypeCNAME {
			answers = append(answers, &dns.CNAME{Hdr: header(name, dns.TypeCNAME), Target: n.cname})
			name = n.cname
			continue
		}
		switch qtype {
		case dns.TypeA, dns.TypeAAAA:
			v4, v6 := n.a, n.aaaa
			if n.rotate && qtype == dns.TypeA {
				v4 = rotated(v4, n.turn4.Add(1)-1)
			}
			if n.rotate && qtype == dns.TypeAAAA {
				v6 = rotated(v6, n.turn6.Add(1)-1)
			}
			answers = append(answers, addrRecords(name, qtype, v4, v6)...)
		case dns.TypeCNAME:
			if n.cname != "" {
				answers = append(answers, &dns.CNAME{Hdr: header(name, dns.TypeCNAME), Target: n.cname})
			}
		case dns.TypeTXT:
			for _, v := range n.txt {
				answers = append(answers, &dns.TXT{Hdr: header(name, dns.TypeTXT), Txt: []string{v}})
			}
		case dns.TypeCAA:
			for _, c := range n.caa {
				answers = append(answers, &dns.CAA{Hdr: header(name, dns.TypeCAA), Flag: c.Flag, Tag: c.Tag, Value: c.Value})
			}
		}
		return answers, dns.RcodeSuccess
	}
	return nil, dns.RcodeServerFailure // CNAME loop or chain too long
}

// lookup returns the records that answer for name: its own, else those of
// the wildcard of its closest existing ancestor (RFC 4592 section 3.3.1).
// exists reports whether name exists at all, which it does without records
// when names below it have records. The caller holds s.mu.
func (s *Server) lookup(name string) (n *node, exists bool) {
	if n, ok := s.zone[name]; ok {
		return n, true
	}
	if s.hasDescendants(name) {
		return nil, true
	}
	for parent := name; ; {
		i := strings.IndexByte(parent, '.')
		if i < 0 || i == len(parent)-1 {
			return nil, false
		}
		parent = parent[i+1:]
		if _, ok := s.zone[parent]; ok || s.hasDescendants(parent) {
			n := s.zone["*."+parent]
			return n, n != nil
		}
	}
}

// hasDescendants reports whether some name below name has records. The
// caller holds s.mu.
func (s *Server) hasDescendants(name string) bool {
	suffix := "." + name
	for owner := range s.zone {
		if strings.HasSuffix(owner, suffix) {
			return true
		}
	}
	return false
}

// rotated returns addrs starting at index turn (modulo their number) and
// wrapping around.
func rotated(addrs []netip.Addr, turn uint64) []netip.Addr {
	if len(addrs) < 2 {
		return addrs
	}
	k := int(turn % uint64(len(addrs)))
	return append(append(make([]netip.Addr, 0, len(addrs)), addrs[k:]...), addrs[:k]...)
}

func addrRecords(name string, qtype uint16, v4, v6 []netip.Addr) []dns.RR {
	var rrs []dns.RR
	switch qtype {
	case dns.TypeA:
		for _, a := range v4 {
			if a.Is4() {
				rrs = append(rrs, &dns.A{Hdr: header(name, dns.TypeA), A: a.AsSlice()})
			}
		}
	case dns.TypeAAAA:
		for _, a := range v6 {
			if a.Is6() && !a.Is4In6() {
				rrs = append(rrs, &dns.AAAA{Hdr: header(name, dns.TypeAAAA), AAAA: a.AsSlice()})
			}
		}
	}
	return rrs
}

func header(name string, rrtype uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}
