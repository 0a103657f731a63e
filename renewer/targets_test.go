package renewer

import (
	"net/netip"
	"strings"
	"testing"
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
