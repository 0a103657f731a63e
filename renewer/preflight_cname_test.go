package renewer

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certserver/certserver/renewer/dnstest"
	"github.com/certserver/certserver/renewer/dnszone"
)

func TestCheckZoneCNAME(t *testing.T) {
	z, err := dnszone.NewZone("acme.hoster.test")
	if err != nil {
		t.Fatal(err)
	}
	target := z.Target("shop.example.test")
	record := "_acme-challenge.shop.example.test. CNAME " + target + "."
	tests := []struct {
		desc  string
		setup func(s *dnstest.Server)
		name  string
		// wantErr is "" for no error, else substrings of the error.
		wantErr   []string
		transient bool
	}{
		{
			desc:  "the CNAME is in place",
			setup: func(s *dnstest.Server) { s.SetCNAME("_acme-challenge.shop.example.test", target) },
			name:  "shop.example.test",
		},
		{
			desc:  "the wildcard uses the same record",
			setup: func(s *dnstest.Server) { s.SetCNAME("_acme-challenge.shop.example.test", target) },
			name:  "*.shop.example.test",
		},
		{
			desc: "through a chain of the customer's CNAMEs",
			setup: func(s *dnstest.Server) {
				s.SetCNAME("_acme-challenge.shop.example.test", "acme.customer.test")
				s.SetCNAME("acme.customer.test", target)
			},
			name: "shop.example.test",
		},
		{
			desc:    "missing: the error names the record to create",
			setup:   func(s *dnstest.Server) { s.SetA("shop.example.test", pfHere) },
			name:    "shop.example.test",
			wantErr: []string{"_acme-challenge.shop.example.test does not exist (NXDOMAIN)", "create the record " + record},
		},
		{
			desc:    "missing for a wildcard: the same record",
			name:    "*.shop.example.test",
			wantErr: []string{"create the record " + record},
		},
		{
			desc: "a TXT record instead of the CNAME",
			setup: func(s *dnstest.Server) {
				s.SetA("_acme-challenge.shop.example.test", pfHere) // the name exists, without a CNAME
			},
			name:    "shop.example.test",
			wantErr: []string{"_acme-challenge.shop.example.test has no CNAME record", record},
		},
		{
			desc: "another name's label",
			setup: func(s *dnstest.Server) {
				s.SetCNAME("_acme-challenge.shop.example.test", z.Target("other.example.test"))
			},
			name:    "shop.example.test",
			wantErr: []string{"is a CNAME to " + z.Target("other.example.test") + ", not to " + target, record},
		},
		{
			desc:    "pointing at another provider",
			setup:   func(s *dnstest.Server) { s.SetCNAME("_acme-challenge.shop.example.test", "x.acme-dns.test") },
			name:    "shop.example.test",
			wantErr: []string{"is a CNAME to x.acme-dns.test, which does not exist", record},
		},
		{
			desc:      "DNS fails: transient, and still names the record",
			setup:     func(s *dnstest.Server) { s.SetRcode("_acme-challenge.shop.example.test", dns.RcodeServerFailure) },
			name:      "shop.example.test",
			wantErr:   []string{"cannot read the CNAME", record},
			transient: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s := dnstest.Start(t, dnstest.Options{})
			if tc.setup != nil {
				tc.setup(s)
			}
			r, err := NewResolver([]string{s.Addr()}, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewPreflight(PreflightConfig{Method: "dns-01"}, r)
			if err != nil {
				t.Fatal(err)
			}
			err = p.CheckZoneCNAME(t.Context(), z, tc.name)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("CheckZoneCNAME: %v", err)
				}
				return
			}
			var pe *PreflightError
			if !errors.As(err, &pe) {
				t.Fatalf("CheckZoneCNAME = %v, want a *PreflightError", err)
			}
			if pe.Step != StepCNAME || pe.Kind == KindTransient != tc.transient {
				t.Errorf("step %q, kind %v; want %q, transient %v", pe.Step, pe.Kind, StepCNAME, tc.transient)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}
