package renewer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
)

func TestRevoke(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	env.pointHere("revoke.example.test", "other.example.test")
	is := env.issuer(t, nil)
	ctx := t.Context()
	cert, err := is.Obtain(ctx, Order{Name: "revoke.example.test", Profile: "default"})
	if err != nil {
		t.Fatalf("Obtain: %v", err)
	}
	if s := env.ca.CertStatus(t, cert.Serial); s.Status != "Valid" {
		t.Fatalf("before: status %q", s.Status)
	}

	if err := is.Revoke(ctx, cert, ReasonKeyCompromise); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	s := env.ca.CertStatus(t, cert.Serial)
	if s.Status != "Revoked" || s.Reason == nil || *s.Reason != ReasonKeyCompromise {
		t.Errorf("after: status %q reason %v, want Revoked with reason %d", s.Status, s.Reason, ReasonKeyCompromise)
	}
	// Revoking again is not an error, and the first reason stays.
	if err := is.Revoke(ctx, cert, ReasonSuperseded); err != nil {
		t.Errorf("second Revoke: %v", err)
	}
	if s := env.ca.CertStatus(t, cert.Serial); s.Reason == nil || *s.Reason != ReasonKeyCompromise {
		t.Errorf("after the second revocation: reason %v, want %d", s.Reason, ReasonKeyCompromise)
	}
	sent := env.ca.Requests("revokeCert")
	if sent != 2 {
		t.Errorf("%d revokeCert requests, want 2", sent)
	}

	other, err := is.Obtain(ctx, Order{Name: "other.example.test", Profile: "default"})
	if err != nil {
		t.Fatalf("Obtain: %v", err)
	}
	foreign, err := selfSigned("foreign.example.test", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc    string
		ctx     func() context.Context
		cert    *store.Certificate
		reason  int
		kind    ErrorKind
		want    string
		reaches bool // the request reaches the CA
	}{
		{desc: "reason 7", cert: other, reason: 7, kind: KindPermanent, want: "reason code 7"},
		{desc: "negative reason", cert: other, reason: -1, kind: KindPermanent, want: "reason code -1"},
		{desc: "reason 11", cert: other, reason: 11, kind: KindPermanent, want: "reason code 11"},
		{desc: "no PEM", cert: &store.Certificate{ID: "x.example.test", Serial: "1", ChainPEM: []byte("junk")}, kind: KindPermanent, want: "PEM certificate"},
		{desc: "unknown to the CA", cert: foreign, kind: KindPermanent, want: "acme malformed: Unable to find specified certificate", reaches: true},
		{desc: "context done", ctx: func() context.Context {
			c, cancel := context.WithCancel(ctx)
			cancel()
			return c
		}, cert: other, kind: KindTransient, want: "revocation not started"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			before := env.ca.Requests("revokeCert")
			c := ctx
			if tc.ctx != nil {
				c = tc.ctx()
			}
			err := is.Revoke(c, tc.cert, tc.reason)
			var re *RevokeError
			if !errors.As(err, &re) {
				t.Fatalf("error %v (%T), want a *RevokeError", err, err)
			}
			if re.Kind != tc.kind || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "revoke "+tc.cert.ID+" serial "+tc.cert.Serial+": ") {
				t.Errorf("error %q kind %v, want kind %v naming %q", err, re.Kind, tc.kind, tc.want)
			}
			if got := env.ca.Requests("revokeCert") - before; (got > 0) != tc.reaches {
				t.Errorf("%d revokeCert requests, want reaches=%v", got, tc.reaches)
			}
		})
	}
	if s := env.ca.CertStatus(t, other.Serial); s.Status != "Valid" {
		t.Errorf("other certificate: %q, want Valid", s.Status)
	}

	// With an account URL the CA does not know, the key is registered
	// again (the CA answers with the account that ordered the certificate)
	// and the revocation goes through.
	id := AccountID(env.ca.DirectoryURL, "ops@example.test")
	rec, err := env.store.GetAccount(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	rec.URL = strings.TrimSuffix(env.ca.DirectoryURL, "/dir") + "/my-account/lost"
	if err := env.store.PutAccount(ctx, rec); err != nil {
		t.Fatal(err)
	}
	is = env.issuer(t, nil)
	if err := is.Revoke(ctx, other, ReasonSuperseded); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if s := env.ca.CertStatus(t, other.Serial); s.Status != "Revoked" || s.Reason == nil || *s.Reason != ReasonSuperseded {
		t.Errorf("other certificate: %+v, want Revoked, superseded", s)
	}
}

// Another account than the one that ordered a certificate may not revoke
// it: the CA's refusal is a permanent error in its own words.
func TestRevokeOtherAccount(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	env.pointHere("mine.example.test")
	cert, err := env.issuer(t, nil).Obtain(t.Context(), Order{Name: "mine.example.test", Profile: "default"})
	if err != nil {
		t.Fatalf("Obtain: %v", err)
	}
	other := env.issuer(t, func(c *ACMEConfig) { c.Email = "someone-else@example.test" })
	err = other.Revoke(t.Context(), cert, ReasonUnspecified)
	var re *RevokeError
	if !errors.As(err, &re) || !re.Permanent() || !strings.Contains(err.Error(), "acme unauthorized") {
		t.Fatalf("error %v, want a permanent unauthorized *RevokeError", err)
	}
	if s := env.ca.CertStatus(t, cert.Serial); s.Status != "Valid" {
		t.Errorf("status %q, want Valid", s.Status)
	}
}
