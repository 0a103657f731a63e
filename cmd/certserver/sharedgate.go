package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/postgres"
)

// sharedGate is a fleet host's way to the fleet's database: until the
// database has been opened (serve opens it in the background, so that a
// host started during an outage serves its local copy at once), every
// method answers an error wrapping store.ErrUnavailable, so that the
// admin API answers 503, the follower marks the database down and the
// metrics say so; once it is open, every method is the database's.
type sharedGate struct {
	mu     sync.RWMutex
	db     *postgres.Store
	reason error         // why it is not open yet
	opened chan struct{} // closed when db is set
	tried  chan struct{} // closed when the first attempt to open it ended
	once   sync.Once     // closes tried
}

var (
	_ store.Store             = (*sharedGate)(nil)
	_ store.ReplicationSource = (*sharedGate)(nil)
	_ store.KeyRewriter       = (*sharedGate)(nil)
	_ store.Leaser            = (*sharedGate)(nil)
	_ store.LeaseCounter      = (*sharedGate)(nil)
	_ store.AccountLocker     = (*sharedGate)(nil)
	_ store.RateBucketUpdater = (*sharedGate)(nil)
	_ store.ChallengeLister   = (*sharedGate)(nil)
	_ store.DomainsReader     = (*sharedGate)(nil)
	_ store.RateBucketReader  = (*sharedGate)(nil)
)

func newSharedGate() *sharedGate {
	return &sharedGate{
		reason: fmt.Errorf("the fleet's database: %w (not connected yet)", store.ErrUnavailable),
		opened: make(chan struct{}),
		tried:  make(chan struct{}),
	}
}

// get returns the database, or the error wrapping store.ErrUnavailable
// that says why it is not open yet.
func (g *sharedGate) get() (*postgres.Store, error) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.db == nil {
		return nil, g.reason
	}
	return g.db, nil
}

// notYet records why the database could not be opened yet (an error
// wrapping store.ErrUnavailable): what the gate answers meanwhile.
func (g *sharedGate) notYet(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.db == nil {
		g.reason = err
	}
	g.once.Do(func() { close(g.tried) })
}

// open lets every call through to db from now on. Call it once.
func (g *sharedGate) open(db *postgres.Store) {
	g.mu.Lock()
	g.db = db
	g.mu.Unlock()
	close(g.opened)
	g.once.Do(func() { close(g.tried) })
}

// Opened returns a channel closed once the database is open.
func (g *sharedGate) Opened() <-chan struct{} { return g.opened }

// Tried returns a channel closed once the first attempt to open the
// database has ended, opened or not: the follower starts then, so that a
// normal start does not count the moment before the database is open as
// an outage.
func (g *sharedGate) Tried() <-chan struct{} { return g.tried }

// Close closes the database if it was opened. Call it once nothing uses
// the gate any more.
func (g *sharedGate) Close() error {
	g.mu.RLock()
	db := g.db
	g.mu.RUnlock()
	if db == nil {
		return nil
	}
	return db.Close()
}

func (g *sharedGate) PutCertificate(ctx context.Context, c *store.Certificate) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.PutCertificate(ctx, c)
}

func (g *sharedGate) PutCertificates(ctx context.Context, cs []*store.Certificate) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.PutCertificates(ctx, cs)
}

func (g *sharedGate) GetCertificate(ctx context.Context, id string) (*store.Certificate, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.GetCertificate(ctx, id)
}

func (g *sharedGate) LookupCertificate(ctx context.Context, name string) (*store.Certificate, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.LookupCertificate(ctx, name)
}

func (g *sharedGate) DeleteCertificate(ctx context.Context, id string) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.DeleteCertificate(ctx, id)
}

func (g *sharedGate) ListCertificates(ctx context.Context, after string, limit int) ([]*store.Certificate, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.ListCertificates(ctx, after, limit)
}

func (g *sharedGate) PutDomain(ctx context.Context, d *store.Domain) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.PutDomain(ctx, d)
}

func (g *sharedGate) UpdateDomain(ctx context.Context, name string, fn func(*store.Domain) error) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.UpdateDomain(ctx, name, fn)
}

func (g *sharedGate) AddDomains(ctx context.Context, ds []*store.Domain) (int, int, error) {
	db, err := g.get()
	if err != nil {
		return 0, 0, err
	}
	return db.AddDomains(ctx, ds)
}

func (g *sharedGate) GetDomain(ctx context.Context, name string) (*store.Domain, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.GetDomain(ctx, name)
}

// GetDomains implements store.DomainsReader.
func (g *sharedGate) GetDomains(ctx context.Context, names []string) ([]*store.Domain, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.GetDomains(ctx, names)
}

func (g *sharedGate) DeleteDomain(ctx context.Context, name string) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.DeleteDomain(ctx, name)
}

func (g *sharedGate) ListDomains(ctx context.Context, after string, limit int) ([]*store.Domain, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.ListDomains(ctx, after, limit)
}

func (g *sharedGate) Due(ctx context.Context, before time.Time, limit int) ([]store.DueEntry, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.Due(ctx, before, limit)
}

func (g *sharedGate) PutAccount(ctx context.Context, a *store.Account) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.PutAccount(ctx, a)
}

func (g *sharedGate) GetAccount(ctx context.Context, id string) (*store.Account, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.GetAccount(ctx, id)
}

