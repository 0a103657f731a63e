package renewer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
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
		log.Error("read domain", "error", err)
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

// order obtains a certificate for d from the first candidate CA that
// issues one and records the outcome. cur is the certificate that serves
// the name now, nil when there is none.
//
// A CA is passed over, for this attempt only, when its limits hold the
// order back, when the pre-flight refuses the name for this CA only (CAA
// allows another CA), or when its order fails for a reason of the CA's own
// (transient, rateLimited, a refusal by its policy: see nameFailure). A
// failure of the name itself (DNS, a failed validation) ends the attempt:
// another CA would fail the same way. When every CA held the order back
// the name waits for the first to have room; otherwise the failures are
// recorded and the name backs off.
func (r *Renewer) order(ctx context.Context, log *slog.Logger, d *store.Domain, cur *store.Certificate) {
	profile := d.Profile
	if profile == "" {
		profile = r.cfg.DefaultProfile
	}
	state := store.StateIssuing
	if cur != nil {
		state = store.StateRenewing
	}
	var (
		errs     caErrors
		held     hold
		started  bool          // the record says an order is under way
		took     time.Duration // the time the orders sent took
		nameFail bool          // a failure of the name itself ended the attempt
	)
	cands := r.candidates(cur, r.cfg.Now())
	for i, ca := range cands {
		o := r.orderFor(ca, d, profile, cur)
		res := r.orderAt(ctx, log, ca, o, cur != nil, i < len(cands)-1, func() bool {
			if started {
				return true
			}
			started = r.record(ctx, log, d.Name, func(d *store.Domain) { d.State = state })
			return started
		})
		took += res.took
		switch {
		case res.stop:
			return
		case res.cert != nil:
			r.obtained(ctx, log, ca, d.Name, res.cert, took)
			return
		case res.err == nil:
			if held.at.IsZero() || res.held.at.Before(held.at) {
				held = res.held
			}
			continue
		}
		errs = append(errs, caError{ca: ca.Name, err: res.err})
		if !res.next {
			nameFail = true
			break
		}
		log.Info("order failed at one CA; trying the next", "ca", ca.Name, "error", res.err)
	}
	if ctx.Err() != nil {
		// Shutting down: leave the name due so the next start resumes it.
		return
	}
	// Every CA held the order back, or the ones that did not refused the
	// name for themselves before sending anything (CAA allows only a CA
	// whose limits hold it back): the name waits in line, it has not
	// failed, and a long enrollment through that one CA must not add up to
	// giving it up.
	if len(errs) == 0 || !held.at.IsZero() && !nameFail && refusedOnly(errs) {
		if len(errs) > 0 {
			log.Info("refused by the other CAs; waiting for the one whose limits hold the order back", "errors", errs.Error(), "until", held.at.UTC())
		}
		var back store.State // the record is as it was unless an order started
		if started {
			back = d.State
		}
		r.postpone(ctx, log, d.Name, held, back)
		return
	}
	var err error = errs
	if len(errs) == 1 && len(r.cas) == 1 {
		err = errs[0].err
	}
	now := r.cfg.Now()
	down := r.downUntil(errs, now)
	if !down.IsZero() && !held.at.IsZero() {
		down = earliest(down, held.at) // a CA held back by its limits frees up first
	}
	r.failed(ctx, log, d.Name, cur, err, now, took, down)
}

// downUntil returns, when every failure of an attempt said its CA is
// unavailable, until when the name waits for those CAs: the earliest
// time one of them is tried again. It returns zero when a failure said
// anything else.
func (r *Renewer) downUntil(errs caErrors, now time.Time) time.Time {
	var until time.Time
	for _, ce := range errs {
		if !unavailable(ce.err) {
			return time.Time{}
		}
		for _, ca := range r.cas {
			if ca.Name == ce.ca {
				if at := ca.downUntil(now); until.IsZero() || at.Before(until) {
					until = at
				}
			}
		}
	}
	return until
}

// unavailable reports whether err says that the CA could not be reached
// or failed, and says nothing of the name: a network error, a timeout, an
// answer that is not a problem document (a 5xx from a load balancer), or
// serverInternal.
func unavailable(err error) bool {
	var ae *ACMEError
	if errors.As(err, &ae) {
		return ae.Kind == KindTransient && !ae.ReplacesRefused &&
			(ae.Problem == "" || shortProblem(ae.Problem) == "serverInternal")
	}
	return errors.Is(err, context.DeadlineExceeded)
}

// orderFor returns the order for d's names at ca. It replaces cur when ca
// issued cur (its Origin is ca's directory), or when cur was imported
// under d's own name (from certbot, perhaps from ca and the same
// account: only the CA can say), and then names cur in its "replaces"
// field unless ca refused that before; a refusal falls back to a plain
// order (orderAt). A certificate another configured CA issued is not
// named: another account ordered it.
func (r *Renewer) orderFor(ca *caState, d *store.Domain, profile string, cur *store.Certificate) Order {
	o := Order{Name: d.Name, ExtraNames: d.ExtraNames, Profile: profile}
	switch {
	case cur == nil:
		return o
	case cur.Source == store.SourceACME && cur.Origin == ca.dir:
	case cur.Source != store.SourceACME && cur.ID == d.Name:
	default:
		return o
	}
	o.Replaces = cur
	r.mu.Lock()
	o.NoReplaces = r.refused[d.Name] == cur.Serial
	r.mu.Unlock()
	return o
}

