package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// wantDue checks that Due(before, limit) returns exactly the entries
// given as name, time pairs.
func (x *suite) wantDue(t *testing.T, before time.Time, limit int, want ...any) {
	t.Helper()
	es, err := x.s.Due(ctx(t), before, limit)
	if err != nil {
		t.Fatalf("Due: %v", err)
	}
	var got, w []string
	for _, e := range es {
		got = append(got, e.Name+"@"+us(e.At).Format(time.RFC3339Nano))
	}
	for i := 0; i+1 < len(want); i += 2 {
		w = append(w, want[i].(string)+"@"+us(want[i+1].(time.Time)).Format(time.RFC3339Nano))
	}
	if !slices.Equal(got, w) {
		t.Errorf("Due(%v, %d) =\n  %q\nwant\n  %q", before, limit, got, w)
	}
}

// testDueIndex: Due returns the entries at or before its time, earliest
// first and ties in name order, up to limit; a zero NextAttempt is not in
// the index; PutDomain, UpdateDomain, DeleteDomain and AddDomains move
// the entries.
func testDueIndex(t *testing.T, x *suite) {
	t0 := x.clock.Now()
	at := func(minutes int) time.Time { return t0.Add(time.Duration(minutes) * time.Minute) }
	old := time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	far := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	fine := at(10).Add(time.Microsecond)
	for _, d := range []*store.Domain{
		{Name: "c.example.com", NextAttempt: at(10)},
		{Name: "a.example.com", NextAttempt: at(10)},
		{Name: "b.example.com", NextAttempt: at(5)},
		{Name: "*.b.example.com", NextAttempt: at(10)},
		{Name: "z.example.com", NextAttempt: at(60)},
		{Name: "never.example.com"},
		{Name: "old.example.com", NextAttempt: old},
		{Name: "far.example.com", NextAttempt: far},
		{Name: "fine.example.com", NextAttempt: fine},
	} {
		x.putDomain(t, d)
	}
	for _, tc := range []struct {
		desc   string
		change func(t *testing.T)
		before time.Time
		limit  int
		want   []any
	}{
		{desc: "order, ties by name, zero not indexed", before: at(60), limit: 10,
			want: []any{"old.example.com", old, "b.example.com", at(5), "*.b.example.com", at(10), "a.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine, "z.example.com", at(60)}},
		{desc: "at or before: stops after before", before: at(10), limit: 10,
			want: []any{"old.example.com", old, "b.example.com", at(5), "*.b.example.com", at(10), "a.example.com", at(10), "c.example.com", at(10)}},
		{desc: "a microsecond later", before: fine, limit: 10,
			want: []any{"old.example.com", old, "b.example.com", at(5), "*.b.example.com", at(10), "a.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine}},
		{desc: "before between entries", before: at(9), limit: 10,
			want: []any{"old.example.com", old, "b.example.com", at(5)}},
		{desc: "before everything", before: old.Add(-time.Hour), limit: 10},
		{desc: "far future", before: far, limit: 100,
			want: []any{"old.example.com", old, "b.example.com", at(5), "*.b.example.com", at(10), "a.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine, "z.example.com", at(60), "far.example.com", far}},
		{desc: "limit", before: at(60), limit: 2, want: []any{"old.example.com", old, "b.example.com", at(5)}},
		{desc: "limit within a tie", before: at(60), limit: 4,
			want: []any{"old.example.com", old, "b.example.com", at(5), "*.b.example.com", at(10), "a.example.com", at(10)}},
		{desc: "zero limit", before: at(60), limit: 0},
		{desc: "PutDomain moves the entry",
			change: func(t *testing.T) { x.putDomain(t, &store.Domain{Name: "z.example.com", NextAttempt: at(1)}) },
			before: at(60), limit: 10,
			want: []any{"old.example.com", old, "z.example.com", at(1), "b.example.com", at(5), "*.b.example.com", at(10), "a.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine}},
		{desc: "a zero NextAttempt takes it out",
			change: func(t *testing.T) { x.putDomain(t, &store.Domain{Name: "b.example.com", State: store.StateValid}) },
			before: at(60), limit: 10,
			want: []any{"old.example.com", old, "z.example.com", at(1), "*.b.example.com", at(10), "a.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine}},
		{desc: "UpdateDomain moves the entry",
			change: func(t *testing.T) {
				if err := x.s.UpdateDomain(ctx(t), "old.example.com", func(d *store.Domain) error { d.NextAttempt = at(30); return nil }); err != nil {
					t.Fatal(err)
				}
			},
			before: at(60), limit: 10,
			want: []any{"z.example.com", at(1), "*.b.example.com", at(10), "a.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine, "old.example.com", at(30)}},
		{desc: "DeleteDomain removes the entry",
			change: func(t *testing.T) {
				if err := x.s.DeleteDomain(ctx(t), "a.example.com"); err != nil {
					t.Fatal(err)
				}
			},
			before: at(60), limit: 10,
			want: []any{"z.example.com", at(1), "*.b.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine, "old.example.com", at(30)}},
		{desc: "AddDomains indexes what it adds and leaves the rest",
			change: func(t *testing.T) {
				if _, _, err := x.s.AddDomains(ctx(t), []*store.Domain{{Name: "new.example.com", NextAttempt: at(2)}, {Name: "c.example.com", NextAttempt: at(0)}}); err != nil {
					t.Fatal(err)
				}
			},
			before: at(60), limit: 10,
			want: []any{"z.example.com", at(1), "new.example.com", at(2), "*.b.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine, "old.example.com", at(30)}},
		{desc: "a record put again at the same time has one entry",
			change: func(t *testing.T) {
				x.putDomain(t, &store.Domain{Name: "c.example.com", NextAttempt: at(10), State: store.StateFailing})
			},
			before: at(60), limit: 10,
			want: []any{"z.example.com", at(1), "new.example.com", at(2), "*.b.example.com", at(10), "c.example.com", at(10), "fine.example.com", fine, "old.example.com", at(30)}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if tc.change != nil {
				tc.change(t)
			}
			x.wantDue(t, tc.before, tc.limit, tc.want...)
		})
	}
	if es, err := x.s.Due(ctx(t), at(60), -1); err != nil || len(es) != 0 {
		t.Errorf("Due with a negative limit = %v, %v; want nothing", es, err)
	}
}
