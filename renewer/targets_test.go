package renewer

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/dnstest"
)

// TestTargets: the one parser of the targets the on-demand policy and the
// pre-flight check a name's DNS against, and what pointing at them means.
func TestTargets(t *testing.T) {
	tg, err := ParseTargets([]string{"192.0.2.10", "::ffff:192.0.2.11", "Edge.Example.NET."})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr
	tests := []struct {
		desc     string
		ans      Answer
		any, all bool
	}{
		{desc: "a listed address", ans: Answer{Addrs: []netip.Addr{addr("192.0.2.10")}}, any: true, all: true},
		{desc: "a mapped address listed as IPv4", ans: Answer{Addrs: []netip.Addr{addr("192.0.2.11")}}, any: true, all: true},
		{desc: "a listed and a stray address", ans: Answer{Addrs: []netip.Addr{addr("192.0.2.10"), addr("198.51.100.1")}}, any: true},
		{desc: "a listed host on the CNAME chain", ans: Answer{CNAMEs: []string{"edge.example.net"}, Addrs: []netip.Addr{addr("198.51.100.1")}}, any: true, all: true},
		{desc: "elsewhere", ans: Answer{Addrs: []netip.Addr{addr("198.51.100.1")}}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := tg.pointsAt(tc.ans, false); got != tc.any {
				t.Errorf("pointsAt(any) = %v, want %v", got, tc.any)
			}
			if got := tg.pointsAt(tc.ans, true); got != tc.all {
				t.Errorf("pointsAt(all) = %v, want %v", got, tc.all)
			}
		})
	}
	if got := strings.Join(tg.list(), ","); got != "192.0.2.10,192.0.2.11,edge.example.net" {
		t.Errorf("list = %s", got)
	}
	if _, err := ParseTargets([]string{"ok.example", "not a host"}); err == nil || !strings.Contains(err.Error(), `"not a host"`) {
		t.Errorf("ParseTargets of a bad entry: %v; want an error naming it", err)
	}
	if !(Targets{}).Empty() || tg.Empty() {
		t.Error("Empty is wrong")
	}
}

// TestOneLookupPerOnDemandOrder: the on-demand check and the pre-flight on
// one Resolver ask DNS for a name's addresses once per order: the
// pre-flight reads the answer the on-demand check kept, once; the next
// check asks again, as does a pre-flight after keptAnswerTTL.
func TestOneLookupPerOnDemandOrder(t *testing.T) {
	dnsSrv := dnstest.Start(t, dnstest.Options{})
	const name = "shop.example.test"
	dnsSrv.SetA(name, netip.MustParseAddr("192.0.2.10"))
	resolver, err := NewResolver([]string{dnsSrv.Addr()}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock(time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC))
	resolver.now = clock.Now
	policy, err := NewPolicy(PolicyConfig{Targets: []string{"192.0.2.10"}, Now: clock.Now}, resolver, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	pf, err := NewPreflight(PreflightConfig{Targets: []string{"192.0.2.10"}}, resolver)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d := policy.Check(ctx, name); !d.Allow {
		t.Fatalf("on-demand check refused: %s", d.Reason)
	}
	asked := dnsSrv.Queries(name) // A and AAAA
	if err := pf.Check(ctx, name, nil, ""); err != nil {
		t.Fatalf("pre-flight: %v", err)
	}
	if n := dnsSrv.Queries(name); n != asked {
		t.Fatalf("the pre-flight asked DNS %d more times; want none: the on-demand check's answer is reused", n-asked)
	}
	if err := pf.Check(ctx, name, nil, ""); err != nil || dnsSrv.Queries(name) != 2*asked {
		t.Fatalf("second pre-flight: %v, %d queries; want it to ask DNS itself (%d)", err, dnsSrv.Queries(name), 2*asked)
	}
	resolver.keep(name, Answer{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}})
	clock.Advance(keptAnswerTTL)
	if err := pf.Check(ctx, name, nil, ""); err != nil || dnsSrv.Queries(name) != 3*asked {
		t.Fatalf("pre-flight after the kept answer aged: %v, %d queries; want it to ask DNS (%d)", err, dnsSrv.Queries(name), 3*asked)
	}
}
