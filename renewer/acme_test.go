package renewer

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
	"github.com/go-acme/lego/v4/challenge"
)

// The integration tests in this file run the real Pebble (pebbletest) with
// a DNS server of their own, a real Badger store, and an HTTP-01 responder
// that reads the store, as certserver's challenge endpoint does behind
// nginx's port 80.

var loopback = netip.MustParseAddr("127.0.0.1")

// acmeEnv is one Pebble with its DNS, a store, and the responder.
type acmeEnv struct {
	ca    *pebbletest.Server
	store *store.Badger

	delay atomic.Int64 // nanoseconds the responder waits before answering

	mu     sync.Mutex
	tokens map[string]bool // tokens the CA asked the responder for
}

func newACMEEnv(t *testing.T, opts pebbletest.Options) *acmeEnv {
	t.Helper()
	env := &acmeEnv{store: badgerStore(t), tokens: map[string]bool{}}
	opts.HTTPPort = pebbletest.StartResponder(t, func(ctx context.Context, token string) (string, error) {
		env.mu.Lock()
		env.tokens[token] = true
		env.mu.Unlock()
		select {
		case <-time.After(time.Duration(env.delay.Load())):
		case <-ctx.Done():
			return "", ctx.Err()
		}
		return env.store.GetChallenge(ctx, token)
	})
	env.ca = pebbletest.Start(t, opts)
	return env
}

// pointHere makes names resolve to 127.0.0.1, where the responder listens.
func (env *acmeEnv) pointHere(names ...string) {
	for _, n := range names {
		env.ca.DNS.SetA(n, loopback)
	}
}

// askedTokens returns the tokens the CA fetched so far.
func (env *acmeEnv) askedTokens() []string {
	env.mu.Lock()
	defer env.mu.Unlock()
	var ts []string
	for tok := range env.tokens {
		ts = append(ts, tok)
	}
	return ts
}

// issuer returns a new ACMEIssuer on env's CA and store; edit adjusts the
// configuration.
func (env *acmeEnv) issuer(t *testing.T, edit func(*ACMEConfig)) *ACMEIssuer {
	t.Helper()
	cfg := ACMEConfig{
		Directory:  env.ca.DirectoryURL,
		Email:      "ops@example.test",
		AgreeTerms: true,
		HTTPClient: env.ca.HTTPClient(),
		Timeout:    time.Minute,
	}
	if edit != nil {
		edit(&cfg)
	}
	is, err := NewACMEIssuer(cfg, env.store, testLogger(t))
	if err != nil {
		t.Fatalf("NewACMEIssuer: %v", err)
	}
	return is
}

// lastOrderFor returns the last order the CA received for name.
func lastOrderFor(env *acmeEnv, name string) pebbletest.Order {
	var last pebbletest.Order
	for _, o := range env.ca.Orders() {
		if slices.Contains(o.Names, name) {
			last = o
		}
	}
	return last
}

