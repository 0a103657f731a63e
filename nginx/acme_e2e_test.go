package nginx_test

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer/dnstest"
	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
	"github.com/go-acme/lego/v4/certificate"
)

// The end-to-end tests of ordering and serving, every part real and on
// loopback: orders go to Pebble through its counting front; HTTP-01
// validation goes Pebble -> nginx's port-80 server -> certserver-acme.conf
// -> the sidecar's challenge listener; handshakes go client -> nginx -> the
// Lua hook -> the sidecar.
// Each test has its own Pebble, nginx and sidecar and runs in parallel with
// the others.

// TestACMEIssueThroughNginx: a name added with `certserver domains add` is
// issued over HTTP-01 through nginx's port-80 snippet, once, and nginx then
// serves it, without a reload, a chain that verifies against Pebble's roots.
func TestACMEIssueThroughNginx(t *testing.T) {
	t.Parallel()
	const name = "www.issue.test"
	env := startACMEEnv(t, acmeEnvOptions{})
	env.pointHere(name)
	masterPID := env.ngx.PID()

	if certs, err := env.served(name); err != nil || !env.isFallback(certs) {
		t.Fatalf("before issuance: %v, want the fallback", err)
	}
	start := time.Now()
	env.side.addDomains(t, name)

	var leaf *x509.Certificate
	eventually(t, 30*time.Second, name+" served by nginx", env.issued(t, name, &leaf))
	t.Logf("%s served %v after domains add", name, time.Since(start).Round(time.Millisecond))
	var d *domainDoc
	eventually(t, 5*time.Second, name+" valid", env.side.domainState(name, "valid", &d))
	if c := d.Certificate; c == nil || !sameSerial(c.Serial, leaf.SerialNumber) || c.Source != string(store.SourceACME) || c.Origin != env.ca.DirectoryURL {
		t.Errorf("domains show: certificate %+v; want serial %x from acme, origin %s", c, leaf.SerialNumber, env.ca.DirectoryURL)
	}
	if n := env.ca.OrdersFor(name); n != 1 {
		t.Errorf("%d ACME orders for %s, want 1", n, name)
	}
	if o := env.ca.Orders(); len(o) > 0 && o[0].Profile != "default" {
		t.Errorf("the order asked for profile %q, want [acme] profile \"default\"", o[0].Profile)
	}
	if n := env.issuedCount(); n != 1 {
		t.Errorf("Pebble issued %d certificates, want 1", n)
	}
	env.assertNoReload(t, masterPID)
	env.ngx.AssertCleanErrorLog(t)
}

