package dnszone

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/miekg/dns"
)

// The provider of one order puts the wildcard's and the apex's values
// under one label, where the zone answers both at once; a second order
// for another name does not disturb them; CleanUp removes one value and
// leaves the other, even after the order's context ended.
func TestProviderThroughTheZone(t *testing.T) {
	st := openStore(t)
	s := startServer(t, Config{Zone: mustZone(t, testZone)}, st)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := NewProvider(ctx, ProviderConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewProvider(context.Background(), ProviderConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	txt := func(name string) []string {
		t.Helper()
		r := ask(t, s.Addr(), "udp", Label(name)+"."+testZone+".", dns.TypeTXT, 1232)
		var got []string
		for _, rr := range r.Answer {
			got = append(got, rdata(rr))
		}
		return got
	}
	const wildKA, apexKA, otherKA = "tokW.thumb", "tokA.thumb", "tokO.thumb"
	for _, c := range []struct {
		p             *Provider
		domain, token string
		keyAuth       string
	}{
		{p, "*.shop.example", "tokW", wildKA},
		{p, "shop.example", "tokA", apexKA},
		{p, "shop.example", "tokA", apexKA}, // presented twice (a retry, another host): harmless
		{other, "Other.Example.", "tokO", otherKA},
	} {
		if err := c.p.Present(c.domain, c.token, c.keyAuth); err != nil {
			t.Fatalf("Present(%s): %v", c.domain, err)
		}
	}
	if got, want := txt("shop.example"), []string{TXTValue(wildKA), TXTValue(apexKA)}; !sameSet(got, want) {
		t.Errorf("TXT of shop.example's label: %q, want both values %q", got, want)
	}
	if got, want := txt("other.example"), []string{TXTValue(otherKA)}; !sameSet(got, want) {
		t.Errorf("TXT of other.example's label: %q, want %q", got, want)
	}

	cancel() // the order ended; its clean-up still runs
	if err := p.CleanUp("*.shop.example", "tokW", wildKA); err != nil {
		t.Fatal(err)
	}
	if got, want := txt("shop.example"), []string{TXTValue(apexKA)}; !sameSet(got, want) {
		t.Errorf("after the wildcard's CleanUp: %q, want %q", got, want)
	}
	if err := p.CleanUp("shop.example", "tokA", apexKA); err != nil {
		t.Fatal(err)
	}
	r := ask(t, s.Addr(), "udp", Label("shop.example")+"."+testZone+".", dns.TypeTXT, 0)
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("after both CleanUps: %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if got := txt("other.example"); len(got) != 1 {
		t.Errorf("other.example's value after shop.example's clean-up: %q", got)
	}
}

// A value whose order never cleaned up expires after ValueTTL.
func TestProviderValueExpires(t *testing.T) {
	st := openStore(t)
	now := time.Now()
	p, err := NewProvider(context.Background(), ProviderConfig{Store: st, ValueTTL: time.Minute, Now: func() time.Time { return now.Add(-2 * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Present("shop.example", "tok", "tok.thumb"); err != nil {
		t.Fatal(err)
	}
	v, err := newValues(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := v.get(context.Background(), Label("shop.example")); err != nil || len(got) != 0 {
		t.Errorf("values of a value put 2 minutes ago with a 1-minute TTL: %q, %v; want none", got, err)
	}
}

func TestProviderTimeout(t *testing.T) {
	p, err := NewProvider(context.Background(), ProviderConfig{Store: openStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	if timeout, interval := p.Timeout(); timeout != DefaultPropagationTimeout || interval != DefaultPollingInterval {
		t.Errorf("Timeout() = %v, %v; want the defaults %v, %v", timeout, interval, DefaultPropagationTimeout, DefaultPollingInterval)
	}
	p, err = NewProvider(context.Background(), ProviderConfig{Store: openStore(t), PropagationTimeout: 5 * time.Minute, PollingInterval: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if timeout, interval := p.Timeout(); timeout != 5*time.Minute || interval != 10*time.Second {
		t.Errorf("Timeout() = %v, %v; want 5m, 10s", timeout, interval)
	}
}

// The label is what the documentation says: base32 of the first 80 bits
// of SHA-256 of the name without its wildcard, lowercase, 16 characters;
// the record names the customer's node and the zone.
func TestLabelAndRecord(t *testing.T) {
	z := mustZone(t, "Acme.Hoster.Example.")
	// Computed independently: python3 -c 'import hashlib, base64;
	// print(base64.b32encode(hashlib.sha256(b"shop.example").digest()[:10]).decode().lower())'
	const shopLabel = "b5mumpdanrnq4xj5"
	for _, tc := range []struct {
		desc, name string
	}{
		{"a name", "shop.example"},
		{"its wildcard", "*.shop.example"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			l := Label(tc.name)
			if l != shopLabel || !isLabel(l) {
				t.Errorf("Label(%s) = %q, want %q", tc.name, l, shopLabel)
			}
			if want := "_acme-challenge.shop.example. CNAME " + l + ".acme.hoster.example."; z.Record(tc.name) != want {
				t.Errorf("Record(%s) = %q, want %q", tc.name, z.Record(tc.name), want)
			}
		})
	}
	if Label("shop.example") == Label("www.shop.example") {
		t.Error("two names share a label")
	}
	for _, bad := range []string{"", "example", "*.acme.example", "a b.example"} {
		if _, err := NewZone(bad); err == nil {
			t.Errorf("NewZone(%q): no error", bad)
		}
	}
}

// fencedDeletes is a store whose lease was lost: a challenge removal
// made under a lease (store.WithLease) is refused with ErrLeaseLost, as
// a Leaser refuses it.
type fencedDeletes struct{ store.Store }

func (s fencedDeletes) DeleteChallenge(ctx context.Context, token string) error {
	if l, ok := store.LeaseFrom(ctx); ok {
		return fmt.Errorf("delete challenge %s: lease of %s token %d: %w", token, l.Name, l.Token, store.ErrLeaseLost)
	}
	return s.Store.DeleteChallenge(ctx, token)
}

// CleanUp removes the value of an order whose lease was lost meanwhile:
// the value's record is its own, so the removal is not fenced.
func TestProviderCleanUpAfterLeaseLost(t *testing.T) {
	st := openStore(t)
	ctx := store.WithLease(t.Context(), store.Lease{Name: "shop.example", Host: "h1", Token: 3, Expires: time.Now().Add(time.Minute)})
	p, err := NewProvider(ctx, ProviderConfig{Store: fencedDeletes{st}})
	if err != nil {
		t.Fatal(err)
	}
	const keyAuth = "tok.thumb"
	if err := p.Present("shop.example", "tok", keyAuth); err != nil {
		t.Fatal(err)
	}
	if err := p.CleanUp("shop.example", "tok", keyAuth); err != nil {
		t.Fatalf("CleanUp after the lease was lost: %v", err)
	}
	if cs, err := st.ListChallenges(t.Context(), labelPrefix(Label("shop.example")), MaxValues); err != nil || len(cs) != 0 {
		t.Errorf("values after CleanUp: %v, %v; want none", cs, err)
	}
}
