package dnszone

import (
	"context"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// maxUDPSize is the largest answer sent over UDP, whatever the client's
// EDNS buffer offers: the 1,232 bytes of DNS Flag Day 2020, which fit one
// packet on any path. Without EDNS the limit is 512 bytes (RFC 1035
// section 4.2.1); a larger answer is cut and flagged TC (RFC 2181 section
// 9), and the client asks again over TCP.
const maxUDPSize = 1232

// maxTXTString is the longest character-string of a TXT record (RFC 1035
// section 3.3). A DNS-01 value is 43 characters.
const maxTXTString = 255

// zoneData is what the zone answers besides the TXT values: the apex's
// SOA and NS records and the nameservers' addresses, fixed at start.
type zoneData struct {
	apex   string // lowercase FQDN
	suffix string // "." + apex
	ttl    uint32 // TXT and negative answers
	soa    dns.SOA
	ns     []string // FQDNs
	// hosts are the nameservers inside the zone, by lowercase FQDN.
	hosts map[string]bool
	// between are the names between the apex and a host (dns.<zone> of
	// ns1.dns.<zone>): they exist, without records of their own (empty
	// non-terminals), so they answer NODATA, not NXDOMAIN, which would
	// deny every name below them (RFC 8020).
	between map[string]bool
	addrs   []netip.Addr
}

func newZoneData(cfg Config) zoneData {
	apex := dns.Fqdn(cfg.Zone.name)
	ttl := uint32(cfg.TTL.Seconds())
	z := zoneData{apex: apex, suffix: "." + apex, ttl: ttl, hosts: map[string]bool{}, between: map[string]bool{}, addrs: cfg.NameserverAddrs}
	for _, ns := range cfg.Nameservers {
		fq := dns.Fqdn(ns)
		z.ns = append(z.ns, fq)
		if !strings.HasSuffix(fq, z.suffix) {
			continue
		}
		z.hosts[fq] = true
		for n := fq[strings.IndexByte(fq, '.')+1:]; n != apex; n = n[strings.IndexByte(n, '.')+1:] {
			z.between[n] = true
		}
	}
	z.soa = dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: apexTTL},
		Ns:      z.ns[0],
		Mbox:    cfg.Contact,
		Serial:  uint32(cfg.Now().Unix()),
		Refresh: 3600,
		Retry:   600,
		Expire:  604800,
		Minttl:  ttl,
	}
	return z
}

// negativeSOA returns the SOA record for the authority section of a
// negative answer: its TTL is the negative TTL (RFC 2308 section 3).
func (z *zoneData) negativeSOA() dns.RR {
	soa := z.soa
	soa.Hdr.Ttl = z.ttl
	return &soa
}

// serveDNS answers one query and counts it.
func (s *Server) serveDNS(ctx context.Context, w dns.ResponseWriter, req *dns.Msg) {
	udp := w.LocalAddr().Network() == "udp"
	resp, qtype, result := s.answer(ctx, req, udp)
	if resp == nil {
		s.cfg.Metrics.query(qtype, result)
		return
	}
	if resp.Truncated {
		result = resultTruncated
	}
	s.cfg.Metrics.query(qtype, result)
	_ = w.WriteMsg(resp)
}

// answer builds the reply to req, or nil when none is sent, with the query
// type and the result to count.
func (s *Server) answer(ctx context.Context, req *dns.Msg, udp bool) (*dns.Msg, uint16, string) {
	resp := new(dns.Msg)
	resp.SetReply(req) // copies the ID, the question and RD; QR set, AA and RA clear
	var qtype uint16
	if len(req.Question) == 1 {
		qtype = req.Question[0].Qtype
	}
	// A query with EDNS gets an OPT record back, whatever the answer
	// (RFC 6891 section 7), errors too.
	edns := req.IsEdns0() != nil
	switch {
	case req.Opcode != dns.OpcodeQuery:
		resp.Question = nil
		resp.Rcode = dns.RcodeNotImplemented
		if edns {
			resp.SetEdns0(maxUDPSize, false)
		}
		return resp, qtype, resultNotImp
	case len(req.Question) != 1 || len(req.Answer) > 0 || len(req.Ns) > 0 || len(req.Extra) > 1 ||
		len(req.Extra) == 1 && !edns:
		resp.Question = nil
		resp.Rcode = dns.RcodeFormatError
		if edns {
			resp.SetEdns0(maxUDPSize, false)
		}
		return resp, qtype, resultFormErr
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		if opt.Version() != 0 {
			// RFC 6891 section 6.1.3: BADVERS, with our version (0).
			resp.SetEdns0(maxUDPSize, false)
			resp.Rcode = dns.RcodeBadVers
			return resp, qtype, resultBadVers
		}
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPSize)
	}
	result := s.fill(ctx, resp, req.Question[0])
	if edns {
		resp.SetEdns0(maxUDPSize, false)
	}
	if udp {
		resp.Truncate(size)
	} else {
		resp.Truncate(dns.MaxMsgSize)
	}
	return resp, qtype, result
}

