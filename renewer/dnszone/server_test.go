package dnszone

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const testZone = "acme.hoster.example"

// value returns a TXT value as a CA would check it: 43 base64url
// characters.
func value(i int) string { return TXTValue(fmt.Sprintf("token-%d.thumbprint", i)) }

func TestServerAnswers(t *testing.T) {
	st := openStore(t)
	z := mustZone(t, testZone)
	s := startServer(t, Config{Zone: z, NameserverAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8::53")}}, st)
	// One order for *.shop.example and shop.example: two values, one label.
	putValue(t, st, "*.shop.example", value(1))
	putValue(t, st, "shop.example", value(2))
	label := Label("shop.example")
	if label != Label("*.shop.example") {
		t.Fatalf("Label(*.shop.example) = %s, Label(shop.example) = %s: want one label", Label("*.shop.example"), label)
	}
	txtName := label + "." + testZone + "."
	soaOf := func(r *dns.Msg) *dns.SOA {
		for _, rr := range r.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				return soa
			}
		}
		return nil
	}

	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			desc   string
			name   string
			qtype  uint16
			rcode  int
			answer []string // the answer records' data, in any order
			extra  []string
			soa    bool // an SOA in the authority section
			aa     bool
		}{
			{desc: "TXT: every value of the order", name: txtName, qtype: dns.TypeTXT, answer: []string{value(1), value(2)}, aa: true},
			{desc: "TXT in mixed case (0x20)", name: strings.ToUpper(label[:4]) + label[4:] + ".ACME.hoster.EXAMPLE.", qtype: dns.TypeTXT, answer: []string{value(1), value(2)}, aa: true},
			{desc: "SOA at the apex", name: testZone + ".", qtype: dns.TypeSOA, answer: []string{"ns.acme.hoster.example. hostmaster.acme.hoster.example."}, aa: true},
			{desc: "NS at the apex, with the nameserver's addresses", name: testZone + ".", qtype: dns.TypeNS, answer: []string{"ns.acme.hoster.example."},
				extra: []string{"192.0.2.53", "2001:db8::53"}, aa: true},
			{desc: "A of the nameserver", name: "ns." + testZone + ".", qtype: dns.TypeA, answer: []string{"192.0.2.53"}, aa: true},
			{desc: "TXT at the apex: NODATA", name: testZone + ".", qtype: dns.TypeTXT, soa: true, aa: true},
			{desc: "A at a label: NODATA", name: txtName, qtype: dns.TypeA, soa: true, aa: true},
			{desc: "CNAME at a label: NODATA", name: txtName, qtype: dns.TypeCNAME, soa: true, aa: true},
			{desc: "a label with nothing in flight: NXDOMAIN", name: Label("other.example") + "." + testZone + ".", qtype: dns.TypeTXT, rcode: dns.RcodeNameError, soa: true, aa: true},
			{desc: "a name that is no label: NXDOMAIN", name: "www." + testZone + ".", qtype: dns.TypeTXT, rcode: dns.RcodeNameError, soa: true, aa: true},
			{desc: "below a label: NXDOMAIN", name: "x." + txtName, qtype: dns.TypeTXT, rcode: dns.RcodeNameError, soa: true, aa: true},
			{desc: "ANY: one HINFO (RFC 8482)", name: txtName, qtype: dns.TypeANY, answer: []string{"RFC8482"}, aa: true},
			{desc: "ANY at the apex: one HINFO", name: testZone + ".", qtype: dns.TypeANY, answer: []string{"RFC8482"}, aa: true},
			{desc: "outside the zone: REFUSED", name: "shop.example.", qtype: dns.TypeTXT, rcode: dns.RcodeRefused},
			{desc: "the parent zone: REFUSED", name: "hoster.example.", qtype: dns.TypeNS, rcode: dns.RcodeRefused},
			{desc: "a suffix that is not a label boundary: REFUSED", name: "x" + testZone + ".", qtype: dns.TypeTXT, rcode: dns.RcodeRefused},
			{desc: "the customer's name through us: REFUSED", name: "_acme-challenge.shop.example.", qtype: dns.TypeTXT, rcode: dns.RcodeRefused},
		} {
			t.Run(network+"/"+tc.desc, func(t *testing.T) {
				q := new(dns.Msg)
				q.SetQuestion(tc.name, tc.qtype) // RD set: asks for recursion
				r := exchange(t, s.Addr(), network, q)
				if r.Rcode != tc.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tc.rcode])
				}
				if r.RecursionAvailable {
					t.Error("RA set: the zone does no recursion")
				}
				if r.Authoritative != tc.aa {
					t.Errorf("AA %v, want %v", r.Authoritative, tc.aa)
				}
				if r.Truncated {
					t.Error("TC set")
				}
				var got []string
				for _, rr := range r.Answer {
					if !strings.EqualFold(rr.Header().Name, tc.name) || rr.Header().Name != tc.name {
						t.Errorf("answer owner %q, want the question's %q", rr.Header().Name, tc.name)
					}
					got = append(got, rdata(rr))
				}
				if !sameSet(got, tc.answer) {
					t.Errorf("answer %q, want %q", got, tc.answer)
				}
				var extra []string
				for _, rr := range r.Extra {
					extra = append(extra, rdata(rr))
				}
				if !sameSet(extra, tc.extra) {
					t.Errorf("additional %q, want %q", extra, tc.extra)
				}
				soa := soaOf(r)
				switch {
				case tc.soa && soa == nil:
					t.Errorf("no SOA in the authority section: %v", r.Ns)
				case tc.soa && (soa.Hdr.Name != testZone+"." || soa.Minttl != 1 || soa.Hdr.Ttl != 1):
					t.Errorf("negative SOA %v: want the apex's, minimum and TTL 1 (the negative TTL)", soa)
				case !tc.soa && len(r.Ns) > 0:
					t.Errorf("authority section %v, want none", r.Ns)
				}
			})
		}
	}
	if got := s.counted(t, "TXT", "answer"); got != 4 {
		t.Errorf("counted %v TXT answers, want 4", got)
	}
	if got := s.counted(t, "TXT", "refused"); got != 6 {
		t.Errorf("counted %v TXT refused, want 6", got)
	}
	if got := s.counted(t, "ANY", "answer"); got != 4 {
		t.Errorf("counted %v ANY answers, want 4", got)
	}
}

