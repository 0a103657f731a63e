package postgres_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/storetest"
)

// TestVerdictIsClaimedOnceAndShared: the first host to claim a name's
// check gets it; the others read its claim, then its verdict, until the
// verdict expires and the name may be claimed again.
func TestVerdictIsClaimedOnceAndShared(t *testing.T) {
	clock := storetest.NewClock()
	s := open(t, clock.Now)
	c := ctx(t)
	const name = "shop.example.com"

	v, claimed, err := s.ClaimVerdict(c, name, "h1", 10*time.Second)
	if err != nil || !claimed || v.State != store.VerdictChecking || v.Host != "h1" || !v.Expires.Equal(clock.Now().Add(10*time.Second)) {
		t.Fatalf("first claim = %+v, %v, %v; want h1's claim until now+10s", v, claimed, err)
	}
	v, claimed, err = s.ClaimVerdict(c, name, "h2", 10*time.Second)
	if err != nil || claimed || v.State != store.VerdictChecking || v.Host != "h1" {
		t.Fatalf("h2's claim while h1 checks = %+v, %v, %v; want h1's claim, not claimed", v, claimed, err)
	}
	if got, ok, err := s.GetVerdict(c, name); err != nil || !ok || got.Host != "h1" || got.State != store.VerdictChecking || got.Left != 10*time.Second {
		t.Fatalf("GetVerdict while h1 checks = %+v, %v, %v; want h1's claim with 10s left", got, ok, err)
	}
	// A claim retried (its first reply lost) is the host's own.
	v, claimed, err = s.ClaimVerdict(c, name, "h1", 10*time.Second)
	if err != nil || !claimed || v.State != store.VerdictChecking || v.Host != "h1" {
		t.Fatalf("h1's claim again while it checks = %+v, %v, %v; want its claim, claimed", v, claimed, err)
	}
	put, err := s.PutVerdict(c, store.Verdict{Name: name, State: store.VerdictRefused, Reason: "ask URL answered 403", Host: "h1"}, time.Minute)
	if err != nil || !put.Expires.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("PutVerdict = %+v, %v", put, err)
	}
	v, claimed, err = s.ClaimVerdict(c, name, "h2", 10*time.Second)
	if err != nil || claimed || v != put {
		t.Fatalf("h2's claim after the verdict = %+v, %v, %v; want %+v, not claimed", v, claimed, err, put)
	}

	// A claim whose host died lapses, and so does a verdict.
	clock.Advance(time.Minute)
	if got, ok, err := s.GetVerdict(c, name); err != nil || ok {
		t.Fatalf("GetVerdict of a lapsed verdict = %+v, %v, %v; want none", got, ok, err)
	}
	v, claimed, err = s.ClaimVerdict(c, name, "h2", 10*time.Second)
	if err != nil || !claimed || v.Host != "h2" || v.State != store.VerdictChecking || v.Reason != "" {
		t.Fatalf("claim after the verdict expired = %+v, %v, %v; want h2's claim", v, claimed, err)
	}
	clock.Advance(10 * time.Second)
	if v, claimed, err = s.ClaimVerdict(c, name, "h3", 10*time.Second); err != nil || !claimed || v.Host != "h3" {
		t.Fatalf("claim after h2's claim lapsed = %+v, %v, %v; want h3's claim", v, claimed, err)
	}
	// h2, whose check outlived its claim, does not overwrite h3's.
	if v, err := s.PutVerdict(c, store.Verdict{Name: name, State: store.VerdictAllowed, Host: "h2"}, time.Minute); !errors.Is(err, store.ErrClaimLost) {
		t.Fatalf("h2's verdict over h3's claim = %+v, %v; want ErrClaimLost", v, err)
	}
	if v, claimed, err = s.ClaimVerdict(c, name, "h1", 10*time.Second); err != nil || claimed || v.Host != "h3" || v.State != store.VerdictChecking {
		t.Fatalf("claim after h2's late verdict = %+v, %v, %v; want h3's claim still", v, claimed, err)
	}

	for _, bad := range []store.Verdict{
		{Name: name, State: store.VerdictChecking, Host: "h1"},
		{Name: name, State: "maybe", Host: "h1"},
		{State: store.VerdictAllowed, Host: "h1"},
		{Name: name, State: store.VerdictAllowed},
	} {
		if _, err := s.PutVerdict(c, bad, time.Minute); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutVerdict(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, _, err := s.ClaimVerdict(c, "", "h1", time.Second); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("ClaimVerdict of an empty name = %v, want ErrInvalid", err)
	}
}

// TestVerdictClaimIsAtomicAcrossHosts: three stores (each its own
// pool), each claiming for eight hosts, one name at the same moment, many
// times over: one claim wins.
func TestVerdictClaimIsAtomicAcrossHosts(t *testing.T) {
	url := pgtest.New(t)
	hosts := []string{"h1", "h2", "h3"}
	c := ctx(t)
	var (
		mu   sync.Mutex
		wins = map[string]int{}
		wg   sync.WaitGroup
	)
	for _, h := range hosts {
		s := openURL(t, url, nil)
		for g := range 8 {
			// Each claimer a host of its own: a host's own claim is
			// claimed again by it (a retry).
			h := h + "-" + string(rune('a'+g))
			wg.Go(func() {
				for i := range 20 {
					name := "n" + string(rune('a'+i)) + ".example.com"
					_, claimed, err := s.ClaimVerdict(c, name, h, time.Minute)
					if err != nil {
						t.Error(err)
						return
					}
					if claimed {
						mu.Lock()
						wins[name]++
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	if len(wins) != 20 {
		t.Errorf("%d names claimed, want 20: %v", len(wins), wins)
	}
	for name, n := range wins {
		if n != 1 {
			t.Errorf("%s claimed %d times, want once", name, n)
		}
	}
}

// TestExpiredVerdictsArePrunedWhenHostsReport: a host's report removes
// the verdicts that have lapsed, so a scanner's random names do not pile
// up in the table.
func TestExpiredVerdictsArePrunedWhenHostsReport(t *testing.T) {
	clock := storetest.NewClock()
	url := pgtest.New(t)
	s := openURL(t, url, clock.Now)
	c := ctx(t)
	for _, n := range []string{"a.example.com", "b.example.com"} {
		if _, err := s.PutVerdict(c, store.Verdict{Name: n, State: store.VerdictRefused, Reason: "no", Host: "h1"}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.PutVerdict(c, store.Verdict{Name: "c.example.com", State: store.VerdictAllowed, Host: "h1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	if err := s.ReportHost(c, store.Host{Name: "h1"}); err != nil {
		t.Fatal(err)
	}
	if got := count(t, url, "SELECT count(*) FROM on_demand_verdicts"); got != 1 {
		t.Errorf("%d verdicts after the report, want 1 (the unexpired one)", got)
	}
}

// count runs a query answering one integer on a connection of its own.
func count(t *testing.T, url, sql string) int {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx(t))
	var n int
	if err := conn.QueryRow(ctx(t), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
