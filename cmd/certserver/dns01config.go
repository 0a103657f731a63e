package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/certserver/certserver/store"
	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/providers/dns/cloudflare"
	"github.com/go-acme/lego/v4/providers/dns/digitalocean"
	"github.com/go-acme/lego/v4/providers/dns/exec"
	"github.com/go-acme/lego/v4/providers/dns/gandiv5"
	"github.com/go-acme/lego/v4/providers/dns/hetzner"
	"github.com/go-acme/lego/v4/providers/dns/httpreq"
	"github.com/go-acme/lego/v4/providers/dns/pdns"
	"github.com/go-acme/lego/v4/providers/dns/rfc2136"
	"github.com/miekg/dns"
)

// dns01Config is the [dns01] section: how certserver sets the TXT records
// of dns-01 challenges (RFC 8555 section 8.4) through one of lego's DNS
// providers or its own delegated zone ([dns01.zone], renewer/dnszone),
// and how it waits for DNS to serve them. Every key is documented in
// deploy/certserver.toml.
type dns01Config struct {
	// Zone is certserver's own zone, which names delegate their
	// _acme-challenge to with a CNAME.
	Zone dns01ZoneConfig `toml:"zone"`

	// Provider names the lego DNS provider, one of dnsProviders: "rfc2136"
	// (dynamic updates, RFC 2136, signed with TSIG) takes the TOML keys
	// below; the others take Env. "" turns the provider off.
	Provider string `toml:"provider"`

	// Env is [dns01.env]: the settings of a provider other than rfc2136,
	// by lego's own variable names (CLOUDFLARE_DNS_API_TOKEN_FILE, ...).
	// Its values are credentials: never logged.
	Env map[string]string `toml:"env"`

	// The rfc2136 provider's settings (lego's rfc2136.Config).
	Nameserver     string   `toml:"nameserver"`
	TSIGKey        string   `toml:"tsig_key"`
	TSIGAlgorithm  string   `toml:"tsig_algorithm"`
	TSIGSecretFile string   `toml:"tsig_secret_file"`
	Zones          []string `toml:"zones"`
	TTL            int      `toml:"ttl"`
	DNSTimeout     duration `toml:"dns_timeout"`
	// SequenceInterval is the wait between the names of one order
	// (renewer.DNS01.SequenceInterval).
	SequenceInterval duration `toml:"sequence_interval"`

	// How lego waits for DNS to serve a record, for every provider.
	PropagationTimeout duration `toml:"propagation_timeout"`
	PollingInterval    duration `toml:"polling_interval"`
	Resolvers          []string `toml:"resolvers"`
	CheckAuthoritative bool     `toml:"check_authoritative"`
}

// defaultDNS01Config returns [dns01] as an empty file gives it.
func defaultDNS01Config() dns01Config {
	return dns01Config{
		Zone:               defaultDNS01ZoneConfig(),
		TSIGAlgorithm:      "hmac-sha256",
		TTL:                120,
		DNSTimeout:         duration(10 * time.Second),
		SequenceInterval:   duration(time.Minute),
		PropagationTimeout: duration(time.Minute),
		PollingInterval:    duration(2 * time.Second),
		CheckAuthoritative: true,
	}
}

// dnsProvider is one lego DNS provider built in.
type dnsProvider struct {
	// prefixes are those of lego's variable names for the provider's
	// settings, which [dns01.env] may hold; none for rfc2136, which
	// takes [dns01]'s own keys.
	prefixes []string
	// make builds the provider from lego's variables (its
	// NewDNSProvider); nil for rfc2136.
	make func() (challenge.Provider, error)
}

// dnsProviders are the lego DNS providers built in, by the name [dns01]
// provider takes. The one place that lists them: the README and
// deploy/certserver.toml name the same.
var dnsProviders = map[string]dnsProvider{
	"rfc2136":      {},
	"cloudflare":   {[]string{"CLOUDFLARE_", "CF_"}, legoProvider(cloudflare.NewDNSProvider)},
	"digitalocean": {[]string{"DO_"}, legoProvider(digitalocean.NewDNSProvider)},
	"exec":         {[]string{"EXEC_"}, legoProvider(exec.NewDNSProvider)},
	"gandiv5":      {[]string{"GANDIV5_"}, legoProvider(gandiv5.NewDNSProvider)},
	"hetzner":      {[]string{"HETZNER_"}, legoProvider(hetzner.NewDNSProvider)},
	"httpreq":      {[]string{"HTTPREQ_"}, legoProvider(httpreq.NewDNSProvider)},
	"pdns":         {[]string{"PDNS_"}, legoProvider(pdns.NewDNSProvider)},
}