// rdata returns what a test compares of a record.
func rdata(rr dns.RR) string {
	switch r := rr.(type) {
	case *dns.TXT:
		return strings.Join(r.Txt, "")
	case *dns.SOA:
		return r.Ns + " " + r.Mbox
	case *dns.NS:
		return r.Ns
	case *dns.A:
		return r.A.String()
	case *dns.AAAA:
		return r.AAAA.String()
	case *dns.HINFO:
		return r.Cpu + r.Os
	}
	return rr.String()
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// Without EDNS an answer over UDP is at most 512 bytes: the values that
// do not fit are cut and TC is set, and TCP gives them all. With EDNS the
// client's buffer (up to 1,232 bytes) decides.
func TestServerTruncatesToTheQuerysSize(t *testing.T) {
	st := openStore(t)
	s := startServer(t, Config{Zone: mustZone(t, testZone)}, st)
	for i := range MaxValues {
		putValue(t, st, "big.example", value(i))
	}
	name := Label("big.example") + "." + testZone + "."

	r := ask(t, s.Addr(), "udp", name, dns.TypeTXT, 0)
	r.Compress = true // as the server sent it
	packed, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated || len(packed) > dns.MinMsgSize || len(r.Answer) >= MaxValues {
		t.Errorf("UDP without EDNS: TC %v, %d bytes, %d values; want TC, at most 512 bytes, fewer than %d", r.Truncated, len(packed), len(r.Answer), MaxValues)
	}
	if got := s.counted(t, "TXT", "truncated"); got != 1 {
		t.Errorf("counted %v truncated answers, want 1", got)
	}
	if r := ask(t, s.Addr(), "udp", name, dns.TypeTXT, 4096); r.Truncated || len(r.Answer) != MaxValues {
		t.Errorf("UDP with EDNS 4096: TC %v, %d values; want all %d", r.Truncated, len(r.Answer), MaxValues)
	} else if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != maxUDPSize {
		t.Errorf("UDP with EDNS: OPT %v, want one offering %d", opt, maxUDPSize)
	}
	if r := ask(t, s.Addr(), "tcp", name, dns.TypeTXT, 0); r.Truncated || len(r.Answer) != MaxValues {
		t.Errorf("TCP: TC %v, %d values; want all %d", r.Truncated, len(r.Answer), MaxValues)
	}
}

// A query longer than 512 bytes is dropped unanswered and counted; over
// TCP its connection is closed.
func TestServerDropsOversizedQueries(t *testing.T) {
	st := openStore(t)
	s := startServer(t, Config{Zone: mustZone(t, testZone)}, st)
	big := new(dns.Msg)
	big.SetQuestion(testZone+".", dns.TypeSOA)
	big.Id = 1
	big.SetEdns0(1232, false)
	opt := big.IsEdns0()
	opt.Option = append(opt.Option, &dns.EDNS0_PADDING{Padding: make([]byte, 600)})
	bigWire, err := big.Pack()
	if err != nil {
		t.Fatal(err)
	}
	small := new(dns.Msg)
	small.SetQuestion(testZone+".", dns.TypeSOA)
	small.Id = 2
	smallWire, err := small.Pack()
	if err != nil {
		t.Fatal(err)
	}

	conn, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, wire := range [][]byte{bigWire, smallWire} {
		if _, err := conn.Write(wire); err != nil {
			t.Fatal(err)
		}
	}
	// The server reads datagrams in order: by the time the small one is
	// answered, the big one has been read, and counted.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 65535)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no answer to the small query after the big one: %v", err)
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil || r.Id != 2 {
		t.Fatalf("first answer: id %d (%v), want the small query's (2): the big one was answered", r.Id, err)
	}
	if got := s.counted(t, "none", "oversized"); got != 1 {
		t.Errorf("counted %v oversized queries, want 1", got)
	}

	tc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	frame := binary.BigEndian.AppendUint16(nil, uint16(len(bigWire)))
	if _, err := tc.Write(append(frame, bigWire...)); err != nil {
		t.Fatal(err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := tc.Read(buf); err == nil {
		t.Errorf("TCP: %d bytes of answer to an oversized query, want the connection closed", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("TCP: connection left open after an oversized query")
	}
	if got := s.counted(t, "none", "oversized"); got != 2 {
		t.Errorf("counted %v oversized queries, want 2", got)
	}
}

// Queries that break the rules get FORMERR, NOTIMP or BADVERS, with no
// records, and are counted.
func TestServerRefusesMalformedQueries(t *testing.T) {
	st := openStore(t)
	s := startServer(t, Config{Zone: mustZone(t, testZone)}, st)

	two := new(dns.Msg)
	two.SetQuestion(testZone+".", dns.TypeSOA)
	two.Question = append(two.Question, two.Question[0])
	update := new(dns.Msg)
	update.SetUpdate(testZone + ".")
	update.Insert([]dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "x." + testZone + ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"v"}}})
	edns1 := new(dns.Msg)
	edns1.SetQuestion(testZone+".", dns.TypeSOA)
	edns1.SetEdns0(1232, false)
	edns1.IsEdns0().SetVersion(1)
	chaos := new(dns.Msg)
	chaos.SetQuestion("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	twoEDNS := two.Copy()
	twoEDNS.SetEdns0(1232, false)
	updateEDNS := update.Copy()
	updateEDNS.SetEdns0(1232, false)

	for _, tc := range []struct {
		desc   string
		q      *dns.Msg
		rcode  int
		result string
		opt    bool // an OPT record in the reply (RFC 6891 section 7)
	}{
		{"two questions", two, dns.RcodeFormatError, "formerr", false},
		{"two questions with EDNS", twoEDNS, dns.RcodeFormatError, "formerr", true},
		{"an UPDATE", update, dns.RcodeNotImplemented, "notimp", false},
		{"an UPDATE with EDNS", updateEDNS, dns.RcodeNotImplemented, "notimp", true},
		{"EDNS version 1", edns1, dns.RcodeBadVers, "badvers", true},
		{"class CHAOS (version.bind)", chaos, dns.RcodeRefused, "refused", false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := exchange(t, s.Addr(), "udp", tc.q)
			if r.Rcode != tc.rcode || len(r.Answer) > 0 || len(r.Ns) > 0 {
				t.Errorf("rcode %s, %d answers, %d authority; want %s and no records", dns.RcodeToString[r.Rcode], len(r.Answer), len(r.Ns), dns.RcodeToString[tc.rcode])
			}
			if opt := r.IsEdns0(); (opt != nil) != tc.opt {
				t.Errorf("OPT in the reply: %v, want one: %v", opt, tc.opt)
			}
		})
	}
	for _, c := range []struct {
		qtype, result string
		n             float64
	}{{"none", "formerr", 2}, {"SOA", "notimp", 2}, {"SOA", "badvers", 1}, {"TXT", "refused", 1}} {
		if got := s.counted(t, c.qtype, c.result); got != c.n {
			t.Errorf("counted %v %s %s, want %v", got, c.qtype, c.result, c.n)
		}
	}
}

// A store that cannot be read answers SERVFAIL (not NXDOMAIN, which a
// resolver would cache as "no such name"), counted.
func TestServerStoreDown(t *testing.T) {
	st := openStore(t)
	s := startServer(t, Config{Zone: mustZone(t, testZone)}, st)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		r := ask(t, s.Addr(), "udp", Label("shop.example")+"."+testZone+".", dns.TypeTXT, 0)
		if r.Rcode != dns.RcodeServerFailure || r.Authoritative {
			t.Errorf("rcode %s, AA %v; want SERVFAIL, not authoritative", dns.RcodeToString[r.Rcode], r.Authoritative)
		}
	}
	if got := s.counted(t, "TXT", "servfail"); got != 2 {
		t.Errorf("counted %v SERVFAIL answers, want 2", got)
	}
}

