package renewer

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// BenchmarkDispatch measures what the dispatcher pays to pick the next
// due work, in a Badger store of 100,000 and of 1,000,000 managed names
// of which 1,000 are due: "next" is the read nextDue makes (the first
// dueBatch+1 due entries), "all" reads the whole due set. The cost
// follows the entries read, not the size of the store. It also reports
// the ARI polls a second the renewer's schedule makes for that many
// certificates (polls/s).
//
//	go test -run '^$' -bench BenchmarkDispatch -benchtime 2000x ./renewer/
func BenchmarkDispatch(b *testing.B) {
	for _, size := range []int{100_000, 1_000_000} {
		st, now := dueStore(b, size, 1000)
		r, err := New(Config{CAs: []CA{{Issuer: &scriptedIssuer{}}}}, st, discardLogger())
		if err != nil {
			b.Fatal(err)
		}
		var sum time.Duration
		const samples = 10_000
		for range samples {
			sum += r.pollDelay(0)
		}
		polls := float64(size) / (sum / samples).Seconds()
		for _, read := range []struct {
			name  string
			limit int
		}{{"next", dueBatch + 1}, {"all", 1_000_000}} {
			b.Run(fmt.Sprintf("store=%d/due=1000/%s", size, read.name), func(b *testing.B) {
				ctx := context.Background()
				n := 0
				for b.Loop() {
					due, err := st.Due(ctx, now, read.limit)
					if err != nil {
						b.Fatal(err)
					}
					n = len(due)
				}
				b.ReportMetric(float64(n), "entries/op")
				b.ReportMetric(polls, "polls/s")
			})
		}
	}
}

// BenchmarkDispatchAfterMassRenewal is BenchmarkDispatch/…/next after
// 20,000 due names at the front of the index were worked on and moved
// ahead, as a mass renewal moves them: until the store compacts, every
// read from the front steps over their deleted entries, which is why the
// dispatcher reads dueBatch entries at a time.
//
//	go test -run '^$' -bench BenchmarkDispatchAfterMassRenewal -benchtime 200x ./renewer/
func BenchmarkDispatchAfterMassRenewal(b *testing.B) {
	const moved = 20_000
	st, now := dueStore(b, 100_000, moved+1000)
	ctx := context.Background()
	due, err := st.Due(ctx, now, moved)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range due {
		if err := st.UpdateDomain(ctx, e.Name, func(d *store.Domain) error {
			d.NextAttempt = now.Add(90 * 24 * time.Hour)
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	n := 0
	for b.Loop() {
		due, err := st.Due(ctx, now, dueBatch+1)
		if err != nil {
			b.Fatal(err)
		}
		n = len(due)
	}
	b.ReportMetric(float64(n), "entries/op")
}

// dueStore returns a store of size names, due of them due before the
// time it returns, the others spread over the next 12 hours as the polls
// of valid names are.
func dueStore(b *testing.B, size, due int) (*store.Badger, time.Time) {
	b.Helper()
	st, err := store.OpenBadger(filepath.Join(b.TempDir(), "db"), store.BadgerOptions{Logger: discardLogger(), NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	start := time.Now()
	const batch = 50_000
	for from := 0; from < size; from += batch {
		ds := make([]*store.Domain, 0, batch)
		for i := from; i < min(from+batch, size); i++ {
			at := now.Add(time.Duration(float64(i) / float64(size) * float64(12*time.Hour))).Add(time.Second)
			if i < due {
				at = now.Add(-time.Duration(i+1) * time.Second)
			}
			ds = append(ds, &store.Domain{Name: fmt.Sprintf("n%07d.example%d.test", i, i%1000),
				State: store.StateValid, NextAttempt: at, AddedAt: now, UpdatedAt: now})
		}
		if _, _, err := st.AddDomains(context.Background(), ds); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("store of %d names (%d due) written in %s", size, due, time.Since(start).Round(time.Millisecond))
	return st, now
}
