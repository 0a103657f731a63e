package ratelimit

import (
	"testing"
)

func TestRegisteredDomain(t *testing.T) {
	tests := []struct {
		desc, name, want string
	}{
		{desc: "subdomain", name: "www.example.com", want: "example.com"},
		{desc: "multi-label suffix", name: "new.blog.example.co.uk", want: "example.co.uk"},
		{desc: "itself", name: "example.com", want: "example.com"},
		{desc: "wildcard", name: "*.a.example.com", want: "example.com"},
		{desc: "public suffix counts against itself", name: "co.uk", want: "co.uk"},
		{desc: "private suffix (Public Suffix List)", name: "foo.bar.github.io", want: "bar.github.io"},
		{desc: "unknown TLD", name: "www.example.test", want: "example.test"},
		{desc: "IPv4", name: "192.0.2.1", want: "192.0.2.1"},
		{desc: "IPv6 /64", name: "2001:db8:1:2:3::4", want: "2001:db8:1:2::/64"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := registeredDomain(tc.name); got != tc.want {
				t.Errorf("registeredDomain(%q) = %q, want %q", tc.name, got, tc.want)
			}
		})
	}
}

// TestWildcardSetCounts: a wildcard with its apex is one exact set, in any
// order, and counts once against their one registered domain, as the CA
// counts it; the wildcard alone is another set.
func TestWildcardSetCounts(t *testing.T) {
	set := []string{"*.shop.example.co.uk", "shop.example.co.uk"}
	if !SameSet(set, []string{"SHOP.example.co.uk.", "*.shop.example.co.uk"}) {
		t.Error("the wildcard and its apex in another order and case are not the same set")
	}
	if SameSet(set, set[:1]) {
		t.Error("the wildcard alone is the same set as with its apex")
	}
	if got := registeredDomains(set); len(got) != 1 || got[0] != "example.co.uk" {
		t.Errorf("registered domains %q, want example.co.uk once", got)
	}
}