func (g *sharedGate) PutChallenge(ctx context.Context, token, keyAuth string, expires time.Time) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.PutChallenge(ctx, token, keyAuth, expires)
}

func (g *sharedGate) GetChallenge(ctx context.Context, token string) (string, error) {
	db, err := g.get()
	if err != nil {
		return "", err
	}
	return db.GetChallenge(ctx, token)
}

func (g *sharedGate) DeleteChallenge(ctx context.Context, token string) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.DeleteChallenge(ctx, token)
}

// ListChallenges implements store.ChallengeLister: the fleet's DNS zone
// (renewer/dnszone) reads the values other hosts put with it.
func (g *sharedGate) ListChallenges(ctx context.Context, prefix string, limit int) ([]store.Challenge, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.ListChallenges(ctx, prefix, limit)
}

func (g *sharedGate) PutRateBuckets(ctx context.Context, scope string, bs []store.RateBucket) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.PutRateBuckets(ctx, scope, bs)
}

func (g *sharedGate) RateBuckets(ctx context.Context, scope string) ([]store.RateBucket, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.RateBuckets(ctx, scope)
}

// RewriteKeys implements store.KeyRewriter.
func (g *sharedGate) RewriteKeys(ctx context.Context, kind store.KeyKind, after string, limit int, fn func(id string, key []byte) ([]byte, error)) (string, error) {
	db, err := g.get()
	if err != nil {
		return "", err
	}
	return db.RewriteKeys(ctx, kind, after, limit, fn)
}

// CountKeys implements store.KeyRewriter.
func (g *sharedGate) CountKeys(ctx context.Context, kind store.KeyKind) (int, error) {
	db, err := g.get()
	if err != nil {
		return 0, err
	}
	return db.CountKeys(ctx, kind)
}

// ChangesAfter implements store.ReplicationSource.
func (g *sharedGate) ChangesAfter(ctx context.Context, after uint64, limit int) ([]store.Change, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.ChangesAfter(ctx, after, limit)
}

// LatestVersion implements store.ReplicationSource.
func (g *sharedGate) LatestVersion(ctx context.Context) (uint64, error) {
	db, err := g.get()
	if err != nil {
		return 0, err
	}
	return db.LatestVersion(ctx)
}

// Listen implements store.ReplicationSource.
func (g *sharedGate) Listen(ctx context.Context, notify func(version uint64)) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.Listen(ctx, notify)
}

// ReportHost implements store.ReplicationSource.
func (g *sharedGate) ReportHost(ctx context.Context, h store.Host) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.ReportHost(ctx, h)
}

// Hosts implements store.ReplicationSource.
func (g *sharedGate) Hosts(ctx context.Context) ([]store.Host, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.Hosts(ctx)
}

// ClaimDue implements store.Leaser.
func (g *sharedGate) ClaimDue(ctx context.Context, host string, before time.Time, limit int, ttl time.Duration) ([]store.Lease, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.ClaimDue(ctx, host, before, limit, ttl)
}

// Claim implements store.Leaser.
func (g *sharedGate) Claim(ctx context.Context, host, name string, ttl time.Duration) (store.Lease, error) {
	db, err := g.get()
	if err != nil {
		return store.Lease{}, err
	}
	return db.Claim(ctx, host, name, ttl)
}

// Renew implements store.Leaser.
func (g *sharedGate) Renew(ctx context.Context, ls []store.Lease, ttl time.Duration) ([]store.Lease, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.Renew(ctx, ls, ttl)
}

// Release implements store.Leaser.
func (g *sharedGate) Release(ctx context.Context, ls []store.Lease) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.Release(ctx, ls)
}

// Leases implements store.Leaser.
func (g *sharedGate) Leases(ctx context.Context) ([]store.Lease, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.Leases(ctx)
}

// LeaseCounts implements store.LeaseCounter.
func (g *sharedGate) LeaseCounts(ctx context.Context) (map[string]int, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.LeaseCounts(ctx)
}

// LockAccount implements store.AccountLocker.
func (g *sharedGate) LockAccount(ctx context.Context, id string) (func(), error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.LockAccount(ctx, id)
}

// ReadRateBuckets implements store.RateBucketReader.
func (g *sharedGate) ReadRateBuckets(ctx context.Context, scope string, keys []store.RateBucket) ([]store.RateBucket, error) {
	db, err := g.get()
	if err != nil {
		return nil, err
	}
	return db.ReadRateBuckets(ctx, scope, keys)
}

// UpdateRateBuckets implements store.RateBucketUpdater.
func (g *sharedGate) UpdateRateBuckets(ctx context.Context, scope string, keys []store.RateBucket, fn func(have []store.RateBucket) ([]store.RateBucket, error)) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.UpdateRateBuckets(ctx, scope, keys, fn)
}

// The metrics inventory of a fleet host reads the fleet's database
// through the gate (serve): it finds the database's one-pass scan here.
var _ store.CertificateScanner = (*sharedGate)(nil)

// ScanCertificates implements store.CertificateScanner.
func (g *sharedGate) ScanCertificates(ctx context.Context, fn func(*store.Certificate) error) error {
	db, err := g.get()
	if err != nil {
		return err
	}
	return db.ScanCertificates(ctx, fn)
}
