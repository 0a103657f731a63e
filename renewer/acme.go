package renewer

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/go-acme/lego/v4/acme"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
)

// finalizeTimeout is how long lego waits for a finalized order to turn
// valid; it polls every finalizeTimeout/60.
const finalizeTimeout = 30 * time.Second

// ExternalAccount binds a new ACME account to an account at the CA
// (RFC 8555 section 7.3.4), for CAs that require it.
type ExternalAccount struct {
	KeyID   string // the key identifier the CA gave
	HMACKey string // the MAC key the CA gave, base64url
}

// ACMEConfig configures an ACMEIssuer. Zero fields take the defaults
// stated.
type ACMEConfig struct {
	// Directory is the CA's ACME directory URL; it must be https.
	// Required.
	Directory string
	// Email is the account's contact address. Default "": no contact.
	Email string
	// AgreeTerms agrees to the CA's terms of service when the account is
	// registered (RFC 8555 section 7.3). Default false; a CA with terms
	// (Let's Encrypt) refuses to register an account without it.
	AgreeTerms bool
	// EAB binds the account to one at the CA. Default nil: no binding.
	EAB *ExternalAccount
	// KeyType is the type of certificate keys: store.KeyECDSAP256 (the
	// default), store.KeyECDSAP384, store.KeyRSA2048 or store.KeyRSA4096.
	KeyType store.KeyType
	// ReuseKey makes an order that replaces a certificate keep that
	// certificate's private key (when it is of KeyType). Default false: a
	// new key per order. Not with KeyPool.
	ReuseKey bool
	// KeyPool, when set, gives every order a key of the store's key pool
	// (see KeyPool; the store must have one, store.KeyPool). Default nil:
	// a new key per order (or ReuseKey's).
	KeyPool *KeyPool
	// PreferredChain picks, among the chains the CA offers, the one whose
	// topmost certificate is issued by this common name. Default "": the
	// CA's default chain.
	PreferredChain string
	// Timeout bounds one order, or one account registration, from the
	// first request to the certificate. Default 3 minutes. The context
	// given to Obtain may end it earlier.
	Timeout time.Duration
	// DisableARI stops Obtain from asking the CA's renewal information
	// (RFC 9773) for the new certificate's RenewAt. Default false.
	DisableARI bool
	// Challenges are the challenge types orders are answered with, each
	// through the store: ChallengeHTTP01 (nginx's port 80) and
	// ChallengeTLSALPN01 (nginx's stream snippet on port 443). When the
	// CA offers both for a name, lego picks tls-alpn-01. Default
	// ChallengeHTTP01 alone.
	Challenges []ChallengeType
	// ChallengeTTL is how long a challenge record stays readable in the
	// store if its order does not remove it (a crash). Default 15 minutes.
	ChallengeTTL time.Duration
	// HTTPClient makes the requests to the CA; only its Transport and
	// Timeout are used, and it is never modified. Default: the default
	// transport (system roots, proxy from the environment), 30 seconds per
	// request.
	HTTPClient *http.Client
	// UserAgent starts the User-Agent of requests to the CA. Default
	// "certserver".
	UserAgent string
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// DNS01 answers dns-01 challenges through a DNS provider. Default
	// nil: an order for dns-01 not via the zone fails (Challenges.Route
	// refuses it first when configured alike).
	DNS01 *DNS01
	// DNS01Zone answers the dns-01 challenges of orders ViaZone, through
	// certserver's own zone (renewer/dnszone). Default nil: such an order
	// fails.
	DNS01Zone *DNS01
}

// ACMEIssuer obtains certificates from one ACME CA with one account, over
// lego v4, answering HTTP-01 and TLS-ALPN-01 challenges through the store. It implements
// Issuer and is safe for concurrent use.
type ACMEIssuer struct {
	cfg        ACMEConfig
	store      store.Store
	log        *slog.Logger
	accountID  string
	transport  http.RoundTripper
	reqTimeout time.Duration

	pool store.KeyPool // the store's, when cfg.KeyPool is set

	acctLock chan struct{} // held while the account is loaded or registered
	acct     *account      // guarded by acctLock; nil until loaded

	dirMu sync.Mutex
	dir   directory // guarded by dirMu
	dirAt time.Time // when dir was read; zero before
}