// joinSet keeps a certificate's set of names together when names of the
// set come under management one by one (certbot lineages imported, then
// their names added). cur serves d; when it carries other names too:
//
//   - d is cur's primary name (cur.ID) and takes cur's set (takesSet):
//     d's ExtraNames become cur's other names, so that d's orders ask
//     for the same exact set (a renewal, for the CA's limits);
//   - d is one of the other names, and the primary is managed with d in
//     its set (or about to take it): d's record is marked ManagedWith the
//     primary and leaves the due index; it is never ordered alone. It
//     returns true then, and the caller stops.
//
// Otherwise d is returned as it is: a name whose certificate's primary is
// not managed is ordered for itself, as before.
func (r *Renewer) joinSet(ctx context.Context, log *slog.Logger, d *store.Domain, cur *store.Certificate) (*store.Domain, bool) {
	if cur.ID == d.CertID || len(d.ExtraNames) > 0 || len(cur.Names) < 2 || !slices.Contains(cur.Names, d.Name) {
		return d, false // the name holds this certificate already, or carries a set of its own
	}
	if cur.ID == d.Name {
		if !takesSet(d, cur) {
			return d, false
		}
		extra := slices.Clone(cur.Names[1:])
		var out store.Domain
		if !r.record(ctx, log, d.Name, func(d *store.Domain) {
			if takesSet(d, cur) {
				d.ExtraNames = extra
			}
			out = *d
		}) {
			return d, true
		}
		log.Info("managed name takes every name of its certificate", "cert_id", cur.ID, "extra_names", strings.Join(out.ExtraNames, ","))
		return &out, false
	}
	owner, err := r.store.GetDomain(ctx, cur.ID)
	if err != nil || owner.State == store.StateRemoved || owner.ManagedWith != "" ||
		!slices.Contains(owner.ExtraNames, d.Name) && !takesSet(owner, cur) {
		return d, false
	}
	now := r.cfg.Now()
	if r.record(ctx, log, d.Name, func(d *store.Domain) {
		d.ManagedWith, d.ExtraNames, d.CertID = owner.Name, nil, cur.ID
		d.State, d.NextAttempt, d.UpdatedAt = store.StateValid, time.Time{}, now
		d.Failures, d.FailingSince, d.LastError = 0, time.Time{}, ""
	}) {
		log.Info("name is served by another managed name's certificate and renewed with it", "managed_with", owner.Name, "cert_id", cur.ID)
	}
	return d, true
}

// takesSet reports whether d, a managed name, takes the set of names of
// cur, the certificate stored under its name, when it first takes cur:
// when d carries no set of its own, and every name of cur's can be
// ordered (wildcards cannot yet).
func takesSet(d *store.Domain, cur *store.Certificate) bool {
	if d.ManagedWith != "" || len(d.ExtraNames) > 0 || d.CertID == cur.ID || cur.ID != d.Name || len(cur.Names) < 2 {
		return false
	}
	for _, n := range cur.Names {
		if checkOrderName(n) != nil {
			return false
		}
	}
	return true
}

// caResult is how an order at one CA ended (one step of the attempt that
// a store.Attempt records, which may try several CAs).
type caResult struct {
	cert *store.Certificate // obtained and stored
	took time.Duration      // how long the order took
	held hold               // with a nil err and cert: why and until when the CA's limits hold the order back
	err  error              // the failure
	next bool               // the failure is the CA's own: try the next CA
	stop bool               // nothing more to do: the name was removed, or the renewer stops
}

// hold says until when an order must wait, and for which limit; spread,
// when set, is how far after at the name comes due, at most.
type hold struct {
	at     time.Time
	limit  string
	spread time.Duration
}

