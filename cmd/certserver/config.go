package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/mail"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
)

// defaultConfigPath is where serve and the client commands look for the
// configuration file when --config is not given.
const defaultConfigPath = "/etc/certserver/certserver.toml"

// config is the TOML configuration file of `certserver serve`. Every key is
// documented in deploy/certserver.toml; defaultConfig holds the defaults.
type config struct {
	Store     storeConfig     `toml:"store"`
	Certs     certsConfig     `toml:"certs"`
	Challenge challengeConfig `toml:"challenge"`
	TLSALPN   tlsALPNConfig   `toml:"tls_alpn"`
	Admin     adminConfig     `toml:"admin"`
	ACME      acmeConfig      `toml:"acme"`
	Keys      keysConfig      `toml:"keys"`
	Renewer   renewerConfig   `toml:"renewer"`
	Preflight preflightConfig `toml:"preflight"`
	DNS01     dns01Config     `toml:"dns01"`
	OnDemand  onDemandConfig  `toml:"on_demand"`
	Log       logConfig       `toml:"log"`
	Fleet     fleetConfig     `toml:"fleet"`

	// fleetDefined says the file has a [fleet] section.
	fleetDefined bool
	// deprecated are the deprecated keys the file used (applyAliases).
	deprecated []deprecation
}

type storeConfig struct {
	Path string `toml:"path"`
	// KeyEncryptionKeyFile is the keyring (store/sealed) that encrypts the
	// private keys the store holds; "" stores them in clear.
	KeyEncryptionKeyFile string `toml:"key_encryption_key_file"`
	// RecordCache is the memory of the cache of the records lookups read
	// (store.BadgerOptions.RecordCacheSize); 0 turns it off.
	RecordCache byteSize `toml:"record_cache"`
}

// badgerOptions returns the options of the store [store] configures.
func (s storeConfig) badgerOptions(logger *slog.Logger) store.BadgerOptions {
	cache := int64(s.RecordCache)
	if cache == 0 {
		cache = -1 // off
	}
	return store.BadgerOptions{Logger: logger, RecordCacheSize: cache}
}

type certsConfig struct {
	Socket           string   `toml:"socket"`
	SocketMode       fileMode `toml:"socket_mode"`
	SocketGroup      string   `toml:"socket_group"`
	Listen           string   `toml:"listen"`
	AllowNonLoopback bool     `toml:"allow_non_loopback"`
	MaxAge           duration `toml:"max_age"`
	MinAge           duration `toml:"min_age"`
	NotFoundMaxAge   duration `toml:"not_found_max_age"`
}

type challengeConfig struct {
	Listen           string `toml:"listen"`
	AllowNonLoopback bool   `toml:"allow_non_loopback"`
}

// tlsALPNConfig is [tls_alpn], the TLS-ALPN-01 responder nginx's stream
// snippet (certserver-stream.conf) sends acme-tls/1 connections to. Off
// while listen is "" (the default); on, orders may be validated with
// TLS-ALPN-01.
type tlsALPNConfig struct {
	Listen           string `toml:"listen"`
	AllowNonLoopback bool   `toml:"allow_non_loopback"`
}

type adminConfig struct {
	Enabled          bool   `toml:"enabled"`
	Listen           string `toml:"listen"`
	AllowNonLoopback bool   `toml:"allow_non_loopback"`
	TokenFile        string `toml:"token_file"`
	// MaxBody and MaxDomainsBody bound request bodies
	// (certserver.AdminConfig), from minAdminBody to maxAdminBody.
	MaxBody        byteSize `toml:"max_body"`
	MaxDomainsBody byteSize `toml:"max_domains_body"`
}

// The bounds of admin.max_body and admin.max_domains_body. The admin API
// holds a request's body in memory whole, so a bound beyond memory bounds
// nothing.
const (
	minAdminBody = 1 << 10
	maxAdminBody = 1 << 30
)