func leafOf(t *testing.T, c *store.Certificate) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(c.ChainPEM)
	if block == nil {
		t.Fatal("chain holds no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func TestObtain(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	const name = "www.example.test"
	env.pointHere(name)
	is := env.issuer(t, nil)

	start := time.Now()
	// Pebble picks a random profile for orders that name none.
	cert, err := is.Obtain(t.Context(), Order{Name: name, Profile: "default"})
	if err != nil {
		t.Fatalf("Obtain: %v", err)
	}
	t.Logf("obtained in %s", time.Since(start).Round(time.Millisecond))

	if err := env.ca.VerifyChain(t, cert.ChainPEM, name); err != nil {
		t.Errorf("chain does not verify against Pebble's root: %v", err)
	}
	if err := env.ca.VerifyChain(t, cert.ChainPEM, "other.example.test"); err == nil {
		t.Error("chain verifies for a name it does not hold")
	}
	if cert.ID != name || !slices.Equal(cert.Names, []string{name}) {
		t.Errorf("ID %q Names %q, want %q", cert.ID, cert.Names, name)
	}
	if cert.Source != store.SourceACME || cert.Origin != env.ca.DirectoryURL {
		t.Errorf("Source %q Origin %q, want acme and %s", cert.Source, cert.Origin, env.ca.DirectoryURL)
	}
	if cert.KeyType != store.KeyECDSAP256 {
		t.Errorf("KeyType %q, want %s", cert.KeyType, store.KeyECDSAP256)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < 89*24*time.Hour || life > 90*24*time.Hour {
		t.Errorf("lifetime %s, want Pebble's default profile, 90 days", life)
	}
	// Pebble's ARI window is a day either side of two thirds of the
	// lifetime.
	ideal := cert.NotAfter.Add(-30 * 24 * time.Hour)
	if cert.RenewAt.Before(ideal.Add(-25*time.Hour)) || cert.RenewAt.After(ideal.Add(25*time.Hour)) {
		t.Errorf("RenewAt = %s, want within a day of %s (Pebble's ARI window)", cert.RenewAt, ideal)
	}
	if n := env.ca.OrdersFor(name); n != 1 {
		t.Errorf("orders for %s = %d, want 1", name, n)
	}
	if o := env.ca.Orders()[0]; o.Profile != "default" || o.Replaces != "" || o.Status != http.StatusCreated {
		t.Errorf("order = %+v, want profile default, no replaces, 201", o)
	}

	// The certificate goes into the store as it is.
	if err := env.store.PutCertificate(t.Context(), cert); err != nil {
		t.Fatalf("PutCertificate: %v", err)
	}

	// Every token the CA fetched is gone from the store.
	tokens := env.askedTokens()
	if len(tokens) == 0 {
		t.Fatal("the CA fetched no token from the responder")
	}
	for _, tok := range tokens {
		if _, err := env.store.GetChallenge(t.Context(), tok); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token %s still in the store after the order: err = %v", tok, err)
		}
	}
}

// TestAccountNeedsTerms: Pebble, like Let's Encrypt, registers no account
// that does not agree to its terms. The failure is permanent and orders
// nothing; the key stays in the store and is registered once the terms are
// agreed to.
// TestAccountUnknownToCA: the CA lost the account (Pebble forgets
// everything when it restarts). The order fails with accountDoesNotExist,
// the issuer registers the stored key again and the order goes through.
func TestObtainFailures(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{BlockedDomains: []string{"blocked.test"}})
	env.pointHere("refused.blocked.test", "limited.example.test", "down.example.test", "slow.example.test")
	is := env.issuer(t, nil)

	tests := []struct {
		desc      string
		name      string
		setup     func()
		kind      ErrorKind
		problem   string        // short problem type, "" for none
		detail    string        // substring of the detail, in the CA's words
		wait      time.Duration // RetryAfter
		orders    int           // newOrder requests for the name
		ctxCancel bool
	}{
		{
			desc:    "name that does not resolve",
			name:    "nx.example.test", // no records: NXDOMAIN
			kind:    KindPermanent,
			problem: "connection",
			detail:  "nx.example.test",
			orders:  1,
		},
		{
			desc:    "name the CA refuses",
			name:    "refused.blocked.test",
			kind:    KindPermanent,
			problem: "rejectedIdentifier",
			detail:  "refused.blocked.test",
			orders:  1,
		},
		{
			desc: "responder without the token",
			name: "elsewhere.example.test",
			setup: func() {
				// Points at an address where nothing answers HTTP.
				env.ca.DNS.SetA("elsewhere.example.test", netip.MustParseAddr("127.0.0.2"))
			},
			kind:    KindPermanent,
			problem: "connection",
			orders:  1,
		},
		{
			desc: "rate limited",
			name: "limited.example.test",
			setup: func() {
				env.ca.FailNewOrders(1, pebbletest.Fault{Status: http.StatusTooManyRequests,
					Type: "urn:ietf:params:acme:error:rateLimited", Detail: "too many certificates for this name", RetryAfter: "120"})
			},
			kind:    KindRateLimited,
			problem: "rateLimited",
			detail:  "too many certificates for this name",
			wait:    2 * time.Minute,
			orders:  1,
		},
		{
			desc: "CA down behind a load balancer",
			name: "down.example.test",
			setup: func() {
				env.ca.FailNewOrders(1, pebbletest.Fault{Status: http.StatusBadGateway, Detail: "<html>bad gateway</html>"})
			},
			kind:   KindTransient,
			detail: "bad gateway",
			orders: 1,
		},
		{
			desc:   "wildcard",
			name:   "*.example.test",
			kind:   KindPermanent,
			detail: "dns-01",
			orders: 0,
		},
		{
			desc:      "context already done",
			name:      "slow.example.test",
			ctxCancel: true,
			kind:      KindTransient,
			detail:    "context canceled",
			orders:    0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			ctx := t.Context()
			if tc.ctxCancel {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			cert, err := is.Obtain(ctx, Order{Name: tc.name})
			if err == nil {
				t.Fatalf("Obtain = %v, want an error", cert.Serial)
			}
			var ae *ACMEError
			if !errors.As(err, &ae) {
				t.Fatalf("error %T %v is not an *ACMEError", err, err)
			}
			if ae.Kind != tc.kind || ae.Permanent() != (tc.kind == KindPermanent) {
				t.Errorf("kind %s (Permanent %v), want %s: %v", ae.Kind, ae.Permanent(), tc.kind, err)
			}
			if got := shortProblem(ae.Problem); got != tc.problem {
				t.Errorf("problem %q, want %q: %v", ae.Problem, tc.problem, err)
			}
			if !strings.Contains(ae.Detail, tc.detail) || !strings.Contains(err.Error(), ae.Detail) {
				t.Errorf("detail %q, want it to contain %q and to be in the message %q", ae.Detail, tc.detail, err)
			}
			if ae.RetryAfter() != tc.wait {
				t.Errorf("RetryAfter %s, want %s", ae.RetryAfter(), tc.wait)
			}
			if got := env.ca.OrdersFor(tc.name); got != tc.orders {
				t.Errorf("orders for %s = %d, want %d", tc.name, got, tc.orders)
			}
			t.Logf("LastError would read: %s", err)
		})
	}
	for _, tok := range env.askedTokens() {
		if _, err := env.store.GetChallenge(t.Context(), tok); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token %s left in the store after a failed order: %v", tok, err)
		}
	}
}