// legoWidePrefix starts the names of lego's settings that hold for every
// provider (LEGO_DISABLE_CNAME_SUPPORT, ...), which [dns01.env] may set too.
const legoWidePrefix = "LEGO_"

// legoProvider turns a lego provider's NewDNSProvider into a dnsProvider's
// make.
func legoProvider[P challenge.Provider](f func() (P, error)) func() (challenge.Provider, error) {
	return func() (challenge.Provider, error) {
		p, err := f()
		if err != nil {
			return nil, err
		}
		return p, nil
	}
}

// dnsProviderNames returns the names of dnsProviders, sorted.
func dnsProviderNames() string {
	return strings.Join(slices.Sorted(maps.Keys(dnsProviders)), ", ")
}

// tsigAlgorithms are the TSIG algorithms (RFC 8945 section 6) lego's
// rfc2136 provider signs with, by the name [dns01] tsig_algorithm takes.
var tsigAlgorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// validateDNS01 checks the [dns01] section, naming the key.
func (c *config) validateDNS01(bad func(key, format string, args ...any)) {
	c.validateDNS01Zone(bad)
	d := c.DNS01
	rfc2136Keys := d.Nameserver != "" || d.TSIGKey != "" || d.TSIGSecretFile != "" || len(d.Zones) > 0
	prov, known := dnsProviders[d.Provider]
	switch {
	case d.Provider == "":
		if rfc2136Keys {
			bad("dns01.provider", "is empty, and rfc2136 settings are given: set provider = \"rfc2136\"")
		}
		if len(d.Env) > 0 {
			bad("dns01.env", "is given, and dns01.provider is empty: set provider to one of %s", dnsProviderNames())
		}
		return
	case !known:
		bad("dns01.provider", "%q is not a DNS provider certserver has built in (%s); another DNS service can delegate _acme-challenge to a name server that takes RFC 2136 updates, or to certserver's own zone", d.Provider, dnsProviderNames())
	case prov.make != nil:
		if rfc2136Keys {
			bad("dns01.provider", "is %q, and rfc2136 settings (nameserver, tsig_key, tsig_secret_file, zones) are given: the %s provider takes its settings in [dns01.env]", d.Provider, d.Provider)
		}
		for _, k := range slices.Sorted(maps.Keys(d.Env)) {
			if !strings.HasPrefix(k, legoWidePrefix) && !slices.ContainsFunc(prov.prefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
				bad("dns01.env", "%s is not a setting of the %s provider: its names start with %s (lego's names for it, as in lego's documentation), or %s for lego-wide ones", k, d.Provider, strings.Join(prov.prefixes, " or "), legoWidePrefix)
			}
		}
	default: // rfc2136
		if len(d.Env) > 0 {
			bad("dns01.env", "is for the providers other than rfc2136, which takes its settings as [dns01] keys (nameserver, tsig_key, ...)")
		}
		if d.Nameserver == "" {
			bad("dns01.nameserver", "the rfc2136 provider needs the \"host:port\" of the primary name server that takes the updates")
		} else if _, port, err := net.SplitHostPort(d.Nameserver); err != nil || port == "" {
			bad("dns01.nameserver", "%q is not host:port (e.g. \"ns1.example.net:53\")", d.Nameserver)
		}
		if (d.TSIGKey == "") != (d.TSIGSecretFile == "") {
			bad("dns01.tsig_key", "dns01.tsig_key and dns01.tsig_secret_file go together: set both to sign updates with TSIG, or neither")
		}
		if _, ok := tsigAlgorithms[strings.TrimSuffix(strings.ToLower(d.TSIGAlgorithm), ".")]; !ok {
			bad("dns01.tsig_algorithm", "%q is not one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512", d.TSIGAlgorithm)
		}
		for _, z := range d.Zones {
			if _, ok := dns.IsDomainName(z); !ok {
				bad("dns01.zones", "%q is not a zone name", z)
			}
		}
	}
	if d.TTL < 1 {
		bad("dns01.ttl", "%d is below 1 second", d.TTL)
	}
	if d.SequenceInterval < duration(100*time.Millisecond) {
		bad("dns01.sequence_interval", "%v is shorter than 100ms", d.SequenceInterval)
	}
	if d.DNSTimeout < duration(time.Second) {
		bad("dns01.dns_timeout", "%v is shorter than 1s", d.DNSTimeout)
	}
	if d.PropagationTimeout < duration(time.Second) {
		bad("dns01.propagation_timeout", "%v is shorter than 1s", d.PropagationTimeout)
	}
	if d.PollingInterval < duration(100*time.Millisecond) || d.PollingInterval > d.PropagationTimeout {
		bad("dns01.polling_interval", "%v is not from 100ms to dns01.propagation_timeout", d.PollingInterval)
	}
	for _, r := range d.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil {
			bad("dns01.resolvers", "%q: want host:port", r)
		}
	}
}

