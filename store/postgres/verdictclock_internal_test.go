package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// TestVerdictsGoByTheDatabaseClock: a store opened without a Clock
// claims, records, compares and prunes verdicts by the database's clock,
// so a host whose own clock runs an hour fast neither takes another
// host's claim early nor prunes it, and is told how long a verdict has
// left by the database's clock.
func TestVerdictsGoByTheDatabaseClock(t *testing.T) {
	c := context.Background()
	a, fast := skewedStores(t)
	const name = "skew.example.com"
	if _, claimed, err := a.ClaimVerdict(c, name, "a", time.Minute); err != nil || !claimed {
		t.Fatalf("a's claim: %v, %v", claimed, err)
	}
	if err := fast.ReportHost(c, store.Host{Name: "fast"}); err != nil {
		t.Fatal(err)
	}
	v, claimed, err := fast.ClaimVerdict(c, name, "fast", time.Minute)
	if err != nil || claimed || v.Host != "a" {
		t.Fatalf("the fast host's claim while a checks = %+v, %v, %v; want a's claim", v, claimed, err)
	}
	if v.Left <= 0 || v.Left > time.Minute {
		t.Errorf("a's claim has %s left, want within a minute", v.Left)
	}
	put, err := fast.PutVerdict(c, store.Verdict{Name: "other.example.com", State: store.VerdictAllowed, Host: "fast"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if until := time.Until(put.Expires); until > 2*time.Minute || put.Left > time.Minute {
		t.Errorf("a verdict recorded for a minute by the fast host ends in %s (%s left)", until, put.Left)
	}
}
