package main

import (
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
)

// TestCertbotLineageRenewsAsOneOrder moves a real certbot tree in: Debian's
// certbot obtains a three-name lineage and a one-name lineage from Pebble
// (its own account, its standalone HTTP-01 server on the port Pebble
// validates), `certserver import` reads the tree into a real sidecar and
// `certserver domains add` manages every name. The three-name lineage
// becomes one managed name carrying the other two; a forced renewal is one
// order at Pebble for the three names: first with "replaces", which Pebble
// refuses (certbot's account ordered the certificate), then as a plain
// order, which the sidecar's limiter counts as a renewal (the account's one
// new order per 3 hours is spent, and the renewal still goes). The new
// certificate serves all three names.
func TestCertbotLineageRenewsAsOneOrder(t *testing.T) {
	start := time.Now()
	certbot, err := exec.LookPath("certbot")
	if err != nil {
		t.Fatal("certbot is not installed: apt-get install -y certbot (scripts/deps.sh installs it)")
	}
	// Pebble gives an order without a profile a random one; certbot 2.1
	// names none, so offer only 90-day certificates.
	ca := pebbletest.Start(t, pebbletest.Options{Profiles: map[string]pebbletest.Profile{
		"default": {Description: "90-day certificates", Validity: 90 * 24 * time.Hour},
	}})
	lineage := []string{"shop.certbot.test", "www.shop.certbot.test", "api.shop.certbot.test"}
	const single, fresh = "blog.certbot.test", "new.certbot.test"
	for _, n := range append(slices.Clone(lineage), single, fresh) {
		ca.DNS.SetA(n, netip.MustParseAddr("127.0.0.1"))
	}

	dir := t.TempDir()
	roots := filepath.Join(dir, "pebble-listener-root.pem")
	writeListenerRoot(t, ca, roots)
	etc := filepath.Join(dir, "letsencrypt")
	for _, names := range [][]string{lineage, {single}} {
		args := []string{"certonly", "--standalone", "--non-interactive", "--agree-tos", "--register-unsafely-without-email",
			"--preferred-challenges", "http", "--http-01-address", "127.0.0.1", "--http-01-port", strconv.Itoa(ca.HTTPPort),
			"--server", ca.DirectoryURL, "--config-dir", etc, "--work-dir", filepath.Join(dir, "work"), "--logs-dir", filepath.Join(dir, "logs")}
		for _, n := range names {
			args = append(args, "-d", n)
		}
		cmd := exec.Command(certbot, args...)
		cmd.Env = append(os.Environ(), "REQUESTS_CA_BUNDLE="+roots)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("certbot %v: %v\n%s", names, err, out)
		}
	}
	certbotDone := time.Now()
	if n := ca.OrderCount(); n != 2 {
		t.Fatalf("certbot made %d orders, want 2", n)
	}

	s, sock := servePebble(t, ca, "profile = \"default\"\n", "[acme.limits]\nnew_orders = \"1/3h\"\n")
	code, out, errOut := runCLI(t, s.admin, "", "import", etc)
	if code != exitOK || !strings.Contains(out, "2 certificates: 2 imported") {
		t.Fatalf("import: exit code %d\n%s%s", code, out, errOut)
	}
	// A name without a certificate spends the account's one new order.
	names := append(slices.Clone(lineage), single, fresh)
	if code, out, errOut := runCLI(t, s.admin, "", append([]string{"domains", "add"}, names...)...); code != exitOK || !strings.Contains(out, "5 added") {
		t.Fatalf("domains add: exit code %d\n%s%s", code, out, errOut)
	}
	show := func(name string) api.Domain {
		t.Helper()
		var d api.Domain
		code, out, errOut := runCLI(t, s.admin, "", "domains", "show", "--json", name)
		if code != exitOK || json.Unmarshal([]byte(out), &d) != nil {
			t.Fatalf("domains show %s: exit code %d\n%s%s", name, code, out, errOut)
		}
		return d
	}
	waitLong(t, "the names to be valid", func() bool {
		for _, n := range names {
			if d := show(n); d.State != "valid" {
				if d.State == "failing" {
					t.Fatalf("%s failed: %s", n, d.LastError)
				}
				return false
			}
		}
		return true
	})
	if d := show(lineage[0]); !slices.Equal(d.ExtraNames, lineage[1:]) || d.ManagedWith != "" || d.Certificate == nil || d.Certificate.Source != "certbot" {
		t.Fatalf("%s: extra names %v, managed with %q, certificate %+v; want the certbot lineage's other names", lineage[0], d.ExtraNames, d.ManagedWith, d.Certificate)
	}
	for _, n := range lineage[1:] {
		if d := show(n); d.ManagedWith != lineage[0] || !d.NextAttempt.IsZero() {
			t.Fatalf("%s: managed with %q, next attempt %v; want managed with %s, never due", n, d.ManagedWith, d.NextAttempt, lineage[0])
		}
	}
	if got := ca.OrderCount(); got != 3 {
		t.Fatalf("%d orders at Pebble after the import, want 3 (certbot's 2 and the new name's)", got)
	}

	// Renewing a name of the set renews the set.
	if code, out, errOut := runCLI(t, s.admin, "", "domains", "renew", lineage[2]); code != exitOK || !strings.Contains(out, lineage[0]) {
		t.Fatalf("domains renew %s: exit code %d\n%s%s", lineage[2], code, out, errOut)
	}
	waitLong(t, "the renewed certificate", func() bool {
		d := show(lineage[0])
		if d.State == "failing" {
			t.Fatalf("the renewal failed: %s", d.LastError)
		}
		return d.Certificate != nil && d.Certificate.Source == string(store.SourceACME)
	})
	orders := ca.Orders()[3:]
	var created []pebbletest.Order
	for _, o := range orders {
		if o.Status == 201 {
			created = append(created, o)
		}
	}
	if len(orders) != 2 || orders[0].Replaces == "" || orders[0].Status == 201 || len(created) != 1 ||
		!slices.Equal(created[0].Names, lineage) || created[0].Replaces != "" {
		t.Fatalf("renewal orders %+v; want one refused with replaces, then one created for %v without it", orders, lineage)
	}
	if !strings.Contains(s.log.String(), "ordering without replaces") {
		t.Error("the log does not say the CA refused replaces")
	}
	hc := unixHTTPClient(sock)
	for _, n := range lineage {
		resp, err := hc.Get("http://certs/v1/certs/" + n)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("certificate endpoint for %s: %d %q", n, resp.StatusCode, body)
		}
		if err := ca.VerifyChain(t, body, n); err != nil {
			t.Errorf("served chain for %s: %v", n, err)
		}
	}
	if d := show(lineage[1]); d.Certificate == nil || d.Certificate.Source != string(store.SourceACME) || d.ManagedWith != lineage[0] {
		t.Errorf("%s after the renewal: %+v", lineage[1], d)
	}
	t.Logf("certbot: %s; import to renewed certificate: %s; in all %s",
		certbotDone.Sub(start).Round(time.Millisecond), time.Since(certbotDone).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// waitLong polls cond until it holds, failing after a bound long enough
// for real processes on a loaded machine.
func waitLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
