package renewer

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// CA is one certificate authority the renewer orders from, through one
// ACME account.
type CA struct {
	// Name names the CA in logs, metrics (the ca label) and CAStatus.
	// Default: the Issuer's directory URL when it has a Directory() string
	// method (ACMEIssuer does), else "". The names of several CAs must
	// differ.
	Name string
	// Issuer orders certificates from the CA with the CA's account.
	// Required. A certificate whose Origin is the Issuer's directory URL
	// is taken to come from this CA: its renewal goes here first.
	Issuer Issuer
	// Limiter paces orders to the limits of the CA's account. Default nil:
	// orders are not paced, only the CA's rateLimited answers and their
	// Retry-After are honoured.
	Limiter *ratelimit.Limiter
	// CAIdentities are the CA's CAA issuer domain names (RFC 8659 section
	// 4.2): "letsencrypt.org", "sectigo.com" for ZeroSSL. Empty: the
	// pre-flight skips CAA for this CA.
	CAIdentities []string
	// OffersARI says the CA offers renewal information (RFC 9773): the
	// renewal windows of its certificates are polled (when the Issuer can
	// ask, as ACMEIssuer can), and the Limiter does not charge a renewal
	// that names the certificate it replaces, which the CA exempts from
	// its rate limits. When the Issuer can tell whether the CA's directory
	// advertises it (ACMEIssuer can), a CA whose directory does not is
	// taken not to, whatever OffersARI says. Default false; true for
	// Let's Encrypt.
	OffersARI bool
}

// Selection says how the renewer shares orders among its CAs.
type Selection string

const (
	// SelectFailover sends every order to the first CA that can take it:
	// the next CA in the list gets it when the ones before it are held
	// back by their rate limits, failed for reasons of their own (a
	// network error, a 5xx, rateLimited, a CAA record that allows another
	// CA only), or failed so often lately that they are resting.
	SelectFailover Selection = "failover"
	// SelectSpread shares first orders among the CAs in proportion to the
	// room left in their new-orders buckets (a CA without a limit counts
	// as the roomiest limited one), by smooth weighted round robin, and
	// fails over as SelectFailover does.
	SelectSpread Selection = "spread"
)

// A CA that fails caTripAfter orders in a row for reasons of its own rests
// for caRestMin, doubling with each further failure up to caRestMax: while
// it rests, the other CAs are tried first. When the last of those
// failures said the CA is unavailable (it could not be reached, timed
// out, answered 5xx) the CA is down: it rests at most caDownRestMax, and
// while it rests no order is sent to it at all; the names wait for it
// without failing (see caState.admit). The first order after the rest is
// the probe; the others wait for its answer.
const (
	caTripAfter   = 3
	caRestMin     = 30 * time.Second
	caRestMax     = 15 * time.Minute
	caDownRestMax = time.Minute
)

// caDownSpread is how far apart, at most, the names that waited for a
// CA that is down come due again once its rest ends.
const caDownSpread = 5 * time.Second

// caState is a CA with what the renewer keeps about it.
type caState struct {
	CA
	dir string // the Issuer's directory URL, "" when it does not say

	// ariSeen is what the directory last said of renewal information:
	// ariUnknown until an order asked, then ariOffered or ariAbsent.
	ariSeen atomic.Int32

	mu        sync.Mutex
	streak    int       // orders failed in a row for reasons of the CA's own
	restUntil time.Time // tried after the others until then
	down      bool      // the streak's last failure said the CA is unavailable
	// probe is closed when the next order that reaches the CA ends (the
	// probe of a CA that is down, or one sent before it went down); nil
	// when no probe is under way.
	probe  chan struct{}
	counts CACounts
}

// The values of caState.ariSeen.
const (
	ariUnknown int32 = iota
	ariOffered
	ariAbsent
)

// renewalInfoOfferer is an Issuer that can tell whether its CA's
// directory advertises renewal information (ACMEIssuer can).
type renewalInfoOfferer interface {
	OffersRenewalInfo(ctx context.Context) (bool, error)
}

var _ renewalInfoOfferer = (*ACMEIssuer)(nil)

// ariConfigured reports whether ca is configured to offer renewal
// information and its directory was not seen without it.
func (ca *caState) ariConfigured() bool {
	return ca.OffersARI && ca.ariSeen.Load() != ariAbsent
}

// offersARI reports whether ca offers renewal information: it is
// configured to (CA.OffersARI), and its directory, when the Issuer can
// tell, advertises it. A directory that cannot be read leaves the
// configured answer.
func (ca *caState) offersARI(ctx context.Context) bool {
	if !ca.OffersARI {
		return false
	}
	o, ok := ca.Issuer.(renewalInfoOfferer)
	if !ok {
		return true
	}
	offered, err := o.OffersRenewalInfo(ctx)
	switch {
	case err != nil:
		return ca.ariConfigured()
	case offered:
		ca.ariSeen.Store(ariOffered)
	default:
		ca.ariSeen.Store(ariAbsent)
	}
	return offered
}

