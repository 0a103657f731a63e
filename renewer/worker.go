package renewer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"time"

	"github.com/certserver/certserver/store"
)

// permanent is implemented by errors that retrying soon cannot fix (the CA
// refused the name, DNS says it does not exist, CAA forbids the CA).
type permanent interface{ Permanent() bool }

// retryAfter is implemented by errors that say when to try again (a CA's
// rateLimited problem with Retry-After).
type retryAfter interface{ RetryAfter() time.Duration }

// process works on one name the dispatcher handed over: it re-reads the
// name's record (another worker, an operator or a restart may have changed
// it), orders a certificate when one is needed and writes the outcome back.
// A name whose certificate is good until its renewal time is only
// rescheduled, after its CA was asked whether the renewal window moved
// (keep). This is the one place that decides whether a name is ordered:
// only forced names (an operator's Prioritize) are ordered whatever their
// record says; a name that came from the due index or from Expedite (on
// demand) is ordered only when its next attempt has come and it has no
// certificate that is not due.
func (r *Renewer) process(ctx context.Context, name string, forced bool) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("worker panic", "name", name, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	log := r.log.With("name", name)
	now := r.cfg.Now()
	d, err := r.store.GetDomain(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err != nil {
		if !r.storeFailed(err) {
			log.Error("read domain", "error", err)
		}
		r.pauseAfterStoreError(ctx)
		return
	}
	if d.State == store.StateRemoved || d.NextAttempt.IsZero() && !forced {
		return
	}
	if d.NextAttempt.After(now) && !forced {
		return // rescheduled since the dispatcher read the index
	}
	if d.ManagedWith != "" {
		// A name whose owner is gone (a removal cut short) would be renewed
		// by nothing: it is managed on its own from now on.
		owner, err := r.store.GetDomain(ctx, d.ManagedWith)
		if errors.Is(err, store.ErrNotFound) || err == nil && owner.State == store.StateRemoved {
			with := d.ManagedWith
			log.Warn("managed with a name that was removed; renewed on its own", "managed_with", with)
			if !r.record(ctx, log, d.Name, func(d *store.Domain) {
				if d.ManagedWith == with {
					d.ManagedWith = ""
				}
			}) {
				return
			}
			d.ManagedWith = ""
		}
	}
	if d.ManagedWith != "" {
		// Renewed with the name whose certificate serves it, never alone:
		// a due time it was given by mistake is taken away, so that the
		// dispatcher does not hand it out again and again.
		if !d.NextAttempt.IsZero() {
			r.record(ctx, log, d.Name, func(d *store.Domain) {
				if d.ManagedWith != "" {
					d.NextAttempt = time.Time{}
				}
			})
		}
		return
	}
	cur := r.current(ctx, d)
	if cur != nil {
		var folded bool
		if d, folded = r.joinSet(ctx, log, d, cur); folded {
			return
		}
	}
	if cur != nil && !forced {
		at := cur.RenewAt
		if at.IsZero() && cur.ID != d.CertID {
			// Adopting a certificate that serves the name but that nobody
			// renews (imported): renew it by its lifetime.
			at = r.timeRand(func(rnd *rand.Rand) time.Time { return RenewalTime(cur.NotBefore, cur.NotAfter, rnd) })
		}
		if at.After(now) {
			r.keep(ctx, log, d, cur, at, now)
			return
		}
	}
	if r.giveUp(ctx, log, d, forced, now) {
		return
	}
	if forced && d.State == store.StateGivenUp {
		// An operator asked to try again: a fresh start, whatever this
		// attempt gives (a pre-flight refusal included), so that the name
		// has a whole give_up_after before it is parked again.
		r.record(ctx, log, d.Name, func(d *store.Domain) { d.Failures, d.FailingSince = 0, time.Time{} })
	}
	r.order(ctx, log, d, cur)
}

// obtained records the certificate ca issued for name: the name is valid
// until the certificate's renewal time, or until its renewal window is
// next polled, whichever is first.
func (r *Renewer) obtained(ctx context.Context, log *slog.Logger, ca *caState, name string, cert *store.Certificate, took time.Duration) {
	now := r.cfg.Now()
	next := cert.RenewAt
	if _, inf := r.informer(cert); inf != nil {
		next = earliest(next, now.Add(r.pollDelay(0)))
	}
	r.record(ctx, log, name, func(d *store.Domain) {
		d.State = store.StateValid
		d.CertID = cert.ID
		d.NextAttempt = next
		d.Failures, d.LastError, d.FailingSince = 0, "", time.Time{}
		d.UpdatedAt = now
		d.AddAttempt(store.Attempt{At: now, Outcome: store.OutcomeIssued, Serial: cert.Serial, Took: took})
	})
	log.Info("certificate obtained", "ca", ca.Name, "serial", cert.Serial, "not_after", cert.NotAfter.UTC(),
		"renew_at", cert.RenewAt.UTC(), "took", took.Round(time.Millisecond))
}

// outcomeOf sorts an order's error for the CA's counters.
func outcomeOf(err error) caOutcome {
	var ae *ACMEError
	switch {
	case err == nil:
		return caIssued
	case errors.As(err, &ae) && ae.Kind == KindRateLimited:
		return caLimited
	case nameFailure(err):
		return caFailedName
	case unavailable(err):
		return caDown
	}
	return caFailedCA
}

// nameFailure reports whether err is a failure of the name itself, which
// no other CA can help with: the pre-flight refused the name for every CA
// (see PreflightError.nameFault), or the CA's answer was the name's fault
// (FaultName, recorded when it was classified). Any other failure is the
// CA's. Errors from issuers other than ACMEIssuer are the name's when they
// say they are permanent.
func nameFailure(err error) bool {
	var pe *PreflightError
	if errors.As(err, &pe) {
		return pe.nameFault()
	}
	var ae *ACMEError
	if errors.As(err, &ae) {
		return ae.Fault == FaultName
	}
	var p permanent
	return errors.As(err, &p) && p.Permanent()
}

// refusedReplaces reports whether err says the CA refused an order as the
// replacement of the certificate it named.
func refusedReplaces(err error) bool {
	var ae *ACMEError
	return errors.As(err, &ae) && ae.ReplacesRefused
}

// caError is the failure of an order at one CA.
type caError struct {
	ca  string
	err error
}

// caErrors are the failures of one attempt at several CAs. The message
// names each CA; errors.As and errors.Is look into every failure.
type caErrors []caError

func (e caErrors) Error() string {
	parts := make([]string, len(e))
	for i, ce := range e {
		parts[i] = ce.err.Error()
		if ce.ca != "" {
			parts[i] = "at " + ce.ca + ": " + parts[i]
		}
	}
	return strings.Join(parts, "; ")
}

func (e caErrors) Unwrap() []error {
	errs := make([]error, len(e))
	for i, ce := range e {
		errs[i] = ce.err
	}
	return errs
}

// refusedOnly reports whether err holds pre-flight refusals only.
func refusedOnly(err error) bool {
	if many, ok := err.(caErrors); ok {
		for _, ce := range many {
			if !refusedOnly(ce.err) {
				return false
			}
		}
		return len(many) > 0
	}
	var pe *PreflightError
	return errors.As(err, &pe)
}

// retryWait is how long the CAs asked to wait after err: for several
// failures the shortest wait, and none when one of them did not ask.
func retryWait(err error) time.Duration {
	if many, ok := err.(caErrors); ok {
		var wait time.Duration
		for i, ce := range many {
			w := retryWait(ce.err)
			if w <= 0 {
				return 0
			}
			if i == 0 || w < wait {
				wait = w
			}
		}
		return wait
	}
	var ra retryAfter
	if errors.As(err, &ra) {
		return ra.RetryAfter()
	}
	return 0
}

// current returns the certificate that serves d: the one it obtained, else
// (a name just brought under management) whatever the store serves for the
// name, such as an imported certificate. It returns nil when there is none
// or it has expired.
func (r *Renewer) current(ctx context.Context, d *store.Domain) *store.Certificate {
	var c *store.Certificate
	var err error
	if d.CertID != "" {
		c, err = r.store.GetCertificate(ctx, d.CertID)
	} else {
		c, err = r.store.LookupCertificate(ctx, d.Name)
	}
	if err != nil || !c.NotAfter.After(r.cfg.Now()) {
		return nil
	}
	return c
}

// scheduled sets the renewal time of a newly obtained certificate, unless
// the issuer already chose one (from the CA's renewal information).
func (r *Renewer) scheduled(c *store.Certificate) *store.Certificate {
	if c.RenewAt.IsZero() {
		c.RenewAt = r.timeRand(func(rnd *rand.Rand) time.Time { return RenewalTime(c.NotBefore, c.NotAfter, rnd) })
	}
	c.StoredAt = r.cfg.Now()
	return c
}

// failed records a failed attempt, which took took, and schedules the next
// one: after the backoff for the count of consecutive failures, or later
// when the CAs said when to come back. When the CAs were unavailable
// (down is when the first of them is tried again) the failure is theirs:
// the count does not grow, and the name waits until down. The attempt is
// OutcomeRefused when the pre-flight refused the name for every CA tried,
// so that nothing was sent, else OutcomeFailed.
func (r *Renewer) failed(ctx context.Context, log *slog.Logger, name string, cur *store.Certificate, err error, now time.Time, took time.Duration, down time.Time) {
	caWait := retryWait(err)
	outcome := store.OutcomeFailed
	if refusedOnly(err) {
		outcome = store.OutcomeRefused
	}
	var rec store.Domain
	ok := r.record(ctx, log, name, func(d *store.Domain) {
		if d.FailingSince.IsZero() {
			d.FailingSince = now
		}
		d.State = store.StateFailing
		d.LastError = err.Error()
		var wait time.Duration
		if down.IsZero() {
			d.Failures++
			wait = r.jitterRand(func(rnd *rand.Rand) time.Duration { return Backoff(d.Failures, rnd) })
		} else {
			wait = down.Sub(now) + r.jitterRand(func(rnd *rand.Rand) time.Duration { return time.Duration(rnd.Int64N(int64(caDownSpread))) })
		}
		d.NextAttempt = now.Add(max(wait, caWait))
		d.UpdatedAt = now
		d.AddAttempt(store.Attempt{At: now, Outcome: outcome, Error: err.Error(), Took: took})
		rec = *d
	})
	if !ok {
		return
	}
	if !down.IsZero() {
		log.Warn("order failed: the CA is unavailable; the name waits for it", "error", err,
			"failures", rec.Failures, "next_attempt", rec.NextAttempt.UTC())
		return
	}
	var p permanent
	kind := "transient"
	if errors.As(err, &p) && p.Permanent() {
		kind = "permanent"
	}
	attrs := []any{"error", err, "kind", kind, "failures", rec.Failures, "next_attempt", rec.NextAttempt.UTC()}
	if cur != nil {
		attrs = append(attrs, "serving_until", cur.NotAfter.UTC())
	}
	log.Warn("order failed", attrs...)
}

// errRemoved stops the write of a name that an operator removed while a
// worker had it.
var errRemoved = errors.New("removed while being worked on")

// record applies change to the stored record of name in one store
// transaction, unless the name was removed meanwhile (its record then stays
// as the operator left it), or the lease ctx carries was lost (the write
// is refused: see Config.Leases). It reports whether it wrote, logging
// why not.
func (r *Renewer) record(ctx context.Context, log *slog.Logger, name string, change func(*store.Domain)) bool {
	err := r.store.UpdateDomain(ctx, name, func(d *store.Domain) error {
		if d.State == store.StateRemoved {
			return errRemoved
		}
		change(d)
		return nil
	})
	switch {
	case err == nil:
		return true
	case errors.Is(err, errRemoved), errors.Is(err, store.ErrNotFound):
		log.Info("name was removed while being worked on; left removed")
	case r.lostLease(ctx, err), r.leaseGone(ctx):
		// Logged once by leaseLost.
	default:
		if !r.storeFailed(err) {
			log.Error("write domain", "error", err)
		}
		r.pauseAfterStoreError(ctx)
	}
	return false
}

// storeErrorPause is how long a worker waits after the store failed it.
// The name stays due (nothing could be written), so without the pause the
// dispatcher would hand it out again at once: a failing store, or one
// record it cannot read, would spin the workers and flood the log.
const storeErrorPause = 5 * time.Second

// pauseAfterStoreError holds the worker for storeErrorPause, or until ctx
// ends. A failure that says the store's database is unavailable has also
// started the renewer's rest (storeRest): the dispatcher then claims
// nothing more until the store answers.
func (r *Renewer) pauseAfterStoreError(ctx context.Context) {
	_ = r.sleep(ctx, storeErrorPause)
}

// earliest returns the earlier of a and b.
func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
