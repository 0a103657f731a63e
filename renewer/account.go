package renewer

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/certserver/certserver/store"
	"github.com/go-acme/lego/v4/lego"
	"github.com/go-acme/lego/v4/registration"
)

// AccountID returns the store ID of the ACME account for a CA directory
// and contact e-mail: the first 16 bytes of SHA-256(directory, NUL, email)
// in hex. The same CA and e-mail always give the same account, across
// restarts and hosts.
func AccountID(directory, email string) string {
	sum := sha256.Sum256([]byte(directory + "\x00" + email))
	return hex.EncodeToString(sum[:16])
}

// account is an ACME account in use: its URL (the JWS "kid") and key.
type account struct {
	id    string
	url   string
	email string
	key   crypto.Signer
}

// acmeUser presents an account to lego (registration.User).
type acmeUser struct{ acct *account }

func (u acmeUser) GetEmail() string                 { return u.acct.email }
func (u acmeUser) GetPrivateKey() crypto.PrivateKey { return u.acct.key }
func (u acmeUser) GetRegistration() *registration.Resource {
	if u.acct.url == "" {
		return nil
	}
	return &registration.Resource{URI: u.acct.url}
}

// Account returns the record of the issuer's ACME account, registering it
// with the CA first if the store has none (RFC 8555 section 7.3). KeyPEM is
// left out of the returned record.
func (a *ACMEIssuer) Account(ctx context.Context) (*store.Account, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	if _, err := a.account(ctx); err != nil {
		return nil, err
	}
	rec, err := a.store.GetAccount(ctx, a.accountID)
	if err != nil {
		return nil, fmt.Errorf("read account: %w", err)
	}
	rec.KeyPEM = nil
	return rec, nil
}