// newCAStates checks cas, the configured CAs in order of preference.
func newCAStates(cas []CA) ([]*caState, error) {
	out := make([]*caState, 0, len(cas))
	for i, ca := range cas {
		if ca.Issuer == nil {
			return nil, fmt.Errorf("CA %d: nil issuer", i+1)
		}
		s := &caState{CA: ca, dir: caOf(ca.Issuer)}
		if s.Name == "" {
			s.Name = s.dir
		}
		for _, o := range out {
			if o.Name == s.Name {
				return nil, fmt.Errorf("CA %d: name %q is taken by another CA; give each a Name", i+1, s.Name)
			}
			if s.dir != "" && o.dir == s.dir {
				return nil, fmt.Errorf("CA %d: directory %s is CA %q's already; one account per CA", i+1, s.dir, o.Name)
			}
		}
		s.CAIdentities = slices.Clone(ca.CAIdentities)
		out = append(out, s)
	}
	return out, nil
}

// issuedBy returns the configured CA that issued c (by c.Origin), or nil.
func (r *Renewer) issuedBy(c *store.Certificate) *caState {
	if c == nil || c.Source != store.SourceACME || c.Origin == "" {
		return nil
	}
	for _, ca := range r.cas {
		if ca.dir == c.Origin {
			return ca
		}
	}
	return nil
}

// candidates returns the CAs to try for one attempt at ordering a
// certificate, in order: the CA that issued cur first (a replacement
// names cur, which only its CA and account know); then, for
// SelectSpread, the CA the weighted round robin picks; then the others in
// the configured order. CAs that are resting go last, in the same order.
func (r *Renewer) candidates(cur *store.Certificate, now time.Time) []*caState {
	out := make([]*caState, 0, len(r.cas))
	if ca := r.issuedBy(cur); ca != nil {
		out = append(out, ca)
	} else if r.cfg.Selection == SelectSpread && len(r.cas) > 1 {
		out = append(out, r.pickSpread(now))
	}
	for _, ca := range r.cas {
		if !slices.Contains(out, ca) {
			out = append(out, ca)
		}
	}
	var resting []*caState
	kept := out[:0]
	for _, ca := range out {
		if ca.resting(now) {
			resting = append(resting, ca)
		} else {
			kept = append(kept, ca)
		}
	}
	return append(kept, resting...)
}

// pickSpread picks a CA for a first order by smooth weighted round robin
// (as nginx balances upstreams): every CA's current weight grows by its
// room, the heaviest is picked and loses the sum of the rooms. Over many
// picks each CA gets a share of orders proportional to its room; equal
// rooms take turns. Resting CAs and CAs without room are left out unless
// no CA is left.
func (r *Renewer) pickSpread(now time.Time) *caState {
	rooms := make([]float64, len(r.cas))
	for i, ca := range r.cas {
		if !ca.resting(now) {
			rooms[i] = ca.room()
		}
	}
	// A CA without a limit has as much room as the roomiest limited one.
	roomiest := 1.0
	for _, room := range rooms {
		if !math.IsInf(room, 1) {
			roomiest = max(roomiest, room)
		}
	}
	total := 0.0
	for i := range rooms {
		if math.IsInf(rooms[i], 1) {
			rooms[i] = roomiest
		}
		total += rooms[i]
	}
	if total <= 0 {
		return r.cas[0]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	best := -1
	for i, room := range rooms {
		if room <= 0 {
			continue
		}
		r.spread[i] += room
		if best < 0 || r.spread[i] > r.spread[best] {
			best = i
		}
	}
	r.spread[best] -= total
	return r.cas[best]
}

// room is how many first orders the CA's account can send now: the tokens
// in its new-orders bucket, +Inf without a limit.
func (ca *caState) room() float64 {
	if ca.Limiter == nil {
		return math.Inf(1)
	}
	b := ca.Limiter.Bucket(ratelimit.LimitNewOrders, "")
	if b.Burst < 0 {
		return math.Inf(1)
	}
	return math.Floor(b.Tokens)
}

// resting reports whether the CA failed so often lately that the other
// CAs go first.
func (ca *caState) resting(now time.Time) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	return now.Before(ca.restUntil)
}

// The outcomes an order can have for a CA's counters.
type caOutcome int

const (
	caIssued     caOutcome = iota
	caFailedName           // the name's fault: another CA fails the same way
	caFailedCA             // the CA's fault, or a refusal of its own
	caDown                 // the CA could not be reached or failed: see unavailable
	caLimited              // the CA answered rateLimited
)

