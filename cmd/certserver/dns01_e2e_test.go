package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer/bindtest"
	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/miekg/dns"
)

// dns01Section returns a [dns01] section that updates bind's zones with
// its TSIG key (the secret in a file of the test's) and asks bind alone
// whether a record is served.
func dns01Section(t *testing.T, bind *bindtest.Server) string {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "tsig.secret")
	if err := os.WriteFile(secret, []byte(bind.Secret()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return `
[dns01]
provider = "rfc2136"
nameserver = "` + bind.Addr() + `"
tsig_key = "` + strings.TrimSuffix(bindtest.KeyName, ".") + `"
tsig_algorithm = "hmac-sha256"
tsig_secret_file = "` + secret + `"
ttl = 1
sequence_interval = "1s"
propagation_timeout = "30s"
polling_interval = "200ms"
resolvers = ["` + bind.Addr() + `"]
check_authoritative = false
`
}

// TestServeDNS01WithBIND: the sidecar with [dns01] provider = "rfc2136"
// against a real BIND 9 that takes its TSIG-signed updates, and Pebble
// resolving through that BIND. `certserver domains add '*.shop.example'
// shop.example` manages one certificate for both, issued in one order
// proved with dns-01; both names are served by it, its chain verifies, the
// record's attempt says dns-01, the TXT records are gone afterwards, and
// the TSIG secret is never logged.
func TestServeDNS01WithBIND(t *testing.T) {
	bind := bindtest.Start(t, bindtest.Zone{Name: "shop.example"})
	ca := pebbletest.Start(t, pebbletest.Options{DNSAddr: bind.Addr()})
	s, sock := servePebble(t, ca, "profile = \"default\"\n", dns01Section(t, bind))

	code, out, errOut := runCLI(t, s.admin, "", "domains", "add", "*.shop.example", "shop.example")
	if code != exitOK || !strings.Contains(out, "1 added") || !strings.Contains(out, "one certificate: *.shop.example with shop.example") {
		t.Fatalf("domains add: exit code %d\n%s%s", code, out, errOut)
	}
	var doc api.Domain
	waitFor(t, "*.shop.example to become valid", func() bool {
		code, out, _ := runCLI(t, s.admin, "", "domains", "show", "--json", "*.shop.example")
		if code != exitOK || json.Unmarshal([]byte(out), &doc) != nil {
			return false
		}
		if doc.State == "failing" {
			t.Fatalf("the order failed: %s\n%s", doc.LastError, s.log.String())
		}
		return doc.State == "valid"
	})
	if c := doc.Certificate; c == nil || !slices.Equal(c.Names, []string{"*.shop.example", "shop.example"}) {
		t.Fatalf("certificate %+v, want one for *.shop.example and shop.example", doc.Certificate)
	}
	if len(doc.RecentAttempts) != 1 || doc.RecentAttempts[0].Challenge != "dns-01" || doc.RecentAttempts[0].Outcome != "issued" {
		t.Errorf("attempts %+v, want one issued with dns-01", doc.RecentAttempts)
	}
	if orders := ca.Orders(); len(orders) != 1 || len(orders[0].Names) != 2 {
		t.Errorf("orders %+v, want one for both names", orders)
	}
	hc := unixHTTPClient(sock)
	for _, name := range []string{"shop.example", "www.shop.example"} {
		resp, err := hc.Get("http://certs/v1/certs/" + name)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: certificate endpoint %d %q", name, resp.StatusCode, body)
		}
		if err := ca.VerifyChain(t, body, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// lego removes the TXT records once the order is done.
	waitFor(t, "the TXT records to be removed", func() bool {
		m := new(dns.Msg)
		m.SetQuestion("_acme-challenge.shop.example.", dns.TypeTXT)
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, bind.Addr())
		return err == nil && len(r.Answer) == 0
	})
	if strings.Contains(s.log.String(), bind.Secret()) {
		t.Error("the TSIG secret is in the log")
	}
}