// account returns the account to sign orders with. The first call loads it
// from the store; when the store has none it creates a key, stores it, and
// registers it. Registering a key the CA already knows returns the existing
// account (RFC 8555 section 7.3.1), so a registration cut short by a crash
// is finished by the next one with the same key.
//
// On a fleet (a store with store.AccountLocker) the account is the
// fleet's: a host that finds none registered takes the account's
// fleet-wide lock and reads the record again, so that only the first host
// creates and registers it and every other one loads what it stored.
func (a *ACMEIssuer) account(ctx context.Context) (*account, error) {
	if err := a.lockAccount(ctx); err != nil {
		return nil, err
	}
	defer a.unlockAccount()
	if a.acct != nil {
		return a.acct, nil
	}

	rec, err := a.store.GetAccount(ctx, a.accountID)
	if locker, ok := store.As[store.AccountLocker](a.store); ok && (errors.Is(err, store.ErrNotFound) || err == nil && rec.URL == "") {
		unlock, lerr := locker.LockAccount(ctx, a.accountID)
		if lerr != nil {
			return nil, fmt.Errorf("account: %w", lerr)
		}
		defer unlock()
		rec, err = a.store.GetAccount(ctx, a.accountID)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		key, err := generateKey(store.KeyECDSAP256)
		if err != nil {
			return nil, fmt.Errorf("account key: %w", err)
		}
		keyPEM, err := encodeKey(key)
		if err != nil {
			return nil, err
		}
		rec = &store.Account{
			ID:        a.accountID,
			Directory: a.cfg.Directory,
			Email:     a.cfg.Email,
			KeyPEM:    keyPEM,
			CreatedAt: a.cfg.Now(),
		}
		// The key is stored before it is registered: a crash in between
		// leaves a key that the next start registers.
		if err := a.store.PutAccount(ctx, rec); err != nil {
			return nil, fmt.Errorf("store account: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("read account: %w", err)
	}
	key, err := store.ParseKey(rec.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", rec.ID, err)
	}
	acct := &account{id: rec.ID, url: rec.URL, email: rec.Email, key: key}
	if acct.url == "" {
		if err := a.register(ctx, acct, rec); err != nil {
			return nil, err
		}
	}
	a.acct = acct
	return acct, nil
}

// reregister registers the key of stale again after the CA said its URL
// names no account (accountDoesNotExist: the CA lost its state, as Pebble
// does on restart) and returns the account to use from now on. On a
// fleet it does so under the account's fleet-wide lock, and a host that
// finds the record's URL changed since it loaded it (another host
// registered again first) takes that URL instead.
func (a *ACMEIssuer) reregister(ctx context.Context, stale *account) (*account, error) {
	if err := a.lockAccount(ctx); err != nil {
		return nil, err
	}
	defer a.unlockAccount()
	if a.acct != stale && a.acct != nil {
		return a.acct, nil // another order did it already
	}
	locker, fleet := store.As[store.AccountLocker](a.store)
	if fleet {
		unlock, err := locker.LockAccount(ctx, a.accountID)
		if err != nil {
			return nil, fmt.Errorf("account: %w", err)
		}
		defer unlock()
	}
	rec, err := a.store.GetAccount(ctx, a.accountID)
	if err != nil {
		return nil, fmt.Errorf("read account: %w", err)
	}
	if fleet && rec.URL != "" && rec.URL != stale.url {
		key, err := store.ParseKey(rec.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("account %s: %w", rec.ID, err)
		}
		a.acct = &account{id: rec.ID, url: rec.URL, email: rec.Email, key: key}
		a.log.Info("the account was registered again by another host of the fleet", "account", rec.URL)
		return a.acct, nil
	}
	acct := &account{id: stale.id, email: stale.email, key: stale.key}
	a.log.Warn("the CA does not know the account; registering it again", "account", stale.url)
	if err := a.register(ctx, acct, rec); err != nil {
		return nil, err
	}
	a.acct = acct
	return acct, nil
}

// register registers acct's key with the CA, sets acct.url, and stores the
// URL in rec. The caller holds the account lock.
func (a *ACMEIssuer) register(ctx context.Context, acct *account, rec *store.Account) error {
	reg, err := bounded(ctx, func() (*registration.Resource, error) {
		client, err := a.newLegoClient(ctx, acct)
		if err != nil {
			return nil, err
		}
		if eab := a.cfg.EAB; eab != nil {
			return client.Registration.RegisterWithExternalAccountBinding(registration.RegisterEABOptions{
				TermsOfServiceAgreed: a.cfg.AgreeTerms,
				Kid:                  eab.KeyID,
				HmacEncoded:          eab.HMACKey,
			})
		}
		return client.Registration.Register(registration.RegisterOptions{TermsOfServiceAgreed: a.cfg.AgreeTerms})
	}, nil)
	if err != nil {
		return fmt.Errorf("register account: %w", err)
	}
	if reg == nil || reg.URI == "" {
		return errors.New("register account: the CA returned no account URL")
	}
	acct.url = reg.URI
	rec.URL = reg.URI
	if err := a.store.PutAccount(ctx, rec); err != nil {
		return fmt.Errorf("store account: %w", err)
	}
	a.log.Info("account registered", "account", reg.URI, "email", a.cfg.Email)
	return nil
}

// lockAccount takes the account lock, or gives up when ctx is done.
func (a *ACMEIssuer) lockAccount(ctx context.Context) error {
	select {
	case a.acctLock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for account: %w", context.Cause(ctx))
	}
}

func (a *ACMEIssuer) unlockAccount() { <-a.acctLock }

// newLegoClient returns a lego client for acct whose requests end when ctx
// does. It fetches the CA's directory.
func (a *ACMEIssuer) newLegoClient(ctx context.Context, acct *account) (*lego.Client, error) {
	return lego.NewClient(&lego.Config{
		CADirURL:   a.cfg.Directory,
		User:       acmeUser{acct: acct},
		UserAgent:  a.cfg.UserAgent,
		HTTPClient: a.httpClient(ctx),
		Certificate: lego.CertificateConfig{
			KeyType: legoKeyType(a.cfg.KeyType),
			Timeout: finalizeTimeout,
		},
	})
}
