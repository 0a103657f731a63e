package renewer

import (
	"context"
	"fmt"
	"testing"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

// budgetDownStore is a fleet's store of rate buckets whose database
// cannot be reached.
type budgetDownStore struct{}

var errBudgetDown = fmt.Errorf("postgres: %w", store.ErrUnavailable)

func (budgetDownStore) UpdateRateBuckets(context.Context, string, []store.RateBucket, func([]store.RateBucket) ([]store.RateBucket, error)) error {
	return errBudgetDown
}
func (budgetDownStore) RateBuckets(context.Context, string) ([]store.RateBucket, error) {
	return nil, errBudgetDown
}
func (budgetDownStore) PutRateBuckets(context.Context, string, []store.RateBucket) error {
	return errBudgetDown
}

// TestGateFleetBudgetUnavailable: when a fleet's budget cannot be read
// (its database is down) nothing is ordered: the name waits, without a
// failure, and the renewer rests as for any store outage, so that no host
// spends what the fleet cannot count.
func TestGateFleetBudgetUnavailable(t *testing.T) {
	e := newGateEnv(t, ratelimit.LimitsConfig{}, Config{})
	lim, err := ratelimit.NewSharedLimiter(ratelimit.LimitsConfig{}, e.clock.Now, budgetDownStore{}, "account:x")
	if err != nil {
		t.Fatal(err)
	}
	e.r.cas[0].Limiter = lim
	const name = "a.example.test"
	addPending(t, e.st, e.clock.Now(), name)
	e.r.process(context.Background(), name, false)
	if n := e.iss.orderCount(); n != 0 {
		t.Fatalf("%d orders sent with the fleet's budget unreadable; want none", n)
	}
	d := getDomain(t, e.st, name)
	if d.State != store.StatePending || d.Failures != 0 || !d.NextAttempt.After(e.clock.Now()) {
		t.Fatalf("held-back name: state %s, failures %d, next attempt %v; want pending, no failure, later", d.State, d.Failures, d.NextAttempt)
	}
	if e.r.storeResting().IsZero() {
		t.Error("the renewer does not rest while the fleet's budget is unavailable")
	}
}
