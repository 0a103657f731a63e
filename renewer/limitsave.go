package renewer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/certserver/certserver/store"
)

// limitSaveEvery is how often Run saves what the CAs' Limiters spent, and
// so about the most a crash makes them forget.
const limitSaveEvery = time.Second

// limitSaveTimeout bounds one save, the last one at shutdown included.
const limitSaveTimeout = 10 * time.Second

// savedBucket names a saved bucket: its limit and key.
type savedBucket struct{ limit, key string }

// accountIDer is an Issuer that says which ACME account it orders with
// (ACMEIssuer does).
type accountIDer interface{ AccountID() string }

// LimitScope returns the name the Limiter of ca, the i-th CA (from 0) of
// the renewer's list, is kept under in the store (saved by one host,
// or shared by a fleet's: ratelimit.NewSharedLimiter): the ID of its ACME
// account when the Issuer says it, since the CA's limits are the
// account's and follow it whatever the CA is called in the
// configuration; else the CA's name; else its place in the list.
func LimitScope(ca CA, i int) string {
	if a, ok := ca.Issuer.(accountIDer); ok && a.AccountID() != "" {
		return "account:" + a.AccountID()
	}
	if ca.Name != "" {
		return "ca:" + ca.Name
	}
	return fmt.Sprintf("ca:%d", i+1)
}

// limitScope is LimitScope of a configured CA.
func limitScope(ca *caState, i int) string { return LimitScope(ca.CA, i) }

// restoreLimits loads the buckets saved by earlier runs into the CAs'
// Limiters, so that a restart does not hand an account full buckets it
// spent minutes ago. A store that cannot be read is logged: the Limiter
// then starts full, as it did before saving existed. A Limiter shared by
// a fleet's hosts keeps its buckets in the store already: nothing is
// restored into it, nor saved from it; its first Sweep merges what was
// saved for its account by hosts of their own (before the fleet, or
// still on an older version) into the fleet's buckets.
func (r *Renewer) restoreLimits(ctx context.Context) {
	for i, ca := range r.cas {
		if ca.Limiter == nil {
			continue
		}
		if ca.Limiter.Shared() {
			if err := ca.Limiter.Sweep(ctx); err != nil {
				r.log.Warn("rate limits: cannot sweep the fleet's buckets (merge in those saved by single hosts, drop the full ones); will retry", "ca", ca.Name, "error", err)
			}
			continue
		}
		scope := limitScope(ca, i)
		bs, err := r.store.RateBuckets(ctx, scope)
		if err != nil {
			r.log.Error("rate limits: cannot read the saved buckets; starting with full ones", "ca", ca.Name, "error", err)
			continue
		}
		ca.Limiter.Restore(bs)
		if len(bs) > 0 {
			r.log.Info("rate limits: restored the buckets spent before the restart", "ca", ca.Name, "buckets", len(bs))
		}
	}
}

// saveLimitsEvery saves the Limiters' changes every period until ctx is
// done, then once more.
func (r *Renewer) saveLimitsEvery(ctx context.Context, period time.Duration) {
	pending := make([]map[savedBucket]store.RateBucket, len(r.cas))
	save := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limitSaveTimeout)
		defer cancel()
		r.saveLimits(sctx, pending)
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			save()
		case <-ctx.Done():
			save()
			return
		}
	}
}

// saveLimits writes each Limiter's changes, with those of earlier saves
// that failed (pending, by CA), to the store. A Limiter shared by a
// fleet's hosts has nothing to save: its full buckets are swept from the
// store instead (Sweep, every few minutes), here rather than on the way
// of an order.
func (r *Renewer) saveLimits(ctx context.Context, pending []map[savedBucket]store.RateBucket) {
	for i, ca := range r.cas {
		if ca.Limiter == nil {
			continue
		}
		if ca.Limiter.Shared() {
			if err := ca.Limiter.Sweep(ctx); err != nil {
				r.log.Warn("rate limits: cannot sweep the fleet's buckets (merge in those saved by single hosts, drop the full ones); will retry", "ca", ca.Name, "error", err)
			}
			continue
		}
		changes := ca.Limiter.Changes()
		if len(changes) == 0 && len(pending[i]) == 0 {
			continue
		}
		if pending[i] == nil {
			pending[i] = make(map[savedBucket]store.RateBucket, len(changes))
		}
		for _, c := range changes {
			pending[i][savedBucket{c.Limit, c.Key}] = c
		}
		bs := make([]store.RateBucket, 0, len(pending[i]))
		for _, c := range pending[i] {
			bs = append(bs, c)
		}
		err := r.store.PutRateBuckets(ctx, limitScope(ca, i), bs)
		switch {
		case errors.Is(err, store.ErrInvalid):
			// Retrying cannot help: drop them rather than stop saving.
			r.log.Error("rate limits: the store refused the spent buckets; not saved", "ca", ca.Name, "buckets", len(bs), "error", err)
		case err != nil:
			r.log.Error("rate limits: cannot save the spent buckets; will retry", "ca", ca.Name, "buckets", len(bs), "error", err)
			continue
		}
		clear(pending[i])
	}
}
