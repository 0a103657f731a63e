package ratelimit

import (
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// TestLimiterChangesRestore: Changes hands out every bucket written since
// the last call, once; a new Limiter given them back holds the account to
// what the old one spent; full buckets, unknown limits and times from a
// clock that jumped are handled.
func TestLimiterChangesRestore(t *testing.T) {
	cfg := LimitsConfig{NewOrders: Limit{Burst: 3, Per: 3 * time.Hour}, AuthzFailures: Limit{Burst: 5, Per: time.Hour}}
	old, clock := newTestLimiter(t, cfg)
	if c := old.Changes(); c != nil {
		t.Fatalf("Changes of a new Limiter = %+v, want none", c)
	}
	for range 3 {
		if r := old.Reserve([]string{"a.example.com"}, OrderNew); !r.OK {
			t.Fatalf("Reserve within the burst: %+v", r)
		}
	}
	old.AuthzFailed("b.example.com")
	old.AuthzValid("c.example.com") // no bucket: no change
	changes := old.Changes()
	keys := make([]string, 0, len(changes))
	for _, c := range changes {
		keys = append(keys, c.Limit+"/"+c.Key)
	}
	slices.Sort(keys)
	want := []string{
		"authorization_failures_per_identifier/b.example.com",
		"certificates_per_exact_set/a.example.com",
		"certificates_per_registered_domain/example.com",
		"consecutive_authorization_failures_per_identifier/b.example.com",
		"new_orders_per_account/",
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("Changes = %v, want %v", keys, want)
	}
	for _, c := range changes {
		if c.Limit == string(LimitNewOrders) && !c.Full.Equal(clock.Now().Add(3*time.Hour)) {
			t.Errorf("new orders bucket full at %v, want %v (three of three spent)", c.Full, clock.Now().Add(3*time.Hour))
		}
	}
	if c := old.Changes(); c != nil {
		t.Fatalf("second Changes = %+v, want none", c)
	}

	// A consecutive-failures bucket that a valid authorization empties is
	// a change to "full now", so that its saved copy goes.
	old.AuthzValid("b.example.com")
	if c := old.Changes(); len(c) != 1 || c[0].Limit != string(LimitConsecutiveAuthzFailures) || c[0].Full.After(clock.Now()) {
		t.Fatalf("Changes after AuthzValid = %+v, want the consecutive bucket full now", c)
	}

	// A restart an hour later: the new Limiter starts where the old one
	// is, one token refilled.
	clock.Advance(time.Hour)
	restarted, err := NewLimiter(cfg, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	restarted.Restore(changes)
	if c := restarted.Changes(); c != nil {
		t.Fatalf("Changes after Restore = %+v, want none (restoring is not a change)", c)
	}
	if r := restarted.Reserve([]string{"d.example.net"}, OrderNew); !r.OK {
		t.Fatalf("first order after the restart: %+v, want the refilled token", r)
	}
	r := restarted.Reserve([]string{"e.example.net"}, OrderNew)
	if r.OK || r.Limit != LimitNewOrders || !r.At.Equal(clock.Now().Add(time.Hour)) {
		t.Fatalf("second order after the restart: %+v, want held back an hour by %s", r, LimitNewOrders)
	}
	if ok, _ := restarted.FailuresAllowed("b.example.com"); !ok {
		t.Error("one failure of five restored: FailuresAllowed = false")
	}
	if b := restarted.Bucket(LimitAuthzFailures, "b.example.com"); b.Tokens != 5 {
		t.Errorf("failure bucket an hour after one failure of 5/h: %v tokens, want 5 (full)", b.Tokens)
	}

	// Full buckets, unknown limits, account-wide limits with a key,
	// keyed limits without one and limits now unlimited are skipped; a
	// clock that jumped is cut to the horizon, and the cut is a change
	// (the saved copy is mended); a later time already held wins.
	fresh, err := NewLimiter(LimitsConfig{NewOrders: cfg.NewOrders, OrderRequests: Limit{Burst: -1}}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	fresh.Restore([]store.RateBucket{
		{Limit: string(LimitNewOrders), Full: now.Add(-time.Minute)},
		{Limit: "no_such_limit", Key: "x", Full: now.Add(time.Hour)},
		{Limit: string(LimitNewOrders), Key: "x", Full: now.Add(time.Hour)},
		{Limit: string(LimitOrderRequests), Full: now.Add(time.Hour)}, // unlimited now
		{Limit: string(LimitAuthzFailures), Key: "", Full: now.Add(time.Hour)},
		{Limit: string(LimitCertsPerRegisteredDomain), Key: "example.org", Full: now.Add(400 * 24 * time.Hour)},
	})
	if st := fresh.Bucket(LimitNewOrders, ""); st.Tokens != 3 {
		t.Errorf("a saved bucket full already: %v tokens, want 3", st.Tokens)
	}
	if r := fresh.Reserve([]string{"a.example.net"}, OrderNew); !r.OK {
		t.Errorf("a limit now unlimited still holds orders back: %+v", r)
	}
	for _, s := range fresh.Status() {
		if s.Limit != LimitCertsPerRegisteredDomain && s.Limit != LimitNewOrders && s.Limit != LimitCertsPerExactSet && s.Tracked != 0 {
			t.Errorf("%s tracks %d buckets after skipped restores", s.Limit, s.Tracked)
		}
	}
	wantFull := now.Add(LetsEncryptLimits().CertsPerRegisteredDomain.Per + restoreHorizon)
	if st := fresh.Bucket(LimitCertsPerRegisteredDomain, "example.org"); !st.Full.Equal(wantFull) {
		t.Errorf("a time 400 days out: full at %v, want cut to %v", st.Full, wantFull)
	}
	var mended bool
	for _, c := range fresh.Changes() {
		if c.Limit == string(LimitCertsPerRegisteredDomain) && c.Key == "example.org" && c.Full.Equal(wantFull) {
			mended = true
		}
	}
	if !mended {
		t.Error("the cut bucket is not among the changes: its saved copy would stay 400 days out")
	}
	fresh.Restore([]store.RateBucket{{Limit: string(LimitCertsPerRegisteredDomain), Key: "example.org", Full: now.Add(time.Hour)}})
	if st := fresh.Bucket(LimitCertsPerRegisteredDomain, "example.org"); !st.Full.Equal(wantFull) {
		t.Errorf("an earlier saved time replaced a later one held: full at %v, want %v", st.Full, wantFull)
	}
}
