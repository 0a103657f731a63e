package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer/bindtest"
	"github.com/certserver/certserver/renewer/dnstest"
	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/miekg/dns"
)

// dns01Section returns a [dns01] section that updates bind's zones with
// its TSIG key (the secret in a file of the test's) and asks bind alone
// whether a record is served.
func dns01Section(t testing.TB, bind *bindtest.Server) string {
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
	waitShopIssuedByDNS01(t, s, ca)
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

// TestServeDNS01ThroughZone: the sidecar with certserver's own zone
// ([dns01.zone]) and no DNS provider; a real BIND 9 holds the customers'
// zones with their _acme-challenge CNAMEs into certserver's zone, which
// it forwards to the sidecar's zone server, and Pebble resolves through
// BIND, following each CNAME into the zone as a CA's resolver does.
//
//   - '*.shop.example' with shop.example: one order, both values of the
//     one _acme-challenge node answered at once, issued;
//   - 50 names added with --challenge dns-01 at once, 50 workers: 50
//     concurrent dns-01 orders through the zone, all issued;
//   - late.example without its CNAME: no order is sent, and its state
//     names the exact record to create; once BIND holds it, a renew
//     issues it.
func TestServeDNS01ThroughZone(t *testing.T) {
	const zoneName = "acme.hoster.example"
	zone, err := dnszone.NewZone(zoneName)
	if err != nil {
		t.Fatal(err)
	}
	zonePort := bindtest.FreePort(t)
	zoneAddr := "127.0.0.1:" + strconv.Itoa(zonePort)
	cname := func(name string) string { return strings.Replace(zone.Record(name), " CNAME ", " 1 IN CNAME ", 1) }
	const many = 50
	shop := []string{cname("shop.example")}
	var names []string
	for i := range many {
		n := fmt.Sprintf("c%02d.shop.example", i)
		names = append(names, n)
		shop = append(shop, cname(n))
	}
	bind := bindtest.Start(t,
		bindtest.Zone{Name: "shop.example", Records: shop},
		bindtest.Zone{Name: "late.example"},
		bindtest.Zone{Name: zoneName, Forward: zoneAddr})
	ca := pebbletest.Start(t, pebbletest.Options{DNSAddr: bind.Addr()})
	s, _ := servePebbleRenewer(t, ca, "profile = \"default\"\n", "workers = 60\n", `
[dns01]
propagation_timeout = "60s"
polling_interval = "200ms"
resolvers = ["`+bind.Addr()+`"]
check_authoritative = false
[dns01.zone]
name = "`+zoneName+`"
listen = "`+zoneAddr+`"
contact = "hostmaster@hoster.example"
`)
	show := func(name string) api.Domain {
		var doc api.Domain
		code, out, _ := runCLI(t, s.admin, "", "domains", "show", "--json", name)
		if code != exitOK || json.Unmarshal([]byte(out), &doc) != nil {
			t.Fatalf("domains show %s: exit %d\n%s", name, code, out)
		}
		return doc
	}
	waitValid := func(name string) api.Domain {
		var doc api.Domain
		waitFor(t, name+" to become valid", func() bool {
			doc = show(name)
			if doc.State == "failing" || doc.State == "given_up" {
				t.Fatalf("%s: %s\n%s", name, doc.LastError, s.log.String())
			}
			return doc.State == "valid"
		})
		return doc
	}

	// A wildcard and its apex, one order through the zone.
	if code, out, errOut := runCLI(t, s.admin, "", "domains", "add", "*.shop.example", "shop.example"); code != exitOK {
		t.Fatalf("domains add: exit code %d\n%s%s", code, out, errOut)
	}
	doc := waitValid("*.shop.example")
	if c := doc.Certificate; c == nil || !slices.Equal(c.Names, []string{"*.shop.example", "shop.example"}) || doc.RecentAttempts[0].Challenge != "dns-01" {
		t.Fatalf("record %+v, want a dns-01 certificate for *.shop.example and shop.example", doc)
	}
	if doc.DNS01CNAME != zone.Record("*.shop.example") {
		t.Errorf("dns01_cname %q, want %q", doc.DNS01CNAME, zone.Record("*.shop.example"))
	}

	// Concurrent orders through the zone.
	start := time.Now()
	if code, out, errOut := runCLI(t, s.admin, strings.Join(names, "\n")+"\n", "domains", "add", "--challenge", "dns-01", "-"); code != exitOK {
		t.Fatalf("domains add: exit code %d\n%s%s", code, out, errOut)
	}
	for _, n := range names {
		waitValid(n)
	}
	t.Logf("%d dns-01 orders through the zone in %v", many, time.Since(start).Round(time.Millisecond))

	// A name without its CNAME waits with the record to create, unordered.
	if code, out, errOut := runCLI(t, s.admin, "", "domains", "add", "--challenge", "dns-01", "late.example"); code != exitOK {
		t.Fatalf("domains add: exit code %d\n%s%s", code, out, errOut)
	}
	want := zone.Record("late.example")
	waitFor(t, "late.example to be refused", func() bool {
		doc = show("late.example")
		return doc.State == "failing"
	})
	if !strings.Contains(doc.LastError, "create the record "+want) || doc.RecentAttempts[0].Outcome != "refused" || doc.RecentAttempts[0].Challenge != "dns-01" {
		t.Fatalf("record %+v, want a refused dns-01 attempt naming the record %s", doc, want)
	}
	if _, out, _ := runCLI(t, s.admin, "", "domains", "show", "late.example"); !strings.Contains(out, want) {
		t.Errorf("domains show does not print the record to create:\n%s", out)
	}
	if n := ca.OrdersFor("late.example"); n != 0 {
		t.Fatalf("%d orders for late.example, want none before its CNAME exists", n)
	}
	bind.Add(t, "late.example", cname("late.example"))
	if code, out, errOut := runCLI(t, s.admin, "", "domains", "renew", "late.example"); code != exitOK {
		t.Fatalf("domains renew: exit code %d\n%s%s", code, out, errOut)
	}
	waitFor(t, "late.example to be issued once its CNAME exists", func() bool {
		doc = show("late.example")
		if len(doc.RecentAttempts) > 1 && doc.RecentAttempts[0].Outcome != "issued" {
			t.Fatalf("late.example after its CNAME was created: %+v", doc.RecentAttempts[0])
		}
		return doc.State == "valid"
	})
}

// TestServeDNS01WithHTTPReq: the sidecar with [dns01] provider =
// "httpreq", one of lego's providers chosen by name, its settings in
// [dns01.env] (the password through HTTPREQ_PASSWORD_FILE). The test's
// own HTTP endpoint sets and removes the TXT records in a test DNS server
// that Pebble resolves through; '*.shop.example' with shop.example is
// issued in one order, both values present at once, the records are gone
// afterwards, and the password is never logged.
func TestServeDNS01WithHTTPReq(t *testing.T) {
	for _, k := range []string{"HTTPREQ_ENDPOINT", "HTTPREQ_USERNAME", "HTTPREQ_PASSWORD_FILE"} {
		t.Setenv(k, "") // restored after the test; newDNS01 sets them
		os.Unsetenv(k)
	}
	const password = "httpreq-s3cret"
	pwFile := filepath.Join(t.TempDir(), "httpreq.password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	zone := dnstest.Start(t, dnstest.Options{})
	var mu sync.Mutex
	most, calls := 0, map[string]int{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct{ FQDN, Value string }
		if user, pw, ok := r.BasicAuth(); !ok || user != "certserver" || pw != password {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if r.Method != http.MethodPost || json.NewDecoder(r.Body).Decode(&msg) != nil || msg.FQDN == "" || msg.Value == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/present":
			zone.AddTXT(msg.FQDN, msg.Value)
			most = max(most, len(zone.TXT(msg.FQDN)))
		case "/cleanup":
			zone.RemoveTXT(msg.FQDN, msg.Value)
		default:
			http.NotFound(w, r)
			return
		}
		calls[r.URL.Path]++
	}))
	t.Cleanup(hook.Close)

	ca := pebbletest.Start(t, pebbletest.Options{DNSAddr: zone.Addr()})
	s, sock := servePebble(t, ca, "profile = \"default\"\n", `
[dns01]
provider = "httpreq"
propagation_timeout = "30s"
polling_interval = "200ms"
resolvers = ["`+zone.Addr()+`"]
check_authoritative = false
[dns01.env]
HTTPREQ_ENDPOINT = "`+hook.URL+`"
HTTPREQ_USERNAME = "certserver"
HTTPREQ_PASSWORD_FILE = "`+pwFile+`"
`)
	if code, out, errOut := runCLI(t, s.admin, "", "domains", "add", "*.shop.example", "shop.example"); code != exitOK {
		t.Fatalf("domains add: exit code %d\n%s%s", code, out, errOut)
	}
	waitShopIssuedByDNS01(t, s, ca)
	hc := unixHTTPClient(sock)
	resp, err := hc.Get("http://certs/v1/certs/www.shop.example")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("certificate endpoint %d %q", resp.StatusCode, body)
	}
	if err := ca.VerifyChain(t, body, "www.shop.example"); err != nil {
		t.Error(err)
	}
	waitFor(t, "the TXT records to be removed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls["/cleanup"] == 2 && len(zone.TXT("_acme-challenge.shop.example")) == 0
	})
	mu.Lock()
	if calls["/present"] != 2 || most != 2 {
		t.Errorf("%d presents, at most %d values at once; want 2 and 2 (wildcard and apex in one order)", calls["/present"], most)
	}
	mu.Unlock()
	if strings.Contains(s.log.String(), password) {
		t.Error("the httpreq password is in the log")
	}
}

// waitShopIssuedByDNS01 waits until *.shop.example, added with
// shop.example, is valid in s, and checks that one order of Pebble's
// issued one certificate for both names, proved with dns-01.
func waitShopIssuedByDNS01(t *testing.T, s *served, ca *pebbletest.Server) {
	t.Helper()
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
}
