package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// The renewer satisfies what the certserver package asks of it.
var (
	_ certserver.Scheduler  = (*renewer.Renewer)(nil)
	_ certserver.QueueStats = (*renewer.Renewer)(nil)
	_ certserver.OnDemand   = (*renewer.OnDemand)(nil)
	_ certserver.Revoker    = caRevoker(nil)
)

// acmeRequestTimeout bounds one HTTP request to the CA.
const acmeRequestTimeout = 30 * time.Second

// acmeFiles is what the files named for one CA hold, read before the
// store is opened so that a bad file stops the start at once.
type acmeFiles struct {
	client *http.Client // trusts the system roots and the CA's ca_roots
	eab    *renewer.ExternalAccount
}

// readACMEFiles reads the files of every CA of cfg (acmeConfig.cas), in
// that order. Its errors name the key.
func readACMEFiles(cfg acmeConfig) ([]*acmeFiles, error) {
	var all []*acmeFiles
	for _, ca := range cfg.cas() {
		f, err := readCAFiles(ca.key, ca.CARoots, ca.EABKID, ca.EABHMACFile)
		if err != nil {
			return nil, err
		}
		all = append(all, f)
	}
	return all, nil
}

// readCAFiles reads one CA's ca_roots and eab_hmac_file; section names it
// in errors.
func readCAFiles(section, caRoots, eabKID, eabFile string) (*acmeFiles, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caRoots != "" {
		b, err := os.ReadFile(caRoots)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_roots: %w", section, err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s.ca_roots: %s holds no PEM certificate", section, caRoots)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	f := &acmeFiles{client: &http.Client{Transport: tr, Timeout: acmeRequestTimeout}}
	if eabFile != "" {
		b, err := os.ReadFile(eabFile)
		if err != nil {
			return nil, fmt.Errorf("%s.eab_hmac_file: %w", section, err)
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			return nil, fmt.Errorf("%s.eab_hmac_file: %s is empty", section, eabFile)
		}
		f.eab = &renewer.ExternalAccount{KeyID: eabKID, HMACKey: key}
	}
	return f, nil
}

// issuance is the ACME side of the sidecar: the renewer with its CAs and,
// when a check is configured, on-demand issuance.
type issuance struct {
	directory string // the primary CA's
	issuers   []*renewer.ACMEIssuer
	renewer   *renewer.Renewer
	onDemand  *renewer.OnDemand // nil when on-demand issuance is off
}

// newIssuance builds the issuers, the renewer and the on-demand policy of
// cfg over st; files are readACMEFiles' answer. lego's log goes to logger.
// The renewer's metrics are registered with metrics, when it is not nil.
// verdicts, on a fleet host, is the fleet's store of on-demand verdicts
// (nil on a single host).
func newIssuance(cfg config, files []*acmeFiles, st store.Store, verdicts store.Verdicts, metrics *certserver.Metrics, logger *slog.Logger) (*issuance, error) {
	a := cfg.ACME
	dns01, err := newDNS01(cfg.DNS01)
	if err != nil {
		return nil, err
	}
	cas, issuers, err := buildCAs(a, cfg.Keys, cfg.challenges(), files, dns01, newDNS01Zone(cfg.DNS01, st), st, logger)
	if err != nil {
		return nil, err
	}
	renewer.SetLegoLogger(logger)
	// orderMetrics stays a nil interface when there are no metrics.
	var orderMetrics renewer.Metrics
	if metrics != nil {
		pm, err := renewer.NewPrometheusMetrics(metrics.Registerer())
		if err != nil {
			return nil, err
		}
		orderMetrics = pm
	}
	var preflight *renewer.Preflight
	var preflightResolver *renewer.Resolver
	if p := cfg.Preflight; p.Enabled {
		resolver, err := renewer.NewResolver(p.Resolvers, 0)
		if err != nil {
			return nil, fmt.Errorf("preflight.resolvers: %w", err)
		}
		preflightResolver = resolver
		if preflight, err = renewer.NewPreflight(renewer.PreflightConfig{Targets: p.Targets, AllAddresses: p.AllAddresses}, resolver); err != nil {
			return nil, fmt.Errorf("preflight: %w", err)
		}
	}
	rc := renewer.Config{
		Workers:         cfg.Renewer.Workers,
		OrderTimeout:    a.Timeout.std(),
		IdleWait:        cfg.Renewer.IdleWait.std(),
		DefaultProfile:  a.Profile,
		Metrics:         orderMetrics,
		CAs:             cas,
		Selection:       renewer.Selection(a.Selection),
		Preflight:       preflight,
		Challenges:      cfg.challengeChoice(),
		GiveUpAfter:     giveUpAfter(cfg.Renewer),
		ARIPollInterval: cfg.Renewer.ARIPollInterval.std(),
	}
	// A fleet host shares the due names with the other renewing hosts
	// through leases in the fleet's database (found below the key
	// decorator); a single host's store has none.
	if leases, ok := store.As[store.Leaser](st); ok {
		rc.Leases, rc.Host, rc.LeaseTTL = leases, cfg.Fleet.HostName, cfg.Fleet.LeaseTTL.std()
	}
	rn, err := renewer.New(rc, st, logger)
	if err != nil {
		return nil, fmt.Errorf("renewer: %w", err)
	}
	if metrics != nil {
		if err := metrics.Registerer().Register(renewer.NewCACollector(rn)); err != nil {
			return nil, fmt.Errorf("renewer metrics: %w", err)
		}
	}
	is := &issuance{directory: a.Directory, issuers: issuers, renewer: rn}
	if is.onDemand, err = newOnDemand(cfg, st, verdicts, preflightResolver, rn, logger); err != nil {
		return nil, err
	}
	return is, nil
}