// fill answers q into resp and returns the result to count.
func (s *Server) fill(ctx context.Context, resp *dns.Msg, q dns.Question) string {
	z := &s.zone
	name := strings.ToLower(q.Name)
	inZone := name == z.apex || strings.HasSuffix(name, z.suffix)
	if !inZone || q.Qclass != dns.ClassINET {
		// Not ours: no referral, no recursion (RFC 1035 section 4.3.1).
		resp.Rcode = dns.RcodeRefused
		return resultRefused
	}
	resp.Authoritative = true
	owner := q.Name // the question's own case (0x20 resolvers compare it)
	switch {
	case name == z.apex:
		switch q.Qtype {
		case dns.TypeSOA:
			soa := z.soa
			soa.Hdr.Name = owner
			resp.Answer = append(resp.Answer, &soa)
			return resultAnswer
		case dns.TypeNS:
			for _, ns := range z.ns {
				resp.Answer = append(resp.Answer, &dns.NS{Hdr: header(owner, dns.TypeNS, apexTTL), Ns: ns})
			}
			for _, ns := range z.ns {
				if z.hosts[ns] {
					resp.Extra = append(resp.Extra, addrRecords(ns, dns.TypeA, z.addrs)...)
					resp.Extra = append(resp.Extra, addrRecords(ns, dns.TypeAAAA, z.addrs)...)
				}
			}
			return resultAnswer
		}
		return s.other(resp, owner, q.Qtype, nil)
	case z.hosts[name]:
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA {
			resp.Answer = addrRecords(owner, q.Qtype, z.addrs)
			if len(resp.Answer) > 0 {
				return resultAnswer
			}
		}
		return s.other(resp, owner, q.Qtype, resp.Answer)
	case z.between[name]:
		resp.Ns = append(resp.Ns, z.negativeSOA())
		return resultNoData
	}
	label := strings.TrimSuffix(name, z.suffix)
	if !isLabel(label) {
		return s.nxdomain(resp)
	}
	values, err := s.values.get(ctx, label)
	if err != nil {
		s.warnStore(label, err)
		resp.Authoritative = false
		resp.Rcode = dns.RcodeServerFailure
		return resultServFail
	}
	if len(values) == 0 {
		return s.nxdomain(resp)
	}
	if q.Qtype != dns.TypeTXT {
		return s.other(resp, owner, q.Qtype, nil)
	}
	for _, v := range values {
		if len(v) > maxTXTString {
			continue // not a value the Provider wrote; it could not be packed
		}
		resp.Answer = append(resp.Answer, &dns.TXT{Hdr: header(owner, dns.TypeTXT, z.ttl), Txt: []string{v}})
	}
	if len(resp.Answer) == 0 {
		return s.other(resp, owner, q.Qtype, nil)
	}
	return resultAnswer
}

// other answers a name that exists for a type it has no records of, or
// for ANY: ANY gets the one synthesized HINFO record of RFC 8482 section
// 4.2 (no list of everything, which would amplify), and any other type
// NODATA with the SOA in the authority section (RFC 2308 section 2.2).
// answers are what the name has, when it has some.
func (s *Server) other(resp *dns.Msg, owner string, qtype uint16, answers []dns.RR) string {
	if qtype == dns.TypeANY {
		resp.Answer = []dns.RR{&dns.HINFO{Hdr: header(owner, dns.TypeHINFO, s.zone.ttl), Cpu: "RFC8482"}}
		return resultAnswer
	}
	resp.Answer = answers
	resp.Ns = append(resp.Ns, s.zone.negativeSOA())
	return resultNoData
}

// nxdomain answers that the name does not exist, with the SOA in the
// authority section (RFC 2308 section 3).
func (s *Server) nxdomain(resp *dns.Msg) string {
	resp.Rcode = dns.RcodeNameError
	resp.Ns = append(resp.Ns, s.zone.negativeSOA())
	return resultNXDomain
}

func header(name string, rrtype uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: rrtype, Class: dns.ClassINET, Ttl: ttl}
}

// addrRecords returns the A (qtype A) or AAAA records of name for addrs.
func addrRecords(name string, qtype uint16, addrs []netip.Addr) []dns.RR {
	var rrs []dns.RR
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case qtype == dns.TypeA && a.Is4():
			rrs = append(rrs, &dns.A{Hdr: header(name, dns.TypeA, apexTTL), A: a.AsSlice()})
		case qtype == dns.TypeAAAA && a.Is6():
			rrs = append(rrs, &dns.AAAA{Hdr: header(name, dns.TypeAAAA, apexTTL), AAAA: a.AsSlice()})
		}
	}
	return rrs
}
