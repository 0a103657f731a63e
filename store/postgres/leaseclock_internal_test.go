package postgres

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
)

// TestLeasesGoByTheDatabaseClock: a store opened without a Clock claims,
// renews and compares leases by the database's clock, so a host whose
// own clock runs an hour fast neither takes another host's lease early
// nor grants itself leases that end an hour late.
func TestLeasesGoByTheDatabaseClock(t *testing.T) {
	c := context.Background()
	a, fast := skewedStores(t)
	const name = "skew.example.com"
	if _, _, err := a.AddDomains(c, []*store.Domain{{Name: name, State: store.StatePending, Source: "api", NextAttempt: time.Now().Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	la, err := a.Claim(c, "a", name, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ls, err := fast.ClaimDue(c, "fast", fast.now(), 10, time.Minute); err != nil || len(ls) != 0 {
		t.Errorf("ClaimDue by the fast host while a's lease is unexpired by the database's clock: %+v, %v; want nothing", ls, err)
	}
	if _, err := fast.Claim(c, "fast", name, time.Minute); err == nil {
		t.Error("Claim by the fast host while a's lease is unexpired by the database's clock succeeded")
	}
	if ls, err := fast.Leases(c); err != nil || len(ls) != 1 {
		t.Errorf("Leases seen by the fast host: %+v, %v; want a's", ls, err)
	}
	renewed, err := fast.Renew(c, []store.Lease{la}, time.Minute)
	if err != nil || len(renewed) != 1 {
		t.Fatalf("Renew: %+v, %v", renewed, err)
	}
	if until := time.Until(renewed[0].Expires); until > 2*time.Minute {
		t.Errorf("a lease renewed for a minute by the fast host ends in %s, by its fast clock", until)
	}
}

// skewedStores opens two stores, opened without a Clock, on one new
// database: a, and fast, whose host's clock runs an hour fast.
func skewedStores(t *testing.T) (a, fast *Store) {
	t.Helper()
	url := pgtest.New(t)
	open := func() *Store {
		s, err := Open(context.Background(), Options{URL: url, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, fast = open(), open()
	fast.now = func() time.Time { return time.Now().Add(time.Hour) }
	return a, fast
}
