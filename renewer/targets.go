package renewer

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/certserver/certserver/store/hostname"
)

// Targets are the IP addresses and host names a name's DNS must point at
// for the CA's validation to reach this host: its A/AAAA addresses, or a
// host name on its CNAME chain. The on-demand policy and the pre-flight
// read the same Targets (ParseTargets). The zero Targets lists nothing.
type Targets struct {
	addrs map[netip.Addr]bool
	hosts map[string]bool
}

// ParseTargets parses each entry of list as an IP address (an IPv4-mapped
// IPv6 address counts as its IPv4 address) or else a host name,
// normalized. Its error names the entry that is neither.
func ParseTargets(list []string) (Targets, error) {
	t := Targets{addrs: map[netip.Addr]bool{}, hosts: map[string]bool{}}
	for _, s := range list {
		if a, err := netip.ParseAddr(s); err == nil {
			t.addrs[a.Unmap()] = true
			continue
		}
		n, err := hostname.Normalize(s)
		if err != nil {
			return Targets{}, fmt.Errorf("%q is neither an IP address nor a host name: %w", s, err)
		}
		t.hosts[n] = true
	}
	return t, nil
}

// Empty reports whether t lists nothing: no DNS check is configured.
func (t Targets) Empty() bool { return len(t.addrs) == 0 && len(t.hosts) == 0 }

// match sorts ans against t: viaHost is true when a host name on the
// CNAME chain is listed; ours are the listed addresses of ans, stray the
// others, in the answer's order.
func (t Targets) match(ans Answer) (viaHost bool, ours, stray []string) {
	for _, c := range ans.CNAMEs {
		if t.hosts[c] {
			viaHost = true
		}
	}
	for _, a := range ans.Addrs {
		if t.addrs[a] {
			ours = append(ours, a.String())
		} else {
			stray = append(stray, a.String())
		}
	}
	return viaHost, ours, stray
}

// pointsAt reports whether ans points at t: a listed host name on its
// CNAME chain, or one listed address (with all, every address listed).
func (t Targets) pointsAt(ans Answer, all bool) bool {
	viaHost, ours, stray := t.match(ans)
	return viaHost || len(ours) > 0 && (!all || len(stray) == 0)
}

// list returns t's entries, sorted, for messages.
func (t Targets) list() []string {
	var out []string
	for a := range t.addrs {
		out = append(out, a.String())
	}
	for h := range t.hosts {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}
