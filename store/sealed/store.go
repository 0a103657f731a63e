package sealed

import (
	"context"
	"time"

	"github.com/certserver/certserver/store"
)

// Store is a store.Store whose private keys are sealed at rest: it seals
// Certificate.KeyPEM and Account.KeyPEM under its keyring's current key
// before every write to the store it wraps, and opens them after every
// read. Keys stored plain (before sealing was turned on) read as they are
// until Rotate seals them. A key that cannot be opened is an error
// wrapping ErrOpen, naming the record and the key ID; the record is never
// returned with another key.
//
// Everything else passes through unchanged. The wrapped store's optional
// abilities (store.ChangeFeed, store.Replica, store.ReplicationSource,
// store.KeyRewriter, …) are reached through Unwrap with store.As: they
// see keys as stored, sealed, which is what a copy of the store carries.
//
// Its methods are safe for concurrent use.
type Store struct {
	inner store.Store
	kr    *Keyring
}

var (
	_ store.Store   = (*Store)(nil)
	_ store.Wrapper = (*Store)(nil)
)

// Wrap returns st with its private keys sealed under kr. A nil kr seals
// nothing: keys are written plain, and a sealed key read from st is an
// error saying that no key-encryption key is configured (never a sealed
// blob served as a key), so every store is wrapped, with a keyring or not.
func Wrap(st store.Store, kr *Keyring) *Store {
	return &Store{inner: st, kr: kr}
}

// Unwrap implements store.Wrapper.
func (s *Store) Unwrap() store.Store { return s.inner }

// Keyring returns the keyring the store seals with, nil for none.
func (s *Store) Keyring() *Keyring { return s.kr }

// seal returns key sealed for the record of kind and id: as it is without
// a keyring, or when empty (the store refuses it). A key that is already
// sealed is opened first, so that it is sealed under the current key
// and for this record (or refused, when it is not this record's).
func (s *Store) seal(kind store.KeyKind, id string, key []byte) ([]byte, error) {
	if len(key) == 0 {
		return key, nil
	}
	if IsSealed(key) {
		plain, err := s.kr.Open(kind, id, key)
		if err != nil {
			return nil, err
		}
		key = plain
	}
	if s.kr == nil {
		return key, nil
	}
	return s.kr.Seal(kind, id, key)
}

// openCert returns c with its key opened, as a copy.
func (s *Store) openCert(c *store.Certificate) (*store.Certificate, error) {
	key, err := s.kr.Open(store.KeyOfCertificate, c.ID, c.KeyPEM)
	if err != nil {
		return nil, err
	}
	out := *c
	out.KeyPEM = key
	return &out, nil
}

// PutCertificate implements store.Store, sealing c's key (c itself is not
// changed).
func (s *Store) PutCertificate(ctx context.Context, c *store.Certificate) error {
	if c == nil {
		return s.inner.PutCertificate(ctx, c)
	}
	sc, err := s.sealCert(c)
	if err != nil {
		return err
	}
	return s.inner.PutCertificate(ctx, sc)
}

func (s *Store) sealCert(c *store.Certificate) (*store.Certificate, error) {
	key, err := s.seal(store.KeyOfCertificate, c.ID, c.KeyPEM)
	if err != nil {
		return nil, err
	}
	out := *c
	out.KeyPEM = key
	return &out, nil
}

// PutCertificates implements store.Store, sealing every key (cs and its
// certificates are not changed).
func (s *Store) PutCertificates(ctx context.Context, cs []*store.Certificate) error {
	sealed := make([]*store.Certificate, len(cs))
	for i, c := range cs {
		if c == nil {
			continue // the inner store names it
		}
		sc, err := s.sealCert(c)
		if err != nil {
			return err
		}
		sealed[i] = sc
	}
	return s.inner.PutCertificates(ctx, sealed)
}

