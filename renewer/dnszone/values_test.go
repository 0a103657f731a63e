package dnszone

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
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

// More values than MaxValues under a label: those of abandoned orders
// (put earlier, so expiring sooner) do not push out the value of the
// order in flight, whichever store holds them and wherever the live value
// sorts among them.
func TestValuesKeepTheLatestOverTheCap(t *testing.T) {
	const name = "shop.example"
	live := strings.Repeat("z", 43) // sorts after every stale value
	put := func(t *testing.T, st store.Store, value string, expires time.Time) {
		t.Helper()
		if err := st.PutChallenge(context.Background(), valueToken(Label(name), value), value, expires); err != nil {
			t.Fatal(err)
		}
	}
	soon := time.Now().Add(10 * time.Minute)
	for _, tc := range []struct {
		desc  string
		fleet bool
		fill  func(t *testing.T, local, shared store.Store)
	}{
		{"stale values fill the copy, the live one only in the shared store", true, func(t *testing.T, local, shared store.Store) {
			for i := range MaxValues {
				put(t, local, value(i), soon)
				put(t, shared, value(i), soon)
			}
			put(t, shared, live, time.Now().Add(time.Hour))
		}},
		{"more stale values than the cap in one store", false, func(t *testing.T, local, _ store.Store) {
			for i := range MaxValues + 4 {
				put(t, local, value(i), soon)
			}
			put(t, local, live, time.Now().Add(time.Hour))
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			local, shared := openStore(t), openStore(t)
			tc.fill(t, local, shared)
			var sh store.Store
			if tc.fleet {
				sh = shared
			}
			v, err := newValues(local, sh)
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.get(context.Background(), Label(name))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != MaxValues || !slices.Contains(got, live) {
				t.Errorf("%d values, live one there: %v; want %d with the live one", len(got), slices.Contains(got, live), MaxValues)
			}
			if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
				t.Errorf("values %q, want each once in token order", got)
			}
		})
	}
}
