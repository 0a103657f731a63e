package dnszone

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"sync"
	"testing"

	"github.com/certserver/certserver/renewer/dnstest"
	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/go-acme/lego/v4/certcrypto"
	"github.com/go-acme/lego/v4/certificate"
	"github.com/go-acme/lego/v4/challenge/dns01"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/registration"
)

// legoUser is the ACME account of the end-to-end test.
type legoUser struct {
	key crypto.PrivateKey
	reg *registration.Resource
}

func (u *legoUser) GetEmail() string                        { return "" }
func (u *legoUser) GetRegistration() *registration.Resource { return u.reg }
func (u *legoUser) GetPrivateKey() crypto.PrivateKey        { return u.key }

// TestPebbleThroughTheZone issues certificates from a real Pebble whose
// validation authority resolves through the tests' DNS server: it holds
// the customers' _acme-challenge CNAMEs and forwards certserver's zone to
// the Server under test, as a resolver follows a delegation. One order
// for a wildcard and its apex validates both values under one label at
// once (where acme-dns's two-record limit breaks), and orders for several
// names run at once, each with its own provider, as the renewer's workers
// do. The issuance wiring (ACMEIssuer, the pre-flight) is the renewer's;
// this checks the zone, the provider and the store between them.
func TestPebbleThroughTheZone(t *testing.T) {
	st := openStore(t)
	z := mustZone(t, "acme.hoster.test")
	zone := startServer(t, Config{Zone: z}, st)
	resolver := dnstest.Start(t, dnstest.Options{})
	resolver.Forward(z.Name(), zone.Addr())
	names := []string{"shop.test", "a.shop2.test", "b.shop2.test", "c.example.test"}
	for _, n := range names {
		resolver.SetCNAME(ChallengeName(n), z.Target(n))
	}
	peb := pebbletest.Start(t, pebbletest.Options{DNS: resolver})

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	user := &legoUser{key: key}
	cfg := lego.NewConfig(user)
	cfg.CADirURL = peb.DirectoryURL
	cfg.HTTPClient = peb.HTTPClient()
	cfg.Certificate.KeyType = certcrypto.EC256
	reg, err := func() (*registration.Resource, error) {
		c, err := lego.NewClient(cfg)
		if err != nil {
			return nil, err
		}
		return c.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: true})
	}()
	if err != nil {
		t.Fatalf("register with Pebble: %v", err)
	}
	user.reg = reg

	// lego keeps its recursive nameservers in a package variable, which
	// dns01.AddRecursiveNameservers sets whenever a provider is set with
	// it: set it once here, before orders run at once (each setting it
	// would race with the others' propagation checks). Its propagation
	// check then asks the tests' resolver, which follows the CNAME into
	// the zone; never the machine's.
	if err := func() error {
		c, err := lego.NewClient(cfg)
		if err != nil {
			return err
		}
		p, err := NewProvider(t.Context(), ProviderConfig{Store: st})
		if err != nil {
			return err
		}
		return c.Challenge.SetDNS01Provider(p, dns01.AddRecursiveNameservers([]string{resolver.Addr()}))
	}(); err != nil {
		t.Fatal(err)
	}

	// obtain runs one order through a client and a provider of its own.
	obtain := func(domains ...string) error {
		own := *cfg
		own.HTTPClient = peb.HTTPClient() // lego wraps its client's transport: one each
		client, err := lego.NewClient(&own)
		if err != nil {
			return err
		}
		p, err := NewProvider(t.Context(), ProviderConfig{Store: st})
		if err != nil {
			return err
		}
		if err := client.Challenge.SetDNS01Provider(p, dns01.DisableAuthoritativeNssPropagationRequirement()); err != nil {
			return err
		}
		res, err := client.Certificate.Obtain(certificate.ObtainRequest{Domains: domains, Bundle: true})
		if err != nil {
			return fmt.Errorf("obtain %v: %w", domains, err)
		}
		for _, d := range domains {
			check := d
			if d[0] == '*' {
				check = "any" + d[1:]
			}
			if err := peb.VerifyChain(t, res.Certificate, check); err != nil {
				return fmt.Errorf("certificate for %v does not verify for %s: %w", domains, check, err)
			}
		}
		return nil
	}

	t.Run("wildcard and apex in one order", func(t *testing.T) {
		if err := obtain("*.shop.test", "shop.test"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("orders at once", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make([]error, len(names)-1)
		for i, n := range names[1:] {
			wg.Go(func() { errs[i] = obtain("*."+n, n) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})
	// Every value was cleaned up: nothing is left under any label.
	v, err := newValues(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if left, err := v.get(t.Context(), Label(n)); err != nil || len(left) > 0 {
			t.Errorf("values left under %s's label after its orders: %q, %v", n, left, err)
		}
	}
}