type acmeConfig struct {
	Directory   string   `toml:"directory"`
	Email       string   `toml:"email"`
	AgreeTerms  bool     `toml:"agree_terms"`
	CARoots     string   `toml:"ca_roots"`
	KeyType     string   `toml:"key_type"`
	ReuseKey    bool     `toml:"reuse_key"`
	Profile     string   `toml:"profile"`
	Timeout     duration `toml:"timeout"`
	EABKID      string   `toml:"eab_kid"`
	EABHMACFile string   `toml:"eab_hmac_file"`
	// Challenge is the challenge of names that name none (store.ChallengeType).
	Challenge string `toml:"challenge"`
	// The primary CA's name, CAA identities, ARI and limits.
	Name          string       `toml:"name"`
	CAAIdentities []string     `toml:"caa_identities"`
	ARI           *bool        `toml:"ari"`
	Limits        limitsConfig `toml:"limits"`
	// Selection says how orders are shared among the CAs.
	Selection string `toml:"selection"`
	// Fallback are further CAs ([[acme.fallback]]), in order.
	Fallback []caConfig `toml:"fallback"`
}

// caConfig is one CA's own settings: those of a [[acme.fallback]] table,
// and the same keys of [acme] for the primary CA. key_type, reuse_key,
// profile, timeout and selection are [acme]'s only, for every CA.
type caConfig struct {
	Name          string       `toml:"name"`
	Directory     string       `toml:"directory"`
	Email         string       `toml:"email"`
	AgreeTerms    bool         `toml:"agree_terms"`
	CARoots       string       `toml:"ca_roots"`
	EABKID        string       `toml:"eab_kid"`
	EABHMACFile   string       `toml:"eab_hmac_file"`
	CAAIdentities []string     `toml:"caa_identities"`
	ARI           *bool        `toml:"ari"`
	Limits        limitsConfig `toml:"limits"`
}

// caSection is one configured CA with the key its errors name: "acme" for
// the primary, "acme.fallback[N]" for a fallback.
type caSection struct {
	key string
	caConfig
}

// cas returns every configured CA, the primary ([acme]) first, then the
// [[acme.fallback]] CAs in order: the one list that reading their files,
// validation and building the renewer's CAs go through. The primary is
// listed even when acme.directory is not set (issuance is off then).
func (a acmeConfig) cas() []caSection {
	out := []caSection{{key: "acme", caConfig: caConfig{
		Name: a.Name, Directory: a.Directory, Email: a.Email, AgreeTerms: a.AgreeTerms,
		CARoots: a.CARoots, EABKID: a.EABKID, EABHMACFile: a.EABHMACFile,
		CAAIdentities: a.CAAIdentities, ARI: a.ARI, Limits: a.Limits,
	}}}
	for i, f := range a.Fallback {
		out = append(out, caSection{key: fmt.Sprintf("acme.fallback[%d]", i), caConfig: f})
	}
	return out
}

// limitsConfig is a CA account's rate limits ([acme.limits]), each
// "BURST/PERIOD" ("300/3h", "50/7d") or "unlimited"; "" keeps Let's
// Encrypt's published value.
type limitsConfig struct {
	NewOrders                        string            `toml:"new_orders"`
	CertificatesPerRegisteredDomain  string            `toml:"certificates_per_registered_domain"`
	CertificatesPerExactSet          string            `toml:"certificates_per_exact_set"`
	AuthorizationFailures            string            `toml:"authorization_failures"`
	ConsecutiveAuthorizationFailures string            `toml:"consecutive_authorization_failures"`
	OrderRequests                    string            `toml:"order_requests"`
	RegisteredDomainOverrides        map[string]string `toml:"registered_domain_overrides"`
}

// keysConfig is [keys]: how certificates get their private keys.
type keysConfig struct {
	// Reuse is "none" (a new key per certificate) or "pool" (keys shared
	// from a pool in the store: renewer.KeyPool).
	Reuse string `toml:"reuse"`
	// PoolSize is how many keys the pool of [acme] key_type holds.
	PoolSize int `toml:"pool_size"`
	// Rotation is the age at which a pool key is replaced.
	Rotation duration `toml:"rotation"`
}

// The values of [keys] reuse.
const (
	reuseNone = "none"
	reusePool = "pool"
)