// ended counts an order that ended at the CA and keeps its failure
// streak: a failure of the CA's own lengthens it (and, from caTripAfter
// on, makes the CA rest), anything else ends it. Any order that ends
// answers a probe under way.
func (ca *caState) ended(o caOutcome, now time.Time) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	ca.counts.Orders++
	switch o {
	case caIssued:
		ca.counts.Issued++
	case caLimited:
		ca.counts.RateLimited++
	default:
		ca.counts.Failed++
	}
	if ca.probe != nil {
		close(ca.probe)
		ca.probe = nil
	}
	if o != caFailedCA && o != caDown {
		ca.streak, ca.restUntil, ca.down = 0, time.Time{}, false
		return
	}
	ca.streak++
	ca.down = o == caDown
	if ca.streak >= caTripAfter {
		limit := caRestMax
		if ca.down {
			limit = caDownRestMax
		}
		rest := limit
		if n := ca.streak - caTripAfter; n < 10 {
			rest = min(caRestMin<<n, limit)
		}
		ca.restUntil = now.Add(rest)
	}
}

// admit decides whether an order may be sent to the CA now. A CA that is
// not down takes every order. While a CA that is down rests, no order
// goes: admit returns the end of the rest. After the rest the first order
// is the probe (probe is set; the caller calls endProbe with it when its
// order is not sent after all), and the orders that come meanwhile wait
// for the probe's answer (wait is set; admit is asked again when it is
// closed).
func (ca *caState) admit(now time.Time) (until time.Time, wait, probe chan struct{}) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	switch {
	case !ca.down || ca.streak < caTripAfter:
		return time.Time{}, nil, nil
	case now.Before(ca.restUntil):
		return ca.restUntil, nil, nil
	case ca.probe != nil:
		return time.Time{}, ca.probe, nil
	}
	ca.probe = make(chan struct{})
	return time.Time{}, nil, ca.probe
}

// endProbe gives up probe, a probe whose order was never sent, so that
// the orders waiting for it are admitted again (and one of them probes).
func (ca *caState) endProbe(probe chan struct{}) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.probe == probe {
		close(ca.probe)
		ca.probe = nil
	}
}

// downUntil returns, for a CA whose order just failed because it is
// unavailable, until when the name waits for it: the end of its rest, or,
// before it rests, caRestMin from now.
func (ca *caState) downUntil(now time.Time) time.Time {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if now.Before(ca.restUntil) {
		return ca.restUntil
	}
	return now.Add(caRestMin)
}

// count applies f to the CA's counters.
func (ca *caState) count(f func(*CACounts)) {
	ca.mu.Lock()
	f(&ca.counts)
	ca.mu.Unlock()
}

// CACounts counts what the renewer did with one CA since it started.
type CACounts struct {
	// Orders is the orders that reached the CA, whatever their outcome.
	Orders int64
	// Issued, Failed and RateLimited split Orders by outcome.
	Issued, Failed, RateLimited int64
	// Deferred counts orders held back before they were sent: by the CA's
	// Limiter, or while the CA rested after it could not be reached.
	Deferred int64
	// Refused counts orders the pre-flight check refused for this CA.
	Refused int64
	// Polls counts renewal information requests (RFC 9773); PollErrors
	// those that failed.
	Polls, PollErrors int64
	// WindowsMoved counts the polls that moved a certificate's renewal
	// time because the CA's suggested window no longer held it.
	WindowsMoved int64
}

// CAStatus is the state of one CA, for the queue API and metrics.
type CAStatus struct {
	// Name is the CA's name (CA.Name).
	Name string
	// Directory is the Issuer's directory URL, "" when it does not say.
	Directory string
	// OffersARI is the CA's CA.OffersARI, unless its directory was seen
	// not to advertise renewal information.
	OffersARI bool
	// Counts are the CA's counters since the renewer started.
	Counts CACounts
	// FailureStreak is how many orders in a row failed for reasons of the
	// CA's own; RestingUntil, when after now, is until when the other CAs
	// go first.
	FailureStreak int
	RestingUntil  time.Time
	// Resting says RestingUntil is after now, by the renewer's clock, or
	// that the CA is down and no probe has found it back yet (RestingUntil
	// is then now: its rest is over, the probe is under way or due).
	Resting bool
	// Limits is the state of the CA's Limiter, nil without one, or when
	// the Limiter is shared and its store could not be read.
	Limits []ratelimit.LimitStatus
	// FleetLimits says the Limiter is shared by the hosts of a fleet
	// (ratelimit.NewSharedLimiter): Limits is the fleet's budget, spent
	// by every host, not this host's.
	FleetLimits bool
}

// CAStatus returns the state of every CA, in the configured order.
func (r *Renewer) CAStatus() []CAStatus {
	now := r.cfg.Now()
	out := make([]CAStatus, 0, len(r.cas))
	for _, ca := range r.cas {
		ca.mu.Lock()
		s := CAStatus{Name: ca.Name, Directory: ca.dir, OffersARI: ca.ariConfigured(),
			Counts: ca.counts, FailureStreak: ca.streak, RestingUntil: ca.restUntil, Resting: ca.restUntil.After(now)}
		if !s.Resting && ca.down && ca.streak >= caTripAfter {
			s.Resting, s.RestingUntil = true, now
		}
		ca.mu.Unlock()
		if ca.Limiter != nil {
			s.Limits, s.FleetLimits = ca.Limiter.Status(), ca.Limiter.Shared()
		}
		out = append(out, s)
	}
	return out
}
