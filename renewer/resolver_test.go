package renewer

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certserver/certserver/renewer/dnstest"
)

func TestResolverTruncated(t *testing.T) {
	s := dnstest.Start(t, dnstest.Options{})
	s.SetCAA("example.test", manyCAA(60)...)
	r, err := NewResolver([]string{s.Addr()}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := r.Query(context.Background(), "example.test", dns.TypeCAA)
	if err != nil || msg.Truncated || len(msg.Answer) != 60 {
		t.Fatalf("Query: %d records, truncated %v, %v; want 60 over TCP", len(msgAnswer(msg)), msg != nil && msg.Truncated, err)
	}
	if n := s.Queries("example.test"); n != 2 {
		t.Errorf("the server was asked %d times, want 2 (UDP, then TCP)", n)
	}

	// A small answer needs no TCP.
	s.SetCAA("small.test", issue(pfLE))
	if _, err := r.Query(context.Background(), "small.test", dns.TypeCAA); err != nil || s.Queries("small.test") != 1 {
		t.Errorf("small answer: %v, asked %d times, want once", err, s.Queries("small.test"))
	}

	// A UDP-only server that truncates: the TCP retry fails, and so does
	// the query.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		m.Truncated = true
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	r, err = NewResolver([]string{pc.LocalAddr().String()}, 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := r.Query(context.Background(), "example.test", dns.TypeCAA); err == nil {
		t.Fatalf("Query of a server that truncates without TCP: %v, no error", msg)
	}
}

func msgAnswer(m *dns.Msg) []dns.RR {
	if m == nil {
		return nil
	}
	return m.Answer
}