// newOnDemand builds on-demand issuance of cfg over st: nil when it is
// off. The on-demand DNS check shares preflightResolver (nil without a
// pre-flight) when both ask the same servers. verdicts, on a fleet host,
// is the fleet's store of verdicts (nil on a single host); rn is nil on a
// fleet host that does not renew (cfg.onDemandRecordsOnly).
func newOnDemand(cfg config, st store.Store, verdicts store.Verdicts, preflightResolver *renewer.Resolver, rn *renewer.Renewer, logger *slog.Logger) (*renewer.OnDemand, error) {
	if !cfg.OnDemand.enabled() {
		return nil, nil
	}
	o := cfg.OnDemand
	var (
		resolver *renewer.Resolver
		err      error
	)
	switch {
	case len(cfg.Preflight.Targets) == 0:
	case preflightResolver != nil && slices.Equal(o.Resolvers, cfg.Preflight.Resolvers):
		// One Resolver: the pre-flight of an on-demand order reads the
		// answer the on-demand check got, so the order asks DNS once.
		resolver = preflightResolver
	default:
		if resolver, err = renewer.NewResolver(o.Resolvers, 0); err != nil {
			return nil, fmt.Errorf("on_demand.resolvers: %w", err)
		}
	}
	pcfg := renewer.PolicyConfig{
		Allow:    o.Allow,
		Targets:  cfg.Preflight.Targets,
		AskURL:   o.AskURL,
		AllowTTL: o.AllowTTL.std(),
		DenyTTL:  o.DenyTTL.std(),
	}
	if verdicts != nil {
		// A name is checked once for the fleet, by the first host that
		// sees it.
		pcfg.Shared, pcfg.Host = verdicts, cfg.Fleet.HostName
	}
	policy, err := renewer.NewPolicy(pcfg, resolver, logger.With("subsystem", "on_demand"))
	if err != nil {
		return nil, fmt.Errorf("on_demand: %w", err)
	}
	od, err := renewer.NewOnDemand(renewer.OnDemandConfig{}, policy, st, rn, logger)
	if err != nil {
		return nil, fmt.Errorf("on_demand: %w", err)
	}
	return od, nil
}

// run runs the renewer and on-demand issuance until ctx is done and waits
// for them to stop. It returns an error only when one of them stopped for
// another reason.
func (is *issuance) run(ctx context.Context) error {
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		if e := is.renewer.Run(ctx); e != nil && !errors.Is(e, context.Canceled) {
			err = fmt.Errorf("renewer: %w", e)
		}
	})
	if is.onDemand != nil {
		wg.Go(func() { is.onDemand.Run(ctx) })
	}
	wg.Wait()
	return err
}

