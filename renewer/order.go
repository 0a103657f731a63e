package renewer

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

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
		return ae.Fault == FaultCADown
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
		ca.refund(o, kind)
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
// that was obtained but could not be stored (see storeIssued) is returned
// with the store's error.
func (r *Renewer) obtain(ctx context.Context, ca *caState, o Order, kind ratelimit.OrderKind, renewal bool) (*store.Certificate, time.Duration, error) {
	octx, cancel := context.WithTimeout(ctx, r.cfg.OrderTimeout)
	start := time.Now()
	r.orderStarted(ca.Name)
	cert, err := ca.Issuer.Obtain(octx, o)
	cancel()
	r.lostLease(ctx, err) // a challenge written under a lost lease
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
		if err = r.storeIssued(ctx, o.Name, r.scheduled(cert)); err == nil {
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

// Pauses between the writes of an issued certificate while the store's
// database is unavailable: the first, doubled after each failure, up to
// the last.
const (
	storeRetryFirst = time.Second
	storeRetryMax   = 30 * time.Second
)

// storeIssued writes cert, just issued for name, to the store. While the
// store answers store.ErrUnavailable (a fleet's database down) the
// certificate is kept and the write tried again, after pauses growing
// from storeRetryFirst to storeRetryMax, until it succeeds or ctx ends:
// ordering again later would spend the CA's limits on a certificate the
// CA has issued already. The wait is logged once when it begins and once
// when the certificate is written. Any other error is returned at once:
// one that says the name's lease was lost (store.ErrLeaseLost: another
// host has the name now) discards the certificate (leaseLost).
func (r *Renewer) storeIssued(ctx context.Context, name string, cert *store.Certificate) error {
	err := r.store.PutCertificate(ctx, cert)
	if err == nil || r.lostLease(ctx, err) || !r.storeFailed(err) {
		return err
	}
	since := r.cfg.Now()
	r.log.Warn("a certificate was issued but the store's database is unavailable: keeping it and writing it again until the database answers",
		"name", name, "serial", cert.Serial, "error", err)
	for pause := storeRetryFirst; ; pause = min(2*pause, storeRetryMax) {
		if serr := r.sleep(ctx, pause); serr != nil {
			r.log.Error("stopped before the database answered: the issued certificate is not stored",
				"name", name, "serial", cert.Serial)
			return err
		}
		err = r.store.PutCertificate(ctx, cert)
		switch {
		case err == nil:
			r.log.Info("the issued certificate is stored now that the database answers",
				"name", name, "serial", cert.Serial, "waited", r.cfg.Now().Sub(since).Round(time.Second))
			return nil
		case !errors.Is(err, store.ErrUnavailable):
			r.lostLease(ctx, err)
			return err
		}
	}
}