// challengesOff returns each challenge the configuration cannot answer,
// with why, in the words Challenges.Off takes.
func (c *config) challengesOff() map[store.ChallengeType]string {
	off := map[store.ChallengeType]string{}
	if c.Challenge.Listen == "" {
		off[store.ChallengeHTTP01] = "challenge.listen is empty, so nothing answers the CA's requests on port 80"
	}
	if c.DNS01.Provider == "" && !c.DNS01.Zone.enabled() {
		off[store.ChallengeDNS01] = "no DNS provider or zone is configured (set [dns01] provider, or [dns01.zone] name)"
	}
	if c.TLSALPN.Listen == "" {
		off[store.ChallengeTLSALPN01] = "tls_alpn.listen is empty, so no TLS-ALPN-01 responder runs"
	}
	return off
}

// challengeChoice returns what the renewer needs to choose each name's
// challenge.
func (c *config) challengeChoice() renewer.Challenges {
	ch := renewer.Challenges{Default: store.ChallengeType(c.ACME.Challenge), Off: c.challengesOff(), Provider: c.DNS01.Provider != ""}
	if c.DNS01.Zone.enabled() {
		if z, _, err := c.DNS01.Zone.zone(); err == nil { // validate checked it
			ch.Zone = &z
		}
	}
	return ch
}

// newDNS01Zone builds the dns-01 solver of certserver's own zone, whose
// orders put their values into st (on a fleet the shared store, which
// every host's zone reads); nil without [dns01.zone].
func newDNS01Zone(d dns01Config, st store.Store) *renewer.DNS01 {
	if !d.Zone.enabled() {
		return nil
	}
	return &renewer.DNS01{
		Provider: func(ctx context.Context) challenge.Provider {
			p, err := dnszone.NewProvider(ctx, dnszone.ProviderConfig{Store: st})
			if err != nil {
				return failedProvider{err}
			}
			return p
		},
		PropagationTimeout: d.PropagationTimeout.std(),
		PollingInterval:    d.PollingInterval.std(),
		Resolvers:          d.Resolvers,
		SkipAuthoritative:  !d.CheckAuthoritative,
	}
}

// failedProvider is a provider that could not be made: every order
// through it fails with why.
type failedProvider struct{ err error }

func (p failedProvider) Present(string, string, string) error { return p.err }
func (p failedProvider) CleanUp(string, string, string) error { return nil }

// newDNS01 builds the dns-01 solver [dns01] describes, reading its secret
// file; nil when no provider is configured. Its errors name the key and
// never hold the secret.
func newDNS01(d dns01Config) (*renewer.DNS01, error) {
	var p challenge.Provider
	switch d.Provider {
	case "":
		return nil, nil
	case "rfc2136":
		cfg := rfc2136.NewDefaultConfig()
		cfg.Nameserver = d.Nameserver
		cfg.Zones = d.Zones
		cfg.TTL = d.TTL
		cfg.DNSTimeout = d.DNSTimeout.std()
		cfg.SequenceInterval = d.SequenceInterval.std()
		cfg.PropagationTimeout, cfg.PollingInterval = d.PropagationTimeout.std(), d.PollingInterval.std()
		cfg.TSIGAlgorithm = dns.Fqdn(strings.ToLower(d.TSIGAlgorithm))
		cfg.TSIGFile, cfg.TSIGGSSRealm, cfg.TSIGGSSUsername, cfg.TSIGGSSPassword, cfg.TSIGGSSKeytabFile = "", "", "", "", ""
		if d.TSIGSecretFile != "" {
			secret, err := readTSIGSecret(d.TSIGSecretFile, d.TSIGKey, d.TSIGAlgorithm)
			if err != nil {
				return nil, fmt.Errorf("dns01.tsig_secret_file: %w", err)
			}
			cfg.TSIGKey, cfg.TSIGSecret = dns.Fqdn(d.TSIGKey), secret
		}
		rp, err := rfc2136.NewDNSProviderConfig(cfg)
		if err != nil {
			// lego's messages name the setting, not the secret.
			return nil, fmt.Errorf("dns01: %w", err)
		}
		p = rp
	default:
		prov, ok := dnsProviders[d.Provider]
		if !ok || prov.make == nil {
			return nil, fmt.Errorf("dns01.provider: %q is not built in (%s)", d.Provider, dnsProviderNames())
		}
		// lego's providers read their settings from the process
		// environment only (its platform/config/env package, which also
		// reads NAME_FILE for NAME): [dns01.env] is put there here, once,
		// before any issuer is made, over a variable of the same name
		// certserver was started with.
		for _, k := range slices.Sorted(maps.Keys(d.Env)) {
			if err := os.Setenv(k, d.Env[k]); err != nil {
				return nil, fmt.Errorf("dns01.env: %s: %w", k, err)
			}
		}
		lp, err := prov.make()
		if err != nil {
			// lego's messages name the variable, not its value.
			return nil, fmt.Errorf("dns01 (provider %s, settings in [dns01.env]): %w", d.Provider, err)
		}
		p = lp
	}
	return &renewer.DNS01{
		Provider:           func(context.Context) challenge.Provider { return p },
		PropagationTimeout: d.PropagationTimeout.std(),
		PollingInterval:    d.PollingInterval.std(),
		SequenceInterval:   d.SequenceInterval.std(),
		Resolvers:          d.Resolvers,
		SkipAuthoritative:  !d.CheckAuthoritative,
	}, nil
}

