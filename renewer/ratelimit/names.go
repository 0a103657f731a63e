package ratelimit

import (
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// SameSet reports whether a and b are the same exact set of names as the
// CA compares them (CertsPerExactSet): in any order and case, without
// trailing dots.
func SameSet(a, b []string) bool { return setKey(a) == setKey(b) }

// canonical is a name as the buckets key it: lowercase, without a
// trailing dot.
func canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}

// setKey is the bucket key of an exact set of names: lowercase, without
// trailing dots, sorted, deduplicated and joined by commas, so that order
// and case do not matter (as the CA compares sets).
func setKey(names []string) string {
	set := make([]string, 0, len(names))
	for _, n := range names {
		if n = canonical(strings.TrimSpace(n)); n != "" {
			set = append(set, n)
		}
	}
	slices.Sort(set)
	return strings.Join(slices.Compact(set), ",")
}

// registeredDomains returns the distinct registered domains of names.
func registeredDomains(names []string) []string {
	var out []string
	for _, n := range names {
		if d := registeredDomain(canonical(n)); !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// registeredDomain returns the registered domain a name counts against: its
// eTLD+1 by the Public Suffix List, without a leading "*." ("*.a.example.co.uk"
// counts against "example.co.uk"). A name that is itself a public suffix
// counts against itself, as Boulder does. An IPv4 address counts against
// itself and an IPv6 address against its /64, as the Let's Encrypt page
// says.
func registeredDomain(name string) string {
	name = strings.TrimPrefix(name, "*.")
	if a, err := netip.ParseAddr(name); err == nil {
		if a = a.Unmap(); a.Is4() {
			return a.String()
		}
		p, _ := a.Prefix(64)
		return p.String()
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(name)
	if err != nil {
		return name
	}
	return d
}
