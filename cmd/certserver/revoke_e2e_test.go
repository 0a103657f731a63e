package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
)

// TestRenewRevokeWithPebble runs the real sidecar against Pebble and
// drives it with the command line: a forced renewal orders a new
// certificate before its time; a revocation revokes the served
// certificate at Pebble with the reason given and has a new one ordered
// at once; a removal with --revoke revokes and orders nothing.
func TestRenewRevokeWithPebble(t *testing.T) {
	start := time.Now()
	ca := pebbletest.Start(t, pebbletest.Options{})
	const shop, www = "shop.revoke.test", "www.revoke.test"
	for _, n := range []string{shop, www} {
		ca.DNS.SetA(n, netip.MustParseAddr("127.0.0.1"))
	}
	s, _ := servePebble(t, ca, "email = \"ops@revoke.test\"\nprofile = \"default\"\n", "")
	cli := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, s.admin, "", args...)
		if code != exitOK {
			t.Fatalf("%s: exit code %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	// show returns the record of name once it is valid with a certificate
	// whose serial is not old.
	show := func(name, old string) api.Domain {
		t.Helper()
		var doc api.Domain
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, out, _ := runCLI(t, s.admin, "", "domains", "show", "--json", name)
			doc = api.Domain{}
			if code == exitOK && json.Unmarshal([]byte(out), &doc) == nil && doc.State == "valid" &&
				doc.Certificate != nil && doc.Certificate.Serial != old {
				return doc
			}
			if doc.State == "failing" {
				t.Fatalf("%s: the order failed: %s", name, doc.LastError)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not valid with a new certificate after 30s: %+v", name, doc)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	cli("domains", "add", shop, www)
	first := show(shop, "").Certificate
	wwwCert := show(www, "").Certificate

	// Renew now: a new certificate long before its renewal time.
	if out := cli("domains", "renew", shop); !strings.Contains(out, "renewal queued") {
		t.Errorf("renew: %q", out)
	}
	renewed := show(shop, first.Serial).Certificate
	if n := ca.OrdersFor(shop); n != 2 {
		t.Errorf("%d orders for %s after the renewal, want 2", n, shop)
	}
	if st := ca.CertStatus(t, first.Serial); st.Status != "Valid" {
		t.Errorf("a renewal revoked the old certificate: %+v", st)
	}

	// Revoke: Pebble records the revocation with its reason, and a new
	// certificate is ordered at once.
	var rev api.Revocation
	if err := json.Unmarshal([]byte(cli("domains", "revoke", "--reason", "keyCompromise", "--json", shop)), &rev); err != nil {
		t.Fatal(err)
	}
	if rev.Serial != renewed.Serial || rev.ReasonCode != 1 || !rev.Queued || len(rev.Reordered) != 1 ||
		!strings.Contains(rev.Message, "a new certificate is being ordered for "+shop) {
		t.Errorf("revoke answer %+v", rev)
	}
	if st := ca.CertStatus(t, renewed.Serial); st.Status != "Revoked" || st.Reason == nil || *st.Reason != 1 {
		t.Errorf("at Pebble after the revocation: %+v, want Revoked with reason 1 (keyCompromise)", st)
	}
	after := show(shop, renewed.Serial).Certificate
	if n := ca.OrdersFor(shop); n != 3 {
		t.Errorf("%d orders for %s after the revocation, want 3", n, shop)
	}
	if st := ca.CertStatus(t, after.Serial); st.Status != "Valid" {
		t.Errorf("the new certificate: %+v", st)
	}

	// Remove with --revoke: revoked as superseded, nothing ordered.
	out := cli("domains", "rm", "--revoke", "superseded", www)
	if !strings.Contains(out, www+": removed; certificate "+www+" serial "+wwwCert.Serial+" revoked (superseded)") {
		t.Errorf("rm --revoke: %q", out)
	}
	if st := ca.CertStatus(t, wwwCert.Serial); st.Status != "Revoked" || st.Reason == nil || *st.Reason != 4 {
		t.Errorf("at Pebble after rm --revoke: %+v, want Revoked with reason 4 (superseded)", st)
	}
	if n := ca.Requests("revokeCert"); n != 2 {
		t.Errorf("%d revocation requests, want 2", n)
	}

	// The queue drains; status is all well (the removed name's
	// certificate is not reported).
	waitFor(t, "an empty queue", func() bool {
		code, out, _ := runCLI(t, s.admin, "", "queue", "--json")
		var q api.Queue
		return code == exitOK && json.Unmarshal([]byte(out), &q) == nil && q.Issuance && q.InFlight == 0 && q.DueNow.N == 0
	})
	if code, out, errOut := runCLI(t, s.admin, "", "status"); code != exitOK || !strings.Contains(out, "VERDICT   ok") {
		t.Errorf("status: exit code %d\n%s%s", code, out, errOut)
	}
	if n := ca.OrdersFor(www); n != 1 {
		t.Errorf("%d orders for the removed %s, want 1", n, www)
	}
	t.Logf("Pebble start to revoked and reordered: %s", time.Since(start).Round(time.Millisecond))
}

// TestRevokedIsReplacedFromTheDueIndex revokes a certificate while no
// renewer runs (a restart, or a full queue: nothing is put ahead of the
// queue), then starts one: it must order a new certificate from the due
// index rather than keep, or adopt, the revoked one.
func TestRevokedIsReplacedFromTheDueIndex(t *testing.T) {
	ctx := t.Context()
	var st store.Store
	port := pebbletest.StartResponder(t, func(ctx context.Context, token string) (string, error) {
		return st.GetChallenge(ctx, token)
	})
	ca := pebbletest.Start(t, pebbletest.Options{HTTPPort: port})
	const name = "restart.revoke.test"
	ca.DNS.SetA(name, netip.MustParseAddr("127.0.0.1"))
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	bst, err := store.OpenBadger(filepath.Join(t.TempDir(), "store"), store.BadgerOptions{Logger: logger, NoSync: true, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bst.Close() })
	st = bst
	issuer, err := renewer.NewACMEIssuer(renewer.ACMEConfig{Directory: ca.DirectoryURL, AgreeTerms: true, HTTPClient: ca.HTTPClient(), Timeout: 30 * time.Second}, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	// runRenewer runs a renewer until name holds a certificate whose serial
	// is not old, and returns it.
	runRenewer := func(old string) *store.Certificate {
		t.Helper()
		rn, err := renewer.New(renewer.Config{IdleWait: 100 * time.Millisecond, DefaultProfile: "default", CAs: []renewer.CA{{Issuer: issuer}}}, st, logger)
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = rn.Run(rctx)
		}()
		defer func() {
			cancel()
			<-done
		}()
		var c *store.Certificate
		deadline := time.Now().Add(30 * time.Second)
		for {
			d, err := st.GetDomain(ctx, name)
			if err == nil && d.State == store.StateValid {
				if c, err = st.LookupCertificate(ctx, name); err == nil && c.Serial != old {
					return c
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new certificate for %s after 30s: %+v", name, d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	now := time.Now()
	if _, _, err := st.AddDomains(ctx, []*store.Domain{{Name: name, State: store.StatePending, NextAttempt: now, AddedAt: now, UpdatedAt: now}}); err != nil {
		t.Fatal(err)
	}
	first := runRenewer("")

	url, _ := startAdminOn(t, st, certserver.AdminConfig{Revoker: issuer})
	code, out, errOut := runCLI(t, url, "", "domains", "revoke", "--reason", "keyCompromise", name)
	if code != exitOK || !strings.Contains(out, "due now, but issuance is off") {
		t.Fatalf("revoke: exit code %d\n%s%s", code, out, errOut)
	}
	if s := ca.CertStatus(t, first.Serial); s.Status != "Revoked" {
		t.Fatalf("at Pebble: %+v", s)
	}

	second := runRenewer(first.Serial)
	if n := ca.OrdersFor(name); n != 2 {
		t.Errorf("%d orders, want 2", n)
	}
	if s := ca.CertStatus(t, second.Serial); s.Status != "Valid" {
		t.Errorf("the new certificate at Pebble: %+v", s)
	}
}