// keyPool is renewer.ACMEConfig.KeyPool for k: nil unless reuse is
// "pool".
func (k keysConfig) keyPool() *renewer.KeyPool {
	if k.Reuse != reusePool {
		return nil
	}
	return &renewer.KeyPool{Size: k.PoolSize, Rotation: k.Rotation.std()}
}

type renewerConfig struct {
	Workers         int      `toml:"workers"`
	IdleWait        duration `toml:"idle_wait"`
	GiveUpAfter     duration `toml:"give_up_after"`
	ARIPollInterval duration `toml:"ari_poll_interval"`
}

type preflightConfig struct {
	Enabled      bool     `toml:"enabled"`
	Targets      []string `toml:"targets"`
	AllAddresses bool     `toml:"all_addresses"`
	Resolvers    []string `toml:"resolvers"`
}

type onDemandConfig struct {
	// Enabled turns on-demand issuance on with no check of its own, for a
	// policy of preflight.targets alone (the name's DNS points here).
	Enabled bool     `toml:"enabled"`
	Allow   []string `toml:"allow"`
	// Targets is the deprecated alias of preflight.targets (see
	// config.applyAliases); as before, setting it turns on-demand
	// issuance on.
	Targets   []string `toml:"targets"`
	Resolvers []string `toml:"resolvers"`
	AskURL    string   `toml:"ask_url"`
	AllowTTL  duration `toml:"allow_ttl"`
	DenyTTL   duration `toml:"deny_ttl"`
}

// enabled reports whether on-demand issuance is on (renewer.Policy.Enabled):
// set with enabled, or by configuring one of its checks.
func (c onDemandConfig) enabled() bool {
	return c.Enabled || len(c.Allow) > 0 || len(c.Targets) > 0 || c.AskURL != ""
}

type logConfig struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// defaultConfig returns the configuration an empty file gives.
func defaultConfig() config {
	return config{
		Store: storeConfig{Path: "/var/lib/certserver", RecordCache: store.DefaultRecordCacheSize},
		Certs: certsConfig{
			Socket:         "/run/certserver/certs.sock",
			SocketMode:     fileMode(certserver.DefaultSocketMode),
			MaxAge:         duration(certserver.DefaultCertMaxAge),
			MinAge:         duration(certserver.DefaultCertMinAge),
			NotFoundMaxAge: duration(certserver.DefaultNotFoundMaxAge),
		},
		Challenge: challengeConfig{Listen: certserver.DefaultChallengeListen},
		Admin: adminConfig{
			Enabled:        true,
			Listen:         certserver.DefaultAdminListen,
			MaxBody:        certserver.DefaultAdminMaxBody,
			MaxDomainsBody: certserver.DefaultAdminMaxDomainsBody,
		},
		ACME: acmeConfig{
			Challenge: string(store.ChallengeAuto),
			KeyType:   string(store.KeyECDSAP256),
			Timeout:   duration(3 * time.Minute),
			Selection: string(renewer.SelectFailover),
		},
		Keys: keysConfig{Reuse: reuseNone, PoolSize: renewer.DefaultPoolSize, Rotation: duration(renewer.DefaultPoolRotation)},
		Renewer: renewerConfig{Workers: 4, IdleWait: duration(time.Minute),
			GiveUpAfter: duration(30 * 24 * time.Hour), ARIPollInterval: duration(12 * time.Hour)},
		Preflight: preflightConfig{Enabled: true},
		DNS01:     defaultDNS01Config(),
		OnDemand:  onDemandConfig{AllowTTL: duration(10 * time.Minute), DenyTTL: duration(time.Minute)},
		Log:       logConfig{Level: "info", Format: "text"},
		Fleet:     defaultFleetConfig(),
	}
}

