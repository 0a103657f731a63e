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
	"github.com/certserver/certserver/store"
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

	// The record is shown for the names whose orders may go through the
	// zone: the default (acme.challenge auto), dns-01 and auto; not for a
	// name that asks for http-01.
	for _, add := range [][]string{{"shop.example"}, {"--challenge", "dns-01", "dns.example"}, {"--challenge", "auto", "auto.example"}, {"--challenge", "http-01", "plain.example"}} {
		if code, out, errOut := runCLI(t, s.admin, "", append([]string{"domains", "add"}, add...)...); code != exitOK {
			t.Fatalf("domains add %v: %d %s %s", add, code, out, errOut)
		}
	}
	for _, name := range []string{"shop.example", "dns.example", "auto.example"} {
		record := zoneRecord(t, "acme.hoster.test", name)
		code, out, errOut := runCLI(t, s.admin, "", "domains", "show", name)
		if code != exitOK || !strings.Contains(out, "dns-01 record:") || !strings.Contains(out, record) {
			t.Errorf("domains show %s: %d\n%s%s\nwant the record %s", name, code, out, errOut, record)
		}
		code, out, _ = runCLI(t, s.admin, "", "domains", "show", "--json", name)
		if code != exitOK || !strings.Contains(out, `"dns01_cname": "`+record+`"`) {
			t.Errorf("domains show --json %s:\n%s\nwant dns01_cname %s", name, out, record)
		}
	}
	code, out, errOut := runCLI(t, s.admin, "", "domains", "show", "plain.example")
	if code != exitOK || strings.Contains(out, "dns-01 record") {
		t.Errorf("domains show plain.example (http-01): %d\n%s%s\nwant no dns-01 record", code, out, errOut)
	}
	code, out, _ = runCLI(t, s.admin, "", "domains", "show", "--json", "plain.example")
	if code != exitOK || strings.Contains(out, "dns01_cname") {
		t.Errorf("domains show --json plain.example (http-01):\n%s\nwant no dns01_cname", out)
	}
}

// TestDNSZoneRecordShown: which names' records show the customer's
// CNAME into the zone, by the name's challenge and the default.
func TestDNSZoneRecordShown(t *testing.T) {
	z, err := dnszone.NewZone("acme.hoster.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc  string
		def   store.ChallengeType
		d     store.Domain
		shown bool
	}{
		{"default auto", store.ChallengeAuto, store.Domain{Name: "a.example"}, true},
		{"default http-01", store.ChallengeHTTP01, store.Domain{Name: "a.example"}, false},
		{"default http-01, the name asks dns-01", store.ChallengeHTTP01, store.Domain{Name: "a.example", Challenge: store.ChallengeDNS01}, true},
		{"default http-01, the name asks auto", store.ChallengeHTTP01, store.Domain{Name: "a.example", Challenge: store.ChallengeAuto}, true},
		{"default auto, the name asks http-01", store.ChallengeAuto, store.Domain{Name: "a.example", Challenge: store.ChallengeHTTP01}, false},
		{"default auto, the name asks tls-alpn-01", store.ChallengeAuto, store.Domain{Name: "a.example", Challenge: store.ChallengeTLSALPN01}, false},
		{"a wildcard asking http-01", store.ChallengeHTTP01, store.Domain{Name: "*.a.example", Challenge: store.ChallengeHTTP01}, true},
		{"a wildcard among the extra names", store.ChallengeHTTP01, store.Domain{Name: "a.example", ExtraNames: []string{"*.a.example"}}, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := defaultConfig()
			cfg.ACME.Challenge = string(tc.def)
			cfg.DNS01.Zone.Name = "acme.hoster.test"
			got := zoneRecordFunc(z, cfg.challengeChoice())(&tc.d)
			if want := z.Record(tc.d.Name); tc.shown && got != want || !tc.shown && got != "" {
				t.Errorf("record %q, want it shown: %v (%s)", got, tc.shown, want)
			}
		})
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
