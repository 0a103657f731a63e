package store

import (
	"context"
	"errors"
	"time"
)

// ErrUnavailable is wrapped by the errors of a store that cannot reach its
// database (a fleet's PostgreSQL down, unreachable, or refusing
// connections). Nothing was written when it is returned. Callers test for
// it with errors.Is: the admin API answers 503, the renewer stops claiming
// work until the store answers again.
var ErrUnavailable = errors.New("database unavailable")

// ErrUncertain is wrapped, beside ErrUnavailable, by the error of a write
// whose commit reached the database but whose answer never came back (the
// connection broke at that moment): the write may or may not have been
// made. It is not tried again by the store; the caller reads back before
// writing again where that matters.
var ErrUncertain = errors.New("the write may or may not have been made")

// A fleet keeps one shared store (PostgreSQL) as the source of truth and,
// on every host, a local Badger copy of what the handshake path and the
// challenge endpoint read: certificates with their name links, and HTTP-01
// challenges. Every write of the shared store that changes one of those
// takes the next value of one sequence, its version; a host applies the
// changes after the last version it applied, in version order, so that a
// lost notification or a host that was cut off only delays.

// ChangeKind says what a Change does to the local copy.
type ChangeKind string

// The kinds of Change.
const (
	// ChangePutCertificate stores Change.Certificate (PutCertificate).
	ChangePutCertificate ChangeKind = "put_certificate"
	// ChangeDeleteCertificate removes the record Change.ID; a missing
	// record is not an error when applying.
	ChangeDeleteCertificate ChangeKind = "delete_certificate"
	// ChangePutChallenge stores Change.Token with Change.KeyAuth until
	// Change.Expires.
	ChangePutChallenge ChangeKind = "put_challenge"
	// ChangeDeleteChallenge removes Change.Token.
	ChangeDeleteChallenge ChangeKind = "delete_challenge"
	// ChangeRewriteKey replaces the private key of the record Change.ID
	// with Change.KeyPEM and changes nothing else: not the record's other
	// fields, not which record serves a name (a key rewritten under a new
	// key-encryption key, store.KeyRewriter). A record the local copy
	// lacks is skipped: a later put carries its key.
	ChangeRewriteKey ChangeKind = "rewrite_key"
)

// Change is one write of the shared store that a local copy must apply.
// Applying a change twice leaves the same result as applying it once.
type Change struct {
	// Version is the change's place in the shared store's sequence.
	Version uint64
	Kind    ChangeKind
	// Certificate is the whole record for ChangePutCertificate (its
	// KeyPEM as the shared store holds it: sealed when keys are encrypted
	// at rest).
	Certificate *Certificate
	// ID is the certificate record's ID for ChangeDeleteCertificate and
	// ChangeRewriteKey.
	ID string
	// KeyPEM is the record's new private key for ChangeRewriteKey, as the
	// shared store holds it (sealed when keys are encrypted at rest).
	KeyPEM []byte
	// Token, KeyAuth and Expires describe a challenge, for the challenge
	// kinds (KeyAuth and Expires only for ChangePutChallenge).
	Token   string
	KeyAuth string
	Expires time.Time
}

// ReplicationSource is implemented by a shared store that local copies
// follow (PostgreSQL).
type ReplicationSource interface {
	// ChangesAfter returns up to limit changes with a version above after,
	// in version order. Only the latest change of each certificate ID and
	// each token needs to be returned (an older one a later one overrides
	// may be left out), but never a change without every earlier change
	// of the same record either applied or superseded.
	ChangesAfter(ctx context.Context, after uint64, limit int) ([]Change, error)

	// LatestVersion returns the version of the newest change (0 when there
	// is none).
	LatestVersion(ctx context.Context) (uint64, error)

	// Listen calls notify with a version each time the shared store
	// announces a write (PostgreSQL NOTIFY carries the version, never the
	// record), until ctx is done or the connection fails; it returns the
	// reason (ctx.Err() when ctx ended). The caller reconnects by calling
	// it again, and catches up with ChangesAfter after each call starts,
	// since announcements made while nobody listened are lost.
	Listen(ctx context.Context, notify func(version uint64)) error

	// ReportHost records a host of the fleet: what it has applied, when
	// it was last seen, whether it renews.
	ReportHost(ctx context.Context, h Host) error

	// Hosts returns every host that ever reported, in name order.
	Hosts(ctx context.Context) ([]Host, error)
}

// Host is one certserver of a fleet as the shared store knows it.
type Host struct {
	// Name is the host's name ([fleet] host_name, default the machine's).
	Name string `json:"name"`
	// Applied is the last version the host's local copy applied.
	Applied uint64 `json:"applied"`
	// SeenAt is when the host last reported.
	SeenAt time.Time `json:"seen_at"`
	// Renews says whether the host's renewer orders certificates.
	Renews bool `json:"renews"`
	// InFlight is how many orders the host's renewer had under way when
	// it last reported.
	InFlight int `json:"in_flight"`
	// LagSeconds is how long the oldest change the host's local copy had
	// not applied had been waiting when it last reported (0 when the copy
	// was in step): a host whose copy cannot follow reports it growing.
	LagSeconds float64 `json:"lag_seconds"`
}

// Replica is implemented by a local store that can follow a
// ReplicationSource (Badger). Its ChangeFeed then reports what Apply
// changed, like any other write.
type Replica interface {
	// Apply writes changes, in order, in as few atomic writes as it can,
	// and records the highest version applied with the last of them.
	Apply(ctx context.Context, changes []Change) error

	// AppliedVersion returns the highest version Apply recorded (0 for a
	// store that never applied anything).
	AppliedVersion(ctx context.Context) (uint64, error)

	// MarkSynced records, durably, that the local copy completed a sync:
	// it held every change of the source through version. A copy whose
	// first sync was cut short (a join stopped half way) has applied
	// changes but is not marked.
	MarkSynced(ctx context.Context, version uint64) error

	// Synced reports whether MarkSynced was ever recorded.
	Synced(ctx context.Context) (bool, error)
}
