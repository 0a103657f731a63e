package storetest

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// testChangeFeed checks store.ChangeFeed on a store that has it: what
// each kind of certificate write lists, and when an answer is a reset.
func testChangeFeed(t *testing.T, x *suite) {
	feed, ok := x.s.(store.ChangeFeed)
	if !ok {
		t.Log("the store has no change feed (store.ChangeFeed): nothing to check")
		return
	}
	changes := func(c store.Cursor) store.Changes {
		t.Helper()
		ch, err := feed.CertChanges(ctx(t), c)
		if err != nil {
			t.Fatalf("CertChanges(%+v): %v", c, err)
		}
		if ch.Reset && len(ch.Names) > 0 {
			t.Fatalf("CertChanges(%+v): a reset with %d names, want none", c, len(ch.Names))
		}
		return ch
	}

	start := changes(store.Cursor{})
	if !start.Reset || start.Next.Epoch == "" {
		t.Fatalf("a new store, a zero cursor: %+v, want a reset naming an epoch", start)
	}
	cur := start.Next
	if got := changes(cur); got.Reset || len(got.Names) != 0 || got.Next != cur {
		t.Fatalf("nothing written: %+v, want no names at the same cursor", got)
	}

	put := func(c *store.Certificate) func() error {
		return func() error { return x.s.PutCertificate(ctx(t), c) }
	}
	for _, step := range []struct {
		desc  string
		write func() error
		want  []string
	}{
		{"a new certificate for names nothing served: none",
			put(x.cert("www.example.com", "example.com")), nil},
		{"a domain written: none",
			func() error {
				return x.s.PutDomain(ctx(t), &store.Domain{Name: "www.example.com", CertID: "www.example.com"})
			}, nil},
		{"a replacement: the record, the names it dropped and the names it has",
			put(x.cert("www.example.com", "shop.example.com")), []string{"www.example.com", "example.com", "shop.example.com"}},
		{"a new wildcard nothing served: none",
			put(x.cert("*.example.com")), nil},
		{"a new certificate for a name its wildcard served: that name",
			put(x.cert("api.example.com", "api.other.test")), []string{"api.example.com"}},
		{"a new certificate taking a name from another: that name",
			put(x.cert("new.test", "shop.example.com")), []string{"shop.example.com"}},
		{"a delete: the record and its names",
			func() error { return x.s.DeleteCertificate(ctx(t), "www.example.com") }, []string{"www.example.com", "shop.example.com"}},
		{"a batch: what each of its certificates changed",
			func() error {
				return x.s.PutCertificates(ctx(t), []*store.Certificate{
					x.cert("api.example.com"),                     // replaced, drops api.other.test
					x.cert("fresh.test"),                          // new, nothing served it
					x.cert("new.test", "x.new.test"),              // replaced, drops shop, gains x.new.test
					x.cert("www.example.com", "www2.example.com"), // new, its wildcard served both
				})
			},
			[]string{"api.example.com", "api.other.test", "new.test", "shop.example.com", "x.new.test", "www.example.com", "www2.example.com"}},
		{"a refused write: none",
			func() error {
				_ = x.s.PutCertificates(ctx(t), []*store.Certificate{x.cert("new.test"), {ID: "bad"}})
				return nil
			}, nil},
	} {
		if err := step.write(); err != nil {
			t.Fatalf("%s: %v", step.desc, err)
		}
		got := changes(cur)
		names := slices.Clone(got.Names)
		slices.Sort(names)
		want := slices.Clone(step.want)
		slices.Sort(want)
		if got.Reset || !slices.Equal(names, want) {
			t.Fatalf("%s: %+v, want %q", step.desc, got, step.want)
		}
		if len(want) == 0 && got.Next != cur {
			t.Errorf("%s: the cursor moved from %+v to %+v with nothing changed", step.desc, cur, got.Next)
		}
		if len(want) > 0 && (got.Next.Epoch != cur.Epoch || got.Next.Version <= cur.Version) {
			t.Errorf("%s: the cursor went from %+v to %+v, want a later version of the same epoch", step.desc, cur, got.Next)
		}
		cur = got.Next
	}

	// From the start: every name once, oldest change first.
	got := changes(start.Next)
	wantAll := []string{"www.example.com", "example.com", "shop.example.com", "api.example.com", "api.other.test", "new.test", "x.new.test", "www2.example.com"}
	if got.Reset || len(got.Names) != len(wantAll) || got.Next != cur {
		t.Fatalf("from the start: %+v, want %d names once each at %+v", got, len(wantAll), cur)
	}
	// Each name is listed at its first change: the names of an earlier
	// write come before those of a later one.
	groups := [][]string{
		{"www.example.com", "example.com", "shop.example.com"},
		{"api.example.com"},
		{"api.other.test", "new.test", "x.new.test", "www2.example.com"},
	}
	for i := 1; i < len(groups); i++ {
		for _, early := range groups[i-1] {
			for _, late := range groups[i] {
				if slices.Index(got.Names, early) > slices.Index(got.Names, late) {
					t.Errorf("from the start: %q lists %s before %s, want the oldest change first", got.Names, late, early)
				}
			}
		}
	}

	for _, c := range []struct {
		desc   string
		cursor store.Cursor
	}{
		{"another store's epoch", store.Cursor{Epoch: cur.Epoch + "x", Version: cur.Version}},
		{"a version not written yet", store.Cursor{Epoch: cur.Epoch, Version: cur.Version + 1000}},
	} {
		if got := changes(c.cursor); !got.Reset || got.Next != cur {
			t.Errorf("%s: %+v, want a reset at %+v", c.desc, got, cur)
		}
	}

	// New certificates by the thousand (an import) change nothing a
	// reader cached: no names, and no reset.
	cs := make([]*store.Certificate, 1000)
	for batch := range 2 {
		for i := range cs {
			n := strconv.Itoa(batch*1000 + i)
			cs[i] = x.cert("imp"+n+".test", "www.imp"+n+".test")
		}
		if err := x.s.PutCertificates(ctx(t), cs); err != nil {
			t.Fatal(err)
		}
	}
	if got := changes(cur); got.Reset || len(got.Names) != 0 || got.Next != cur {
		t.Fatalf("after 2,000 new certificates: reset %v, %d names, next %+v; want nothing changed at %+v", got.Reset, len(got.Names), got.Next, cur)
	}

	// Replacing 1,000 certificates in a batch lists their names.
	x.clock.Advance(time.Second)
	if err := x.s.PutCertificates(ctx(t), cs); err != nil {
		t.Fatal(err)
	}
	if got := changes(cur); got.Reset || len(got.Names) != 2000 {
		t.Fatalf("after replacing 1,000 certificates of two names: reset %v, %d names; want 2,000", got.Reset, len(got.Names))
	}

	// More than MaxChanges names behind: a reset, not a huge list.
	mid := changes(store.Cursor{}).Next
	names := make([]string, 100)
	for w := 0; w*100 <= store.MaxChanges; w++ {
		for i := range names {
			names[i] = fmt.Sprintf("m%d.example.com", w*100+i)
		}
		x.putCert(t, x.cert(names...))
		x.putCert(t, x.cert(names...)) // a replacement: all its names
	}
	if got := changes(mid); !got.Reset {
		t.Fatalf("%d names behind: %d names, want a reset", store.MaxChanges+100, len(got.Names))
	}
}
