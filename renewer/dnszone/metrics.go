package dnszone

import (
	"errors"
	"fmt"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// The results of a query, as the metrics count them.
const (
	resultAnswer    = "answer"    // NOERROR with records
	resultNoData    = "nodata"    // NOERROR, the name exists without records of the type
	resultNXDomain  = "nxdomain"  // no such name in the zone
	resultRefused   = "refused"   // a name outside the zone, or a class other than IN
	resultFormErr   = "formerr"   // a query that breaks the rules (two questions, records in the answer section, …)
	resultNotImp    = "notimp"    // an opcode other than QUERY
	resultServFail  = "servfail"  // the store could not be read
	resultBadVers   = "badvers"   // an EDNS version other than 0
	resultMalformed = "malformed" // did not parse: answered FORMERR when its header did, else not at all
	resultOversized = "oversized" // longer than maxQuerySize: dropped unanswered
	resultTruncated = "truncated" // answered with TC set: too large for the client's buffer
)

// metricTypes are the query types counted by name; every other one counts
// as "other", so that the label's values stay few.
var metricTypes = map[uint16]string{
	dns.TypeA: "A", dns.TypeAAAA: "AAAA", dns.TypeNS: "NS", dns.TypeSOA: "SOA",
	dns.TypeTXT: "TXT", dns.TypeCNAME: "CNAME", dns.TypeCAA: "CAA", dns.TypeANY: "ANY",
}

// Metrics counts the zone's queries. It is safe for concurrent use; a nil
// *Metrics counts nothing.
//
//	certserver_dns_zone_queries_total{type,result}  queries by type (A, AAAA, NS,
//	    SOA, TXT, CNAME, CAA, ANY, other; none when the query did not parse)
//	    and result (answer, nodata, nxdomain, refused, formerr, notimp,
//	    servfail, badvers, truncated, malformed, oversized)
type Metrics struct {
	queries *prometheus.CounterVec
}

// NewMetrics returns Metrics registered into reg. It fails when reg is nil
// or already holds metrics of the same names.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("dns zone metrics: nil registerer")
	}
	m := &Metrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "certserver_dns_zone_queries_total",
			Help: "Queries to certserver's DNS-01 zone, by query type (none: did not parse) and result: answer, nodata, nxdomain, refused (outside the zone), formerr, notimp, servfail (store unreadable), badvers, truncated (TC set), malformed (did not parse), oversized (dropped unanswered).",
		}, []string{"type", "result"}),
	}
	if err := reg.Register(m.queries); err != nil {
		return nil, fmt.Errorf("dns zone metrics: %w", err)
	}
	return m, nil
}

// query counts one query of qtype (0: none parsed) with result.
func (m *Metrics) query(qtype uint16, result string) {
	if m == nil {
		return
	}
	t := "none"
	if qtype != 0 {
		if t = metricTypes[qtype]; t == "" {
			t = "other"
		}
	}
	m.queries.WithLabelValues(t, result).Inc()
}