// readTSIGSecret reads the base64 TSIG secret of the key named name with
// algorithm alg from the file at path, which holds either the secret
// alone or the key block `tsig-keygen NAME` writes (and BIND's
// named.conf includes):
//
//	key "NAME" {
//		algorithm hmac-sha256;
//		secret "BASE64";
//	};
//
// A block's name and algorithm must be those of [dns01] tsig_key and
// tsig_algorithm. Its errors name the file, never the secret.
func readTSIGSecret(path, name, alg string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	secret := text
	if block := withoutComments(text); strings.HasPrefix(block, "key") {
		var blockName, blockAlg string
		blockName, blockAlg, secret, err = parseTSIGKeyBlock(block)
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		if !strings.EqualFold(dns.Fqdn(blockName), dns.Fqdn(name)) {
			return "", fmt.Errorf("%s holds the key %q, but dns01.tsig_key is %q", path, blockName, name)
		}
		if !strings.EqualFold(strings.TrimSuffix(blockAlg, "."), strings.TrimSuffix(alg, ".")) {
			return "", fmt.Errorf("%s gives the key %q the algorithm %s, but dns01.tsig_algorithm is %q", path, blockName, blockAlg, alg)
		}
	}
	if _, err := base64.StdEncoding.DecodeString(secret); err != nil {
		return "", fmt.Errorf("%s holds neither a base64 TSIG secret alone nor a key block as tsig-keygen writes it (key \"NAME\" { algorithm ...; secret \"...\"; };)", path)
	}
	return secret, nil
}

// withoutComments returns text without its comment lines (# and //,
// as BIND's configuration takes them), trimmed.
func withoutComments(text string) string {
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if t := strings.TrimSpace(l); !strings.HasPrefix(t, "#") && !strings.HasPrefix(t, "//") {
			lines = append(lines, l)
		}
	}
	return strings.TrimSpace(strings.Join(lines, "\n"))
}

// parseTSIGKeyBlock returns the name, algorithm and secret of text, one
// BIND key block without comments. Its errors never hold the secret.
func parseTSIGKeyBlock(text string) (name, alg, secret string, err error) {
	head, body, ok := strings.Cut(strings.TrimPrefix(text, "key"), "{")
	body, tail, closed := strings.Cut(body, "}")
	if !ok || !closed || strings.Trim(strings.TrimSpace(tail), ";") != "" {
		return "", "", "", errors.New(`not one key block as tsig-keygen writes it (key "NAME" { algorithm ...; secret "..."; };)`)
	}
	name = strings.Trim(strings.TrimSpace(head), `"`)
	if name == "" {
		return "", "", "", errors.New("its key block has no name")
	}
	for _, st := range strings.Split(body, ";") {
		f := strings.Fields(st)
		switch {
		case len(f) == 0:
		case len(f) == 2 && f[0] == "algorithm":
			alg = strings.Trim(f[1], `"`)
		case len(f) == 2 && f[0] == "secret":
			secret = strings.Trim(f[1], `"`)
		default:
			return "", "", "", fmt.Errorf("its key block for %q has a statement other than algorithm NAME and secret \"BASE64\"", name)
		}
	}
	switch {
	case alg == "":
		return "", "", "", fmt.Errorf("its key block for %q has no algorithm", name)
	case secret == "":
		return "", "", "", fmt.Errorf("its key block for %q has no secret", name)
	}
	return name, alg, secret, nil
}