// loadConfig reads the configuration file at path over the defaults. An
// unknown key, a value of the wrong type and a value out of range are
// errors naming the key.
func loadConfig(path string) (config, error) {
	cfg := defaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if err := parseConfig(string(b), &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// parseConfig decodes a configuration document into cfg, validates it and
// applies the deprecated aliases it uses (applyAliases).
func parseConfig(doc string, cfg *config) error {
	md, err := toml.Decode(doc, cfg)
	if err != nil {
		return err
	}
	if err := unknownKeys(md.Undecoded()); err != nil {
		return err
	}
	cfg.fleetDefined = md.IsDefined("fleet")
	if err := cfg.validate(); err != nil {
		return err
	}
	cfg.applyAliases()
	return nil
}

// deprecation is a deprecated key a configuration used, and the key that
// replaces it.
type deprecation struct{ old, key string }

// applyAliases copies the values of deprecated keys to the keys that
// replace them, and notes each for warnDeprecated. on_demand.targets is
// an alias of preflight.targets: the on-demand check and the pre-flight
// read one list of targets (validate refuses a file that sets both to
// different lists).
func (c *config) applyAliases() {
	if len(c.OnDemand.Targets) > 0 {
		c.Preflight.Targets = c.OnDemand.Targets
		c.deprecated = append(c.deprecated, deprecation{old: "on_demand.targets", key: "preflight.targets"})
	}
}

// warnDeprecated logs a warning for each deprecated key the configuration
// used, naming the key to use instead.
func (c config) warnDeprecated(log *slog.Logger) {
	for _, d := range c.deprecated {
		log.Warn(fmt.Sprintf("config: %s is deprecated; use %s, which means the same", d.old, d.key),
			"key", d.old, "use", d.key)
	}
}

// unknownKeys returns an error naming the keys the file has and certserver
// does not know, with the keys their section does know.
func unknownKeys(keys []toml.Key) error {
	known := knownKeys()
	var msgs []string
	for _, k := range keys {
		// A key inside an unknown section is reported with the section.
		if len(k) > 1 && slices.ContainsFunc(keys, func(p toml.Key) bool { return len(p) == 1 && p[0] == k[0] }) {
			continue
		}
		section := ""
		if len(k) > 1 {
			section = k[0]
		}
		what := "unknown key " + strconv.Quote(k.String())
		if list, ok := known[section]; ok && section != "" {
			what += " (keys of [" + section + "]: " + strings.Join(list, ", ") + ")"
		} else if len(k) == 1 {
			what += " (sections: " + strings.Join(known[""], ", ") + ")"
		}
		msgs = append(msgs, what)
	}
	if len(msgs) == 0 {
		return nil
	}
	return errors.New(strings.Join(msgs, "; "))
}

// knownKeys lists the keys of every section, and under "" the sections.
func knownKeys() map[string][]string {
	m := map[string][]string{}
	top := reflect.TypeFor[config]()
	for i := range top.NumField() {
		f := top.Field(i)
		section := f.Tag.Get("toml")
		if !f.IsExported() {
			continue // not read from the file
		}
		m[""] = append(m[""], section)
		for j := range f.Type.NumField() {
			m[section] = append(m[section], f.Type.Field(j).Tag.Get("toml"))
		}
	}
	return m
}

// validate checks the values the types let through, naming the key.
func (c *config) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Store.Path == "" {
		bad("store.path", "must not be empty")
	}
	if rc := c.Store.RecordCache; rc != 0 && (rc < store.MinRecordCacheSize || rc > store.MaxRecordCacheSize) {
		bad("store.record_cache", "%v is not 0 (off) nor from %v to %v", rc, byteSize(store.MinRecordCacheSize), byteSize(store.MaxRecordCacheSize))
	}
	if c.Certs.Socket == "" && c.Certs.Listen == "" {
		bad("certs.socket", "certs.socket and certs.listen are both empty: the certificate endpoint needs one of them")
	}
	if c.Certs.Listen != "" {
		if err := certserver.CheckLoopback(c.Certs.Listen); err != nil && !(c.Certs.AllowNonLoopback && errors.Is(err, certserver.ErrNotLoopback)) {
			if errors.Is(err, certserver.ErrNotLoopback) {
				bad("certs.listen", "%v; private keys travel over this endpoint: use certs.socket or a loopback address, or set certs.allow_non_loopback = true", err)
			} else {
				bad("certs.listen", "%v", err)
			}
		}
	}
	for _, d := range []struct {
		key string
		v   duration
	}{{"certs.max_age", c.Certs.MaxAge}, {"certs.min_age", c.Certs.MinAge}, {"certs.not_found_max_age", c.Certs.NotFoundMaxAge}} {
		if d.v < duration(time.Second) {
			bad(d.key, "%v is shorter than 1s", time.Duration(d.v))
		}
	}
	if c.Certs.MinAge > c.Certs.MaxAge {
		bad("certs.min_age", "%v is longer than certs.max_age %v", time.Duration(c.Certs.MinAge), time.Duration(c.Certs.MaxAge))
	}
	if c.Admin.Enabled {
		if err := certserver.CheckLoopback(c.Admin.Listen); err != nil && !(c.Admin.AllowNonLoopback && errors.Is(err, certserver.ErrNotLoopback)) {
			if errors.Is(err, certserver.ErrNotLoopback) {
				bad("admin.listen", "%v; the admin token and private keys travel over this endpoint: use a loopback address, or set admin.allow_non_loopback = true", err)
			} else {
				bad("admin.listen", "%v", err)
			}
		}
	}
	for _, b := range []struct {
		key string
		v   byteSize
	}{{"admin.max_body", c.Admin.MaxBody}, {"admin.max_domains_body", c.Admin.MaxDomainsBody}} {
		switch {
		case b.v < minAdminBody:
			bad(b.key, "%v is too small (at least %d bytes)", b.v, minAdminBody)
		case b.v > maxAdminBody:
			bad(b.key, "%v is too large (at most %v: the admin API holds a request's body in memory)", b.v, byteSize(maxAdminBody))
		}
	}
	if c.Challenge.Listen != "" {
		if err := certserver.CheckLoopback(c.Challenge.Listen); err != nil && !(c.Challenge.AllowNonLoopback && errors.Is(err, certserver.ErrNotLoopback)) {
			if errors.Is(err, certserver.ErrNotLoopback) {
				bad("challenge.listen", "%v; nginx on this host proxies the CA's requests here: use a loopback address, or set challenge.allow_non_loopback = true", err)
			} else {
				bad("challenge.listen", "%v", err)
			}
		}
	}
	if c.TLSALPN.Listen != "" {
		if err := certserver.CheckLoopback(c.TLSALPN.Listen); err != nil && !(c.TLSALPN.AllowNonLoopback && errors.Is(err, certserver.ErrNotLoopback)) {
			if errors.Is(err, certserver.ErrNotLoopback) {
				bad("tls_alpn.listen", "%v; nginx's stream server on this host passes the CA's connections here: use a loopback address, or set tls_alpn.allow_non_loopback = true", err)
			} else {
				bad("tls_alpn.listen", "%v", err)
			}
		}
	}
	c.validateACME(bad)
	c.validateKeys(bad)
	c.validateDNS01(bad)
	c.validateOnDemand(bad)
	c.validateFleet(c.fleetDefined, bad)
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not one of text, json", c.Log.Format)
	}
	return errors.Join(errs...)
}

