package renewer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certserver/certserver/renewer/dnstest"
)

var (
	pfHere   = netip.MustParseAddr("192.0.2.1")
	pfHere6  = netip.MustParseAddr("2001:db8::1")
	pfOther  = netip.MustParseAddr("203.0.113.9")
	pfOther6 = netip.MustParseAddr("2001:db8::99")
)

const (
	pfAccount = "https://acme.test/acme/acct/1"
	pfLE      = "letsencrypt.org"
)

func issue(v string) dnstest.CAA     { return dnstest.CAA{Tag: "issue", Value: v} }
func issuewild(v string) dnstest.CAA { return dnstest.CAA{Tag: "issuewild", Value: v} }

func TestPreflight(t *testing.T) {
	tests := []struct {
		desc    string
		cfg     PreflightConfig
		setup   func(s *dnstest.Server)
		name    string
		ids     []string // default pfLE
		noCAA   bool     // pass no CA identities
		account string   // default pfAccount; "-" for unknown
		// wantErr is "" for no error, else a substring of the error.
		wantErr   string
		transient bool
		step      string
	}{
		{
			desc:  "no CAA anywhere",
			setup: func(s *dnstest.Server) { s.SetA("www.example.test", pfHere) },
			name:  "www.example.test",
		},
		{
			desc: "CAA at the name allows the CA, the parent's does not matter",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("www.example.test", issue(pfLE))
				s.SetCAA("example.test", issue("sectigo.com"))
			},
			name: "www.example.test",
		},
		{
			desc: "CAA at the parent forbids the CA",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("sectigo.com"))
			},
			name:    "www.example.test",
			wantErr: "pre-flight www.example.test: CAA at example.test allows only sectigo.com, not letsencrypt.org",
			step:    StepCAA,
		},
		{
			desc: "CAA at the top-level domain",
			setup: func(s *dnstest.Server) {
				s.SetA("www.shop.example.test", pfHere)
				s.SetCAA("test", issue("sectigo.com"), issue("digicert.com"))
			},
			name:    "www.shop.example.test",
			wantErr: "CAA at test allows only sectigo.com, digicert.com, not letsencrypt.org",
			step:    StepCAA,
		},
		{
			desc: "one of several issuers",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("sectigo.com"), issue(pfLE))
			},
			name: "www.example.test",
		},
		{
			desc: "any of our CA's identities",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("pebble.test"))
			},
			name: "www.example.test",
			ids:  []string{pfLE, "pebble.test"},
		},
		{
			desc: "issuer match ignores case and a final dot; tags ignore case",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", dnstest.CAA{Tag: "ISSUE", Value: "LetsEncrypt.ORG."})
			},
			name: "www.example.test",
		},
		{
			desc: "empty issuer forbids every CA",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue(";"))
			},
			name:    "www.example.test",
			wantErr: `CAA at example.test forbids issuance by any CA (issue ";")`,
			step:    StepCAA,
		},
		{
			desc: "empty issuer beside ours allows us",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue(";"), issue(pfLE))
			},
			name: "www.example.test",
		},
		{
			desc: "critical unknown tag forbids issuance",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue(pfLE), dnstest.CAA{Flag: 128, Tag: "tbs", Value: "unknown"})
			},
			name:    "www.example.test",
			wantErr: "CAA at example.test has the critical property tbs",
			step:    StepCAA,
		},
		{
			desc: "flag 1 is taken as critical, as Let's Encrypt does",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue(pfLE), dnstest.CAA{Flag: 1, Tag: "tbs", Value: "unknown"})
			},
			name:    "www.example.test",
			wantErr: "critical property tbs",
			step:    StepCAA,
		},
		{
			desc: "critical iodef is understood",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue(pfLE), dnstest.CAA{Flag: 128, Tag: "iodef", Value: "mailto:sec@example.test"})
			},
			name: "www.example.test",
		},
		{
			desc: "non-critical unknown tag is ignored",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue(pfLE), dnstest.CAA{Tag: "tbs", Value: "unknown"})
			},
			name: "www.example.test",
		},
		{
			desc: "a set without issue properties does not restrict, and stops the climb",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("www.example.test", dnstest.CAA{Tag: "iodef", Value: "mailto:sec@example.test"})
				s.SetCAA("example.test", issue("sectigo.com"))
			},
			name: "www.example.test",
		},
		{
			desc: "issuewild is ignored for a name that is not a wildcard",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issuewild("sectigo.com"))
			},
			name: "www.example.test",
		},
		{
			desc: "issue still decides for a name that is not a wildcard",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("sectigo.com"), issuewild(pfLE))
			},
			name:    "www.example.test",
			wantErr: "CAA at example.test allows only sectigo.com, not letsencrypt.org",
			step:    StepCAA,
		},
		{
			desc: "issuewild allows a wildcard that issue does not",
			setup: func(s *dnstest.Server) {
				s.SetCAA("example.test", issue("sectigo.com"), issuewild(pfLE))
			},
			name: "*.example.test",
		},
		{
			desc: "issuewild forbids a wildcard that issue allows",
			setup: func(s *dnstest.Server) {
				s.SetCAA("example.test", issue(pfLE), issuewild("sectigo.com"))
			},
			name:    "*.example.test",
			wantErr: "pre-flight *.example.test: CAA issuewild at example.test allows only sectigo.com, not letsencrypt.org",
			step:    StepCAA,
		},
		{
			desc: "without issuewild, issue decides for a wildcard",
			setup: func(s *dnstest.Server) {
				s.SetCAA("example.test", issue(pfLE))
			},
			name: "*.example.test",
		},
		{
			desc: "wildcard under a name that does not exist: NXDOMAIN, climb on",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("sectigo.com"))
			},
			name:    "*.nx.example.test",
			wantErr: "CAA at example.test allows only sectigo.com",
			step:    StepCAA,
		},
		{
			desc: "validationmethods without http-01",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("letsencrypt.org; validationmethods=dns-01,tls-alpn-01"))
			},
			name:    "www.example.test",
			wantErr: "CAA at example.test allows letsencrypt.org only with validation methods dns-01,tls-alpn-01, not http-01",
			step:    StepCAA,
		},
		{
			desc: "validationmethods with http-01",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("letsencrypt.org; validationmethods=dns-01,http-01"))
			},
			name: "www.example.test",
		},
		{
			desc: "validationmethods checked against the configured method",
			cfg:  PreflightConfig{Method: "tls-alpn-01"},
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("letsencrypt.org;validationmethods=http-01"))
			},
			name:    "www.example.test",
			wantErr: "not tls-alpn-01",
			step:    StepCAA,
		},
		{
			desc: "accounturi of another account",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("letsencrypt.org; accounturi=https://acme.test/acme/acct/2"))
			},
			name:    "www.example.test",
			wantErr: "CAA at example.test allows letsencrypt.org only for account https://acme.test/acme/acct/2, not this one (https://acme.test/acme/acct/1)",
			step:    StepCAA,
		},
		{
			desc: "accounturi of this account, with validationmethods and white space",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue(" letsencrypt.org ; accounturi = https://acme.test/acme/acct/1 ; validationmethods=http-01 ;"))
			},
			name: "www.example.test",
		},
		{
			desc: "accounturi when the account URL is not known yet",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("letsencrypt.org; accounturi=https://acme.test/acme/acct/1"))
			},
			name:      "www.example.test",
			account:   "-",
			wantErr:   "account's URL is not known yet",
			transient: true,
			step:      StepCAA,
		},
		{
			desc: "unknown parameters are ignored",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("letsencrypt.org; policy=ev"))
			},
			name: "www.example.test",
		},
		{
			desc: "a value that does not parse allows no CA",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("letsencrypt.org; garbage"))
			},
			name:    "www.example.test",
			wantErr: `CAA at example.test has the issue value "letsencrypt.org; garbage", which does not parse`,
			step:    StepCAA,
		},
		{
			desc: "CNAME at the name to a zone whose CAA allows us",
			setup: func(s *dnstest.Server) {
				s.SetCNAME("www.example.test", "edge.cdn.test")
				s.SetA("edge.cdn.test", pfHere)
				s.SetCAA("edge.cdn.test", issue(pfLE))
				s.SetCAA("example.test", issue("sectigo.com"))
			},
			name: "www.example.test",
		},
		{
			desc: "CNAME at the name to a zone whose CAA forbids us",
			setup: func(s *dnstest.Server) {
				s.SetCNAME("www.example.test", "edge.cdn.test")
				s.SetA("edge.cdn.test", pfHere)
				s.SetCAA("edge.cdn.test", issue("sectigo.com"))
				s.SetCAA("example.test", issue(pfLE))
			},
			name:    "www.example.test",
			wantErr: "CAA at www.example.test (via CNAME edge.cdn.test) allows only sectigo.com, not letsencrypt.org",
			step:    StepCAA,
		},
		{
			desc: "CNAME target without CAA: the climb goes on from the name's parent, not the target's",
			setup: func(s *dnstest.Server) {
				s.SetCNAME("www.example.test", "edge.cdn.test")
				s.SetA("edge.cdn.test", pfHere)
				s.SetCAA("cdn.test", issue("sectigo.com"))
				s.SetCAA("example.test", issue(pfLE))
			},
			name: "www.example.test",
		},
		{
			desc: "SERVFAIL on a CAA lookup is transient",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetRcode("example.test", dns.RcodeServerFailure)
			},
			name:      "www.example.test",
			wantErr:   "cannot read CAA at example.test",
			transient: true,
			step:      StepCAA,
		},
		{
			desc:  "no CA identities: CAA not checked",
			noCAA: true,
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", issue("sectigo.com"))
			},
			name: "www.example.test",
		},
		{
			desc:    "the name does not exist",
			setup:   func(s *dnstest.Server) { s.SetA("www.example.test", pfHere) },
			name:    "shop.example.test",
			wantErr: "pre-flight shop.example.test: name does not resolve: DNS says it does not exist (NXDOMAIN)",
			step:    StepResolve,
		},
		{
			desc:    "dangling CNAME",
			setup:   func(s *dnstest.Server) { s.SetCNAME("www.example.test", "gone.cdn.test") },
			name:    "www.example.test",
			wantErr: "does not resolve",
			step:    StepResolve,
		},
		{
			desc:    "the name has no addresses",
			setup:   func(s *dnstest.Server) { s.SetCAA("www.example.test", issue(pfLE)) },
			name:    "www.example.test",
			wantErr: "name has no A or AAAA records",
			step:    StepResolve,
		},
		{
			desc: "SERVFAIL on the address lookup is transient",
			setup: func(s *dnstest.Server) {
				s.SetRcode("www.example.test", dns.RcodeServerFailure)
			},
			name:      "www.example.test",
			wantErr:   "cannot look the name up",
			transient: true,
			step:      StepResolve,
		},
		{
			desc:  "points at a target address",
			cfg:   PreflightConfig{Targets: []string{pfHere.String(), pfHere6.String()}},
			setup: func(s *dnstest.Server) { s.SetAddrs("www.example.test", pfHere6) },
			name:  "www.example.test",
		},
		{
			desc:    "points elsewhere",
			cfg:     PreflightConfig{Targets: []string{pfHere.String(), "edge.cdn.test"}},
			setup:   func(s *dnstest.Server) { s.SetAddrs("www.example.test", pfOther, pfOther6) },
			name:    "www.example.test",
			wantErr: "pre-flight www.example.test: name points at 203.0.113.9, 2001:db8::99, not at the configured targets (192.0.2.1, edge.cdn.test)",
			step:    StepTargets,
		},
		{
			desc: "points elsewhere through a CNAME",
			cfg:  PreflightConfig{Targets: []string{pfHere.String()}},
			setup: func(s *dnstest.Server) {
				s.SetCNAME("www.example.test", "old.host.test")
				s.SetA("old.host.test", pfOther)
			},
			name:    "www.example.test",
			wantErr: "name points at 203.0.113.9 (via CNAME old.host.test), not at the configured targets (192.0.2.1)",
			step:    StepTargets,
		},
		{
			desc: "CNAME to a target host",
			cfg:  PreflightConfig{Targets: []string{"Edge.CDN.test"}},
			setup: func(s *dnstest.Server) {
				s.SetCNAME("www.example.test", "edge.cdn.test")
				s.SetA("edge.cdn.test", pfOther)
			},
			name: "www.example.test",
		},
		{
			desc:  "one address of several is enough by default",
			cfg:   PreflightConfig{Targets: []string{pfHere.String()}},
			setup: func(s *dnstest.Server) { s.SetAddrs("www.example.test", pfHere, pfOther6) },
			name:  "www.example.test",
		},
		{
			desc:    "AllAddresses: a stray AAAA refuses",
			cfg:     PreflightConfig{Targets: []string{pfHere.String()}, AllAddresses: true},
			setup:   func(s *dnstest.Server) { s.SetAddrs("www.example.test", pfHere, pfOther6) },
			name:    "www.example.test",
			wantErr: "name points at 192.0.2.1 here but also at 2001:db8::99, which is not a configured target",
			step:    StepTargets,
		},
		{
			// 60 records, about 2.5 KB: over UDP the answer is cut; the one
			// that allows the CA comes last and is only seen over TCP.
			desc: "a CAA set too long for UDP, the allowing record last",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", append(manyCAA(60), issue(pfLE))...)
			},
			name: "www.example.test",
		},
		{
			desc: "a CAA set too long for UDP, none for the CA",
			setup: func(s *dnstest.Server) {
				s.SetA("www.example.test", pfHere)
				s.SetCAA("example.test", manyCAA(60)...)
			},
			name:    "www.example.test",
			wantErr: "CAA at example.test allows only",
			step:    StepCAA,
		},
		{
			desc: "100 addresses, the target last",
			cfg:  PreflightConfig{Targets: []string{pfHere.String()}},
			setup: func(s *dnstest.Server) {
				addrs := make([]netip.Addr, 0, 101)
				for i := range 100 {
					addrs = append(addrs, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}))
				}
				s.SetA("www.example.test", append(addrs, pfHere)...)
			},
			name: "www.example.test",
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			s := dnstest.Start(t, dnstest.Options{})
			tc.setup(s)
			r, err := NewResolver([]string{s.Addr()}, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			p, err := NewPreflight(tc.cfg, r)
			if err != nil {
				t.Fatal(err)
			}
			ids := tc.ids
			if ids == nil && !tc.noCAA {
				ids = []string{pfLE}
			}
			account := pfAccount
			if tc.account == "-" {
				account = ""
			}
			err = p.Check(context.Background(), tc.name, ids, account)
			t.Logf("Check(%q) = %v", tc.name, err)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Check error = %v, want one containing %q", err, tc.wantErr)
			}
			var pe *PreflightError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *PreflightError", err)
			}
			if pe.Step != tc.step || pe.Permanent() == tc.transient || pe.Name != tc.name {
				t.Errorf("step %q, permanent %v, name %q; want %q, %v, %q", pe.Step, pe.Permanent(), pe.Name, tc.step, !tc.transient, tc.name)
			}
			var perm permanent
			if !errors.As(err, &perm) || perm.Permanent() != !tc.transient {
				t.Errorf("the renewer's permanent interface does not see Permanent() = %v", !tc.transient)
			}
		})
	}
}

