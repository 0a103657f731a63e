package main

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/miekg/dns"
)

// TestServeDNSZone runs serve with [dns01.zone]: the zone answers its SOA
// over UDP on the configured address, its queries are counted on GET
// /metrics, and `domains show` prints the record a name's owner creates.
func TestServeDNSZone(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, `
[store]
path = "`+filepath.Join(dir, "store")+`"
[certs]
socket = "`+filepath.Join(dir, "certs.sock")+`"
[challenge]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[dns01.zone]
name = "acme.hoster.test"
listen = "127.0.0.1:0"
contact = "hostmaster@hoster.test"
`)
	var addr string
	waitFor(t, "the zone's log line", func() bool {
		m := regexp.MustCompile(`dns zone serving".*listen=(127\.0\.0\.1:\d+)`).FindStringSubmatch(s.log.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	q := new(dns.Msg)
	q.SetQuestion("acme.hoster.test.", dns.TypeSOA)
	r, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 1 || !r.Authoritative {
		t.Fatalf("SOA answer %v", r)
	}
	if soa, ok := r.Answer[0].(*dns.SOA); !ok || soa.Mbox != "hostmaster.hoster.test." || soa.Ns != "ns.acme.hoster.test." {
		t.Errorf("SOA %v: want ns.acme.hoster.test. and hostmaster.hoster.test.", r.Answer[0])
	}
	req, _ := http.NewRequest("GET", s.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := `certserver_dns_zone_queries_total{result="answer",type="SOA"} 1`; !strings.Contains(string(body), want) {
		t.Errorf("GET /metrics has no %s", want)
	}

	if code, out, errOut := runCLI(t, s.admin, "", "domains", "add", "shop.example"); code != exitOK {
		t.Fatalf("domains add: %d %s %s", code, out, errOut)
	}
	record := zoneRecord(t, "acme.hoster.test", "shop.example")
	for _, name := range []string{"shop.example"} {
		code, out, errOut := runCLI(t, s.admin, "", "domains", "show", name)
		if code != exitOK || !strings.Contains(out, "dns-01 record:") || !strings.Contains(out, record) {
			t.Errorf("domains show %s: %d\n%s%s\nwant the record %s", name, code, out, errOut, record)
		}
		code, out, _ = runCLI(t, s.admin, "", "domains", "show", "--json", name)
		if code != exitOK || !strings.Contains(out, `"dns01_cname": "`+record+`"`) {
			t.Errorf("domains show --json %s:\n%s\nwant dns01_cname %s", name, out, record)
		}
	}
}

// zoneRecord returns the record of name under zone.
func zoneRecord(t *testing.T, zone, name string) string {
	t.Helper()
	z, err := dnszone.NewZone(zone)
	if err != nil {
		t.Fatal(err)
	}
	return z.Record(name)
}