// validate checks one CA's settings, the primary's or a fallback's alike.
// A primary without a directory leaves issuance off and is not checked
// further; a fallback needs a directory, and a primary (hasPrimary).
// names and dirs map the CA names and directories seen so far to their
// keys: each CA needs its own name and its own account.
func (ca caSection) validate(primary, hasPrimary bool, names, dirs map[string]string, bad func(key, format string, args ...any)) {
	k := ca.key
	if !primary && !hasPrimary {
		bad(k, "a fallback CA needs a primary one: set acme.directory first")
	}
	if ca.Directory != "" || !primary {
		u, err := url.Parse(ca.Directory)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			bad(k+".directory", "%q is not an https URL (ACME directories are served over https)", ca.Directory)
		}
		if !ca.AgreeTerms {
			bad(k+".agree_terms", "must be true when %s.directory is set: registering an account agrees to the CA's terms of service", k)
		}
	}
	if ca.Email != "" {
		if m, err := mail.ParseAddress(ca.Email); err != nil || m.Address != ca.Email {
			bad(k+".email", "%q is not an e-mail address", ca.Email)
		}
	}
	if (ca.EABKID == "") != (ca.EABHMACFile == "") {
		bad(k+".eab_kid", "%[1]s.eab_kid and %[1]s.eab_hmac_file go together: set both for external account binding, or neither", k)
	}
	n := caName(ca.Name, ca.Directory)
	if prev, dup := names[n]; dup {
		bad(k+".name", "%q is also the name of %s: CAs need different names (set name)", n, prev)
	}
	names[n] = k
	if prev, dup := dirs[ca.Directory]; dup && ca.Directory != "" {
		bad(k+".directory", "%q is also the directory of %s: one account per CA (rate limit overrides are granted per account)", ca.Directory, prev)
	}
	dirs[ca.Directory] = k
	checkLimits(k+".limits", ca.Limits, bad)
}