var _ Issuer = (*ACMEIssuer)(nil)

// NewACMEIssuer returns an issuer for cfg.Directory that keeps its account
// and challenge tokens in st and logs to logger. It also sends lego's log
// to logger (SetLegoLogger). Nothing is sent to the CA until the first
// Obtain or Account.
//
// Make every issuer before any order runs: lego's list of recursive
// resolvers for DNS-01 is a global of the process, which the issuer
// sets from DNS01.Resolvers (or DNS01Zone's) and lego's orders read
// without a lock. The first issuer made with resolvers sets the list; a
// later one with a different list is refused with an error, the same
// list is accepted.
func NewACMEIssuer(cfg ACMEConfig, st store.Store, logger *slog.Logger) (*ACMEIssuer, error) {
	switch {
	case st == nil:
		return nil, errors.New("new acme issuer: nil store")
	case logger == nil:
		return nil, errors.New("new acme issuer: nil logger")
	}
	u, err := url.Parse(cfg.Directory)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("new acme issuer: directory %q is not an https URL", cfg.Directory)
	}
	if cfg.KeyType == "" {
		cfg.KeyType = store.KeyECDSAP256
	}
	if !generatable(cfg.KeyType) {
		return nil, fmt.Errorf("new acme issuer: unknown key type %q", cfg.KeyType)
	}
	for _, d := range []*DNS01{cfg.DNS01, cfg.DNS01Zone} {
		if d != nil && d.Provider == nil {
			return nil, errors.New("new acme issuer: a dns-01 solver without a provider")
		}
		if err := d.setLegoResolvers(); err != nil {
			return nil, fmt.Errorf("new acme issuer: dns-01 resolvers: %w", err)
		}
	}
	var pool store.KeyPool
	if p := cfg.KeyPool; p != nil {
		kp := *p
		switch {
		case cfg.ReuseKey:
			return nil, errors.New("new acme issuer: a key pool and ReuseKey exclude each other (a pool already keeps a name's key until rotation)")
		case kp.Size < 0 || kp.Rotation < 0:
			return nil, fmt.Errorf("new acme issuer: key pool size %d or rotation %s is negative", kp.Size, kp.Rotation)
		}
		if kp.Size == 0 {
			kp.Size = DefaultPoolSize
		}
		if kp.Rotation == 0 {
			kp.Rotation = DefaultPoolRotation
		}
		cfg.KeyPool = &kp
		var ok bool
		if pool, ok = store.As[store.KeyPool](st); !ok {
			return nil, errors.New("new acme issuer: a key pool needs a store that keeps one (store.KeyPool)")
		}
	}
	if cfg.EAB != nil && (cfg.EAB.KeyID == "" || cfg.EAB.HMACKey == "") {
		return nil, errors.New("new acme issuer: external account binding needs a key ID and an HMAC key")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	if len(cfg.Challenges) == 0 {
		cfg.Challenges = []ChallengeType{ChallengeHTTP01}
	}
	if err := checkChallenges(cfg.Challenges); err != nil {
		return nil, fmt.Errorf("new acme issuer: %w", err)
	}
	cfg.Challenges = append([]ChallengeType(nil), cfg.Challenges...)
	if cfg.ChallengeTTL <= 0 {
		cfg.ChallengeTTL = 15 * time.Minute
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "certserver"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &ACMEIssuer{
		cfg:        cfg,
		store:      st,
		log:        logger.With("subsystem", "acme", "issuer", cfg.Directory),
		accountID:  AccountID(cfg.Directory, cfg.Email),
		transport:  http.DefaultTransport,
		reqTimeout: 30 * time.Second,
		acctLock:   make(chan struct{}, 1),
		pool:       pool,
	}
	if hc := cfg.HTTPClient; hc != nil {
		if hc.Transport != nil {
			a.transport = hc.Transport
		}
		if hc.Timeout > 0 {
			a.reqTimeout = hc.Timeout
		}
	}
	SetLegoLogger(logger)
	return a, nil
}

// Directory returns the CA's directory URL.
func (a *ACMEIssuer) Directory() string { return a.cfg.Directory }

// OffersRenewalInfo reports whether the CA's directory advertises renewal
// information (RFC 9773 section 3), from the directory read at most
// directoryTTL ago.
func (a *ACMEIssuer) OffersRenewalInfo(ctx context.Context) (bool, error) {
	dir, err := a.directory(ctx)
	if err != nil {
		return false, err
	}
	return dir.RenewalInfo != "", nil
}

// AccountID returns the ID the account is stored under (AccountID of the
// directory and e-mail), under which the Renewer also saves the account's
// rate-limit buckets.
func (a *ACMEIssuer) AccountID() string { return a.accountID }

// Obtain orders a certificate for o.Names from the CA (RFC 8555 section
// 7.4), o.Name first, proving control of each name with o.Challenge
// (only that challenge's solver is given to lego; every configured one of
// Challenges when o.Challenge is ""), and returns the new record, not yet
// stored: the chain as the CA bundled it (leaf first), its key, Source
// store.SourceACME and Origin the directory URL. RenewAt is a random
// time in the window the CA suggests for it (RFC 9773 section 4.2), or zero
// for the caller to fill when the CA has no renewal information, it cannot
// be read, or DisableARI is set.
//
// The order has a new key of the configured type, the key of o.Replaces
// when ReuseKey is set, or a key of the pool (KeyPool) when one is
// configured; it asks for o.Profile ("" for the CA's
// default), and names o.Replaces as the certificate it replaces (RFC 9773
// section 5) unless o.NoReplaces is set.
//
// Every failure is an *ACMEError that tells a transient failure from a
// permanent one and a rate limit (see classify), and says whether the CA
// refused the order because of its "replaces" (ReplacesRefused). The order ends when ctx
// does or after the configured Timeout, whichever is first. lego ignores
// contexts, so it runs in a goroutine that may outlive Obtain: its HTTP
// requests fail as soon as the order's context ends, but it may still
// finish a sleep between polls (seconds) and remove its challenge token
// before it returns. A certificate it obtains after Obtain returned is
// discarded and logged.
func (a *ACMEIssuer) Obtain(ctx context.Context, o Order) (*store.Certificate, error) {
	for _, n := range o.Names() {
		if err := checkOrderName(n, o.Challenge); err != nil {
			return nil, (&ACMEError{Name: o.Name, Kind: KindPermanent, Detail: err.Error(), Err: err}).judge()
		}
	}
	if err := context.Cause(ctx); err != nil {
		return nil, classify(o.Name, fmt.Errorf("order not started: %w", err), a.cfg.Now())
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()

	acct, err := a.account(ctx)
	if err != nil {
		return nil, classify(o.Name, err, a.cfg.Now())
	}
	cert, err := a.obtain(ctx, acct, o)
	if isProblem(err, "accountDoesNotExist") {
		if acct, err = a.reregister(ctx, acct); err == nil {
			cert, err = a.obtain(ctx, acct, o)
		}
	}
	if err != nil {
		ae := classify(o.Name, err, a.cfg.Now())
		if ae.Kind != KindRateLimited && !o.NoReplaces && replacesID(o.Replaces) != "" && a.newOrderRefused(ctx, err) {
			ae.refusedAsReplacement()
		}
		return nil, ae
	}
	return cert, nil
}

// newOrderRefused reports whether err holds a problem document the CA
// answered the newOrder request with (RFC 8555 section 7.4), rather than
// one from a later step of the order or from validation.
func (a *ACMEIssuer) newOrderRefused(ctx context.Context, err error) bool {
	var p *acme.ProblemDetails
	if !errors.As(err, &p) || p == nil || p.URL == "" || shortProblem(p.Type) == "badNonce" {
		return false
	}
	dir, derr := a.directory(ctx)
	return derr == nil && p.URL == dir.NewOrder
}

// directory is what the issuer reads from the CA's directory (RFC 8555
// section 7.1.1) besides what lego reads.
type directory struct {
	NewOrder    string `json:"newOrder"`
	RenewalInfo string `json:"renewalInfo"`
}

// directoryTTL is how long the issuer keeps the CA's directory before it
// reads it again.
const directoryTTL = time.Hour

// directory returns the CA's directory, read at most directoryTTL ago.
func (a *ACMEIssuer) directory(ctx context.Context) (directory, error) {
	now := a.cfg.Now()
	a.dirMu.Lock()
	dir, at := a.dir, a.dirAt
	a.dirMu.Unlock()
	if !at.IsZero() && now.Sub(at) < directoryTTL && now.Sub(at) >= 0 {
		return dir, nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.reqTimeout)
	defer cancel()
	if err := getJSON(ctx, a.httpClient(ctx), a.cfg.Directory, &dir, nil); err != nil {
		return directory{}, fmt.Errorf("directory: %w", err)
	}
	a.dirMu.Lock()
	a.dir, a.dirAt = dir, now
	a.dirMu.Unlock()
	return dir, nil
}

// obtain runs one order with acct.
func (a *ACMEIssuer) obtain(ctx context.Context, acct *account, o Order) (*store.Certificate, error) {
	log := a.log.With("name", o.Name)
	key, keyPEM, pk, err := a.certKey(ctx, log, o)
	if err != nil {
		return nil, err
	}
	req := certificate.ObtainRequest{
		Domains:        o.Names(),
		PrivateKey:     key,
		Bundle:         true,
		PreferredChain: a.cfg.PreferredChain,
		Profile:        o.Profile,
	}
	// lego leaves "replaces" out for a CA whose directory does not
	// advertise renewal information (RFC 9773 section 5).
	if !o.NoReplaces {
		req.ReplacesCertID = replacesID(o.Replaces)
	}
	start := time.Now()
	res, err := bounded(ctx, func() (*certificate.Resource, error) {
		client, err := a.newLegoClient(ctx, acct)
		if err != nil {
			return nil, err
		}
		if err := a.setSolvers(ctx, client, o.Challenge, o.ViaZone); err != nil {
			return nil, err
		}
		return client.Certificate.Obtain(req)
	}, func(res *certificate.Resource, err error) {
		if err == nil && res != nil {
			log.Warn("certificate issued after its order was given up; discarded", "certificate_url", res.CertURL)
			return
		}
		log.Debug("lego stopped after its order was given up", "error", err)
	})
	if err != nil {
		return nil, err
	}
	cert, err := store.ParseCertificate(res.Certificate, keyPEM, a.cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("certificate from the CA: %w", err)
	}
	if pk != nil {
		if err := a.poolKeyKept(ctx, pk); err != nil {
			log.Warn("certificate issued on a pool key no longer usable; discarded", "serial", cert.Serial, "key_id", pk.ID, "error", err)
			return nil, err
		}
	}
	cert.Source, cert.Origin = store.SourceACME, a.cfg.Directory
	cert.RenewAt = a.renewAt(ctx, cert)
	log.Debug("order complete", "serial", cert.Serial, "profile", o.Profile,
		"renew_at", cert.RenewAt, "took", time.Since(start).Round(time.Millisecond))
	return cert, nil
}

// certKey returns the private key for o's certificate and its PEM, and
// the pool slot's record when the key is a pool key: the
// key of o's slot of the pool when KeyPool is set (poolKey), the key of
// o.Replaces when ReuseKey is set and that key is of the configured type,
// else a new one. It is the one place that decides an order's key.
func (a *ACMEIssuer) certKey(ctx context.Context, log *slog.Logger, o Order) (crypto.Signer, []byte, *store.PoolKey, error) {
	if a.pool != nil {
		key, pk, err := a.poolKey(ctx, log, o.Name)
		if err != nil {
			return nil, nil, nil, err
		}
		return key, pk.KeyPEM, pk, nil
	}
	prev := o.Replaces
	if a.cfg.ReuseKey && prev != nil && len(prev.KeyPEM) > 0 {
		key, err := store.ParseKey(prev.KeyPEM)
		switch {
		case err != nil:
			log.Warn("cannot reuse the previous key; making a new one", "error", err)
		case store.KeyTypeOf(key.Public()) != a.cfg.KeyType:
			log.Info("previous key is not of the configured type; making a new one",
				"key_type", string(store.KeyTypeOf(key.Public())), "want", string(a.cfg.KeyType))
		default:
			keyPEM, err := encodeKey(key)
			return key, keyPEM, nil, err
		}
	}
	key, err := generateKey(a.cfg.KeyType)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certificate key: %w", err)
	}
	keyPEM, err := encodeKey(key)
	return key, keyPEM, nil, err
}

// replacesID returns the ARI certificate identifier (RFC 9773 section 4.1)
// of c's leaf, "" when there is no c or its chain does not parse.
func replacesID(c *store.Certificate) string {
	if c == nil {
		return ""
	}
	block, _ := pem.Decode(c.ChainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return ""
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return ""
	}
	id, err := certificate.MakeARICertID(leaf)
	if err != nil {
		return ""
	}
	return id
}

// checkOrderName refuses what cannot be ordered with challenge ch: an
// empty name, and a wildcard with anything but dns-01 (RFC 8555 section
// 7.1.3; Let's Encrypt validates wildcards with dns-01 only).
func checkOrderName(name string, ch store.ChallengeType) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case strings.Contains(name, "*") && ch != store.ChallengeDNS01:
		return fmt.Errorf("%s: a wildcard name needs the dns-01 challenge, not %s", name, challengeOrDefault(ch))
	}
	return nil
}

