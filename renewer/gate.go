package renewer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// accountHolder is implemented by issuers that can say which ACME account
// they order with (ACMEIssuer), for CAA accounturi checks (RFC 8657).
type accountHolder interface {
	Account(ctx context.Context) (*store.Account, error)
}

// shortWait is the longest wait for a rate limit that a worker sits out
// holding the name, instead of putting the name back in the due index: a
// per-second bucket (OrderRequests) paces a mass renewal by short waits,
// and names that wait in place keep the order the index gave them.
const shortWait = 2 * time.Second

// giveUp parks d as given up when it has been failing for longer than
// GiveUpAfter, unless an operator asked for it (forced). It reports
// whether it did.
func (r *Renewer) giveUp(ctx context.Context, log *slog.Logger, d *store.Domain, forced bool, now time.Time) bool {
	if r.cfg.GiveUpAfter <= 0 || forced || d.State != store.StateFailing ||
		d.FailingSince.IsZero() || now.Sub(d.FailingSince) < r.cfg.GiveUpAfter {
		return false
	}
	days := int(now.Sub(d.FailingSince).Hours() / 24)
	r.record(ctx, log, d.Name, func(d *store.Domain) {
		d.State, d.NextAttempt = store.StateGivenUp, time.Time{}
		d.LastError = fmt.Sprintf("given up after %d days of failures; renew or re-add the name to try again. Last error: %s", days, d.LastError)
	})
	log.Warn("name given up", "failing_since", d.FailingSince.UTC(), "failures", d.Failures)
	return true
}

// gate decides, before an order o of the given kind is sent to ca,
// whether it may go now. In this order, for every name of the order:
//
//   - a name that has used up the failed-validation limit of ca's account
//     waits until the limit has room again, so a hopeless name cannot get
//     the account paused;
//   - the pre-flight (DNS points here, CAA allows this CA) must pass: a
//     name that would fail validation is not ordered, and the order fails
//     with the reason;
//   - the rate-limit buckets of ca's account must have room, or the order
//     waits for them.
//
// It returns a zero hold and nil when the order may be sent (its
// rate-limit tokens are then taken), a hold when ca's limits hold it back,
// or the pre-flight's error.
func (r *Renewer) gate(ctx context.Context, ca *caState, o Order, kind ratelimit.OrderKind) (hold, error) {
	names := o.Names()
	if ca.Limiter != nil {
		for _, name := range names {
			if ok, at := ca.Limiter.FailuresAllowed(name); !ok {
				return hold{at: at, limit: "failed-validation limit for " + name}, nil
			}
		}
	}
	if r.cfg.Preflight != nil {
		accountURI := ""
		if len(ca.CAIdentities) > 0 {
			if ah, ok := ca.Issuer.(accountHolder); ok {
				if acct, err := ah.Account(ctx); err == nil {
					accountURI = acct.URL
				}
			}
		}
		for _, name := range names {
			if err := r.cfg.Preflight.CheckFor(ctx, name, o.Challenge, ca.CAIdentities, accountURI); err != nil {
				return hold{}, err
			}
		}
	}
	return r.reserve(ctx, ca, names, kind), nil
}

// reserve takes the tokens of an order from ca's Limiter. Waits of up to
// shortWait in all are waited out here; a longer one is returned as a
// hold. When ctx ends during a wait the hold is returned too. A shared
// Limiter whose store fails (a fleet's database down) holds the order
// back for storeErrorPause, and a store.ErrUnavailable starts the
// renewer's rest: no host orders what the fleet's budget cannot record.
func (r *Renewer) reserve(ctx context.Context, ca *caState, names []string, kind ratelimit.OrderKind) hold {
	if ca.Limiter == nil {
		return hold{}
	}
	var waited time.Duration
	for {
		res := ca.Limiter.Reserve(names, kind)
		if res.OK {
			return hold{}
		}
		if res.Err != nil {
			if !r.storeFailed(res.Err) {
				r.log.Error("rate limits: the fleet's budget cannot be read; order held back", "ca", ca.Name, "error", res.Err)
			}
			return hold{at: r.cfg.Now().Add(storeErrorPause), limit: "the fleet's rate-limit budget (store unavailable)"}
		}
		h := hold{at: res.At, limit: string(res.Limit)}
		if res.Key != "" {
			h.limit += " (" + res.Key + ")"
		}
		wait := max(res.At.Sub(r.cfg.Now()), time.Millisecond)
		if waited+wait > shortWait || r.sleep(ctx, wait) != nil {
			return h
		}
		waited += wait
	}
}