// validateACME checks the [acme] and [renewer] sections.
func (c *config) validateACME(bad func(key, format string, args ...any)) {
	a := c.ACME
	switch store.KeyType(a.KeyType) {
	case store.KeyECDSAP256, store.KeyECDSAP384, store.KeyRSA2048, store.KeyRSA4096:
	default:
		bad("acme.key_type", "%q is not one of %s, %s, %s, %s", a.KeyType,
			store.KeyECDSAP256, store.KeyECDSAP384, store.KeyRSA2048, store.KeyRSA4096)
	}
	if ch, err := store.ParseChallenge(a.Challenge); err != nil || ch == "" {
		bad("acme.challenge", "%q is not one of http-01, dns-01, tls-alpn-01, auto", a.Challenge)
	} else if why, off := c.challengesOff()[ch]; off {
		bad("acme.challenge", "%s is not available: %s", ch, why)
	}
	if api.CheckProfile(a.Profile) != nil {
		bad("acme.profile", "%q: a profile name is at most 64 letters, digits, '-', '_' and '.'", a.Profile)
	}
	if a.Timeout < duration(10*time.Second) {
		bad("acme.timeout", "%v is shorter than 10s", a.Timeout)
	}
	switch renewer.Selection(a.Selection) {
	case renewer.SelectFailover, renewer.SelectSpread:
	default:
		bad("acme.selection", "%q is not one of %s, %s", a.Selection, renewer.SelectFailover, renewer.SelectSpread)
	}
	names, dirs := map[string]string{}, map[string]string{}
	for i, ca := range a.cas() {
		ca.validate(i == 0, a.Directory != "", names, dirs, bad)
	}
	if c.Renewer.GiveUpAfter != 0 && c.Renewer.GiveUpAfter < duration(time.Hour) {
		bad("renewer.give_up_after", "%v is shorter than 1h (\"0s\" never gives up)", time.Duration(c.Renewer.GiveUpAfter))
	}
	if c.Renewer.ARIPollInterval < duration(time.Minute) {
		bad("renewer.ari_poll_interval", "%v is shorter than 1m", time.Duration(c.Renewer.ARIPollInterval))
	}
	for _, t := range c.Preflight.Targets {
		if _, err := renewer.ParseTargets([]string{t}); err != nil {
			bad("preflight.targets", "%v", err)
		}
	}
	for _, r := range c.Preflight.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil {
			bad("preflight.resolvers", "%q: want host:port", r)
		}
	}
	if c.Renewer.Workers < 1 || c.Renewer.Workers > 1000 {
		bad("renewer.workers", "%d is not from 1 to 1000", c.Renewer.Workers)
	}
	if c.Renewer.IdleWait < duration(time.Second) {
		bad("renewer.idle_wait", "%v is shorter than 1s", c.Renewer.IdleWait)
	}
}

