package store

import (
	"context"
	"errors"
	"time"
)

// A fleet shares its renewal work through leases: a host that renews
// claims due names from the shared store in a short transaction, each
// claim a lease (the host, a fencing token, an expiry), and works on a
// name only while it holds the name's lease. No lock or transaction is
// held while the order runs; the host renews its leases while it works,
// and a host that dies loses them when they expire, after which another
// host claims the names. The results of the work (the name's record, the
// certificate, challenge tokens) are written with the lease in the
// context (WithLease): a store that implements Leaser makes such a write
// only while the lease's token is still the name's, so a host that lost
// its lease (paused, cut off) cannot overwrite a newer host's result.

// ErrLeaseLost is wrapped by the error of a write made under a lease
// (WithLease) that is no longer held: another host has claimed the name
// since (the lease expired), or it was released. Nothing was written.
var ErrLeaseLost = errors.New("lease lost")

// ErrLeased is wrapped by the error of Claim when another host holds an
// unexpired lease on the name.
var ErrLeased = errors.New("leased by another host")

// Lease is one host's claim on one managed name.
type Lease struct {
	// Name is the managed name (a store.Domain's Name).
	Name string `json:"name"`
	// Host is the claiming host's name ([fleet] host_name).
	Host string `json:"host"`
	// Token is the fencing token: every claim takes a new one, greater
	// than every token taken before it in the fleet.
	Token int64 `json:"token"`
	// Expires is when the lease lapses unless renewed.
	Expires time.Time `json:"expires"`
}

// Leaser is implemented by a shared store whose hosts split the renewal
// work (PostgreSQL). Times are the store's clock. A lease that lapsed is
// still its holder's for a grace period (PostgreSQL: half the TTL), in
// which the holder may renew it and no other host claims the name: a host
// that was cut off and comes back in time stores what it obtained.
type Leaser interface {
	// ClaimDue claims for host up to limit names of the due index whose
	// time is at or before `before` and that no host holds an unexpired
	// lease on, earliest first, each until now+ttl, in one short
	// transaction that skips rows other hosts are claiming at the same
	// moment (FOR UPDATE SKIP LOCKED): two hosts never claim one name.
	ClaimDue(ctx context.Context, host string, before time.Time, limit int, ttl time.Duration) ([]Lease, error)

	// Claim claims name for host until now+ttl, whatever its due time
	// (an operator's "renew now", an on-demand request). A name another
	// host holds an unexpired lease on returns ErrLeased; a lease host
	// already holds is claimed again under a new token. A name that is not
	// managed returns ErrNotFound.
	Claim(ctx context.Context, host, name string, ttl time.Duration) (Lease, error)

	// Renew extends each lease of ls that is still held (same token) to
	// now+ttl and returns those, with their new Expires; the others are
	// lost and left out.
	Renew(ctx context.Context, ls []Lease, ttl time.Duration) ([]Lease, error)

	// Release gives up each lease of ls that is still held; the others
	// are left alone.
	Release(ctx context.Context, ls []Lease) error

	// Leases returns every unexpired lease of the fleet, by host then name.
	Leases(ctx context.Context) ([]Lease, error)
}

// LeaseCounter is implemented by a Leaser that can count the fleet's
// unexpired leases by host without reading them all (PostgreSQL: one
// GROUP BY). Every fleet host counts them every 10 s: a fleet of many
// hosts and names must not read the whole lease table for it.
type LeaseCounter interface {
	// LeaseCounts returns how many unexpired leases each host holds; a
	// host holding none is left out.
	LeaseCounts(ctx context.Context) (map[string]int, error)
}

type leaseKey struct{}

// WithLease returns ctx carrying l: a store that implements Leaser makes
// the writes (UpdateDomain, PutDomain, PutCertificate, PutCertificates,
// DeleteCertificate, PutChallenge, DeleteChallenge) called with it only
// while l is still held, in the same transaction as the check, and
// returns an error wrapping ErrLeaseLost otherwise. A store without
// leases (a single host's Badger) ignores it.
func WithLease(ctx context.Context, l Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, l)
}

// WithoutLease returns ctx without the lease it carries (WithLease), if
// any, keeping its values and cancellation otherwise: a write made with
// it is not fenced. It is for writes no other host's work can collide
// with, whose key is unique to the work that made it (an HTTP-01 token,
// a DNS-01 value's record): their removal must go through even after the
// lease was lost, or the record stays until it expires. A record keyed by
// name (tls-alpn-01:<name>) keeps the lease: a newer host's may stand
// there.
func WithoutLease(ctx context.Context) context.Context {
	return context.WithValue(ctx, leaseKey{}, nil)
}

// LeaseFrom returns the lease ctx carries (WithLease), if any.
func LeaseFrom(ctx context.Context) (Lease, bool) {
	l, ok := ctx.Value(leaseKey{}).(Lease)
	return l, ok
}