// GetCertificate implements store.Store.
func (s *Store) GetCertificate(ctx context.Context, id string) (*store.Certificate, error) {
	c, err := s.inner.GetCertificate(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.openCert(c)
}

// LookupCertificate implements store.Store.
func (s *Store) LookupCertificate(ctx context.Context, name string) (*store.Certificate, error) {
	c, err := s.inner.LookupCertificate(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.openCert(c)
}

// ListCertificates implements store.Store. A record whose key cannot be
// opened is listed with a nil KeyPEM rather than failing the whole list
// (the inventory and the health check list certificates without using
// their keys); GetCertificate and LookupCertificate of it return the
// error, and Rotate reports it.
func (s *Store) ListCertificates(ctx context.Context, after string, limit int) ([]*store.Certificate, error) {
	cs, err := s.inner.ListCertificates(ctx, after, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*store.Certificate, len(cs))
	for i, c := range cs {
		oc, err := s.openCert(c)
		if err != nil {
			cp := *c
			cp.KeyPEM = nil
			oc = &cp
		}
		out[i] = oc
	}
	return out, nil
}

// DeleteCertificate implements store.Store.
func (s *Store) DeleteCertificate(ctx context.Context, id string) error {
	return s.inner.DeleteCertificate(ctx, id)
}

// PutAccount implements store.Store, sealing a's key (a itself is not
// changed).
func (s *Store) PutAccount(ctx context.Context, a *store.Account) error {
	if a == nil {
		return s.inner.PutAccount(ctx, a)
	}
	key, err := s.seal(store.KeyOfAccount, a.ID, a.KeyPEM)
	if err != nil {
		return err
	}
	out := *a
	out.KeyPEM = key
	return s.inner.PutAccount(ctx, &out)
}

// GetAccount implements store.Store.
func (s *Store) GetAccount(ctx context.Context, id string) (*store.Account, error) {
	a, err := s.inner.GetAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	key, err := s.kr.Open(store.KeyOfAccount, a.ID, a.KeyPEM)
	if err != nil {
		return nil, err
	}
	out := *a
	out.KeyPEM = key
	return &out, nil
}

// The methods below hold no private key and pass through.

// PutDomain implements store.Store.
func (s *Store) PutDomain(ctx context.Context, d *store.Domain) error {
	return s.inner.PutDomain(ctx, d)
}

// UpdateDomain implements store.Store.
func (s *Store) UpdateDomain(ctx context.Context, name string, fn func(*store.Domain) error) error {
	return s.inner.UpdateDomain(ctx, name, fn)
}

// AddDomains implements store.Store.
func (s *Store) AddDomains(ctx context.Context, ds []*store.Domain) (added, existing int, err error) {
	return s.inner.AddDomains(ctx, ds)
}

// GetDomain implements store.Store.
func (s *Store) GetDomain(ctx context.Context, name string) (*store.Domain, error) {
	return s.inner.GetDomain(ctx, name)
}

// DeleteDomain implements store.Store.
func (s *Store) DeleteDomain(ctx context.Context, name string) error {
	return s.inner.DeleteDomain(ctx, name)
}

// ListDomains implements store.Store.
func (s *Store) ListDomains(ctx context.Context, after string, limit int) ([]*store.Domain, error) {
	return s.inner.ListDomains(ctx, after, limit)
}

// Due implements store.Store.
func (s *Store) Due(ctx context.Context, before time.Time, limit int) ([]store.DueEntry, error) {
	return s.inner.Due(ctx, before, limit)
}

// PutChallenge implements store.Store.
func (s *Store) PutChallenge(ctx context.Context, token, keyAuth string, expires time.Time) error {
	return s.inner.PutChallenge(ctx, token, keyAuth, expires)
}

// GetChallenge implements store.Store.
func (s *Store) GetChallenge(ctx context.Context, token string) (string, error) {
	return s.inner.GetChallenge(ctx, token)
}

// DeleteChallenge implements store.Store.
func (s *Store) DeleteChallenge(ctx context.Context, token string) error {
	return s.inner.DeleteChallenge(ctx, token)
}

// PutRateBuckets implements store.Store.
func (s *Store) PutRateBuckets(ctx context.Context, scope string, bs []store.RateBucket) error {
	return s.inner.PutRateBuckets(ctx, scope, bs)
}

// RateBuckets implements store.Store.
func (s *Store) RateBuckets(ctx context.Context, scope string) ([]store.RateBucket, error) {
	return s.inner.RateBuckets(ctx, scope)
}

// Close implements store.Store: it closes the wrapped store.
func (s *Store) Close() error { return s.inner.Close() }
