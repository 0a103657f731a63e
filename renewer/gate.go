package renewer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/certserver/certserver/store"
)

// accountHolder is implemented by issuers that can say which ACME account
// they order with (ACMEIssuer), for CAA accounturi checks (RFC 8657).
type accountHolder interface {
	Account(ctx context.Context) (*store.Account, error)
}

// errDeferred is returned by gate when an order must wait; the name's next
// attempt has been moved and nothing else is to be done now.
var errDeferred = errors.New("order deferred")

// gate decides, before an order for d is sent, whether it may go now. In
// this order:
//
//   - a name failing for longer than GiveUpAfter is parked as given up
//     (an operator's "renew now" still goes through);
//   - a name that has used up the CA's failed-validation limit waits until
//     the limit has room again, so a hopeless name cannot get the account
//     paused;
//   - the pre-flight (DNS points here, CAA allows the CA) must pass: a name
//     that would fail validation is not ordered, and fails with the reason;
//   - the rate-limit buckets must have room, or the order waits for them.
//
// It returns nil when the order may be sent (its rate-limit tokens are then
// taken), errDeferred when the name was rescheduled, or the pre-flight's
// error, which the caller records as a failure.
func (r *Renewer) gate(ctx context.Context, log *slog.Logger, d *store.Domain, kind OrderKind, urgent bool, now time.Time) error {
	if r.cfg.GiveUpAfter > 0 && !urgent && d.State == store.StateFailing &&
		!d.FailingSince.IsZero() && now.Sub(d.FailingSince) >= r.cfg.GiveUpAfter {
		days := int(now.Sub(d.FailingSince).Hours() / 24)
		r.record(ctx, log, d.Name, func(d *store.Domain) {
			d.State, d.NextAttempt = store.StateGivenUp, time.Time{}
			d.LastError = fmt.Sprintf("given up after %d days of failures; renew or re-add the name to try again. Last error: %s", days, d.LastError)
		})
		log.Warn("name given up", "failing_since", d.FailingSince.UTC(), "failures", d.Failures)
		return errDeferred
	}
	if r.cfg.Limiter != nil {
		if ok, at := r.cfg.Limiter.FailuresAllowed(d.Name); !ok {
			r.postpone(ctx, log, d.Name, at, "failed-validation limit for the name")
			return errDeferred
		}
	}
	if r.cfg.Preflight != nil {
		accountURI := ""
		if len(r.cfg.CAIdentities) > 0 {
			if ah, ok := r.issuer.(accountHolder); ok {
				if acct, err := ah.Account(ctx); err == nil {
					accountURI = acct.URL
				}
			}
		}
		if err := r.cfg.Preflight.Check(ctx, d.Name, r.cfg.CAIdentities, accountURI); err != nil {
			return err
		}
	}
	if r.cfg.Limiter != nil {
		res := r.cfg.Limiter.Reserve([]string{d.Name}, kind)
		if !res.OK {
			what := string(res.Limit)
			if res.Key != "" {
				what += " (" + res.Key + ")"
			}
			r.postpone(ctx, log, d.Name, res.At, what)
			return errDeferred
		}
	}
	return nil
}

// postpone moves name's next attempt to a little after at, keeping its
// state: the name is waiting for a rate limit, it has not failed.
func (r *Renewer) postpone(ctx context.Context, log *slog.Logger, name string, at time.Time, limit string) {
	// Up to a minute later, so that names held back by one bucket do not
	// all come due in the same instant.
	at = at.Add(r.jitterRand(func(rnd *rand.Rand) time.Duration { return time.Duration(rnd.Int64N(int64(time.Minute))) }))
	r.record(ctx, log, name, func(d *store.Domain) { d.NextAttempt = at })
	log.Debug("order waits for a rate limit", "limit", limit, "until", at.UTC())
}

// settle tells the rate limiter how an order that was sent ended: a success
// clears the name's failure count; a failed validation is charged to the
// name's failed-validation buckets; a rateLimited answer empties the bucket
// it names until the CA's Retry-After; any failure gives back the
// certificate tokens (no certificate was issued), but not the order's.
func (r *Renewer) settle(name string, kind OrderKind, err error) {
	l := r.cfg.Limiter
	if l == nil {
		return
	}
	names := []string{name}
	if err == nil {
		l.AuthzValid(name)
		return
	}
	var ae *ACMEError
	if errors.As(err, &ae) {
		switch {
		case ae.Kind == KindRateLimited:
			l.RateLimited(names, ae.Detail, ae.Wait)
			return
		case ae.Kind == KindPermanent && validationFailed(ae.Problem):
			l.AuthzFailed(name)
		}
	}
	l.NotIssued(names, kind)
}

// validationFailed reports whether an ACME problem type means that the CA
// tried to validate the name and failed (RFC 8555 section 6.7), which the
// CA counts against its failed-validation limits.
func validationFailed(problem string) bool {
	switch shortProblem(problem) {
	case "unauthorized", "incorrectResponse", "dns", "caa", "connection", "tls":
		return true
	}
	return false
}

// refund gives back the tokens of an order that was never sent. A nil
// Limiter does nothing.
func (l *Limiter) refund(o Order, kind OrderKind) {
	if l != nil {
		l.Refund([]string{o.Name}, kind)
	}
}
