package renewer

import (
	"context"
	"time"

	"github.com/certserver/certserver/store"
)

// sharedPoll is how often a host waiting for another host's check of a
// name reads its verdict (GetVerdict).
const sharedPoll = 100 * time.Millisecond

// claimMargin is added to AskTimeout for how long a host's claim of a
// check holds (claimTTL): the evaluation (DNS, then the ask URL) is cut
// off half of it before the claim lapses (checkBound), and a host that
// dies while checking holds the name up no longer.
const claimMargin = 10 * time.Second

// transientTTL bounds how long a refusal that is a host's failure to
// check the name (Decision.Transient) is shared with the fleet and
// remembered: long enough that the hosts waiting for the check get it,
// short enough that one host's DNS or network trouble does not refuse
// the name fleet-wide for DenyTTL.
const transientTTL = 10 * time.Second

// claimTTL is how long this host's claim of a check holds.
func (p *Policy) claimTTL() time.Duration { return p.cfg.AskTimeout + p.claimMargin }

// checkBound is how long this host's check of a name it claimed may
// take: it ends before the claim lapses, so that no other host checks the
// name at the same time.
func (p *Policy) checkBound() time.Duration { return p.claimTTL() - p.claimMargin/2 }

// checkShared is Check's evaluation on a fleet host (PolicyConfig.Shared):
// the fleet's verdict when there is one, else this host's own check,
// claimed so that no other host makes it too, and shared.
func (p *Policy) checkShared(ctx context.Context, name string) Decision {
	wait := time.NewTimer(p.cfg.SharedWait)
	defer wait.Stop()
	v, claimed, err := p.cfg.Shared.ClaimVerdict(ctx, name, p.cfg.Host, p.claimTTL())
	for {
		if err != nil {
			return Decision{Undecided: true, Reason: "the fleet's verdicts cannot be read: " + err.Error(), Err: err}
		}
		if claimed {
			return p.decideShared(ctx, name)
		}
		if v.State != store.VerdictChecking {
			d := Decision{Allow: v.State == store.VerdictAllowed, Reason: v.Reason}
			p.remember(name, cachedDecision{Decision: d, until: p.until(d, v.Left)})
			return d
		}
		poll := time.NewTimer(sharedPoll)
		select {
		case <-poll.C:
		case <-wait.C:
			poll.Stop()
			return Decision{Undecided: true, Reason: "host " + v.Host + " is checking the name"}
		case <-ctx.Done():
			poll.Stop()
			return Decision{Undecided: true, Reason: ctx.Err().Error(), Err: ctx.Err()}
		}
		// A plain read while the other host's claim holds; a claim
		// (a write) only once it lapsed.
		var ok bool
		v, ok, err = p.cfg.Shared.GetVerdict(ctx, name)
		if err == nil && !ok {
			v, claimed, err = p.cfg.Shared.ClaimVerdict(ctx, name, p.cfg.Host, p.claimTTL())
		}
	}
}

// decideShared evaluates name, whose check this host claimed, and records
// the verdict for the fleet. The evaluation ends before the claim lapses
// (checkBound). A refusal that is this host's failure to check the name
// (Transient) is shared for transientTTL at most. A verdict that cannot be recorded is still this host's
// decision; the claim lapses and another host checks again.
func (p *Policy) decideShared(ctx context.Context, name string) Decision {
	ectx, cancel := context.WithTimeout(ctx, p.checkBound())
	d := p.evaluate(ectx, name)
	cancel()
	ttl := p.cfg.DenyTTL
	v := store.Verdict{Name: name, State: store.VerdictRefused, Reason: d.Reason, Host: p.cfg.Host}
	switch {
	case d.Allow:
		ttl, v.State = p.cfg.AllowTTL, store.VerdictAllowed
	case d.Transient:
		ttl = min(ttl, transientTTL)
	}
	until := p.cfg.Now().Add(ttl)
	if _, err := p.cfg.Shared.PutVerdict(ctx, v, ttl); err != nil {
		p.log.Warn("on-demand verdict not shared with the fleet", "name", name, "allow", d.Allow, "error", err)
	}
	p.remember(name, cachedDecision{Decision: d, until: until})
	return d
}

// until is until when this host remembers d, the fleet's verdict that
// had left to live when the store returned it (by the store's clock,
// which this host's need not agree with): no longer than the verdict,
// nor than its own TTL.
func (p *Policy) until(d Decision, left time.Duration) time.Time {
	ttl := p.cfg.DenyTTL
	if d.Allow {
		ttl = p.cfg.AllowTTL
	}
	return p.cfg.Now().Add(min(ttl, left))
}
