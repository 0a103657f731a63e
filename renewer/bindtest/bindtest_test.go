package bindtest

import (
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestUpdateAndQuery: named serves the zone given, takes an update signed
// with the test's TSIG key, refuses an unsigned one, and answers what was
// added.
func TestUpdateAndQuery(t *testing.T) {
	s := Start(t, Zone{Name: "shop.example", Records: []string{"@ A 127.0.0.1"}})
	update := func(signed bool) int {
		m := new(dns.Msg)
		m.SetUpdate("shop.example.")
		rr, err := dns.NewRR(`_acme-challenge.shop.example. 60 IN TXT "v1"`)
		if err != nil {
			t.Fatal(err)
		}
		m.Insert([]dns.RR{rr})
		c := &dns.Client{Timeout: 5 * time.Second}
		if signed {
			m.SetTsig(KeyName, dns.HmacSHA256, 300, time.Now().Unix())
			c.TsigSecret = map[string]string{KeyName: s.Secret()}
		}
		r, _, err := c.Exchange(m, s.Addr())
		if err != nil {
			t.Fatalf("update: %v", err)
		}
		return r.Rcode
	}
	if rc := update(false); rc != dns.RcodeRefused {
		t.Errorf("unsigned update: %s, want REFUSED", dns.RcodeToString[rc])
	}
	if rc := update(true); rc != dns.RcodeSuccess {
		t.Fatalf("signed update: %s", dns.RcodeToString[rc])
	}
	m := new(dns.Msg)
	m.SetQuestion("_acme-challenge.shop.example.", dns.TypeTXT)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, s.Addr())
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("TXT query: %v %v", r, err)
	}
	if txt := r.Answer[0].(*dns.TXT).Txt; len(txt) != 1 || txt[0] != "v1" {
		t.Errorf("TXT %q, want v1", txt)
	}
}
