package storetest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// testBulkAddDomains adds Options.Bulk names in one AddDomains, as the
// admin API does for a bulk add, then checks the store holds each once:
// counts, the due index in order (ties by name) and records read back.
// A second add of half of them and one new name adds only the new one.
func testBulkAddDomains(t *testing.T, x *suite) {
	n := x.opts.Bulk
	now := x.clock.Now()
	// Name i is due at now + (n-1-i)/2 seconds: the due index runs
	// against name order, two names to a second (a tie, in name order).
	at := func(i int) time.Time { return now.Add(time.Duration((n-1-i)/2) * time.Second) }
	name := func(i int) string { return fmt.Sprintf("n%07d.bulk.example", i) }
	ds := make([]*store.Domain, n)
	for i := range ds {
		ds[i] = &store.Domain{Name: name(i), State: store.StatePending, Source: "api", NextAttempt: at(i)}
	}
	start := time.Now()
	added, existing, err := x.s.AddDomains(ctx(t), ds)
	took := time.Since(start)
	if err != nil || added != n || existing != 0 {
		t.Fatalf("AddDomains of %d = %d, %d, %v; want %d, 0, nil", n, added, existing, err, n)
	}
	// scripts/bench.sh reads this line.
	t.Logf("AddDomains of %d names into %T: %.3f s (%.0f names/s)", n, x.s, took.Seconds(), float64(n)/took.Seconds())

	// The earliest: the last names, in pairs in name order.
	want := []any{name(n - 2), at(n - 2), name(n - 1), at(n - 1), name(n - 4), at(n - 4), name(n - 3), at(n - 3)}
	x.wantDue(t, at(n-4), 10, want...)
	x.wantDue(t, at(0).Add(time.Hour), 3, want[:6]...)

	// The whole index, in pages of Due: every name once, in order.
	start = time.Now()
	es, err := x.s.Due(ctx(t), at(0), n+1)
	if err != nil {
		t.Fatalf("Due over %d: %v", n, err)
	}
	t.Logf("Due returning %d entries: %v", len(es), time.Since(start).Round(time.Millisecond))
	if len(es) != n {
		t.Fatalf("Due over everything: %d entries, want %d", len(es), n)
	}
	for k, e := range es {
		// Entry k is name n-1-k with its pair swapped.
		i := n - 1 - k
		if (n-1-i)%2 == 0 && i > 0 {
			i--
		} else if (n-1-i)%2 == 1 {
			i++
		}
		if e.Name != name(i) || !sameTime(e.At, at(i)) {
			t.Fatalf("Due entry %d is %s at %v, want %s at %v", k, e.Name, e.At, name(i), at(i))
		}
	}

	// ListDomains in pages: every name once, in name order.
	start = time.Now()
	count, after := 0, ""
	for {
		page, err := x.s.ListDomains(ctx(t), after, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, d := range page {
			if d.Name != name(count) {
				t.Fatalf("ListDomains: record %d is %s, want %s", count, d.Name, name(count))
			}
			count++
		}
		after = page[len(page)-1].Name
	}
	t.Logf("ListDomains over %d names: %v", count, time.Since(start).Round(time.Millisecond))
	if count != n {
		t.Fatalf("ListDomains: %d names, want %d", count, n)
	}

	// Spot checks read back whole.
	for _, i := range []int{0, 1, n / 3, n / 2, n - 2, n - 1} {
		want := &store.Domain{Name: name(i), State: store.StatePending, Source: "api", NextAttempt: at(i), AddedAt: now, UpdatedAt: now}
		if d := diffDomain(x.getDomain(t, name(i)), want); d != "" {
			t.Errorf("GetDomain(%s):\n%s", name(i), d)
		}
	}

	// Adding again: existing names stay as they are, new ones are added.
	again := append(slices.Clone(ds[n/2:]), &store.Domain{Name: "new.bulk.example", NextAttempt: now})
	start = time.Now()
	added, existing, err = x.s.AddDomains(ctx(t), again)
	t.Logf("AddDomains of %d names, all but one there: %v", len(again), time.Since(start).Round(time.Millisecond))
	if err != nil || added != 1 || existing != n-n/2 {
		t.Fatalf("AddDomains again = %d, %d, %v; want 1, %d, nil", added, existing, err, n-n/2)
	}
	x.wantDue(t, now, 3, "n"+fmt.Sprintf("%07d", n-2)+".bulk.example", now, name(n-1), now, "new.bulk.example", now)
}