// buildCAs makes the issuer, the rate limiter and the settings of every
// CA of a (acmeConfig.cas), in order: the renewer's list of CAs. Every
// issuer answers the challenge types given, and dns-01 through dns01 and
// zone (nil: not that way), and takes its keys as keys says (one pool for
// every CA).
func buildCAs(a acmeConfig, keys keysConfig, challenges []renewer.ChallengeType, files []*acmeFiles, dns01, zone *renewer.DNS01, st store.Store, logger *slog.Logger) ([]renewer.CA, []*renewer.ACMEIssuer, error) {
	var cas []renewer.CA
	var issuers []*renewer.ACMEIssuer
	for i, c := range a.cas() {
		ari := c.ARI == nil || *c.ARI
		issuer, err := renewer.NewACMEIssuer(renewer.ACMEConfig{
			Directory:  c.Directory,
			Email:      c.Email,
			AgreeTerms: c.AgreeTerms,
			EAB:        files[i].eab,
			KeyType:    store.KeyType(a.KeyType),
			ReuseKey:   a.ReuseKey,
			KeyPool:    keys.keyPool(),
			Timeout:    a.Timeout.std(),
			HTTPClient: files[i].client,
			DisableARI: !ari,
			Challenges: challenges,
			DNS01:      dns01,
			DNS01Zone:  zone,
		}, st, logger)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", c.key, err)
		}
		limits, err := limitsOf(c.Limits)
		if err != nil {
			return nil, nil, fmt.Errorf("%s.limits: %w", c.key, err)
		}
		name := caName(c.Name, c.Directory)
		lim, err := newLimiter(limits, st, renewer.LimitScope(renewer.CA{Name: name, Issuer: issuer}, i))
		if err != nil {
			return nil, nil, fmt.Errorf("%s.limits: %w", c.key, err)
		}
		caa := c.CAAIdentities
		if caa == nil {
			caa = defaultCAAIdentities(c.Directory)
		}
		cas = append(cas, renewer.CA{Name: name, Issuer: issuer, Limiter: lim, CAIdentities: caa, OffersARI: ari})
		issuers = append(issuers, issuer)
	}
	return cas, issuers, nil
}

// limitsOf turns a [..limits] table into the Limiter's configuration;
// values left out keep Let's Encrypt's (a zero Limit).
func limitsOf(l limitsConfig) (ratelimit.LimitsConfig, error) {
	var cfg ratelimit.LimitsConfig
	var err error
	for _, f := range []struct {
		s   string
		dst *ratelimit.Limit
	}{
		{l.NewOrders, &cfg.NewOrders}, {l.CertificatesPerRegisteredDomain, &cfg.CertsPerRegisteredDomain},
		{l.CertificatesPerExactSet, &cfg.CertsPerExactSet}, {l.AuthorizationFailures, &cfg.AuthzFailures},
		{l.ConsecutiveAuthorizationFailures, &cfg.ConsecutiveAuthzFailures}, {l.OrderRequests, &cfg.OrderRequests},
	} {
		if *f.dst, err = parseLimit(f.s); err != nil {
			return cfg, err
		}
	}
	for domain, v := range l.RegisteredDomainOverrides {
		lim, err := parseLimit(v)
		if err != nil {
			return cfg, err
		}
		if cfg.RegisteredDomainOverrides == nil {
			cfg.RegisteredDomainOverrides = map[string]ratelimit.Limit{}
		}
		cfg.RegisteredDomainOverrides[strings.ToLower(domain)] = lim
	}
	return cfg, nil
}

// defaultCAAIdentities are the CAA issuer domain names (RFC 8659 section
// 4.2) of the CAs certserver knows by their directory's host; for any other
// CA the pre-flight skips CAA unless caa_identities names them.
func defaultCAAIdentities(directory string) []string {
	u, err := url.Parse(directory)
	if err != nil {
		return nil
	}
	host := strings.ToLower(u.Hostname())
	for suffix, ids := range map[string][]string{
		"letsencrypt.org": {"letsencrypt.org"},
		"zerossl.com":     {"sectigo.com"},
		"pki.goog":        {"pki.goog"},
		"buypass.com":     {"buypass.com"},
	} {
		if host == suffix || strings.HasSuffix(host, "."+suffix) {
			return ids
		}
	}
	return nil
}