// TestACMEOnDemand: the first handshake for a name the on-demand policy
// allows gets nginx's fallback and starts an order; a handshake within 10
// seconds gets the issued certificate. Names the policy refuses, one outside
// the allow list and one that DNS points elsewhere, cause no ACME order at
// all, however often they are asked for.
func TestACMEOnDemand(t *testing.T) {
	t.Parallel()
	const (
		allowed   = "x.ondemand.test"
		unlisted  = "y.other.test"
		elsewhere = "z.ondemand.test" // in the allow list, but DNS points elsewhere
	)
	env := startACMEEnv(t, acmeEnvOptions{Extra: func(ca *pebbletest.Server) string {
		return fmt.Sprintf(`
[on_demand]
allow = ["*.ondemand.test"]
targets = ["127.0.0.1"]
resolvers = [%q]
`, ca.DNS.Addr())
	}})
	env.pointHere(allowed, unlisted)
	env.ca.DNS.SetA(elsewhere, netip.MustParseAddr("127.0.0.2"))
	masterPID := env.ngx.PID()
	refused := []string{unlisted, elsewhere}

	fallback := func(sni string) {
		t.Helper()
		certs, err := env.served(sni)
		if err != nil {
			t.Fatalf("%s: %v", sni, err)
		}
		if !env.isFallback(certs) {
			t.Fatalf("%s: served %q (serial %x), want the fallback", sni, certs[0].Subject, certs[0].SerialNumber)
		}
	}
	// The refused names first: their policy checks are over long before
	// the allowed name, asked for after them, is issued.
	for _, n := range refused {
		fallback(n)
	}
	start := time.Now()
	fallback(allowed)
	var leaf *x509.Certificate
	eventually(t, 10*time.Second-time.Since(start), allowed+" issued on demand", env.issued(t, allowed, &leaf))
	t.Logf("%s: first handshake got the fallback, the issued certificate served %v later",
		allowed, time.Since(start).Round(time.Millisecond))

	// A grace period of handshakes for the refused names: longer than the
	// Lua module's 404 cache (not_found_max_age 1s), so each is asked of the
	// sidecar again.
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); {
		for _, n := range refused {
			fallback(n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range refused {
		if c := env.ca.OrdersFor(n); c != 0 {
			t.Errorf("%s: %d ACME orders, want none", n, c)
		}
		if d, err := env.side.showDomain(n); err == nil {
			t.Errorf("%s: domains show found %+v, want no such name", n, d)
		}
	}
	if n := env.ca.OrderCount(); n != 1 {
		t.Errorf("%d ACME orders in all, want 1 (%s): %+v", n, allowed, env.ca.Orders())
	}

	d, err := env.side.showDomain(allowed)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != "valid" || d.Source != "on-demand" || d.Certificate == nil || !sameSerial(d.Certificate.Serial, leaf.SerialNumber) {
		t.Errorf("domains show %s: %+v, want valid, source on-demand, serial %x", allowed, d, leaf.SerialNumber)
	}
	env.assertNoReload(t, masterPID)
	env.ngx.AssertCleanErrorLog(t)
}

// TestACMERenewal: a certificate of a 30-second profile is renewed before it
// expires, in the window Pebble's renewal information (ARI) suggests, and
// nginx serves the new one without a reload. Every handshake meanwhile is
// served a chain that verifies at that moment: never the fallback, never an
// expired certificate.
//
// Pebble's ARI window for a short certificate is its whole lifetime; the
// renewer caps it at five sixths of the lifetime and picks a random time in
// what is left, so the renewal comes 0 to 25 seconds after issuance.
func TestACMERenewal(t *testing.T) {
	t.Parallel()
	const (
		name     = "renew.test"
		validity = 30 * time.Second
	)
	profiles := pebbletest.DefaultProfiles()
	profiles["thirty"] = pebbletest.Profile{Description: "30-second certificates", Validity: validity}
	env := startACMEEnv(t, acmeEnvOptions{Profiles: profiles, Profile: "thirty"})
	env.pointHere(name)
	masterPID := env.ngx.PID()

	env.side.addDomains(t, name)
	var first *x509.Certificate
	eventually(t, 30*time.Second, name+" issued", env.issued(t, name, &first))
	if life := first.NotAfter.Sub(first.NotBefore); life >= validity {
		t.Fatalf("the first certificate is valid for %v, want the profile's %v", life, validity)
	}
	d, err := env.side.showDomain(name)
	if err != nil {
		t.Fatal(err)
	}
	if d.Certificate != nil {
		t.Logf("first certificate %x: not after %s, renew at %s", first.SerialNumber, first.NotAfter.Format(time.RFC3339), d.Certificate.RenewAt)
	}

	var second *x509.Certificate
	var seenAt time.Time
	deadline := first.NotAfter.Add(5 * time.Second)
	handshakes := 0
	for second == nil {
		certs, err := env.served(name)
		if err != nil {
			t.Fatalf("handshake %d: %v", handshakes, err)
		}
		handshakes++
		if err := env.ca.VerifyCerts(t, certs, name); err != nil {
			t.Fatalf("handshake %d at %s: served serial %x does not verify: %v",
				handshakes, time.Now().Format(time.RFC3339Nano), certs[0].SerialNumber, err)
		}
		if certs[0].SerialNumber.Cmp(first.SerialNumber) != 0 {
			second, seenAt = certs[0], time.Now()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new certificate served by %s, 5s after the first expired", deadline.Format(time.RFC3339))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("renewed certificate %x served at %s, %v before the first expired (%d handshakes, all verified)",
		second.SerialNumber, seenAt.Format(time.RFC3339Nano), first.NotAfter.Sub(seenAt).Round(time.Millisecond), handshakes)
	if !seenAt.Before(first.NotAfter) {
		t.Errorf("the renewed certificate was first served at %s, after the first expired at %s", seenAt, first.NotAfter)
	}

	// The record names the renewal. A 30-second certificate may itself be
	// renewed again within seconds (its renewal time can come at once), so
	// a later certificate, or the next renewal under way, will do too.
	eventually(t, 5*time.Second, name+" valid with a new certificate", func() error {
		d, err := env.side.showDomain(name)
		if err != nil {
			return err
		}
		if d.State != "valid" && d.State != "renewing" || d.Certificate == nil || sameSerial(d.Certificate.Serial, first.SerialNumber) {
			return fmt.Errorf("domains show: %+v, want valid (or renewing again) with a certificate other than %x", d, first.SerialNumber)
		}
		return nil
	})
	orders := env.ca.Orders()
	wantReplaces, err := certificate.MakeARICertID(first)
	if err != nil {
		t.Fatal(err)
	}
	if len(orders) < 2 || orders[1].Replaces != wantReplaces || orders[1].Profile != "thirty" {
		t.Errorf("orders %+v; want a second one for profile thirty that replaces %s", orders, wantReplaces)
	}
	env.assertNoReload(t, masterPID)
	env.ngx.AssertCleanErrorLog(t)
}

// TestACMERestart: the sidecar is killed with SIGKILL while it is ordering
// several names, as soon as Pebble has seen the first newOrder, and started
// again on the same store. Every name ends valid and served by nginx, and
// Pebble has issued exactly one certificate per name: the names left in
// flight are ordered again after the restart, never twice.
//
// What is counted: the certificates Pebble issued, one log line each
// ("Issued certificate serial"); each order has one name, so as many
// certificates as names, with every name served a different one, means one
// per name.
func TestACMERestart(t *testing.T) {
	t.Parallel()
	names := []string{"a.restart.test", "b.restart.test", "c.restart.test", "d.restart.test", "e.restart.test", "f.restart.test"}
	env := startACMEEnv(t, acmeEnvOptions{Workers: 4})
	env.pointHere(names...)
	masterPID := env.ngx.PID()

	env.side.addDomains(t, names...)
	deadline := time.Now().Add(30 * time.Second)
	for env.ca.OrderCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Pebble saw no newOrder within 30s of domains add")
		}
		time.Sleep(2 * time.Millisecond)
	}
	env.side.kill(t)
	ordersAtKill, issuedAtKill := env.ca.OrderCount(), env.issuedCount()
	killedAt := time.Now()
	t.Logf("killed the sidecar with %d orders made and %d certificates issued", ordersAtKill, issuedAtKill)
	if issuedAtKill == len(names) {
		t.Fatalf("every name was issued before the kill; the test killed too late")
	}

	env.side.restart(t)
	serials := map[string]string{}
	for _, n := range names {
		var leaf *x509.Certificate
		eventually(t, 30*time.Second, n+" served after the restart", env.issued(t, n, &leaf))
		eventually(t, 5*time.Second, n+" valid", env.side.domainState(n, "valid", nil))
		s := leaf.SerialNumber.Text(16)
		for other, prev := range serials {
			if prev == s {
				t.Errorf("%s and %s are served the same certificate %s", n, other, s)
			}
		}
		serials[n] = s
	}
	if n := env.issuedCount(); n != len(names) {
		t.Errorf("Pebble issued %d certificates for %d names; some name got more than one", n, len(names))
	}
	var perName []string
	for _, n := range names {
		perName = append(perName, fmt.Sprintf("%s:%d", n, env.ca.OrdersFor(n)))
	}
	t.Logf("orders per name (an order cut off by the kill is made again): %s", strings.Join(perName, " "))

	// A clean restart keeps what the account spent: the new-orders bucket
	// (Let's Encrypt's 300 per 3 hours by default) comes back short of the
	// orders made, instead of full. Eight more names make sure this run
	// spent enough for a full bucket to be told apart.
	more := []string{"g.restart.test", "h.restart.test", "i.restart.test", "j.restart.test",
		"k.restart.test", "l.restart.test", "m.restart.test", "n.restart.test"}
	env.pointHere(more...)
	env.side.addDomains(t, more...)
	for _, n := range more {
		eventually(t, 30*time.Second, n+" valid", env.side.domainState(n, "valid", nil))
	}
	ordersThisRun := env.ca.OrderCount() - ordersAtKill
	const restored = "restored the buckets spent before the restart"
	logged := strings.Count(env.side.log(), restored)
	env.side.stop(t)
	env.side.restart(t)
	// The buckets are restored as the renewer starts, next to the API.
	eventually(t, 10*time.Second, "the restore logged", func() error {
		if strings.Count(env.side.log(), restored) <= logged {
			return fmt.Errorf("no new %q in the sidecar's log", restored)
		}
		return nil
	})
	out, err := env.side.cli("queue", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var q api.Queue
	if err := json.Unmarshal(out, &q); err != nil || len(q.CAs) != 1 {
		t.Fatalf("queue --json: %v\n%s", err, out)
	}
	tokens := -1.0
	for _, l := range q.CAs[0].Limits {
		if l.Limit == "new_orders_per_account" && len(l.Buckets) == 1 {
			tokens = l.Buckets[0].Tokens
		}
	}
	// Orders before the kill may have been lost with it (saving is once a
	// second); a token comes back every 36 s since the run's first order
	// (after the kill), however slow the machine made the run, and one more
	// for rounding. A full bucket (300) stays far above that.
	refilled := int(time.Since(killedAt)/(36*time.Second)) + 1
	// A newOrder of each of the 4 workers may have been on its way when
	// the kill came, and reached Pebble after ordersAtKill was read: it
	// is counted in this run's orders, but the killed run spent it.
	inFlight := max(0, 4-ordersAtKill)
	if want := 300 - ordersThisRun + inFlight + refilled; tokens < 0 || tokens > float64(want) {
		t.Errorf("new-orders tokens after a restart: %.2f, want at most %d (300 less the %d orders of the run before, %d of which may be the killed run's, and %d refilled in %s)",
			tokens, want, ordersThisRun, inFlight, refilled, time.Since(killedAt).Round(time.Second))
	}
	env.assertNoReload(t, masterPID)
	env.ngx.AssertCleanErrorLog(t)
}

// TestACMEFailure: a name whose DNS points nowhere (NXDOMAIN in Pebble's
// DNS) ends failing, with Pebble's words in last_error, one failure counted
// and the next attempt a minute later (the backoff itself is unit-tested
// with a fake clock in renewer).
func TestACMEFailure(t *testing.T) {
	t.Parallel()
	const name = "nx.fail.test" // no records: NXDOMAIN
	// Pre-flight off: it would refuse the name before Pebble saw it
	// (TestACMEPreflightRefuses covers that).
	env := startACMEEnv(t, acmeEnvOptions{NoPreflight: true})

	env.side.addDomains(t, name)
	var d *domainDoc
	eventually(t, 30*time.Second, name+" failing", env.side.domainState(name, "failing", &d))
	t.Logf("last_error: %s", d.LastError)
	if d.Failures != 1 {
		t.Errorf("failures = %d, want 1", d.Failures)
	}
	// Pebble's VA: "... error occurred while resolving URL \"http://nx.fail.test:PORT/...\"".
	if !strings.Contains(d.LastError, name) || !strings.Contains(d.LastError, "resolv") {
		t.Errorf("last_error %q does not carry Pebble's DNS error for %s", d.LastError, name)
	}
	updated := parseTime(t, "updated_at", d.UpdatedAt)
	next := parseTime(t, "next_attempt", d.NextAttempt)
	parseTime(t, "failing_since", d.FailingSince)
	// One minute, moved by up to 10% either way.
	if wait := next.Sub(updated); wait < 54*time.Second || wait > 66*time.Second {
		t.Errorf("next_attempt %s is %v after updated_at %s, want about 1m", d.NextAttempt, wait, d.UpdatedAt)
	}
	if certs, err := env.served(name); err != nil || !env.isFallback(certs) {
		t.Errorf("handshake for %s: %v, want the fallback", name, err)
	}
	if n := env.ca.OrdersFor(name); n != 1 {
		t.Errorf("%d orders for %s, want 1", n, name)
	}
	env.ngx.AssertCleanErrorLog(t)
}

// TestACMEPreflightRefuses: before every order the sidecar checks DNS and
// CAA as the CA will. A name whose CAA allows another CA only, and a name
// DNS knows nothing of, are never ordered (Pebble sees no order for them)
// and end failing with the reason; a name whose CAA allows Pebble is issued.
func TestACMEPreflightRefuses(t *testing.T) {
	t.Parallel()
	env := startACMEEnv(t, acmeEnvOptions{CAAIdentities: []string{"pebble.test"}})
	const denied, nowhere, allowed = "shop.caa-denied.test", "nowhere.preflight.test", "shop.caa-allowed.test"
	env.pointHere(denied, allowed)
	env.ca.DNS.SetCAA("caa-denied.test", dnstest.CAA{Tag: "issue", Value: "other-ca.example"})
	env.ca.DNS.SetCAA("caa-allowed.test", dnstest.CAA{Tag: "issue", Value: "pebble.test"})

	env.side.addDomains(t, denied, nowhere, allowed)
	eventually(t, 30*time.Second, allowed+" valid", env.side.domainState(allowed, "valid", nil))
	for name, want := range map[string]string{denied: "other-ca.example", nowhere: "does not resolve"} {
		var d *domainDoc
		eventually(t, 30*time.Second, name+" failing", env.side.domainState(name, "failing", &d))
		if !strings.Contains(d.LastError, "pre-flight") || !strings.Contains(d.LastError, want) {
			t.Errorf("%s: last_error %q, want the pre-flight's reason naming %q", name, d.LastError, want)
		}
		if n := env.ca.OrdersFor(name); n != 0 {
			t.Errorf("%s: %d ACME orders, want none: the pre-flight should have stopped it", name, n)
		}
	}
	if n := env.ca.OrdersFor(allowed); n != 1 {
		t.Errorf("%s: %d orders, want 1", allowed, n)
	}
	env.ngx.AssertCleanErrorLog(t)
}
