package dnszone

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// openStore opens a Badger store in the test's directory.
func openStore(t testing.TB) *store.Badger {
	t.Helper()
	st, err := store.OpenBadger(filepath.Join(t.TempDir(), "db"), store.BadgerOptions{Logger: slog.New(slog.DiscardHandler), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// mustZone returns the zone named name.
func mustZone(t testing.TB, name string) Zone {
	t.Helper()
	z, err := NewZone(name)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// testServer is a Server running on 127.0.0.1, port picked at run time.
type testServer struct {
	*Server
	reg *prometheus.Registry
}

// startServer starts a Server for cfg (Listen and Metrics filled in)
// reading st, and stops it when the test ends.
func startServer(t testing.TB, cfg Config, st store.Store) *testServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.Metrics = "127.0.0.1:0", m
	s, err := New(cfg, st, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{Server: s, reg: reg}
}

// ask sends one query over network ("udp" or "tcp") and returns the reply.
// edns > 0 adds an OPT record offering that buffer size.
func ask(t testing.TB, addr, network, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	if edns > 0 {
		q.SetEdns0(edns, false)
	}
	return exchange(t, addr, network, q)
}

// exchange sends q and returns the reply, failing the test on a network
// error (generous timeout: the machine is loaded).
func exchange(t testing.TB, addr, network string, q *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 10 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, q.Question[0].Name, dns.TypeToString[q.Question[0].Qtype], err)
	}
	return r
}

// counted returns the value of certserver_dns_zone_queries_total for
// qtype and result.
func (s *testServer) counted(t testing.TB, qtype, result string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "certserver_dns_zone_queries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["type"] == qtype && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// putValue stores value under the label of name as the Provider does.
func putValue(t testing.TB, st store.Store, name, value string) {
	t.Helper()
	if err := st.PutChallenge(context.Background(), valueToken(Label(name), value), value, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}