// validateKeys checks the [keys] section.
func (c *config) validateKeys(bad func(key, format string, args ...any)) {
	k := c.Keys
	switch k.Reuse {
	case reuseNone:
	case reusePool:
		if c.ACME.ReuseKey {
			bad("keys.reuse", "\"pool\" and acme.reuse_key = true exclude each other: a pool already keeps a name's key until its rotation; set acme.reuse_key = false")
		}
	default:
		bad("keys.reuse", "%q is not one of %s, %s", k.Reuse, reuseNone, reusePool)
	}
	if k.PoolSize < 1 || k.PoolSize > maxPoolSize {
		bad("keys.pool_size", "%d is not from 1 to %d", k.PoolSize, maxPoolSize)
	}
	if k.Rotation < duration(time.Hour) {
		bad("keys.rotation", "%v is shorter than 1h", k.Rotation)
	}
}

// maxPoolSize bounds [keys] pool_size: beyond it a pool saves little
// over a key per certificate.
const maxPoolSize = 100000

// validateOnDemand checks the [on_demand] section.
func (c *config) validateOnDemand(bad func(key, format string, args ...any)) {
	o := c.OnDemand
	if o.Enabled && len(o.Allow) == 0 && o.AskURL == "" && len(o.Targets) == 0 && len(c.Preflight.Targets) == 0 {
		bad("on_demand.enabled", "is true with no check: set preflight.targets (the name's DNS must point here), on_demand.allow or on_demand.ask_url, or any name a client sends would be ordered")
	}
	for _, p := range o.Allow {
		if _, err := hostname.NormalizePattern(p); err != nil {
			bad("on_demand.allow", "%v", err)
		}
	}
	for _, t := range o.Targets {
		if _, err := renewer.ParseTargets([]string{t}); err != nil {
			bad("on_demand.targets", "%v", err)
		}
	}
	if len(o.Targets) > 0 && len(c.Preflight.Targets) > 0 && !slices.Equal(o.Targets, c.Preflight.Targets) {
		bad("on_demand.targets", "is a deprecated alias of preflight.targets, which is set to another list: keep preflight.targets only (the on-demand check and the pre-flight read it)")
	}
	for _, r := range o.Resolvers {
		host, port, err := net.SplitHostPort(r)
		if err == nil && host != "" {
			_, err = strconv.ParseUint(port, 10, 16)
		}
		if err != nil || host == "" {
			bad("on_demand.resolvers", "%q is not host:port (e.g. \"127.0.0.53:53\")", r)
		}
	}
	if o.AskURL != "" {
		u, err := url.Parse(o.AskURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("on_demand.ask_url", "%q is not an http or https URL", o.AskURL)
		}
	}
	for _, d := range []struct {
		key string
		v   duration
	}{{"on_demand.allow_ttl", o.AllowTTL}, {"on_demand.deny_ttl", o.DenyTTL}} {
		if d.v < duration(time.Second) {
			bad(d.key, "%v is shorter than 1s", d.v)
		}
	}
}

// byteSize is a TOML amount of memory: a string of a number and a unit,
// "192MiB", "1GiB", "500MB" (KiB, MiB, GiB are powers of 1024; kB, MB,
// GB of 1000), or an integer of bytes.
type byteSize int64

// byteUnits are the units byteSize reads, the longest first.
var byteUnits = []struct {
	unit string
	n    int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

func (s *byteSize) UnmarshalTOML(v any) error {
	const how = `write it like "192MiB", "1GiB" or "500MB", or as an integer of bytes`
	switch v := v.(type) {
	case int64:
		if v < 0 {
			return fmt.Errorf("invalid size %d: negative", v)
		}
		*s = byteSize(v)
		return nil
	case string:
		text := strings.TrimSpace(v)
		mult := int64(1)
		for _, u := range byteUnits {
			if num, ok := strings.CutSuffix(text, u.unit); ok {
				text, mult = strings.TrimSpace(num), u.n
				break
			}
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/mult {
			return fmt.Errorf("invalid size %q: %s", v, how)
		}
		*s = byteSize(n * mult)
		return nil
	}
	return fmt.Errorf("invalid size %v: %s", v, how)
}

// String writes the size in GiB or MiB when it is a whole number of
// them, else in bytes.
func (s byteSize) String() string {
	switch {
	case s != 0 && s%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", s>>30)
	case s != 0 && s%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", s>>20)
	}
	return fmt.Sprintf("%d bytes", int64(s))
}

// duration is a TOML string holding a Go duration ("10m", "1h30m").
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: write it like \"90s\", \"10m\" or \"1h30m\"", b)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", b)
	}
	*d = duration(v)
	return nil
}