// challengeOrDefault returns ch, or http-01 for "".
func challengeOrDefault(ch store.ChallengeType) store.ChallengeType {
	if ch == "" {
		return store.ChallengeHTTP01
	}
	return ch
}

// isProblem reports whether err holds an ACME problem of the given short
// type ("accountDoesNotExist").
func isProblem(err error, short string) bool {
	var p *acme.ProblemDetails
	return errors.As(err, &p) && p != nil && p.Type == problemNS+short
}

// legoKeyType maps a KeyType to lego's; lego only uses it when no key is
// given, which the issuer never does.
func legoKeyType(k store.KeyType) certcrypto.KeyType {
	switch k {
	case store.KeyECDSAP384:
		return certcrypto.EC384
	case store.KeyRSA2048:
		return certcrypto.RSA2048
	case store.KeyRSA4096:
		return certcrypto.RSA4096
	}
	return certcrypto.EC256
}

// bounded runs f, a lego call that ignores contexts, in a goroutine and
// returns its result, or an error wrapping ctx's cause as soon as ctx is
// done. In that case f runs on until lego returns, and late (if not nil)
// receives what it returns. A panic in f becomes an error.
func bounded[T any](ctx context.Context, f func() (T, error), late func(T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				r.err = fmt.Errorf("lego panicked: %v", p)
			}
			done <- r
		}()
		r.v, r.err = f()
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		if late != nil {
			go func() {
				r := <-done
				late(r.v, r.err)
			}()
		}
		var zero T
		return zero, fmt.Errorf("order given up: %w", context.Cause(ctx))
	}
}

// httpClient returns a client for lego whose requests end when ctx does.
// lego wraps the client's transport (to refuse plain HTTP), so every lego
// client gets a new http.Client.
func (a *ACMEIssuer) httpClient(ctx context.Context) *http.Client {
	return &http.Client{
		Timeout:   a.reqTimeout,
		Transport: &ctxTransport{ctx: ctx, base: a.transport},
	}
}

// ctxTransport ends every request when ctx ends, on top of the request's
// own context (which carries the client's timeout).
type ctxTransport struct {
	ctx  context.Context
	base http.RoundTripper
}

func (t *ctxTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := context.Cause(t.ctx); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancelCause(req.Context())
	stop := context.AfterFunc(t.ctx, func() { cancel(context.Cause(t.ctx)) })
	release := func() {
		stop()
		cancel(nil)
	}
	resp, err := t.base.RoundTrip(req.WithContext(rctx))
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

// releasingBody releases the request's context when the body is closed.
type releasingBody struct {
	io.ReadCloser
	release func()
}

func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}