// TestObtainGivesUp: an order that outlasts the issuer's Timeout returns a
// transient error at the timeout; lego, left running, stops soon after and
// removes its challenge token.
func TestObtainGivesUp(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	const name = "slow.example.test"
	env.pointHere(name)
	// The account is registered with the default timeout, so that only the
	// order meets the short one (registering within 500 ms is not certain on
	// a loaded machine); the short-timeout issuer reads it from the store.
	if _, err := env.issuer(t, nil).Account(t.Context()); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	is := env.issuer(t, func(c *ACMEConfig) { c.Timeout = 500 * time.Millisecond })
	is.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("issuer log:\n%s", logs.String())
		}
	})
	// The responder answers long after any bound below: the order can only
	// end by its timeout.
	const responderDelay = 5 * time.Minute
	env.delay.Store(int64(responderDelay))

	start := time.Now()
	_, err := is.Obtain(t.Context(), Order{Name: name})
	took := time.Since(start)
	var ae *ACMEError
	if !errors.As(err, &ae) || ae.Kind != KindTransient || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Obtain = %v, want a transient error wrapping context.DeadlineExceeded", err)
	}
	if took >= responderDelay {
		t.Errorf("Obtain returned after %s, want about the 500ms timeout, before the responder's %s", took, responderDelay)
	}

	// lego, left running, fails its next request at once and cleans up;
	// then the issuer logs that it stopped. Every token Pebble asked for
	// (none when the timeout came before lego accepted the challenge) is
	// gone by then.
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(logs.String(), "lego stopped after its order was given up") {
		if time.Now().After(deadline) {
			t.Fatalf("lego still running %s after the order was given up", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond)
	}
	tokens := env.askedTokens()
	for _, tok := range tokens {
		if _, err := env.store.GetChallenge(t.Context(), tok); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("token %s still in the store after lego stopped: %v", tok, err)
		}
	}
	t.Logf("lego stopped %s after the start of the order; %d tokens asked for, all removed", time.Since(start).Round(time.Millisecond), len(tokens))
}