func (d duration) String() string { return time.Duration(d).String() }

// fileMode is a TOML octal permission: a string ("0660") or an octal
// integer (0o660).
type fileMode fs.FileMode

func (m *fileMode) UnmarshalTOML(v any) error {
	var n uint64
	switch v := v.(type) {
	case string:
		p, err := strconv.ParseUint(strings.TrimPrefix(v, "0o"), 8, 32)
		if err != nil {
			return fmt.Errorf("invalid file mode %q: write it in octal, like \"0660\"", v)
		}
		n = p
	case int64:
		if v < 0 {
			return fmt.Errorf("invalid file mode %d", v)
		}
		n = uint64(v)
	default:
		return fmt.Errorf("invalid file mode %v: write it in octal, like \"0660\"", v)
	}
	if n == 0 || n > 0o777 {
		return fmt.Errorf("invalid file mode %#o: only permission bits (0001 to 0777) are allowed; write it in octal, like \"0660\"", n)
	}
	*m = fileMode(n)
	return nil
}

func (m fileMode) String() string { return fmt.Sprintf("%#o", uint32(m)) }

// std returns d as a time.Duration.
func (d duration) std() time.Duration { return time.Duration(d) }

// caName is the name a CA goes by in logs and metrics: name, else the
// directory URL.
func caName(name, directory string) string {
	if name != "" {
		return name
	}
	return directory
}

// checkLimits validates a [..limits] table, naming the key.
func checkLimits(section string, l limitsConfig, bad func(key, format string, args ...any)) {
	for key, v := range map[string]string{
		"new_orders": l.NewOrders, "certificates_per_registered_domain": l.CertificatesPerRegisteredDomain,
		"certificates_per_exact_set": l.CertificatesPerExactSet, "authorization_failures": l.AuthorizationFailures,
		"consecutive_authorization_failures": l.ConsecutiveAuthorizationFailures, "order_requests": l.OrderRequests,
	} {
		if _, err := parseLimit(v); err != nil {
			bad(section+"."+key, "%v", err)
		}
	}
	for domain, v := range l.RegisteredDomainOverrides {
		if _, err := hostname.Normalize(domain); err != nil {
			bad(section+".registered_domain_overrides", "%v", err)
		}
		if _, err := parseLimit(v); err != nil || v == "" {
			bad(section+".registered_domain_overrides", "%q: %v", domain, err)
		}
	}
}

// parseLimit reads "BURST/PERIOD" ("300/3h", "50/7d": a period is a Go
// duration, or whole days with a d suffix) or "unlimited". "" is the zero
// Limit, which means the default.
func parseLimit(s string) (ratelimit.Limit, error) {
	switch s {
	case "":
		return ratelimit.Limit{}, nil
	case "unlimited":
		return ratelimit.Limit{Burst: -1}, nil
	}
	burst, period, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(strings.TrimSpace(burst))
	if !ok || err != nil || n < 1 {
		return ratelimit.Limit{}, fmt.Errorf("%q: want BURST/PERIOD such as \"300/3h\", or \"unlimited\"", s)
	}
	period = strings.TrimSpace(period)
	var per time.Duration
	if days, found := strings.CutSuffix(period, "d"); found {
		d, derr := strconv.Atoi(days)
		per, err = time.Duration(d)*24*time.Hour, derr
	} else {
		per, err = time.ParseDuration(period)
	}
	if err != nil || per <= 0 {
		return ratelimit.Limit{}, fmt.Errorf("%q: the period %q is not a positive duration such as 3h or 7d", s, period)
	}
	return ratelimit.Limit{Burst: n, Per: per}, nil
}

// giveUpAfter is renewer.Config.GiveUpAfter for r: "0s" in the file means
// never, which the renewer spells as a negative duration.
func giveUpAfter(r renewerConfig) time.Duration {
	if r.GiveUpAfter == 0 {
		return -1
	}
	return r.GiveUpAfter.std()
}
