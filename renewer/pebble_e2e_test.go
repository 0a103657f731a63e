package renewer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
)

// TestRenewerWithPebble runs the scheduler, the on-demand path and the
// ACME issuer together against Pebble: a managed name and an allowed
// on-demand name get certificates that verify against Pebble's root; a
// managed name that does not resolve fails with Pebble's words; names the
// policy refuses cause no ACME order at all.
func TestRenewerWithPebble(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	env.pointHere("managed.example.test", "shop.ondemand.test", "evil.example.test")
	env.ca.DNS.SetA("elsewhere.ondemand.test", loopback.Next()) // allowed pattern, points elsewhere
	log := testLogger(t)

	rn, err := New(Config{Workers: 2, IdleWait: 200 * time.Millisecond, DefaultProfile: "default", CAs: []CA{{Issuer: env.issuer(t, nil)}}}, env.store, log)
	if err != nil {
		t.Fatal(err)
	}
	resolver, err := NewResolver([]string{env.ca.DNS.Addr()}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := NewPolicy(PolicyConfig{Allow: []string{"*.ondemand.test"}, Targets: []string{"127.0.0.1"}}, resolver, log)
	if err != nil {
		t.Fatal(err)
	}
	od, err := NewOnDemand(OnDemandConfig{}, policy, env.store, rn, log)
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now()
	if _, _, err := env.store.AddDomains(t.Context(), []*store.Domain{
		{Name: "managed.example.test", State: store.StatePending, Source: "api", NextAttempt: now, AddedAt: now, UpdatedAt: now},
		{Name: "nx.example.test", State: store.StatePending, Source: "api", NextAttempt: now, AddedAt: now, UpdatedAt: now},
	}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = rn.Run(ctx) })
	wg.Go(func() { od.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()
	rn.Wake()
	for _, name := range []string{"shop.ondemand.test", "evil.example.test", "nowhere.ondemand.test", "elsewhere.ondemand.test"} {
		od.Request(name)
	}

	for _, name := range []string{"managed.example.test", "shop.ondemand.test"} {
		// The worker stores the certificate first and then the domain's
		// state: wait for both.
		waitFor(t, 30*time.Second, name+" served and valid", func() bool {
			c, err := env.store.LookupCertificate(t.Context(), name)
			d, derr := env.store.GetDomain(t.Context(), name)
			return err == nil && c.Source == store.SourceACME && derr == nil && d.State == store.StateValid
		})
		c, _ := env.store.LookupCertificate(t.Context(), name)
		if err := env.ca.VerifyChain(t, c.ChainPEM, name); err != nil {
			t.Errorf("%s: chain does not verify against Pebble's root: %v", name, err)
		}
		d, err := env.store.GetDomain(t.Context(), name)
		if err != nil || d.State != store.StateValid || d.CertID != c.ID || !d.NextAttempt.Equal(c.RenewAt) {
			t.Errorf("%s: domain %+v (%v), want valid with its certificate's renewal time", name, d, err)
		}
	}

	waitFor(t, 30*time.Second, "nx.example.test failing", func() bool {
		d, err := env.store.GetDomain(t.Context(), "nx.example.test")
		return err == nil && d.State == store.StateFailing
	})
	d, _ := env.store.GetDomain(t.Context(), "nx.example.test")
	if d.Failures != 1 || !strings.Contains(d.LastError, "acme connection") || !strings.Contains(d.LastError, "nx.example.test") {
		t.Errorf("nx.example.test: failures %d, last error %q; want one failure in Pebble's words", d.Failures, d.LastError)
	}
	if !d.NextAttempt.After(time.Now()) {
		t.Errorf("nx.example.test: next attempt %s, want a backoff", d.NextAttempt)
	}

	// The refused names: no domain record, no order. The policy checks ran
	// long ago (shop.ondemand.test, queued with them, is served).
	for _, name := range []string{"evil.example.test", "nowhere.ondemand.test", "elsewhere.ondemand.test"} {
		if _, err := env.store.GetDomain(t.Context(), name); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: domain record %v, want none", name, err)
		}
		if n := env.ca.OrdersFor(name); n != 0 {
			t.Errorf("%s: %d ACME orders, want none", name, n)
		}
	}
	if n := env.ca.OrderCount(); n != 3 {
		t.Errorf("ACME orders = %d, want 3 (managed, shop, nx): %+v", n, env.ca.Orders())
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
