package dnszone

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// On a fleet host the zone answers the values of the local copy and of
// the shared store together: a value another host has just put may not
// have reached the copy, and a copy holding one of an order's two values
// must not answer with that one alone.
func TestServerReadsTheSharedStoreToo(t *testing.T) {
	local, shared := openStore(t), openStore(t)
	s := startServer(t, Config{Zone: mustZone(t, testZone), Shared: shared}, local)
	// The wildcard's value has reached this host's copy, the apex's only
	// the shared store; another name's only the shared store.
	putValue(t, shared, "*.shop.example", value(1))
	putValue(t, local, "*.shop.example", value(1))
	putValue(t, shared, "shop.example", value(2))
	putValue(t, shared, "other.example", value(3))

	for _, tc := range []struct {
		desc, name string
		want       []string
	}{
		{"one value in the copy, both in the shared store", "shop.example", []string{value(1), value(2)}},
		{"none in the copy yet", "other.example", []string{value(3)}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := ask(t, s.Addr(), "udp", Label(tc.name)+"."+testZone+".", dns.TypeTXT, 1232)
			var got []string
			for _, rr := range r.Answer {
				got = append(got, rdata(rr))
			}
			if !sameSet(got, tc.want) {
				t.Errorf("TXT %q, want %q", got, tc.want)
			}
		})
	}

	// The shared store down (closed): the copy answers alone.
	if err := shared.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := newValues(local, shared)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v.get(context.Background(), Label("shop.example")); err != nil || !sameSet(got, []string{value(1)}) {
		t.Errorf("with the shared store down: %q, %v; want the copy's value", got, err)
	}
}