// TestPreflightTimeout points the resolver at a socket that never answers.
func TestPreflightTimeout(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	r, err := NewResolver([]string{pc.LocalAddr().String()}, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPreflight(PreflightConfig{}, r)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc, name, step string
	}{
		{desc: "address lookup", name: "www.example.test", step: StepResolve},
		{desc: "CAA lookup of a wildcard", name: "*.example.test", step: StepCAA},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := p.Check(context.Background(), tc.name, []string{pfLE}, pfAccount)
			var pe *PreflightError
			if !errors.As(err, &pe) || pe.Permanent() || pe.Step != tc.step || pe.Err == nil {
				t.Fatalf("Check = %v, want a transient %s refusal wrapping the DNS error", err, tc.step)
			}
		})
	}
}

func TestNewPreflight(t *testing.T) {
	r, err := NewResolver([]string{"127.0.0.1:53"}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		desc    string
		cfg     PreflightConfig
		r       *Resolver
		wantErr bool
	}{
		{desc: "defaults", r: r},
		{desc: "targets", cfg: PreflightConfig{Targets: []string{"192.0.2.1", "::ffff:192.0.2.2", "edge.example.test"}}, r: r},
		{desc: "nil resolver", wantErr: true},
		{desc: "bad target", cfg: PreflightConfig{Targets: []string{"not a host"}}, r: r, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			p, err := NewPreflight(tc.cfg, tc.r)
			if (err != nil) != tc.wantErr {
				t.Fatalf("NewPreflight error = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && p.cfg.Method != "http-01" {
				t.Errorf("method %q, want http-01", p.cfg.Method)
			}
		})
	}
}

// manyCAA returns n issue records for CAs other than Let's Encrypt.
func manyCAA(n int) []dnstest.CAA {
	out := make([]dnstest.CAA, n)
	for i := range out {
		out[i] = issue(fmt.Sprintf("ca%02d.issuer-number-%02d.example", i, i))
	}
	return out
}

// TestResolverTruncated: an answer too large for UDP comes back
// truncated and is asked again over TCP; the reply is whole. A server
// that only truncates (no TCP) is an error, not a partial answer.
// preflightOn returns a pre-flight that asks dnsSrv, a DNS server of the
// test's own, with the given targets (none: any address will do).
func preflightOn(t *testing.T, dnsSrv *dnstest.Server, targets ...string) *Preflight {
	t.Helper()
	resolver, err := NewResolver([]string{dnsSrv.Addr()}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pf, err := NewPreflight(PreflightConfig{Targets: targets}, resolver)
	if err != nil {
		t.Fatal(err)
	}
	return pf
}
