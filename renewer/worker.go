package renewer

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
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
// urgent names are worked on even if their next attempt is still ahead.
func (r *Renewer) process(ctx context.Context, name string, urgent bool) {
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
		return
	}
	if d.State == store.StateRemoved || d.NextAttempt.IsZero() && !urgent {
		return
	}
	if d.NextAttempt.After(now) && !urgent {
		return // rescheduled since the dispatcher read the index
	}
	cur := r.current(ctx, d)
	if cur != nil && !urgent {
		at := cur.RenewAt
		if at.IsZero() && cur.ID != d.CertID {
			// Adopting a certificate that serves the name but that nobody
			// renews (imported): renew it by its lifetime.
			at = r.timeRand(func(rnd *rand.Rand) time.Time { return RenewalTime(cur.NotBefore, cur.NotAfter, rnd) })
		}
		if at.After(now) {
			// Nothing to do yet: the certificate is good until its renewal
			// time.
			r.record(ctx, log, name, func(d *store.Domain) {
				d.State, d.CertID, d.NextAttempt = store.StateValid, cur.ID, at
			})
			if cur.ID != d.CertID {
				log.Info("serving certificate adopted", "cert_id", cur.ID, "source", cur.Source, "renew_at", at.UTC())
			}
			return
		}
	}

	profile := d.Profile
	if profile == "" {
		profile = r.cfg.DefaultProfile
	}
	// Only a certificate from ACME is named as replaced: one imported from
	// elsewhere was issued to another account, and a CA may refuse it.
	replaces := cur
	if cur != nil && cur.Source != "acme" {
		replaces = nil
	}
	order := Order{Name: name, Profile: profile, Replaces: replaces}
	kind := ClassifyOrder(order, r.cfg.CAOffersARI, now)
	if err := r.gate(ctx, log, d, kind, urgent, now); err != nil {
		if !errors.Is(err, errDeferred) {
			r.orderRefused(err)
			r.failed(ctx, log, name, cur, err, now, 0)
		}
		return
	}

	state := store.StateIssuing
	if cur != nil {
		state = store.StateRenewing
	}
	if !r.record(ctx, log, name, func(d *store.Domain) {
		if d.State == store.StateGivenUp {
			// An operator asked to try again: a fresh start.
			d.Failures, d.FailingSince = 0, time.Time{}
		}
		d.State = state
	}) {
		r.cfg.Limiter.refund(order, kind)
		return
	}
	octx, cancel := context.WithTimeout(ctx, r.cfg.OrderTimeout)
	start := time.Now()
	r.orderStarted()
	cert, err := r.issuer.Obtain(octx, order)
	cancel()
	r.settle(name, kind, err)
	if err == nil {
		err = r.store.PutCertificate(ctx, r.scheduled(cert))
	}
	r.orderDone(ctx, start, cur != nil, err)
	if ctx.Err() != nil {
		// Shutting down: leave the name due so the next start resumes it.
		return
	}
	now = r.cfg.Now()
	if err != nil {
		r.failed(ctx, log, name, cur, err, now, time.Since(start))
		return
	}
	r.record(ctx, log, name, func(d *store.Domain) {
		d.State = store.StateValid
		d.CertID = cert.ID
		d.NextAttempt = cert.RenewAt
		d.Failures, d.LastError, d.FailingSince = 0, "", time.Time{}
		d.UpdatedAt = now
		d.AddAttempt(store.Attempt{At: now, Outcome: "issued", Serial: cert.Serial, Took: time.Since(start)})
	})
	log.Info("certificate obtained", "serial", cert.Serial, "not_after", cert.NotAfter.UTC(),
		"renew_at", cert.RenewAt.UTC(), "took", time.Since(start).Round(time.Millisecond))
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

// failed records a failed order and schedules the next attempt: after the
// backoff for the count of consecutive failures, or later when the CA said
// when to come back.
func (r *Renewer) failed(ctx context.Context, log *slog.Logger, name string, cur *store.Certificate, err error, now time.Time, took time.Duration) {
	var ra retryAfter
	caWait := time.Duration(0)
	if errors.As(err, &ra) {
		caWait = ra.RetryAfter()
	}
	var rec store.Domain
	ok := r.record(ctx, log, name, func(d *store.Domain) {
		d.Failures++
		if d.FailingSince.IsZero() {
			d.FailingSince = now
		}
		d.State = store.StateFailing
		d.LastError = err.Error()
		wait := r.jitterRand(func(rnd *rand.Rand) time.Duration { return Backoff(d.Failures, rnd) })
		d.NextAttempt = now.Add(max(wait, caWait))
		d.UpdatedAt = now
		outcome := "failed"
		if pe := (*PreflightError)(nil); errors.As(err, &pe) {
			outcome = "refused"
		}
		d.AddAttempt(store.Attempt{At: now, Outcome: outcome, Error: err.Error(), Took: took})
		rec = *d
	})
	if !ok {
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
	}
	return false
}