// caRevoker sends a revocation to the CA that issued the certificate (its
// Origin is the CA's directory URL), else to the primary CA.
type caRevoker []*renewer.ACMEIssuer

func (r caRevoker) Revoke(ctx context.Context, cert *store.Certificate, reason int) error {
	for _, is := range r {
		if is.Directory() == cert.Origin {
			return is.Revoke(ctx, cert, reason)
		}
	}
	return r[0].Revoke(ctx, cert, reason)
}

// queueStats is what GET /v1/queue asks of the renewer, with its plan in
// the admin API's terms.
type queueStats struct{ *renewer.Renewer }

var (
	_ certserver.Planner    = queueStats{}
	_ certserver.CAReporter = queueStats{}
)

func (q queueStats) CAs() []api.CAStatus {
	var out []api.CAStatus
	for _, s := range q.Renewer.CAStatus() {
		c := api.CAStatus{Name: s.Name, Directory: s.Directory, OffersARI: s.OffersARI,
			Orders: s.Counts.Orders, Issued: s.Counts.Issued, Failed: s.Counts.Failed, RateLimited: s.Counts.RateLimited,
			Deferred: s.Counts.Deferred, Refused: s.Counts.Refused,
			ARIPolls: s.Counts.Polls, ARIPollErrors: s.Counts.PollErrors, WindowsMoved: s.Counts.WindowsMoved,
			FailureStreak: s.FailureStreak}
		if s.Resting {
			c.RestingUntil = s.RestingUntil
		}
		c.FleetLimits = s.FleetLimits
		c.LimitsUnavailable = s.FleetLimits && s.Limits == nil
		for _, l := range s.Limits {
			ls := api.LimitStatus{Limit: string(l.Limit), Scope: l.Scope, Burst: l.Burst, PerSeconds: l.Per.Seconds(), Tracked: l.Tracked, Blocked: l.Blocked}
			for _, b := range l.Buckets {
				ls.Buckets = append(ls.Buckets, api.Bucket{Key: b.Key, Tokens: b.Tokens, Available: b.Available, Full: b.Full})
			}
			c.Limits = append(c.Limits, ls)
		}
		out = append(out, c)
	}
	return out
}

func (q queueStats) Plan(pending int) api.Plan {
	p := q.Renewer.Plan(pending)
	out := api.Plan{Pending: p.Pending, Limited: p.Limited, DoneInSeconds: p.DoneIn.Seconds(), DoneAt: p.DoneAt, OrdersPerSecond: p.Rate}
	for _, c := range p.CAs {
		out.CAs = append(out.CAs, api.PlanCA{Name: c.Name, Room: c.Room, OrdersPerSecond: c.Rate, Orders: c.Orders, Fleet: c.Fleet})
	}
	return out
}

// newLimiter returns the rate limiter of one CA account: on a fleet host
// (a store that shares rate buckets, found with store.As) the fleet's, so
// that every host spends one budget, kept in the database under scope;
// on a single host one of its own, which the renewer saves and restores.
// Its limits are the same either way: on a fleet they apply to the whole
// fleet.
func newLimiter(limits ratelimit.LimitsConfig, st store.Store, scope string) (*ratelimit.Limiter, error) {
	if shared, ok := store.As[ratelimit.SharedStore](st); ok {
		return ratelimit.NewSharedLimiter(limits, time.Now, shared, scope)
	}
	return ratelimit.NewLimiter(limits, time.Now)
}

// challenges returns the challenge types orders are answered with: HTTP-01,
// and TLS-ALPN-01 when its responder is on ([tls_alpn] listen). When the
// CA offers both for a name, lego picks TLS-ALPN-01.
func (c config) challenges() []renewer.ChallengeType {
	types := []renewer.ChallengeType{renewer.ChallengeHTTP01}
	if c.TLSALPN.Listen != "" {
		types = append(types, renewer.ChallengeTLSALPN01)
	}
	return types
}