func TestObtainOptions(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})

	t.Run("shortlived profile", func(t *testing.T) {
		t.Parallel()
		const name = "short.example.test"
		env.pointHere(name)
		cert, err := env.issuer(t, nil).Obtain(t.Context(), Order{Name: name, Profile: "shortlived"})
		if err != nil {
			t.Fatalf("Obtain: %v", err)
		}
		if life := cert.NotAfter.Sub(cert.NotBefore); life > pebbletest.ShortLivedValidity || life < pebbletest.ShortLivedValidity-2*time.Second {
			t.Errorf("lifetime %s, want the shortlived profile's %s", life, pebbletest.ShortLivedValidity)
		}
		if last := lastOrderFor(env, name); last.Profile != "shortlived" {
			t.Errorf("order asked for profile %q, want shortlived", last.Profile)
		}
	})

	t.Run("unknown profile", func(t *testing.T) {
		t.Parallel()
		const name = "noprofile.example.test"
		env.pointHere(name)
		_, err := env.issuer(t, nil).Obtain(t.Context(), Order{Name: name, Profile: "nonesuch"})
		var ae *ACMEError
		if !errors.As(err, &ae) || !ae.Permanent() || shortProblem(ae.Problem) != "invalidProfile" {
			t.Errorf("Obtain with an unknown profile: %v, want a permanent invalidProfile error", err)
		}
	})

	tests := []struct {
		desc     string
		keyType  store.KeyType
		reuse    bool
		sameKey  bool
		wantType store.KeyType
	}{
		{desc: "new key per order", keyType: store.KeyECDSAP256, wantType: "ecdsa-p256"},
		{desc: "key reused", keyType: store.KeyECDSAP256, reuse: true, sameKey: true, wantType: "ecdsa-p256"},
		{desc: "rsa 2048", keyType: store.KeyRSA2048, reuse: true, sameKey: true, wantType: "rsa2048"},
		{desc: "p384", keyType: store.KeyECDSAP384, wantType: "ecdsa-p384"},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			name := []string{"k0.example.test", "k1.example.test", "k2.example.test", "k3.example.test"}[i]
			env.pointHere(name)
			is := env.issuer(t, func(c *ACMEConfig) { c.KeyType, c.ReuseKey = tc.keyType, tc.reuse })
			// The renewal must name the first certificate as replaced:
			// one that Pebble could not find (pebbleLosesSerial, about
			// one in 256) is ordered again.
			var first *store.Certificate
			for try := 0; first == nil || pebbleLosesSerial(t, first); try++ {
				if try == 10 {
					t.Fatalf("10 certificates in a row that Pebble cannot find by their ARI identifier")
				}
				var err error
				if first, err = is.Obtain(t.Context(), Order{Name: name}); err != nil {
					t.Fatalf("first Obtain: %v", err)
				}
			}
			second, err := is.Obtain(t.Context(), Order{Name: name, Replaces: first})
			if err != nil {
				t.Fatalf("renewal: %v", err)
			}
			if second.KeyType != tc.wantType {
				t.Errorf("KeyType %q, want %q", second.KeyType, tc.wantType)
			}
			same := leafOf(t, first).PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(leafOf(t, second).PublicKey)
			if same != tc.sameKey {
				t.Errorf("renewal kept the key: %v, want %v", same, tc.sameKey)
			}
			if first.Serial == second.Serial {
				t.Error("renewal returned the same certificate")
			}
			if last := lastOrderFor(env, name); last.Replaces != replacesID(first) || last.Replaces == "" {
				t.Errorf("renewal order replaces %q, want the first certificate's ARI ID %q", last.Replaces, replacesID(first))
			}
		})
	}
}

