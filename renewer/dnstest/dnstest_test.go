package dnstest

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

var (
	loopback4 = netip.MustParseAddr("127.0.0.1")
	other4    = netip.MustParseAddr("192.0.2.7")
	loopback6 = netip.MustParseAddr("::1")
)

// query asks s over net ("udp" or "tcp") and returns the rcode and the
// answers in presentation form without TTLs ("a.test. A 127.0.0.1").
func query(t *testing.T, s *Server, network, name string, qtype uint16) (int, []string) {
	t.Helper()
	c := &dns.Client{Net: network}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	in, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("exchange %s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	var got []string
	for _, rr := range in.Answer {
		h := rr.Header()
		data := rr.String()[len(h.String()):]
		got = append(got, fmt.Sprintf("%s %s %s", h.Name, dns.TypeToString[h.Rrtype], data))
	}
	return in.Rcode, got
}

func TestAnswers(t *testing.T) {
	s := Start(t, Options{})
	s.SetA("www.example.test", loopback4, other4)
	s.SetAAAA("www.example.test", loopback6)
	s.SetCNAME("alias.example.test", "www.example.test")
	s.SetCNAME("dangling.example.test", "nowhere.example.test")
	s.SetCNAME("loop1.example.test", "loop2.example.test")
	s.SetCNAME("loop2.example.test", "loop1.example.test")
	s.SetA("*.wild.test", loopback4)
	s.SetA("exact.wild.test", other4)
	s.SetRcode("broken.example.test", dns.RcodeServerFailure)
	s.SetCAA("example.test", CAA{Tag: "issue", Value: "pebble.letsencrypt.org"})
	s.SetA("Mixed.Case.TEST.", loopback4)

	tests := []struct {
		desc  string
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{desc: "a records", name: "www.example.test", qtype: dns.TypeA, want: []string{
			"www.example.test. A 127.0.0.1", "www.example.test. A 192.0.2.7"}},
		{desc: "aaaa record", name: "www.example.test", qtype: dns.TypeAAAA, want: []string{
			"www.example.test. AAAA ::1"}},
		{desc: "query name is case-insensitive", name: "WWW.Example.Test", qtype: dns.TypeAAAA, want: []string{
			"www.example.test. AAAA ::1"}},
		{desc: "set name is case-insensitive", name: "mixed.case.test", qtype: dns.TypeA, want: []string{
			"mixed.case.test. A 127.0.0.1"}},
		{desc: "no records of the type", name: "www.example.test", qtype: dns.TypeCAA},
		{desc: "unknown name", name: "nx.example.test", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{desc: "unknown domain", name: "nowhere.invalid", qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{desc: "empty non-terminal", name: "test", qtype: dns.TypeA},
		{desc: "cname followed", name: "alias.example.test", qtype: dns.TypeA, want: []string{
			"alias.example.test. CNAME www.example.test.",
			"www.example.test. A 127.0.0.1", "www.example.test. A 192.0.2.7"}},
		{desc: "cname itself", name: "alias.example.test", qtype: dns.TypeCNAME, want: []string{
			"alias.example.test. CNAME www.example.test."}},
		{desc: "dangling cname", name: "dangling.example.test", qtype: dns.TypeA, rcode: dns.RcodeNameError, want: []string{
			"dangling.example.test. CNAME nowhere.example.test."}},
		{desc: "cname loop", name: "loop1.example.test", qtype: dns.TypeA, rcode: dns.RcodeServerFailure},
		{desc: "wildcard", name: "anything.wild.test", qtype: dns.TypeA, want: []string{
			"anything.wild.test. A 127.0.0.1"}},
		{desc: "wildcard two labels down", name: "a.b.wild.test", qtype: dns.TypeA, want: []string{
			"a.b.wild.test. A 127.0.0.1"}},
		{desc: "exact beats wildcard", name: "exact.wild.test", qtype: dns.TypeA, want: []string{
			"exact.wild.test. A 192.0.2.7"}},
		{desc: "wildcard does not cover its parent", name: "wild.test", qtype: dns.TypeA},
		{desc: "rcode override", name: "broken.example.test", qtype: dns.TypeA, rcode: dns.RcodeServerFailure},
		{desc: "caa", name: "example.test", qtype: dns.TypeCAA, want: []string{
			`example.test. CAA 0 issue "pebble.letsencrypt.org"`}},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(tc.desc+"/"+network, func(t *testing.T) {
				rcode, got := query(t, s, network, tc.name, tc.qtype)
				if rcode != tc.rcode {
					t.Errorf("rcode = %s, want %s", dns.RcodeToString[rcode], dns.RcodeToString[tc.rcode])
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("answers = %q, want %q", got, tc.want)
				}
			})
		}
	}
}

func TestDefaultAddrs(t *testing.T) {
	s := Start(t, Options{DefaultAddrs: []netip.Addr{loopback4, loopback6}})
	s.SetA("set.example.test", other4)

	tests := []struct {
		desc  string
		name  string
		qtype uint16
		want  []string
	}{
		{desc: "unknown name gets the default a", name: "any.example.test", qtype: dns.TypeA, want: []string{"any.example.test. A 127.0.0.1"}},
		{desc: "unknown name gets the default aaaa", name: "any.example.test", qtype: dns.TypeAAAA, want: []string{"any.example.test. AAAA ::1"}},
		{desc: "set records win", name: "set.example.test", qtype: dns.TypeA, want: []string{"set.example.test. A 192.0.2.7"}},
		{desc: "other types are empty", name: "any.example.test", qtype: dns.TypeCAA},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			rcode, got := query(t, s, "udp", tc.name, tc.qtype)
			if rcode != dns.RcodeSuccess {
				t.Errorf("rcode = %s, want NOERROR", dns.RcodeToString[rcode])
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("answers = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestChangesAndCounts(t *testing.T) {
	s := Start(t, Options{})
	const name = "moving.example.test"

	if rcode, _ := query(t, s, "udp", name, dns.TypeA); rcode != dns.RcodeNameError {
		t.Fatalf("before SetA: rcode = %s, want NXDOMAIN", dns.RcodeToString[rcode])
	}
	s.SetAddrs(name, loopback4, loopback6)
	if _, got := query(t, s, "tcp", name, dns.TypeA); !slices.Equal(got, []string{name + ". A 127.0.0.1"}) {
		t.Fatalf("after SetAddrs: answers = %q", got)
	}
	s.Delete(name)
	if rcode, _ := query(t, s, "udp", name, dns.TypeA); rcode != dns.RcodeNameError {
		t.Fatalf("after Delete: rcode = %s, want NXDOMAIN", dns.RcodeToString[rcode])
	}
	if got := s.Queries(name); got != 3 {
		t.Errorf("Queries(%q) = %d, want 3", name, got)
	}
	if got := s.Queries("never.example.test"); got != 0 {
		t.Errorf("Queries of a name never asked = %d, want 0", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := Start(t, Options{})
	var wg sync.WaitGroup
	for i := range 8 {
		name := fmt.Sprintf("n%d.example.test", i)
		wg.Go(func() {
			for range 20 {
				s.SetA(name, loopback4)
				c := &dns.Client{Net: "udp"}
				m := new(dns.Msg)
				m.SetQuestion(dns.Fqdn(name), dns.TypeA)
				if _, _, err := c.Exchange(m, s.Addr()); err != nil {
					t.Errorf("exchange: %v", err)
					return
				}
				s.Delete(name)
			}
		})
	}
	wg.Wait()
}

func TestSetAPanicsOnIPv6(t *testing.T) {
	s := Start(t, Options{})
	defer func() {
		if recover() == nil {
			t.Error("SetA with an IPv6 address did not panic")
		}
	}()
	s.SetA("x.example.test", loopback6)
}

// TestTruncation: over UDP an answer that does not fit the client's
// buffer (512 bytes, or its EDNS0 size) comes back cut and flagged
// truncated, as from a real server; over TCP it comes whole.
func TestTruncation(t *testing.T) {
	s := Start(t, Options{})
	var recs []CAA
	for i := range 40 {
		recs = append(recs, CAA{Tag: "issue", Value: fmt.Sprintf("ca%02d.example", i)})
	}
	s.SetCAA("big.test", recs...)
	ask := func(network string, edns uint16) *dns.Msg {
		t.Helper()
		c := &dns.Client{Net: network, UDPSize: edns}
		m := new(dns.Msg)
		m.SetQuestion("big.test.", dns.TypeCAA)
		if edns > 0 {
			m.SetEdns0(edns, false)
		}
		in, _, err := c.Exchange(m, s.Addr())
		if err != nil {
			t.Fatalf("exchange over %s (EDNS0 %d): %v", network, edns, err)
		}
		return in
	}
	if in := ask("udp", 0); !in.Truncated || len(in.Answer) >= 40 {
		t.Errorf("UDP without EDNS0: truncated %v, %d records; want cut to fit 512 bytes", in.Truncated, len(in.Answer))
	}
	if in := ask("udp", 4096); in.Truncated || len(in.Answer) != 40 {
		t.Errorf("UDP with EDNS0 4096: truncated %v, %d records; want all 40", in.Truncated, len(in.Answer))
	}
	if in := ask("tcp", 0); in.Truncated || len(in.Answer) != 40 {
		t.Errorf("TCP: truncated %v, %d records; want all 40", in.Truncated, len(in.Answer))
	}
}

// A forwarded zone is answered by the other server, asked directly or
// reached through a CNAME; its NXDOMAIN comes back too; the records set
// here below it are not used; forwarding stops with "".
func TestForward(t *testing.T) {
	front, zone := Start(t, Options{}), Start(t, Options{})
	zone.SetA("x.acme.test", other4)
	front.SetCNAME("_acme-challenge.shop.test", "x.acme.test")
	front.SetA("x.acme.test", loopback4) // hidden by the forwarding
	front.Forward("acme.test", zone.Addr())

	for _, tc := range []struct {
		desc, name string
		rcode      int
		want       []string
	}{
		{"directly", "x.acme.test", dns.RcodeSuccess, []string{"x.acme.test. A 192.0.2.7"}},
		{"through a CNAME", "_acme-challenge.shop.test", dns.RcodeSuccess,
			[]string{"_acme-challenge.shop.test. CNAME x.acme.test.", "x.acme.test. A 192.0.2.7"}},
		{"a name the other server does not have", "y.acme.test", dns.RcodeNameError, nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			rcode, got := query(t, front, "udp", tc.name, dns.TypeA)
			if rcode != tc.rcode || !slices.Equal(got, tc.want) {
				t.Errorf("%s A: %s %q, want %s %q", tc.name, dns.RcodeToString[rcode], got, dns.RcodeToString[tc.rcode], tc.want)
			}
		})
	}
	front.Forward("acme.test", "")
	if _, got := query(t, front, "udp", "x.acme.test", dns.TypeA); !slices.Equal(got, []string{"x.acme.test. A 127.0.0.1"}) {
		t.Errorf("after forwarding stopped: %q, want the records set here", got)
	}
}
