package main

import (
	"bytes"
	"github.com/certserver/certserver/renewer"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		desc  string
		doc   string
		want  string // substring of the error; "" for none
		check func(t *testing.T, c config)
	}{
		{desc: "empty file gives the defaults", doc: "", check: func(t *testing.T, c config) {
			if c.Store.Path != "/var/lib/certserver" || c.Certs.Socket != "/run/certserver/certs.sock" || c.Certs.Listen != "" ||
				c.Certs.SocketMode != 0o660 || c.Certs.MaxAge.std() != 10*time.Minute || c.Certs.MinAge.std() != 10*time.Second ||
				!c.Admin.Enabled || c.Admin.Listen != "127.0.0.1:9400" || c.Admin.MaxBody != 1<<20 ||
				c.Log.Level != "info" || c.Log.Format != "text" {
				t.Errorf("defaults: %+v", c)
			}
			if c.Challenge.Listen != "127.0.0.1:9402" || c.Challenge.AllowNonLoopback || c.Admin.MaxDomainsBody != 64<<20 {
				t.Errorf("challenge and admin defaults: %+v %+v", c.Challenge, c.Admin)
			}
			if c.ACME.Directory != "" || c.ACME.Email != "" || c.ACME.AgreeTerms || c.ACME.CARoots != "" || c.ACME.KeyType != "ecdsa-p256" ||
				c.ACME.ReuseKey || c.ACME.Profile != "" || c.ACME.Timeout.std() != 3*time.Minute || c.ACME.EABKID != "" || c.ACME.EABHMACFile != "" {
				t.Errorf("acme defaults: %+v", c.ACME)
			}
			if c.Renewer.Workers != 4 || c.Renewer.IdleWait.std() != time.Minute {
				t.Errorf("renewer defaults: %+v", c.Renewer)
			}
			o := c.OnDemand
			if len(o.Allow) != 0 || len(o.Targets) != 0 || len(o.Resolvers) != 0 || o.AskURL != "" ||
				o.AllowTTL.std() != 10*time.Minute || o.DenyTTL.std() != time.Minute || o.enabled() {
				t.Errorf("on_demand defaults: %+v", o)
			}
		}},
		{desc: "every issuance key", doc: `
[challenge]
listen = "[::1]:8402"
allow_non_loopback = true
[admin]
max_domains_body = 2048
[acme]
directory = "https://acme-staging-v02.api.letsencrypt.org/directory"
email = "ops@example.com"
agree_terms = true
ca_roots = "/etc/certserver/roots.pem"
key_type = "rsa4096"
reuse_key = true
profile = "shortlived"
timeout = "90s"
eab_kid = "kid-1"
eab_hmac_file = "/etc/certserver/eab.key"
[renewer]
workers = 16
idle_wait = "30s"
[on_demand]
allow = ["*.shops.example.com", "example.org"]
targets = ["192.0.2.10", "2001:db8::10", "edge.example.net"]
resolvers = ["127.0.0.53:53", "[::1]:53"]
ask_url = "http://127.0.0.1:8080/allow"
allow_ttl = "1h"
deny_ttl = "5m"
`, check: func(t *testing.T, c config) {
			a := c.ACME
			if c.Challenge.Listen != "[::1]:8402" || !c.Challenge.AllowNonLoopback || c.Admin.MaxDomainsBody != 2048 {
				t.Errorf("challenge, admin: %+v %+v", c.Challenge, c.Admin)
			}
			if a.Directory != "https://acme-staging-v02.api.letsencrypt.org/directory" || a.Email != "ops@example.com" || !a.AgreeTerms ||
				a.CARoots != "/etc/certserver/roots.pem" || a.KeyType != "rsa4096" || !a.ReuseKey || a.Profile != "shortlived" ||
				a.Timeout.std() != 90*time.Second || a.EABKID != "kid-1" || a.EABHMACFile != "/etc/certserver/eab.key" {
				t.Errorf("acme: %+v", a)
			}
			if c.Renewer.Workers != 16 || c.Renewer.IdleWait.std() != 30*time.Second {
				t.Errorf("renewer: %+v", c.Renewer)
			}
			o := c.OnDemand
			if len(o.Allow) != 2 || len(o.Targets) != 3 || len(o.Resolvers) != 2 || o.AskURL != "http://127.0.0.1:8080/allow" ||
				o.AllowTTL.std() != time.Hour || o.DenyTTL.std() != 5*time.Minute || !o.enabled() {
				t.Errorf("on_demand: %+v", o)
			}
		}},
		{desc: "challenge listener disabled", doc: "[challenge]\nlisten = \"\"\n", check: func(t *testing.T, c config) {
			if c.Challenge.Listen != "" {
				t.Errorf("listen %q", c.Challenge.Listen)
			}
		}},
		{desc: "challenge on every interface", doc: "[challenge]\nlisten = \"0.0.0.0:80\"\n", want: "challenge.listen"},
		{desc: "challenge without a port", doc: "[challenge]\nlisten = \"127.0.0.1\"\n", want: "challenge.listen"},
		{desc: "unknown challenge key", doc: "[challenge]\nport = 9402\n", want: `unknown key "challenge.port" (keys of [challenge]: listen, allow_non_loopback)`},
		{desc: "tls-alpn-01 off by default", doc: "", check: func(t *testing.T, c config) {
			if c.TLSALPN.Listen != "" || len(c.challenges()) != 1 || c.challenges()[0] != renewer.ChallengeHTTP01 {
				t.Errorf("tls_alpn %+v, challenges %v; want off, http-01 alone", c.TLSALPN, c.challenges())
			}
		}},
		{desc: "tls-alpn-01 on", doc: "[tls_alpn]\nlisten = \"127.0.0.1:9403\"\n", check: func(t *testing.T, c config) {
			if got := c.challenges(); len(got) != 2 || got[1] != renewer.ChallengeTLSALPN01 {
				t.Errorf("challenges %v, want http-01 and tls-alpn-01", got)
			}
		}},
		{desc: "tls-alpn-01 on every interface", doc: "[tls_alpn]\nlisten = \"0.0.0.0:9403\"\n", want: "tls_alpn.listen"},
		{desc: "tls-alpn-01 on every interface, allowed", doc: "[tls_alpn]\nlisten = \"0.0.0.0:9403\"\nallow_non_loopback = true\n"},
		{desc: "tls-alpn-01 without a port", doc: "[tls_alpn]\nlisten = \"127.0.0.1\"\n", want: "tls_alpn.listen"},
		{desc: "dns01 zone off by default", doc: "", check: func(t *testing.T, c config) {
			if z := c.DNS01.Zone; z.enabled() || z.Listen != ":53" || z.TTL.std() != time.Second {
				t.Errorf("dns01.zone defaults: %+v", z)
			}
		}},
		{desc: "every dns01 zone key", doc: `
[dns01.zone]
name = "acme.hoster.example"
listen = "192.0.2.53:53"
nameservers = ["ns1.hoster.example", "ns2.hoster.example"]
nameserver_addresses = ["192.0.2.53", "2001:db8::53"]
contact = "hostmaster@hoster.example"
ttl = "5s"
`, check: func(t *testing.T, c config) {
			z := c.DNS01.Zone
			if !z.enabled() || z.Name != "acme.hoster.example" || z.Listen != "192.0.2.53:53" || len(z.Nameservers) != 2 ||
				len(z.NameserverAddresses) != 2 || z.Contact != "hostmaster@hoster.example" || z.TTL.std() != 5*time.Second {
				t.Errorf("dns01.zone: %+v", z)
			}
		}},
		{desc: "dns01 zone of one label", doc: "[dns01.zone]\nname = \"example\"\n", want: "dns01.zone.name"},
		{desc: "dns01 zone nameserver address", doc: "[dns01.zone]\nname = \"acme.hoster.example\"\nnameserver_addresses = [\"ns1\"]\n", want: `dns01.zone.nameserver_addresses: "ns1" is not an IP address`},
		{desc: "dns01 zone short ttl", doc: "[dns01.zone]\nname = \"acme.hoster.example\"\nttl = \"100ms\"\n", want: "dns01.zone: dns zone ttl 100ms"},
		{desc: "dns01 zone bad contact", doc: "[dns01.zone]\nname = \"acme.hoster.example\"\ncontact = \"nobody\"\n", want: "dns01.zone: dns zone contact"},
		{desc: "unknown dns01 zone key", doc: "[dns01.zone]\nport = 53\n", want: `unknown key "dns01.zone.port"`},
		{desc: "unknown dns01 key", doc: "[dns01]\nprovider = \"rfc2136\"\nnameserver = \"127.0.0.1:53\"\ntsig_secret = \"c2VjcmV0\"\n", want: `unknown key "dns01.tsig_secret"`},
		{desc: "dns01 provider not built in", doc: "[dns01]\nprovider = \"route53\"\n", want: `dns01.provider: "route53" is not a DNS provider certserver has built in (cloudflare, digitalocean, exec, gandiv5, hetzner, httpreq, pdns, rfc2136)`},
		{desc: "dns01 env key of another provider", doc: "[dns01]\nprovider = \"cloudflare\"\n[dns01.env]\nCLOUDFLARE_DNS_API_TOKEN_FILE = \"/etc/certserver/cf.token\"\nDO_AUTH_TOKEN = \"x\"\n", want: "dns01.env: DO_AUTH_TOKEN is not a setting of the cloudflare provider: its names start with CLOUDFLARE_ or CF_"},
		{desc: "dns01 env with rfc2136", doc: "[dns01]\nprovider = \"rfc2136\"\nnameserver = \"ns1.example:53\"\n[dns01.env]\nRFC2136_NAMESERVER = \"x\"\n", want: "dns01.env: is for the providers other than rfc2136"},
		{desc: "dns01 env without a provider", doc: "[dns01.env]\nHTTPREQ_ENDPOINT = \"http://127.0.0.1:1\"\n", want: "dns01.env: is given, and dns01.provider is empty"},
		{desc: "rfc2136 keys with another provider", doc: "[dns01]\nprovider = \"httpreq\"\nnameserver = \"ns1.example:53\"\n", want: "the httpreq provider takes its settings in [dns01.env]"},
		{desc: "httpreq configured", doc: "[acme]\nchallenge = \"dns-01\"\n[dns01]\nprovider = \"httpreq\"\n[dns01.env]\nHTTPREQ_ENDPOINT = \"http://127.0.0.1:1\"\nHTTPREQ_PASSWORD_FILE = \"/etc/certserver/httpreq.password\"\nLEGO_DISABLE_CNAME_SUPPORT = \"false\"\n", check: func(t *testing.T, c config) {
			if d := c.DNS01; d.Provider != "httpreq" || len(d.Env) != 3 || d.Env["HTTPREQ_ENDPOINT"] != "http://127.0.0.1:1" {
				t.Errorf("dns01 %+v", d)
			}
		}},
		{desc: "rfc2136 without a nameserver", doc: "[dns01]\nprovider = \"rfc2136\"\n", want: "dns01.nameserver"},
		{desc: "tsig key without its secret", doc: "[dns01]\nprovider = \"rfc2136\"\nnameserver = \"ns1.example:53\"\ntsig_key = \"k\"\n", want: "dns01.tsig_key and dns01.tsig_secret_file go together"},
		{desc: "rfc2136 settings without the provider", doc: "[dns01]\nnameserver = \"ns1.example:53\"\n", want: "dns01.provider"},
		{desc: "dns-01 by default without [dns01]", doc: "[acme]\nchallenge = \"dns-01\"\n", want: "acme.challenge: dns-01 is not available: no DNS provider or zone is configured"},
		{desc: "unknown challenge", doc: "[acme]\nchallenge = \"dns-02\"\n", want: `acme.challenge: "dns-02" is not one of`},
		{desc: "rfc2136 configured", doc: "[acme]\nchallenge = \"dns-01\"\n[dns01]\nprovider = \"rfc2136\"\nnameserver = \"ns1.example:53\"\ntsig_key = \"certserver\"\ntsig_secret_file = \"/etc/certserver/tsig\"\npropagation_timeout = \"2m\"\npolling_interval = \"5s\"\n", check: func(t *testing.T, c config) {
			d := c.DNS01
			if d.Provider != "rfc2136" || d.PropagationTimeout.std() != 2*time.Minute || d.PollingInterval.std() != 5*time.Second || !d.CheckAuthoritative || d.TSIGAlgorithm != "hmac-sha256" {
				t.Errorf("dns01 %+v", d)
			}
			if ch := c.challengeChoice(); ch.Default != "dns-01" || !ch.Provider {
				t.Errorf("challenges %+v, want dns-01 by default through the provider", ch)
			}
		}},
		{desc: "small domains body", doc: "[admin]\nmax_domains_body = 100\n", want: "admin.max_domains_body: 100 bytes is too small (at least 1024 bytes)"},
		{desc: "directory without agree_terms", doc: "[acme]\ndirectory = \"https://ca.example/dir\"\n", want: "acme.agree_terms: must be true when acme.directory is set"},
		{desc: "plain http directory", doc: "[acme]\ndirectory = \"http://ca.example/dir\"\nagree_terms = true\n", want: "acme.directory"},
		{desc: "bad e-mail", doc: "[acme]\nemail = \"ops at example.com\"\n", want: "acme.email"},
		{desc: "e-mail with a name", doc: "[acme]\nemail = \"Ops <ops@example.com>\"\n", want: "acme.email"},
		{desc: "bad key type", doc: "[acme]\nkey_type = \"ed25519\"\n", want: `acme.key_type: "ed25519" is not one of ecdsa-p256`},
		{desc: "bad profile", doc: "[acme]\nprofile = \"short lived\"\n", want: "acme.profile"},
		{desc: "bad timeout", doc: "[acme]\ntimeout = \"3 minutes\"\n", want: "acme.timeout"},
		{desc: "short timeout", doc: "[acme]\ntimeout = \"1s\"\n", want: "acme.timeout: 1s is shorter than 10s"},
		{desc: "eab key ID alone", doc: "[acme]\neab_kid = \"kid\"\n", want: "acme.eab_kid and acme.eab_hmac_file go together"},
		{desc: "unknown acme key", doc: "[acme]\nemail_address = \"x\"\n", want: `unknown key "acme.email_address" (keys of [acme]: directory, email,`},
		{desc: "no workers", doc: "[renewer]\nworkers = 0\n", want: "renewer.workers"},
		{desc: "bad selection", doc: "[acme]\nselection = \"random\"\n", want: `acme.selection: "random" is not one of failover, spread`},
		{desc: "bad limit", doc: "[acme.limits]\nnew_orders = \"300 per 3h\"\n", want: "acme.limits.new_orders"},
		{desc: "bad limit period", doc: "[acme.limits]\nnew_orders = \"300/3x\"\n", want: `acme.limits.new_orders: "300/3x": the period "3x"`},
		{desc: "unknown limit", doc: "[acme.limits]\nnew_order = \"300/3h\"\n", want: `unknown key "acme.limits.new_order"`},
		{desc: "bad domain override", doc: "[acme.limits]\nregistered_domain_overrides = { \"example.com\" = \"lots\" }\n", want: "acme.limits.registered_domain_overrides"},
		{desc: "fallback without a primary", doc: "[[acme.fallback]]\ndirectory = \"https://ca.example/dir\"\nagree_terms = true\n", want: "acme.fallback[0]: a fallback CA needs a primary one"},
		{desc: "fallback without terms", doc: "[acme]\ndirectory = \"https://a.example/dir\"\nagree_terms = true\n[[acme.fallback]]\ndirectory = \"https://b.example/dir\"\n", want: "acme.fallback[0].agree_terms"},
		{desc: "fallback on the primary's directory", doc: "[acme]\ndirectory = \"https://a.example/dir\"\nagree_terms = true\n[[acme.fallback]]\nname = \"second\"\ndirectory = \"https://a.example/dir\"\nagree_terms = true\n", want: `acme.fallback[0].directory: "https://a.example/dir" is also the directory of acme: one account per CA`},
		{desc: "fallback eab key ID alone", doc: "[acme]\ndirectory = \"https://a.example/dir\"\nagree_terms = true\n[[acme.fallback]]\ndirectory = \"https://b.example/dir\"\nagree_terms = true\neab_kid = \"kid\"\n", want: "acme.fallback[0].eab_kid and acme.fallback[0].eab_hmac_file go together: set both"},
		{desc: "fallback on plain http", doc: "[acme]\ndirectory = \"https://a.example/dir\"\nagree_terms = true\n[[acme.fallback]]\ndirectory = \"http://b.example/dir\"\nagree_terms = true\n", want: `acme.fallback[0].directory: "http://b.example/dir" is not an https URL (ACME directories are served over https)`},
		{desc: "fallback bad e-mail", doc: "[acme]\ndirectory = \"https://a.example/dir\"\nagree_terms = true\n[[acme.fallback]]\ndirectory = \"https://b.example/dir\"\nagree_terms = true\nemail = \"ops at example.com\"\n", want: `acme.fallback[0].email: "ops at example.com" is not an e-mail address`},
		{desc: "fallback named like the primary", doc: "[acme]\ndirectory = \"https://a.example/dir\"\nagree_terms = true\nname = \"ca\"\n[[acme.fallback]]\nname = \"ca\"\ndirectory = \"https://b.example/dir\"\nagree_terms = true\n", want: `acme.fallback[0].name: "ca" is also the name of acme`},
		{desc: "short give up", doc: "[renewer]\ngive_up_after = \"10m\"\n", want: "renewer.give_up_after"},
		{desc: "short ARI poll", doc: "[renewer]\nari_poll_interval = \"5s\"\n", want: "renewer.ari_poll_interval"},
		{desc: "bad preflight target", doc: "[preflight]\ntargets = [\"not a host\"]\n", want: "preflight.targets"},
		{desc: "preflight resolver without port", doc: "[preflight]\nresolvers = [\"127.0.0.53\"]\n", want: "preflight.resolvers"},
		{desc: "two CAs, limits and pre-flight", doc: `
[acme]
directory = "https://acme-v02.api.letsencrypt.org/directory"
agree_terms = true
selection = "spread"
[acme.limits]
new_orders = "3000/3h"
certificates_per_registered_domain = "unlimited"
registered_domain_overrides = { "example.com" = "500/7d" }
[[acme.fallback]]
name = "zerossl"
directory = "https://acme.zerossl.com/v2/DV90"
agree_terms = true
ari = false
[acme.fallback.limits]
new_orders = "unlimited"
[renewer]
give_up_after = "0s"
[preflight]
enabled = false
`, check: func(t *testing.T, c config) {
			l, err := limitsOf(c.ACME.Limits)
			if err != nil || l.NewOrders != (ratelimit.Limit{Burst: 3000, Per: 3 * time.Hour}) || !l.CertsPerRegisteredDomain.Unlimited() ||
				l.RegisteredDomainOverrides["example.com"] != (ratelimit.Limit{Burst: 500, Per: 7 * 24 * time.Hour}) || l.CertsPerExactSet != (ratelimit.Limit{}) {
				t.Errorf("limits %+v, %v", l, err)
			}
			if len(c.ACME.Fallback) != 1 || c.ACME.Fallback[0].Name != "zerossl" || c.ACME.Fallback[0].ARI == nil || *c.ACME.Fallback[0].ARI ||
				c.ACME.Fallback[0].Limits.NewOrders != "unlimited" || c.ACME.Selection != "spread" {
				t.Errorf("fallback %+v, selection %q", c.ACME.Fallback, c.ACME.Selection)
			}
			if c.Preflight.Enabled || giveUpAfter(c.Renewer) >= 0 {
				t.Errorf("preflight %+v, give up after %v", c.Preflight, c.Renewer.GiveUpAfter)
			}
			if got := defaultCAAIdentities(c.ACME.Directory); len(got) != 1 || got[0] != "letsencrypt.org" {
				t.Errorf("CAA identities of Let's Encrypt: %v", got)
			}
			if got := defaultCAAIdentities(c.ACME.Fallback[0].Directory); len(got) != 1 || got[0] != "sectigo.com" {
				t.Errorf("CAA identities of ZeroSSL: %v", got)
			}
			if got := defaultCAAIdentities("https://127.0.0.1:14000/dir"); got != nil {
				t.Errorf("CAA identities of an unknown CA: %v, want none", got)
			}
		}},
		{desc: "bad idle wait", doc: "[renewer]\nidle_wait = \"soon\"\n", want: "renewer.idle_wait"},
		{desc: "bad allow pattern", doc: "[on_demand]\nallow = [\"*.com\"]\n", want: "on_demand.allow"},
		{desc: "allow not a list", doc: "[on_demand]\nallow = \"*.example.com\"\n", want: "on_demand.allow"},
		{desc: "bad target", doc: "[on_demand]\ntargets = [\"not a host\"]\n", want: `on_demand.targets: "not a host"`},
		{desc: "resolver without a port", doc: "[on_demand]\nresolvers = [\"127.0.0.53\"]\n", want: "on_demand.resolvers"},
		{desc: "bad ask URL", doc: "[on_demand]\nask_url = \"ftp://x/allow\"\n", want: "on_demand.ask_url"},
		{desc: "bad allow ttl", doc: "[on_demand]\nallow_ttl = \"0s\"\n", want: "on_demand.allow_ttl"},
		{desc: "bad deny ttl", doc: "[on_demand]\ndeny_ttl = \"1y\"\n", want: "on_demand.deny_ttl"},
		{desc: "every key", doc: `
[store]
path = "/srv/certs"
record_cache = "64MiB"
[certs]
socket = ""
socket_mode = "0640"
socket_group = "www-data"
listen = "127.0.0.1:9401"
allow_non_loopback = false
max_age = "5m"
min_age = "5s"
not_found_max_age = "3s"
[admin]
enabled = true
listen = "[::1]:9400"
allow_non_loopback = false
token_file = "/etc/certserver/admin.token"
max_body = 2048
[log]
level = "debug"
format = "json"
`, check: func(t *testing.T, c config) {
			if c.Store.Path != "/srv/certs" || c.Store.RecordCache != 64<<20 || c.Certs.Socket != "" || c.Certs.SocketMode != 0o640 || c.Certs.SocketGroup != "www-data" ||
				c.Certs.Listen != "127.0.0.1:9401" || c.Certs.MaxAge.std() != 5*time.Minute || c.Certs.MinAge.std() != 5*time.Second ||
				c.Certs.NotFoundMaxAge.std() != 3*time.Second || c.Admin.Listen != "[::1]:9400" ||
				c.Admin.TokenFile != "/etc/certserver/admin.token" || c.Admin.MaxBody != 2048 || c.Log.Level != "debug" || c.Log.Format != "json" {
				t.Errorf("parsed: %+v", c)
			}
		}},
		{desc: "octal integer mode", doc: "[certs]\nsocket_mode = 0o600\n", check: func(t *testing.T, c config) {
			if c.Certs.SocketMode != 0o600 {
				t.Errorf("mode %v", c.Certs.SocketMode)
			}
		}},
		{desc: "unknown key", doc: "[certs]\nsockt = \"/x\"\n", want: `unknown key "certs.sockt" (keys of [certs]: socket,`},
		{desc: "unknown top-level key", doc: "verbose = true\n", want: `unknown key "verbose" (sections: store, certs, challenge, tls_alpn, admin, acme, keys, renewer, preflight, dns01, on_demand, log, fleet)`},
		{desc: "unknown section", doc: "[dns]\nresolver = \"x\"\n", want: `unknown key "dns"`},
		{desc: "bad duration", doc: "[certs]\nmax_age = \"10 minutes\"\n", want: `"certs.max_age"`},
		{desc: "duration as a number", doc: "[certs]\nmin_age = 10\n", want: "certs.min_age"},
		{desc: "negative duration", doc: "[certs]\nmin_age = \"-1s\"\n", want: "certs.min_age"},
		{desc: "tiny duration", doc: "[certs]\nnot_found_max_age = \"1ms\"\n", want: "certs.not_found_max_age: 1ms is shorter than 1s"},
		{desc: "min above max", doc: "[certs]\nmin_age = \"1h\"\n", want: "certs.min_age: 1h0m0s is longer than certs.max_age"},
		{desc: "record cache by default", doc: "", check: func(t *testing.T, c config) {
			if o := c.Store.badgerOptions(nil); c.Store.RecordCache != 192<<20 || o.RecordCacheSize != 192<<20 {
				t.Errorf("record_cache %v, RecordCacheSize %d; want 192MiB", c.Store.RecordCache, o.RecordCacheSize)
			}
		}},
		{desc: "record cache sizes", doc: "", check: func(t *testing.T, _ config) {
			for _, tt := range []struct {
				desc, value string
				want        int64 // BadgerOptions.RecordCacheSize
			}{
				{"binary unit", `"512MiB"`, 512 << 20},
				{"decimal unit, spaced", `"300 MB"`, 300e6},
				{"GiB", `"1GiB"`, 1 << 30},
				{"KiB", `"2048KiB"`, 2 << 20},
				{"bytes", `"2000000"`, 2e6},
				{"integer of bytes", `16777216`, 16 << 20},
				{"zero turns it off", `"0"`, -1},
				{"zero with a unit", `"0MiB"`, -1},
			} {
				c := defaultConfig()
				if err := parseConfig("[store]\nrecord_cache = "+tt.value+"\n", &c); err != nil {
					t.Errorf("%s: %s: %v", tt.desc, tt.value, err)
				} else if got := c.Store.badgerOptions(nil).RecordCacheSize; got != tt.want {
					t.Errorf("%s: %s: RecordCacheSize %d, want %d", tt.desc, tt.value, got, tt.want)
				}
			}
		}},
		{desc: "record cache without a number", doc: "[store]\nrecord_cache = \"lots\"\n", want: `"store.record_cache"): invalid size "lots": write it like "192MiB"`},
		{desc: "record cache in an unknown unit", doc: "[store]\nrecord_cache = \"192MB/s\"\n", want: `"store.record_cache"`},
		{desc: "record cache negative", doc: "[store]\nrecord_cache = -5\n", want: `"store.record_cache"`},
		{desc: "record cache fractional", doc: "[store]\nrecord_cache = \"1.5GiB\"\n", want: `"store.record_cache"`},
		{desc: "record cache too small", doc: "[store]\nrecord_cache = \"64KiB\"\n", want: "store.record_cache: 65536 bytes is not 0 (off) nor from 1MiB to 64GiB"},
		{desc: "record cache too large", doc: "[store]\nrecord_cache = \"1000GB\"\n", want: "store.record_cache: 1000000000000 bytes is not 0 (off) nor from 1MiB to 64GiB"},
		{desc: "record cache overflowing", doc: "[store]\nrecord_cache = \"99999999999GiB\"\n", want: `"store.record_cache"): invalid size "99999999999GiB"`},
		{desc: "decimal mode", doc: "[certs]\nsocket_mode = 660\n", want: "certs.socket_mode"},
		{desc: "mode not octal", doc: "[certs]\nsocket_mode = \"rw-rw----\"\n", want: "certs.socket_mode"},
		{desc: "wrong type", doc: "[admin]\nmax_body = true\n", want: `"admin.max_body"): invalid size true`},
		{desc: "nowhere to listen", doc: "[certs]\nsocket = \"\"\n", want: "certs.socket"},
		{desc: "certs on every interface", doc: "[certs]\nlisten = \"0.0.0.0:9401\"\n", want: "certs.listen"},
		{desc: "certs on a bare port", doc: "[certs]\nlisten = \":9401\"\n", want: "private keys travel over this endpoint"},
		{desc: "certs non-loopback allowed", doc: "[certs]\nlisten = \"10.0.0.1:9401\"\nallow_non_loopback = true\n"},
		{desc: "admin on a public address", doc: "[admin]\nlisten = \"192.0.2.1:9400\"\n", want: "admin.listen"},
		{desc: "admin disabled skips its checks", doc: "[admin]\nenabled = false\nlisten = \"192.0.2.1:9400\"\n"},
		{desc: "small max body", doc: "[admin]\nmax_body = 10\n", want: "admin.max_body: 10 bytes is too small (at least 1024 bytes)"},
		{desc: "admin body sizes", doc: "", check: func(t *testing.T, _ config) {
			for _, tt := range []struct {
				desc, key, value string
				want             int // certserver.AdminConfig's field
			}{
				{"integer of bytes, as before units", "max_body", `2097152`, 2 << 20},
				{"the least", "max_body", `1024`, 1024},
				{"binary unit", "max_body", `"4MiB"`, 4 << 20},
				{"decimal unit, spaced", "max_body", `"500 kB"`, 500e3},
				{"bytes in a string", "max_body", `"2048"`, 2048},
				{"the most", "max_body", `"1GiB"`, 1 << 30},
				{"domains body, binary unit", "max_domains_body", `"128MiB"`, 128 << 20},
				{"domains body, integer of bytes", "max_domains_body", `134217728`, 128 << 20},
			} {
				c := defaultConfig()
				if err := parseConfig("[admin]\n"+tt.key+" = "+tt.value+"\n", &c); err != nil {
					t.Errorf("%s: %s = %s: %v", tt.desc, tt.key, tt.value, err)
					continue
				}
				got := map[string]int{"max_body": int(c.Admin.MaxBody), "max_domains_body": int(c.Admin.MaxDomainsBody)}[tt.key]
				if got != tt.want {
					t.Errorf("%s: %s = %s: %d bytes, want %d", tt.desc, tt.key, tt.value, got, tt.want)
				}
			}
		}},
		{desc: "max body negative", doc: "[admin]\nmax_body = -1\n", want: `"admin.max_body"): invalid size -1: negative`},
		{desc: "max body in an unknown unit", doc: "[admin]\nmax_body = \"1MB/s\"\n", want: `"admin.max_body"): invalid size "1MB/s": write it like "192MiB"`},
		{desc: "max body in bits", doc: "[admin]\nmax_body = \"8Mib\"\n", want: `"admin.max_body"): invalid size "8Mib"`},
		{desc: "max body fractional", doc: "[admin]\nmax_body = \"1.5MiB\"\n", want: `"admin.max_body"): invalid size "1.5MiB"`},
		{desc: "max body too small in a unit", doc: "[admin]\nmax_body = \"1kB\"\n", want: "admin.max_body: 1000 bytes is too small (at least 1024 bytes)"},
		{desc: "max body too large", doc: "[admin]\nmax_body = \"2GiB\"\n", want: "admin.max_body: 2GiB is too large (at most 1GiB: the admin API holds a request's body in memory)"},
		{desc: "max body overflowing", doc: "[admin]\nmax_body = \"99999999999GiB\"\n", want: `"admin.max_body"): invalid size "99999999999GiB"`},
		{desc: "domains body too large", doc: "[admin]\nmax_domains_body = 1099511627776\n", want: "admin.max_domains_body: 1024GiB is too large (at most 1GiB"},
		{desc: "bad log level", doc: "[log]\nlevel = \"verbose\"\n", want: `log.level: "verbose"`},
		{desc: "bad log format", doc: "[log]\nformat = \"xml\"\n", want: `log.format: "xml"`},
		{desc: "several problems at once", doc: "[log]\nformat = \"xml\"\nlevel = \"loud\"\n", want: "log.level"},
		{desc: "TOML syntax", doc: "[certs\n", want: "toml: line 2"},
		{desc: "keys: a key per certificate by default", doc: "", check: func(t *testing.T, c config) {
			if k := c.Keys; k.Reuse != "none" || k.PoolSize != 16 || k.Rotation.std() != 30*24*time.Hour || k.keyPool() != nil {
				t.Errorf("keys defaults: %+v, pool %+v", k, k.keyPool())
			}
		}},
		{desc: "keys: a pool", doc: "[keys]\nreuse = \"pool\"\npool_size = 4\nrotation = \"168h\"\n", check: func(t *testing.T, c config) {
			if p := c.Keys.keyPool(); p == nil || p.Size != 4 || p.Rotation != 7*24*time.Hour {
				t.Errorf("keys %+v: pool %+v, want 4 keys rotated every 168h", c.Keys, p)
			}
		}},
		{desc: "keys: pool with the defaults", doc: "[keys]\nreuse = \"pool\"\n", check: func(t *testing.T, c config) {
			if p := c.Keys.keyPool(); p == nil || p.Size != renewer.DefaultPoolSize || p.Rotation != renewer.DefaultPoolRotation {
				t.Errorf("pool %+v, want the defaults", p)
			}
		}},
		{desc: "keys: unknown reuse", doc: "[keys]\nreuse = \"shared\"\n", want: `keys.reuse: "shared" is not one of none, pool`},
		{desc: "keys: pool size 0", doc: "[keys]\nreuse = \"pool\"\npool_size = 0\n", want: "keys.pool_size: 0 is not from 1 to 100000"},
		{desc: "keys: pool size too large", doc: "[keys]\npool_size = 100001\n", want: "keys.pool_size: 100001 is not from 1 to 100000"},
		{desc: "keys: pool size as a string", doc: "[keys]\npool_size = \"16\"\n", want: "keys.pool_size"},
		{desc: "keys: rotation too short", doc: "[keys]\nreuse = \"pool\"\nrotation = \"10m\"\n", want: "keys.rotation: 10m0s is shorter than 1h"},
		{desc: "keys: rotation not a duration", doc: "[keys]\nrotation = \"30 days\"\n", want: "keys.rotation"},
		{desc: "keys: pool with reuse_key", doc: "[acme]\nreuse_key = true\n[keys]\nreuse = \"pool\"\n", want: "keys.reuse: \"pool\" and acme.reuse_key = true exclude each other"},
		{desc: "keys: unknown key", doc: "[keys]\nsize = 4\n", want: `unknown key "keys.size" (keys of [keys]: reuse, pool_size, rotation)`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c := defaultConfig()
			err := parseConfig(tc.doc, &c)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("error: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte("[log]\nlevel = \"x\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "log.level") {
		t.Fatalf("error %v, want it to name the file and the key", err)
	}
}

// The sample configuration shipped in deploy/ must parse and hold every key.
func TestSampleConfig(t *testing.T) {
	b, err := os.ReadFile("../../deploy/certserver.toml")
	if err != nil {
		t.Fatal(err)
	}
	c := defaultConfig()
	if err := parseConfig(string(b), &c); err != nil {
		t.Fatalf("deploy/certserver.toml: %v", err)
	}
	for section, keys := range knownKeys() {
		if section == "" {
			continue
		}
		for _, k := range keys {
			table := "[" + section + "." + k + "]" // [acme.limits], [[acme.fallback]]
			if !strings.Contains(string(b), "\n"+k+" =") && !strings.Contains(string(b), "\n# "+k+" =") && !strings.Contains(string(b), table) {
				t.Errorf("deploy/certserver.toml does not document %s.%s", section, k)
			}
		}
	}
}

// TestTargetsAlias: on_demand.targets is a deprecated alias of
// preflight.targets: its list becomes preflight.targets (which the
// on-demand check and the pre-flight both read), it still turns on-demand
// issuance on, serve warns naming both keys, and a file that sets the two
// to different lists is refused.
func TestTargetsAlias(t *testing.T) {
	c := defaultConfig()
	if err := parseConfig("[on_demand]\ntargets = [\"192.0.2.10\", \"edge.example.net\"]\n", &c); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Preflight.Targets, []string{"192.0.2.10", "edge.example.net"}) || !c.OnDemand.enabled() {
		t.Fatalf("preflight.targets %v, on-demand enabled %v; want the alias's list, and on", c.Preflight.Targets, c.OnDemand.enabled())
	}
	var buf bytes.Buffer
	c.warnDeprecated(slog.New(slog.NewTextHandler(&buf, nil)))
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "on_demand.targets is deprecated") ||
		!strings.Contains(out, "use preflight.targets") || strings.Count(out, "\n") != 1 {
		t.Errorf("warning %q; want one WARN line naming on_demand.targets and preflight.targets", out)
	}

	c = defaultConfig()
	if err := parseConfig("[preflight]\ntargets = [\"192.0.2.10\"]\n", &c); err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	c.warnDeprecated(slog.New(slog.NewTextHandler(&buf, nil)))
	if buf.Len() != 0 || c.OnDemand.enabled() {
		t.Errorf("preflight.targets alone: warning %q, on-demand enabled %v; want neither", buf.String(), c.OnDemand.enabled())
	}

	c = defaultConfig()
	if err := parseConfig("[preflight]\ntargets = [\"192.0.2.10\"]\n[on_demand]\ntargets = [\"192.0.2.10\"]\n", &c); err != nil {
		t.Errorf("the same list under both keys: %v", err)
	}
	c = defaultConfig()
	err := parseConfig("[preflight]\ntargets = [\"192.0.2.10\"]\n[on_demand]\ntargets = [\"192.0.2.99\"]\n", &c)
	if err == nil || !strings.Contains(err.Error(), "on_demand.targets: is a deprecated alias of preflight.targets") {
		t.Errorf("two different lists: %v; want an error naming both keys", err)
	}
}

// TestOnDemandEnabled: what the alias did for a policy of targets alone,
// on_demand.enabled does without a deprecated key; enabled with no check
// at all (every name a client sends would be ordered) is refused.
func TestOnDemandEnabled(t *testing.T) {
	c := defaultConfig()
	if err := parseConfig("[preflight]\ntargets = [\"192.0.2.10\"]\n[on_demand]\nenabled = true\n", &c); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c.warnDeprecated(slog.New(slog.NewTextHandler(&buf, nil)))
	if !c.OnDemand.enabled() || buf.Len() != 0 {
		t.Errorf("enabled with preflight.targets: on %v, warning %q; want on, no warning", c.OnDemand.enabled(), buf.String())
	}
	c = defaultConfig()
	err := parseConfig("[on_demand]\nenabled = true\n", &c)
	if err == nil || !strings.Contains(err.Error(), "on_demand.enabled") || !strings.Contains(err.Error(), "preflight.targets") {
		t.Errorf("enabled with no check: %v; want an error naming on_demand.enabled and the checks to set", err)
	}
}