func TestObtainConcurrently(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	is := env.issuer(t, nil)
	names := []string{"c1.example.test", "c2.example.test", "c3.example.test", "c4.example.test"}
	env.pointHere(names...)
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() {
			cert, err := is.Obtain(t.Context(), Order{Name: n})
			if err != nil {
				t.Errorf("Obtain %s: %v", n, err)
				return
			}
			if err := env.ca.VerifyChain(t, cert.ChainPEM, n); err != nil {
				t.Errorf("%s: %v", n, err)
			}
		})
	}
	wg.Wait()
	if n := env.ca.Requests("newAccount"); n != 1 {
		t.Errorf("newAccount requests = %d, want 1 for concurrent first orders", n)
	}
}

func TestNewACMEIssuerRefusesBadConfig(t *testing.T) {
	st := badgerStore(t)
	log := testLogger(t)
	good := ACMEConfig{Directory: "https://ca.example.test/dir"}
	tests := []struct {
		desc  string
		cfg   ACMEConfig
		store store.Store
		log   *slog.Logger
		want  string
	}{
		{desc: "nil store", cfg: good, log: log, want: "nil store"},
		{desc: "nil logger", cfg: good, store: st, want: "nil logger"},
		{desc: "no directory", store: st, log: log, want: "not an https URL"},
		{desc: "plain http directory", cfg: ACMEConfig{Directory: "http://ca.example.test/dir"}, store: st, log: log, want: "not an https URL"},
		{desc: "unknown key type", cfg: ACMEConfig{Directory: good.Directory, KeyType: "dsa"}, store: st, log: log, want: "unknown key type"},
		{desc: "key pool with reuse_key", cfg: ACMEConfig{Directory: good.Directory, ReuseKey: true, KeyPool: &KeyPool{}}, store: st, log: log, want: "exclude each other"},
		{desc: "half an EAB", cfg: ACMEConfig{Directory: good.Directory, EAB: &ExternalAccount{KeyID: "kid"}}, store: st, log: log, want: "external account"},
		{desc: "unknown challenge type", cfg: ACMEConfig{Directory: good.Directory, Challenges: []ChallengeType{"dns-01"}}, store: st, log: log, want: `unknown challenge type "dns-01"`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var st store.Store
			if tc.store != nil {
				st = tc.store
			}
			_, err := NewACMEIssuer(tc.cfg, st, tc.log)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewACMEIssuer: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestEABWithPebble: a CA that requires external account binding (as
// ZeroSSL and Google Trust Services do) refuses an account without one,
// permanently and in its own words, and one with a wrong MAC key; with the
// key identifier and MAC key it gave, the account registers and orders.

// TestNewACMEIssuerResolversOnce: lego's list of recursive resolvers is
// one per process, read without a lock by every order: the first issuer
// made with resolvers sets it, another with the same list is made, one
// with a different list is refused naming both.
func TestNewACMEIssuerResolversOnce(t *testing.T) {
	ForgetLegoResolvers()
	t.Cleanup(ForgetLegoResolvers)
	st := badgerStore(t)
	provider := func(context.Context) challenge.Provider { return nil }
	issuer := func(resolvers ...string) error {
		_, err := NewACMEIssuer(ACMEConfig{Directory: "https://ca.example.test/dir",
			DNS01: &DNS01{Provider: provider, Resolvers: resolvers}}, st, testLogger(t))
		return err
	}
	if err := issuer("127.0.0.1:5301", "127.0.0.1:5302"); err != nil {
		t.Fatalf("first issuer: %v", err)
	}
	if err := issuer("127.0.0.1:5301", "127.0.0.1:5302"); err != nil {
		t.Errorf("second issuer, same resolvers: %v", err)
	}
	if err := issuer(); err != nil {
		t.Errorf("issuer without resolvers: %v", err)
	}
	err := issuer("127.0.0.1:5303")
	if err == nil || !strings.Contains(err.Error(), `resolvers ["127.0.0.1:5303"] differ from ["127.0.0.1:5301" "127.0.0.1:5302"]`) {
		t.Errorf("issuer with other resolvers: %v, want refused naming both lists", err)
	}
}
