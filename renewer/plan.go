package renewer

import (
	"math"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
)

// Plan is how long the names waiting for a first certificate take to
// order at the current new-order limits of the CAs' accounts, for GET
// /v1/queue. It counts the new-orders buckets only (Limit NewOrders): the
// registered-domain limits can make it longer (Limiter.BacklogFor), and
// the workers can make it longer when the limits allow more orders than
// they manage (Renewer.Throughput). Renewals, which the new-orders limit
// exempts, are not in it.
type Plan struct {
	// At is when the plan was made.
	At time.Time
	// Pending is how many names the plan is for.
	Pending int
	// Limited is false when a CA has no new-orders limit: only the
	// workers then bound the pace, and DoneIn is 0.
	Limited bool
	// DoneIn is how long until the last of the names can be sent, each
	// sent to the first CA with a token as soon as one arrives; DoneAt is
	// At plus DoneIn.
	DoneIn time.Duration
	DoneAt time.Time
	// Rate is how many new orders a second the CAs' buckets refill,
	// together: the pace once their bursts are spent. 0 when not Limited.
	Rate float64
	// CAs are the CAs, in the configured order.
	CAs []CAPlan
}

// CAPlan is one CA's part of a Plan.
type CAPlan struct {
	// Name is the CA's name.
	Name string
	// Room is how many new orders the CA's account can send now; -1
	// without a limit.
	Room float64
	// Rate is how many new orders a second its bucket refills; 0 without
	// a limit.
	Rate float64
	// Orders is how many of the pending names the CA takes in the plan.
	Orders int
	// Fleet says Room and Rate are the fleet's: the CA's limiter is
	// shared by every host (ratelimit.NewSharedLimiter), so the plan is
	// the fleet's, not this host's share of it.
	Fleet bool
}

// Plan returns how long pending new names take to order at the CAs'
// current new-orders limits. At Let's Encrypt's 300 orders per 3 hours, a
// single account orders 500,000 new names in 500,000 × 36 s less the
// 3-hour burst: about 208 days. It is safe for concurrent use.
func (r *Renewer) Plan(pending int) Plan {
	now := r.cfg.Now()
	p := Plan{At: now, Pending: max(pending, 0), Limited: true, CAs: make([]CAPlan, len(r.cas))}
	room := 0.0
	for i, ca := range r.cas {
		c := CAPlan{Name: ca.Name, Room: -1}
		if ca.Limiter != nil {
			c.Fleet = ca.Limiter.Shared()
			if b := ca.Limiter.Bucket(ratelimit.LimitNewOrders, ""); b.Burst >= 0 {
				c.Room, c.Rate = b.Tokens, float64(b.Burst)/b.Per.Seconds()
			}
		}
		if c.Room < 0 {
			if p.Limited {
				c.Orders = p.Pending // the first CA without a limit takes them all
			}
			p.Limited = false
		}
		room += max(c.Room, 0)
		p.Rate += c.Rate
		p.CAs[i] = c
	}
	if !p.Limited {
		p.Rate, p.DoneAt = 0, now
		for i := range p.CAs {
			if p.CAs[i].Room >= 0 {
				p.CAs[i].Orders = 0
			}
		}
		return p
	}
	// By time t the CAs can send room + t×rate orders in all.
	secs := 0.0
	if need := float64(p.Pending) - room; need > 0 && p.Rate > 0 {
		secs = need / p.Rate
	}
	p.DoneIn = time.Duration(math.Min(secs, float64(math.MaxInt64/2)) * float64(time.Second)).Round(time.Second)
	p.DoneAt = now.Add(p.DoneIn)
	left := p.Pending
	for i := range p.CAs {
		c := &p.CAs[i]
		c.Orders = min(left, int(math.Floor(c.Room+c.Rate*secs+1e-9)))
		left -= c.Orders
	}
	if left > 0 && len(p.CAs) > 0 {
		p.CAs[len(p.CAs)-1].Orders += left // rounding
	}
	return p
}
