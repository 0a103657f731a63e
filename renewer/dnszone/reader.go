package dnszone

import (
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// maxQuerySize is the longest query the zone reads, in bytes: the 512 of
// a DNS message without EDNS (RFC 1035 section 4.2.1). A query is one
// question of at most 255 bytes with, at most, an OPT record and a cookie
// (RFC 7873), some 300 bytes; anything longer is not a query the zone
// needs to answer, and is dropped unanswered and counted.
const maxQuerySize = dns.MinMsgSize

// acceptQuery is the server's MsgAcceptFunc: it ignores responses (no
// answer to an answer) and hands every other message to the handler,
// which checks the rest itself, so that each refusal is counted.
func acceptQuery(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return dns.MsgIgnore
	}
	return dns.MsgAccept
}

// limitReader is the server's DecorateReader: it drops messages longer
// than maxQuerySize before they are parsed. Over UDP the server reads at
// most maxQuerySize+1 bytes of a datagram (dns.Server.UDPSize), so a
// longer one is recognized by its length; over TCP the length prefix says
// it, and the connection is closed.
func (s *Server) limitReader(r dns.Reader) dns.Reader { return sizeReader{r: r, s: s} }

type sizeReader struct {
	r dns.Reader
	s *Server
}

func (sr sizeReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	m, err := sr.r.ReadTCP(conn, timeout)
	if err == nil && len(m) > maxQuerySize {
		sr.s.cfg.Metrics.query(0, resultOversized)
		return nil, fmt.Errorf("query of %d bytes, more than %d", len(m), maxQuerySize)
	}
	return m, err
}

func (sr sizeReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, sess, err := sr.r.ReadUDP(conn, timeout)
		if err != nil || len(m) <= maxQuerySize {
			return m, sess, err
		}
		sr.s.cfg.Metrics.query(0, resultOversized)
	}
}
