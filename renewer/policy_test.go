package renewer

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/dnstest"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestPolicyCheck(t *testing.T) {
	dnsSrv := dnstest.Start(t, dnstest.Options{})
	dnsSrv.SetA("ours.example.test", netip.MustParseAddr("192.0.2.10"))
	dnsSrv.SetA("theirs.example.test", netip.MustParseAddr("198.51.100.7"))
	dnsSrv.SetCNAME("alias.example.test", "edge.hoster.test")
	dnsSrv.SetA("edge.hoster.test", netip.MustParseAddr("203.0.113.99"))
	dnsSrv.SetCNAME("chain.example.test", "alias.example.test")
	dnsSrv.SetAAAA("v6.example.test", netip.MustParseAddr("2001:db8::10"))
	resolver, err := NewResolver([]string{dnsSrv.Addr()}, time.Second)
	if err != nil {
		t.Fatal(err)
	}

	var asked atomic.Int32
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if strings.HasPrefix(r.URL.Query().Get("domain"), "yes.") {
			return
		}
		http.Error(w, "no", http.StatusForbidden)
	}))
	t.Cleanup(ask.Close)

	tests := []struct {
		desc   string
		cfg    PolicyConfig
		name   string
		allow  bool
		reason string // substring of the refusal
	}{
		{desc: "nothing configured refuses", name: "a.example.test", reason: "not configured"},
		{desc: "exact allow", cfg: PolicyConfig{Allow: []string{"A.Example.Test."}}, name: "a.example.test", allow: true},
		{desc: "exact allow does not cover subdomains", cfg: PolicyConfig{Allow: []string{"example.test"}}, name: "a.example.test", reason: "allow list"},
		{desc: "suffix pattern covers any depth", cfg: PolicyConfig{Allow: []string{"*.example.test"}}, name: "x.y.example.test", allow: true},
		{desc: "suffix pattern does not cover the apex", cfg: PolicyConfig{Allow: []string{"*.example.test"}}, name: "example.test", reason: "allow list"},
		{desc: "suffix pattern is label-aligned", cfg: PolicyConfig{Allow: []string{"*.example.test"}}, name: "badexample.test", reason: "allow list"},
		{desc: "A record points at a target", cfg: PolicyConfig{Targets: []string{"192.0.2.10"}}, name: "ours.example.test", allow: true},
		{desc: "A record points elsewhere", cfg: PolicyConfig{Targets: []string{"192.0.2.10"}}, name: "theirs.example.test", reason: "does not point"},
		{desc: "AAAA record points at a target", cfg: PolicyConfig{Targets: []string{"2001:db8::10"}}, name: "v6.example.test", allow: true},
		{desc: "CNAME to a target host", cfg: PolicyConfig{Targets: []string{"edge.hoster.test"}}, name: "alias.example.test", allow: true},
		{desc: "CNAME chain to a target address", cfg: PolicyConfig{Targets: []string{"203.0.113.99"}}, name: "chain.example.test", allow: true},
		{desc: "NXDOMAIN refuses", cfg: PolicyConfig{Targets: []string{"192.0.2.10"}}, name: "nowhere.example.test", reason: "NXDOMAIN"},
		{desc: "allow list and DNS both needed", cfg: PolicyConfig{Allow: []string{"*.example.test"}, Targets: []string{"192.0.2.10"}}, name: "theirs.example.test", reason: "does not point"},
		{desc: "ask URL allows", cfg: PolicyConfig{AskURL: ask.URL + "/check"}, name: "yes.example.test", allow: true},
		{desc: "ask URL refuses", cfg: PolicyConfig{AskURL: ask.URL + "/check"}, name: "no.example.test", reason: "answered 403"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			p, err := NewPolicy(tc.cfg, resolver, discardLogger())
			if err != nil {
				t.Fatal(err)
			}
			d := p.Check(context.Background(), tc.name)
			if d.Allow != tc.allow || !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("Check(%q) = %+v, want allow=%v reason containing %q", tc.name, d, tc.allow, tc.reason)
			}
		})
	}
}

func TestPolicyCachesDecisions(t *testing.T) {
	var asked atomic.Int32
	ask := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { asked.Add(1) }))
	t.Cleanup(ask.Close)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p, err := NewPolicy(PolicyConfig{AskURL: ask.URL, AllowTTL: time.Minute, Now: func() time.Time { return now }}, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if d := p.Check(context.Background(), "a.example.test"); !d.Allow {
			t.Fatalf("Check = %+v, want allowed", d)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("ask URL called %d times for five checks within the TTL, want 1", n)
	}
	now = now.Add(2 * time.Minute)
	p.Check(context.Background(), "a.example.test")
	if n := asked.Load(); n != 2 {
		t.Fatalf("ask URL called %d times after the TTL ran out, want 2", n)
	}
}

func TestNewPolicyRefusesBadConfig(t *testing.T) {
	tests := []struct {
		desc string
		cfg  PolicyConfig
		want string
	}{
		{desc: "bad allow pattern", cfg: PolicyConfig{Allow: []string{"*.com"}}, want: `"*.com"`},
		{desc: "bad target", cfg: PolicyConfig{Targets: []string{"not a host"}}, want: `"not a host"`},
		{desc: "ask URL without scheme", cfg: PolicyConfig{AskURL: "localhost:9/x"}, want: "ask URL"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			r, _ := NewResolver([]string{"127.0.0.1:1"}, 0)
			_, err := NewPolicy(tc.cfg, r, discardLogger())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewPolicy error = %v, want one naming %s", err, tc.want)
			}
		})
	}
}