// admit returns a hold until the end of ca's rest while ca is down and
// rests (see caState.admit), and while a probe of it is under way waits
// for the probe's answer, or, when more CAs follow ca in this attempt,
// holds the order back a little so that it goes to them. A zero hold lets
// the order go; endProbe must be called when the attempt is over, and
// gives the probe up when this order was to be it but was never sent.
func (r *Renewer) admit(ctx context.Context, ca *caState, more bool) (held hold, endProbe func()) {
	for {
		now := r.cfg.Now()
		until, wait, probe := ca.admit(now)
		switch {
		case !until.IsZero():
			return hold{at: until, limit: "CA " + ca.Name + " resting: unavailable", spread: caDownSpread}, func() {}
		case wait != nil && more:
			return hold{at: now.Add(caDownSpread), limit: "CA " + ca.Name + " being probed", spread: caDownSpread}, func() {}
		case wait != nil:
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return hold{at: r.cfg.Now(), limit: "shutting down"}, func() {}
			}
		case probe != nil:
			r.log.Info("probing a CA that was unavailable", "ca", ca.Name)
			return hold{}, func() { ca.endProbe(probe) }
		}
		return hold{}, func() {}
	}
}

// postpone moves name's next attempt to a little after h.at, and its state
// back to state unless that is "": the name is waiting for a rate limit,
// it has not failed.
func (r *Renewer) postpone(ctx context.Context, log *slog.Logger, name string, h hold, state store.State) {
	// Up to a minute later (less for a short wait, or h.spread), so that
	// names held back by one bucket do not all come due in the same
	// instant.
	spread := min(time.Minute, max(h.at.Sub(r.cfg.Now()), time.Millisecond))
	if h.spread > 0 {
		spread = h.spread
	}
	at := h.at.Add(r.jitterRand(func(rnd *rand.Rand) time.Duration { return time.Duration(rnd.Int64N(int64(spread))) }))
	r.record(ctx, log, name, func(d *store.Domain) {
		d.NextAttempt = at
		if state != "" {
			d.State = state
		}
	})
	log.Debug("order held back", "limit", h.limit, "until", at.UTC())
}

// settle tells ca's rate limiter how an order o that was sent ended: a
// success clears the failure count of every name of the order; a failed
// validation is charged to the failed-validation buckets of the name the
// CA named (the order's Name when it named none of them); a rateLimited answer empties
// the bucket it names until the CA's Retry-After; any failure gives back
// the certificate tokens (no certificate was issued), but not the order's.
//
// A shared Limiter's store that fails loses what it was told; that is
// logged (the budget is then spent more than it was, or, for a lost
// rateLimited answer, the CA's next refusal drains it again).
func (r *Renewer) settle(ca *caState, o Order, kind ratelimit.OrderKind, err error) {
	l := ca.Limiter
	if l == nil {
		return
	}
	names := o.Names()
	if err == nil {
		for _, n := range names {
			r.limitFailed(ca, "a valid authorization", l.AuthzValid(n))
		}
		return
	}
	var ae *ACMEError
	if errors.As(err, &ae) {
		switch {
		case ae.Kind == KindRateLimited:
			// No certificate was issued: its tokens come back, and then
			// the bucket the CA named is emptied until its Retry-After.
			r.limitFailed(ca, "the certificate tokens of a failed order", l.NotIssued(names, kind))
			_, lerr := l.RateLimited(names, ae.Detail, ae.Wait)
			r.limitFailed(ca, "the CA's rateLimited answer", lerr)
			return
		case ae.ValidationFailed:
			r.limitFailed(ca, "a failed validation", l.AuthzFailed(failedName(o, ae)))
		}
	}
	r.limitFailed(ca, "the certificate tokens of a failed order", l.NotIssued(names, kind))
}

// limitFailed logs err, the failure of ca's shared Limiter to record
// what, when it is not nil.
func (r *Renewer) limitFailed(ca *caState, what string, err error) {
	if err != nil {
		r.log.Warn("rate limits: the fleet's budget did not record "+what, "ca", ca.Name, "error", err)
	}
}

// refund gives back the tokens ca's Limiter took for an order that was
// never sent. A CA without a Limiter has nothing to give back. A refund a
// shared Limiter's store could not record is lost: the fleet counts the
// order as sent, which errs on the safe side.
func (ca *caState) refund(o Order, kind ratelimit.OrderKind) {
	if ca.Limiter != nil {
		_ = ca.Limiter.Refund(o.Names(), kind)
	}
}

// failedName returns the name of o whose validation failed: the one the
// CA's problem is about (ACMEError.Identifier), matched exactly, else
// o.Name.
func failedName(o Order, ae *ACMEError) string {
	if ae.Identifier != "" && slices.Contains(o.Names(), ae.Identifier) {
		return ae.Identifier
	}
	return o.Name
}
