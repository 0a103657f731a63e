package renewer

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/certserver/certserver/renewer/pebbletest"
)

func TestAccountIsRegisteredOnce(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	env.pointHere("one.example.test", "two.example.test")

	first := env.issuer(t, nil)
	if _, err := first.Obtain(t.Context(), Order{Name: "one.example.test"}); err != nil {
		t.Fatalf("first Obtain: %v", err)
	}
	acct, err := first.Account(t.Context())
	if err != nil {
		t.Fatalf("Account: %v", err)
	}
	if acct.ID != AccountID(env.ca.DirectoryURL, "ops@example.test") || acct.URL == "" || acct.KeyPEM != nil {
		t.Errorf("Account = %+v, want the derived ID, a URL and no key", acct)
	}
	stored, err := env.store.GetAccount(t.Context(), acct.ID)
	if err != nil || len(stored.KeyPEM) == 0 || stored.URL != acct.URL {
		t.Fatalf("stored account = %+v, %v", stored, err)
	}

	// A second issuer on the same store (a restart) uses the stored
	// account: no new registration.
	second := env.issuer(t, nil)
	if _, err := second.Obtain(t.Context(), Order{Name: "two.example.test"}); err != nil {
		t.Fatalf("second Obtain: %v", err)
	}
	if n := env.ca.Requests("newAccount"); n != 1 {
		t.Errorf("newAccount requests = %d, want 1", n)
	}
	again, err := second.Account(t.Context())
	if err != nil || again.URL != acct.URL {
		t.Errorf("second issuer's account = %+v, %v; want URL %s", again, err, acct.URL)
	}

	// Another contact e-mail is another account.
	other := env.issuer(t, func(c *ACMEConfig) { c.Email = "other@example.test" })
	otherAcct, err := other.Account(t.Context())
	if err != nil {
		t.Fatalf("Account with another e-mail: %v", err)
	}
	if otherAcct.ID == acct.ID || otherAcct.URL == acct.URL {
		t.Errorf("another e-mail shares the account: %+v", otherAcct)
	}
	if n := env.ca.Requests("newAccount"); n != 2 {
		t.Errorf("newAccount requests = %d, want 2", n)
	}
}

func TestAccountNeedsTerms(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	const name = "terms.example.test"
	env.pointHere(name)

	_, err := env.issuer(t, func(c *ACMEConfig) { c.AgreeTerms = false }).Obtain(t.Context(), Order{Name: name})
	var ae *ACMEError
	if !errors.As(err, &ae) || !ae.Permanent() || shortProblem(ae.Problem) != "userActionRequired" {
		t.Fatalf("Obtain without agreeing to the terms: %v, want a permanent userActionRequired error", err)
	}
	if n := env.ca.OrderCount(); n != 0 {
		t.Errorf("orders = %d, want none", n)
	}
	id := AccountID(env.ca.DirectoryURL, "ops@example.test")
	rec, err := env.store.GetAccount(t.Context(), id)
	if err != nil || rec.URL != "" || len(rec.KeyPEM) == 0 {
		t.Fatalf("stored account after the refusal = %+v, %v; want a key and no URL", rec, err)
	}
	key := string(rec.KeyPEM)

	if _, err := env.issuer(t, nil).Obtain(t.Context(), Order{Name: name}); err != nil {
		t.Fatalf("Obtain after agreeing: %v", err)
	}
	rec, err = env.store.GetAccount(t.Context(), id)
	if err != nil || rec.URL == "" || string(rec.KeyPEM) != key {
		t.Errorf("stored account = URL %q, same key %v (%v); want a URL and the first key", rec.URL, string(rec.KeyPEM) == key, err)
	}
}

func TestAccountUnknownToCA(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	const name = "again.example.test"
	env.pointHere(name)
	if _, err := env.issuer(t, nil).Account(t.Context()); err != nil {
		t.Fatalf("Account: %v", err)
	}
	id := AccountID(env.ca.DirectoryURL, "ops@example.test")
	rec, err := env.store.GetAccount(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	lost := strings.TrimSuffix(env.ca.DirectoryURL, "/dir") + "/my-account/lost"
	rec.URL = lost
	if err := env.store.PutAccount(t.Context(), rec); err != nil {
		t.Fatal(err)
	}

	if _, err := env.issuer(t, nil).Obtain(t.Context(), Order{Name: name}); err != nil {
		t.Fatalf("Obtain with an account the CA does not know: %v", err)
	}
	rec, err = env.store.GetAccount(t.Context(), id)
	if err != nil || rec.URL == lost || rec.URL == "" {
		t.Errorf("stored account URL = %q (%v), want a new one", rec.URL, err)
	}
}

func TestEABWithPebble(t *testing.T) {
	t.Parallel()
	const kid, key = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	env := newACMEEnv(t, pebbletest.Options{EABKeys: map[string]string{kid: key}})
	const name = "eab.example.test"
	env.pointHere(name)
	ctx := context.Background()

	for _, tc := range []struct {
		desc string
		eab  *ExternalAccount
		want string
	}{
		{desc: "no binding", want: "externalAccountRequired"},
		{desc: "no binding, the hint", want: "set eab_kid and eab_hmac_file"},
		{desc: "a wrong MAC key", eab: &ExternalAccount{KeyID: kid, HMACKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, want: "external account binding JWS verification error"},
		{desc: "an unknown key identifier", eab: &ExternalAccount{KeyID: "kid-2", HMACKey: key}, want: "not known to the ACME server"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			is := env.issuer(t, func(c *ACMEConfig) { c.EAB, c.Email = tc.eab, strings.ReplaceAll(tc.desc, " ", "-")+"@example.test" })
			_, err := is.Obtain(ctx, Order{Name: name, Profile: "default"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Obtain = %v, want an error naming %q", err, tc.want)
			}
			var p permanent
			if !errors.As(err, &p) || !p.Permanent() {
				t.Errorf("error %v is not permanent: the account will not register by retrying", err)
			}
		})
	}
	if n := len(env.ca.Orders()); n != 0 {
		t.Fatalf("%d orders reached the CA without an account", n)
	}

	is := env.issuer(t, func(c *ACMEConfig) { c.EAB = &ExternalAccount{KeyID: kid, HMACKey: key} })
	c, err := is.Obtain(ctx, Order{Name: name, Profile: "default"})
	if err != nil {
		t.Fatalf("Obtain with the binding: %v", err)
	}
	if leafOf(t, c).DNSNames[0] != name {
		t.Fatalf("certificate for %v", leafOf(t, c).DNSNames)
	}
	acct, err := is.Account(ctx)
	if err != nil || acct.URL == "" {
		t.Fatalf("account after registering with the binding: %+v, %v", acct, err)
	}
}
