package renewer

import (
	"errors"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
)

func TestRenewalInfo(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	const name = "ari.example.test"
	env.pointHere(name)
	is := env.issuer(t, func(c *ACMEConfig) { c.DisableARI = true })
	cert, err := is.Obtain(t.Context(), Order{Name: name, Profile: "default"})
	if err != nil {
		t.Fatalf("Obtain: %v", err)
	}
	if !cert.RenewAt.IsZero() {
		t.Errorf("RenewAt = %s with DisableARI, want zero", cert.RenewAt)
	}

	info, err := is.RenewalInfo(t.Context(), cert)
	if err != nil {
		t.Fatalf("RenewalInfo: %v", err)
	}
	ideal := cert.NotAfter.Add(-30 * 24 * time.Hour)
	near := func(a, b time.Time) bool { return a.Sub(b).Abs() <= 2*time.Second }
	if !near(info.Start, ideal.Add(-24*time.Hour)) || !near(info.End, ideal.Add(24*time.Hour)) {
		t.Errorf("window %s to %s, want a day either side of %s", info.Start, info.End, ideal)
	}
	if info.RetryAfter != 6*time.Hour {
		t.Errorf("RetryAfter %s, want Pebble's 6h", info.RetryAfter)
	}

	// The CA moves the window into the past: renew now.
	now := time.Now()
	env.ca.SetRenewalInfo(t, cert.ChainPEM, now.Add(-2*time.Hour), now.Add(-time.Hour))
	info, err = is.RenewalInfo(t.Context(), cert)
	if err != nil {
		t.Fatalf("RenewalInfo after SetRenewalInfo: %v", err)
	}
	if !info.End.Before(now) {
		t.Errorf("window ends %s, want the past window set", info.End)
	}
	aris := env.issuer(t, nil)
	if at := aris.renewAt(t.Context(), cert); at.Before(now) || at.After(time.Now()) {
		t.Errorf("renewAt = %s, want now (%s) for a window in the past", at, now)
	}

	// A certificate the CA never issued.
	other, err := pebbleUnknownCert(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := is.RenewalInfo(t.Context(), other); err == nil || errors.Is(err, ErrNoRenewalInfo) {
		t.Errorf("RenewalInfo of an unknown certificate: %v, want an error", err)
	}
	if _, err := is.RenewalInfo(t.Context(), &store.Certificate{ID: "x.example.test"}); err == nil {
		t.Error("RenewalInfo of a record without a chain: no error")
	}
}

// pebbleUnknownCert returns a certificate record Pebble never issued.
func pebbleUnknownCert(t *testing.T) (*store.Certificate, error) {
	t.Helper()
	env := newACMEEnv(t, pebbletest.Options{})
	env.pointHere("elsewhere.example.test")
	return env.issuer(t, func(c *ACMEConfig) { c.DisableARI = true }).Obtain(t.Context(), Order{Name: "elsewhere.example.test"})
}
