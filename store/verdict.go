package store

import (
	"context"
	"errors"
	"time"
)

// A fleet shares the on-demand policy's verdicts: whether a name nobody
// manages yet may be issued a certificate because a handshake asked for
// it. A host that sees such a name first looks for the fleet's verdict;
// when there is none it claims the check (a verdict in state
// VerdictChecking, held for a short while), checks the name (allow list,
// DNS, ask URL) and records the outcome for every host. So a scanner's
// random names are checked once for the fleet, however many hosts see
// them, and three hosts that see one name at the same moment make one
// check.

// ErrClaimLost is PutVerdict's error when another host has claimed the
// check since the writer's claim lapsed.
var ErrClaimLost = errors.New("another host has claimed the check")

// VerdictState is what a Verdict says.
type VerdictState string

// The states of a Verdict.
const (
	// VerdictChecking: Host is checking the name now; the other hosts
	// wait for its verdict, or drop the request (the next handshake asks
	// again). It lapses at Expires, when another host may claim the check.
	VerdictChecking VerdictState = "checking"
	// VerdictAllowed: the name may be ordered on demand.
	VerdictAllowed VerdictState = "allowed"
	// VerdictRefused: the name may not; Reason says why.
	VerdictRefused VerdictState = "refused"
)

// Verdict is the fleet's shared on-demand verdict on one name.
type Verdict struct {
	// Name is the normalized host name the verdict is about.
	Name  string       `json:"name"`
	State VerdictState `json:"state"`
	// Reason says why the name was refused; "" otherwise.
	Reason string `json:"reason,omitempty"`
	// Host is the host that checked the name, or is checking it.
	Host string `json:"host"`
	// Expires is when the verdict lapses (the store's clock): the name is
	// checked again after it.
	Expires time.Time `json:"expires"`
	// Left is how long the verdict had before it lapsed when the store
	// returned it, by the store's clock. A host compares this, not
	// Expires, with its own clock, which may not agree with the store's.
	Left time.Duration `json:"-"`
}

// Verdicts is implemented by a shared store whose hosts share the
// on-demand policy's verdicts (PostgreSQL). Times are the store's clock.
// Its methods are safe for concurrent use, from any number of hosts.
type Verdicts interface {
	// ClaimVerdict returns name's unexpired verdict with claimed false;
	// when the name has none, it records one in state VerdictChecking by
	// host until now+ttl and returns it with claimed true: host must then
	// check the name and record the outcome with PutVerdict. It is
	// atomic: of the hosts that claim one name at the same moment exactly
	// one gets claimed true. A claim by host that finds host's own
	// unexpired VerdictChecking (a retried claim) returns it claimed true.
	ClaimVerdict(ctx context.Context, name, host string, ttl time.Duration) (v Verdict, claimed bool, err error)

	// GetVerdict returns name's unexpired verdict (a claim included)
	// with ok true, or ok false when it has none: a plain read, for a host
	// waiting for another's check.
	GetVerdict(ctx context.Context, name string) (v Verdict, ok bool, err error)

	// PutVerdict records v (State VerdictAllowed or VerdictRefused) until
	// now+ttl and returns it as stored (with its Expires and Left), over
	// v.Host's own claim, a verdict, an expired claim or nothing; over
	// another host's unexpired claim (v.Host's lapsed and that host now
	// checks the name) it records nothing and wraps ErrClaimLost. A state
	// other than those two, or an empty name or host, wraps ErrInvalid.
	PutVerdict(ctx context.Context, v Verdict, ttl time.Duration) (Verdict, error)
}
