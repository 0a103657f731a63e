package renewer

// The renewer's side of ACME Renewal Information (RFC 9773): the window of
// every certificate from a CA that offers it is polled about twice a day,
// through the due index like all other work. A valid name's next attempt
// is the earlier of its certificate's renewal time and its next poll; a
// worker that takes a valid name before its renewal time polls, moves the
// renewal time when the CA's window no longer holds it, and reschedules.
// Polls never touch the rate limiters.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/certserver/certserver/store"
)

// renewalInformer is implemented by issuers that can ask their CA when to
// renew a certificate (ACMEIssuer). RenewalInfo returns an error wrapping
// ErrNoRenewalInfo when the CA offers none.
type renewalInformer interface {
	RenewalInfo(ctx context.Context, c *store.Certificate) (*RenewalInfo, error)
}

// pollTimeout bounds one renewal information request.
const pollTimeout = time.Minute

// maxPollDelay caps the CA's Retry-After: RFC 9773 section 4.3 has clients
// treat a longer one as a day.
const maxPollDelay = 24 * time.Hour

// overdueBefore is how far before its certificate's expiry a name whose
// renewal is overdue is put in the due index: 398 days, the longest
// lifetime of a publicly trusted TLS certificate (CA/Browser Forum
// Baseline Requirements), so that the time is always in the past.
const overdueBefore = 398 * 24 * time.Hour

// informer returns the CA that issued c and its way to ask for renewal
// information, when the CA offers it; else nil, nil.
func (r *Renewer) informer(c *store.Certificate) (*caState, renewalInformer) {
	ca := r.issuedBy(c)
	if ca == nil || !ca.ariConfigured() {
		return nil, nil
	}
	inf, ok := ca.Issuer.(renewalInformer)
	if !ok {
		return nil, nil
	}
	return ca, inf
}

// keep records that cur goes on serving d until its renewal time at, after
// asking cur's CA, when it offers renewal information, whether its window
// moved. When the window has moved into the past (a CA about to revoke
// certificates in bulk asks for their renewal now), the name's next attempt
// is overdueAt: the dispatcher takes overdue names earliest expiry first.
func (r *Renewer) keep(ctx context.Context, log *slog.Logger, d *store.Domain, cur *store.Certificate, at, now time.Time) {
	next := at
	if ca, inf := r.informer(cur); inf != nil {
		at, next = r.poll(ctx, log, ca, inf, cur, at, now)
		if !at.After(now) {
			next = overdueAt(cur, now)
			log.Info("the CA asks for renewal now", "ca", ca.Name, "not_after", cur.NotAfter.UTC())
		}
	}
	adopted := cur.ID != d.CertID
	r.record(ctx, log, d.Name, func(d *store.Domain) {
		d.State, d.CertID, d.NextAttempt = store.StateValid, cur.ID, next
		// A certificate that is not due holds the name: whatever failed
		// before (a first order, before an operator imported this one) is
		// over, and must not count toward giving the name up later.
		d.Failures, d.FailingSince, d.LastError = 0, time.Time{}, ""
	})
	if adopted {
		log.Info("serving certificate adopted", "cert_id", cur.ID, "source", cur.Source, "renew_at", at.UTC())
	}
}

// overdueAt is the due time of a name whose renewal is overdue: a time in
// the past that sorts like its certificate's expiry, so that reading the
// due index earliest first renews the certificates that expire first
// first, ahead of the other work, without an index of its own.
func overdueAt(c *store.Certificate, now time.Time) time.Time {
	return earliest(now, c.NotAfter.Add(-overdueBefore))
}

// poll asks ca for the renewal window of cur (RFC 9773 section 4), whose
// renewal time is at, and returns the renewal time, moved into the
// window when the window no longer holds it, and when to look at the name
// next: the renewal time or the next poll, whichever is first. A CA
// without renewal information is not asked again for cur; a failed
// request is tried again after a quarter of the poll interval.
func (r *Renewer) poll(ctx context.Context, log *slog.Logger, ca *caState, inf renewalInformer, cur *store.Certificate, at, now time.Time) (renewAt, next time.Time) {
	pctx, cancel := context.WithTimeout(ctx, pollTimeout)
	info, err := inf.RenewalInfo(pctx, cur)
	cancel()
	if errors.Is(err, ErrNoRenewalInfo) {
		// Not a failed poll: the directory does not offer it. The CA is
		// not asked again, for this certificate or (ariSeen) any other.
		ca.ariSeen.Store(ariAbsent)
		return at, at
	}
	ca.count(func(c *CACounts) {
		c.Polls++
		if err != nil {
			c.PollErrors++
		}
	})
	switch {
	case err != nil:
		retry := r.jitterRand(func(rnd *rand.Rand) time.Duration {
			d := r.cfg.ARIPollInterval / 4
			return d + jitter(d/10, rnd)
		})
		log.Info("renewal information not read; asking again later", "ca", ca.Name, "error", err, "retry_in", retry.Round(time.Second))
		return at, earliest(at, now.Add(retry))
	}
	start, end := capWindow(info.Start, info.End, cur.NotBefore, cur.NotAfter)
	if at.Before(start) || at.After(end) {
		moved := r.timeRand(func(rnd *rand.Rand) time.Time { return WindowTime(start, end, now, rnd) })
		if err := r.setRenewAt(ctx, cur, moved); err != nil && !r.lostLease(ctx, err) && !r.leaseGone(ctx) {
			log.Error("store the new renewal time", "error", err)
		}
		ca.count(func(c *CACounts) { c.WindowsMoved++ })
		log.Info("renewal window moved", "ca", ca.Name, "window_start", info.Start.UTC(), "window_end", info.End.UTC(),
			"renew_at", moved.UTC(), "was", at.UTC(), "explanation", info.ExplanationURL)
		at = moved
	}
	return at, earliest(at, now.Add(r.pollDelay(info.RetryAfter)))
}

// pollDelay is the time until the next poll of a certificate's renewal
// information: ARIPollInterval ± 10%, or the CA's Retry-After when that is
// later, up to a day (RFC 9773 section 4.3).
func (r *Renewer) pollDelay(retryAfter time.Duration) time.Duration {
	d := r.jitterRand(func(rnd *rand.Rand) time.Duration {
		return r.cfg.ARIPollInterval + jitter(r.cfg.ARIPollInterval/10, rnd)
	})
	if retryAfter > d {
		d = min(retryAfter, maxPollDelay)
	}
	return d
}

// errReplaced stops the write of a renewal time when the certificate was
// replaced since it was read.
var errReplaced = errors.New("the certificate was replaced meanwhile")

// setRenewAt stores at as the renewal time of c, unless the store holds
// another certificate under c's ID by now.
//
// The read and the write are two transactions: a certificate stored
// between them (an operator's import) would be overwritten by c. A store
// method that changes RenewAt only if the serial still matches would
// close that gap.
func (r *Renewer) setRenewAt(ctx context.Context, c *store.Certificate, at time.Time) error {
	stored, err := r.store.GetCertificate(ctx, c.ID)
	if err != nil {
		return err
	}
	if stored.Serial != c.Serial {
		return fmt.Errorf("renewal time of %s: %w", c.ID, errReplaced)
	}
	stored.RenewAt = at
	if err := r.store.PutCertificate(ctx, stored); err != nil {
		return err
	}
	c.RenewAt = at
	return nil
}