// A nameserver two labels into the zone (ns1.dns.<zone>) makes the name
// between (dns.<zone>) exist without records: NODATA, not NXDOMAIN,
// which would deny the nameserver's own name below it (RFC 8020).
func TestServerNamesAboveANameserver(t *testing.T) {
	st := openStore(t)
	s := startServer(t, Config{Zone: mustZone(t, testZone), Nameservers: []string{"ns1.dns." + testZone},
		NameserverAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.53")}}, st)
	for _, tc := range []struct {
		desc   string
		name   string
		qtype  uint16
		rcode  int
		answer int
		soa    bool
	}{
		{"the nameserver's A", "ns1.dns." + testZone + ".", dns.TypeA, dns.RcodeSuccess, 1, false},
		{"the name between, A: NODATA", "dns." + testZone + ".", dns.TypeA, dns.RcodeSuccess, 0, true},
		{"the name between, in mixed case, TXT: NODATA", "DNS." + testZone + ".", dns.TypeTXT, dns.RcodeSuccess, 0, true},
		{"the name between, ANY: NODATA", "dns." + testZone + ".", dns.TypeANY, dns.RcodeSuccess, 0, true},
		{"a sibling of the nameserver: NXDOMAIN", "ns2.dns." + testZone + ".", dns.TypeA, dns.RcodeNameError, 0, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := ask(t, s.Addr(), "udp", tc.name, tc.qtype, 0)
			if r.Rcode != tc.rcode || len(r.Answer) != tc.answer || !r.Authoritative {
				t.Errorf("rcode %s, %d answers, AA %v; want %s, %d answers, AA", dns.RcodeToString[r.Rcode], len(r.Answer), r.Authoritative,
					dns.RcodeToString[tc.rcode], tc.answer)
			}
			if soa := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA; soa != tc.soa {
				t.Errorf("authority %v, want the SOA: %v", r.Ns, tc.soa)
			}
		})
	}
}