// orderAt sends o to ca once the gate lets it through, and once more
// without "replaces" when the CA refused o as a replacement (RFC 9773
// section 5: the certificate was replaced already, or another account
// ordered it). start is called just before the first order is sent and
// reports whether the name is still managed. more says another CA follows
// ca in this attempt.
func (r *Renewer) orderAt(ctx context.Context, log *slog.Logger, ca *caState, o Order, renewal, more bool, start func() bool) caResult {
	held, endProbe := r.admit(ctx, ca, more)
	defer endProbe()
	if !held.at.IsZero() {
		ca.count(func(c *CACounts) { c.Deferred++ })
		return caResult{held: held, stop: ctx.Err() != nil}
	}
	// Only a replacement asks the directory (cached for an hour).
	ari := o.Replaces != nil && !o.NoReplaces && ca.offersARI(ctx)
	kind := ClassifyOrder(o, ari, r.cfg.Now())
	held, err := r.gate(ctx, ca, o, kind)
	switch {
	case err != nil:
		ca.count(func(c *CACounts) { c.Refused++ })
		r.orderRefused(ca.Name, err)
		return caResult{err: err, next: !nameFailure(err)}
	case !held.at.IsZero():
		ca.count(func(c *CACounts) { c.Deferred++ })
		return caResult{held: held, stop: ctx.Err() != nil}
	case !start():
		ca.Limiter.refund(o, kind)
		return caResult{stop: true}
	}
	cert, took, err := r.obtain(ctx, ca, o, kind, renewal)
	if errors.Is(err, errRemoved) {
		return caResult{stop: true, took: took}
	}
	if refusedReplaces(err) && o.Replaces != nil && !o.NoReplaces && ctx.Err() == nil {
		first := took
		log.Info("the CA refused the order as a replacement; ordering without replaces", "ca", ca.Name, "error", err)
		r.mu.Lock()
		r.refused[o.Name] = o.Replaces.Serial
		r.mu.Unlock()
		o.NoReplaces = true
		kind = ClassifyOrder(o, ari, r.cfg.Now())
		if held := r.reserve(ctx, ca, o.Names(), kind); !held.at.IsZero() {
			ca.count(func(c *CACounts) { c.Deferred++ })
			return caResult{held: held, took: first, stop: ctx.Err() != nil}
		}
		cert, took, err = r.obtain(ctx, ca, o, kind, renewal)
		took += first
	}
	switch {
	case ctx.Err() != nil:
		return caResult{stop: true}
	case err != nil:
		return caResult{err: err, took: took, next: cert == nil && !nameFailure(err)}
	}
	return caResult{cert: cert, took: took}
}

// obtain sends one order to ca and stores the certificate it returns. It
// tells the Limiter and the Metrics how the order ended. A certificate
// that was obtained but could not be stored is returned with the store's
// error.
func (r *Renewer) obtain(ctx context.Context, ca *caState, o Order, kind OrderKind, renewal bool) (*store.Certificate, time.Duration, error) {
	octx, cancel := context.WithTimeout(ctx, r.cfg.OrderTimeout)
	start := time.Now()
	r.orderStarted(ca.Name)
	cert, err := ca.Issuer.Obtain(octx, o)
	cancel()
	r.settle(ca, o, kind, err)
	if ctx.Err() == nil {
		ca.ended(outcomeOf(err), r.cfg.Now())
	}
	if err == nil && r.removedMeanwhile(ctx, o.Name) {
		// The operator removed the name (and perhaps deleted its
		// certificate) while the order ran: the CA issued, but nobody
		// would renew what is stored now, so nothing is.
		r.orderDone(ctx, ca.Name, start, renewal, nil)
		r.log.Info("name was removed while its order ran; the new certificate is not stored", "name", o.Name, "serial", cert.Serial)
		return nil, time.Since(start), errRemoved
	}
	if err == nil {
		if err = r.store.PutCertificate(ctx, r.scheduled(cert)); err == nil {
			r.mu.Lock()
			delete(r.refused, o.Name)
			r.mu.Unlock()
			r.issued(o.Name)
		}
	}
	r.orderDone(ctx, ca.Name, start, renewal, err)
	return cert, time.Since(start), err
}

// removedMeanwhile reports whether name's record says an operator removed
// it. A record that cannot be read says nothing of the kind.
func (r *Renewer) removedMeanwhile(ctx context.Context, name string) bool {
	d, err := r.store.GetDomain(ctx, name)
	return err == nil && d.State == store.StateRemoved
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

// nameFailures are the ACME problems that say the name itself could not
// be validated: another CA would fail the same way.
var nameFailures = map[string]bool{
	"dns": true, "connection": true, "unauthorized": true, "incorrectResponse": true, "tls": true, "compound": true,
}

// nameFailure reports whether err is a failure of the name itself, which
// no other CA can help with: the pre-flight found that the name does not
// resolve, does not point here, or its DNS cannot be read; or the CA
// tried to validate the name and failed (dns, connection, unauthorized,
// incorrectResponse, tls), or refused it for a reason of certserver's own
// (a wildcard, an empty name). Any other failure is the CA's: transient
// errors, rate limits, a refusal by the CA's policy (rejectedIdentifier),
// a CAA record that forbids this CA (the next CA's pre-flight decides for
// it), a profile or account problem, and a "replaces" the CA refused.
// Errors from issuers other than ACMEIssuer are the name's when they say
// they are permanent.
func nameFailure(err error) bool {
	var pe *PreflightError
	if errors.As(err, &pe) {
		return pe.Step != StepCAA || pe.Err != nil
	}
	var ae *ACMEError
	if errors.As(err, &ae) {
		if ae.Kind != KindPermanent || ae.ReplacesRefused {
			return false
		}
		return ae.Problem == "" || nameFailures[shortProblem(ae.Problem)]
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
// as the operator left it). It reports whether it wrote, logging why not.
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
	default:
		log.Error("write domain", "error", err)
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
// ends.
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
