package store

import (
	"context"
	"slices"
	"strconv"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

func TestBadgerCertChanges(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	dir := t.TempDir()
	b := openTestBadger(t, dir, clock)
	changes := func(c Cursor) Changes {
		t.Helper()
		ch, err := b.CertChanges(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}

	start := changes(Cursor{})
	if !start.Reset || len(start.Next.Epoch) != 16 || start.Next.Version != 0 {
		t.Fatalf("a new store, no cursor: %+v, want a reset naming the epoch at version 0", start)
	}
	cur := start.Next
	if got := changes(cur); got.Reset || len(got.Names) != 0 || got.Next != cur {
		t.Fatalf("nothing written: %+v", got)
	}

	for _, step := range []struct {
		desc  string
		write func() error
		want  []string // nil: no entry
	}{
		{"a new certificate for names nothing served: no entry",
			func() error { return b.PutCertificate(ctx, testCert(clock, "www.example.com", "example.com")) },
			nil},
		{"a replacement names the record, the names it dropped and the names it has",
			func() error { return b.PutCertificate(ctx, testCert(clock, "www.example.com", "shop.example.com")) },
			[]string{"www.example.com", "example.com", "shop.example.com"}},
		{"a new wildcard nothing served: no entry",
			func() error { return b.PutCertificate(ctx, testCert(clock, "*.example.com")) },
			nil},
		{"a new certificate for a name its wildcard served names it",
			func() error { return b.PutCertificate(ctx, testCert(clock, "api.example.com", "api.other.test")) },
			[]string{"api.example.com"}},
		{"a new certificate taking a name from another names that name",
			func() error { return b.PutCertificate(ctx, testCert(clock, "new.test", "shop.example.com")) },
			[]string{"shop.example.com"}},
		{"a delete names the record and its names",
			func() error { return b.DeleteCertificate(ctx, "www.example.com") },
			[]string{"www.example.com", "shop.example.com"}},
	} {
		if err := step.write(); err != nil {
			t.Fatal(err)
		}
		got := changes(cur)
		want := cur.Version
		if step.want != nil {
			want++
		}
		if got.Reset || !slices.Equal(got.Names, step.want) || got.Next.Version != want {
			t.Fatalf("%s: %+v, want %q at version %d", step.desc, got, step.want, want)
		}
		cur = got.Next
	}
	if got := changes(Cursor{Epoch: cur.Epoch, Version: 0}); got.Reset || len(got.Names) != 4 {
		t.Fatalf("from the start: %+v, want the four names once each", got)
	}

	// A restart keeps the epoch and the history: a reader's cursor stays good.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTestBadger(t, dir, clock)
	if err := b.PutCertificate(ctx, testCert(clock, "after.example.com")); err != nil {
		t.Fatal(err)
	}
	if got := changes(cur); got.Reset || !slices.Equal(got.Names, []string{"after.example.com"}) {
		t.Fatalf("after a restart: %+v, want after.example.com", got)
	}

	for _, c := range []struct {
		desc   string
		cursor Cursor
	}{
		{"another store's epoch", Cursor{Epoch: "0123456789abcdef", Version: 1}},
		{"a version not written yet", Cursor{Epoch: cur.Epoch, Version: cur.Version + 5}},
	} {
		if got := changes(c.cursor); !got.Reset || len(got.Names) != 0 {
			t.Errorf("%s: %+v, want a reset", c.desc, got)
		}
	}
}

func TestBadgerCertChangesBounded(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	first, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	// MaxChangeWrites writes of one name each, then one more.
	write := func(n int) {
		t.Helper()
		err := b.update(ctx, func(txn *badger.Txn) error {
			for range n {
				if err := recordChange(txn, []string{"churn.example.com"}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	write(MaxChangeWrites)
	if got, _ := b.CertChanges(ctx, first.Next); got.Reset || !slices.Equal(got.Names, []string{"churn.example.com"}) {
		t.Fatalf("exactly MaxChangeWrites behind: %+v, want churn.example.com", got)
	}
	write(1)
	if got, _ := b.CertChanges(ctx, first.Next); !got.Reset {
		t.Fatalf("one write more than kept: %+v, want a reset", got)
	}
	txn := b.db.NewTransaction(false)
	defer txn.Discard()
	if _, err := txn.Get(changeKey(1)); err == nil {
		t.Errorf("the oldest write is still stored past the bound")
	}

	// More than MaxChanges distinct names pending: a reset, not a huge list.
	mid, _ := b.CertChanges(ctx, Cursor{})
	names := make([]string, 100)
	for w := 0; w*100 <= MaxChanges; w++ {
		for i := range names {
			names[i] = "n" + strconv.Itoa(w*100+i) + ".example.com"
		}
		if err := b.PutCertificate(ctx, testCert(clock, names...)); err != nil {
			t.Fatal(err)
		}
		if err := b.PutCertificate(ctx, testCert(clock, names...)); err != nil { // a replacement
			t.Fatal(err)
		}
	}
	if got, _ := b.CertChanges(ctx, mid.Next); !got.Reset {
		t.Fatalf("%d names behind: %d names, want a reset", MaxChanges+100, len(got.Names))
	}

	// One write of more than MaxChanges names is kept as a reset.
	many := make([]string, MaxChanges+1)
	for i := range many {
		many[i] = "m" + strconv.Itoa(i) + ".example.com"
	}
	before, _ := b.CertChanges(ctx, Cursor{})
	if err := b.update(ctx, func(txn *badger.Txn) error { return recordChange(txn, many) }); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.CertChanges(ctx, before.Next); !got.Reset || got.Next.Version != before.Next.Version+1 {
		t.Fatalf("one write of %d names: %+v, want a reset at the next version", len(many), got)
	}
}

// An import stores batches of new certificates faster than nginx polls
// (every second): they must not make nginx drop what it cached.
func TestBadgerPutCertificatesNewNoReset(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	if err := b.PutCertificate(ctx, testCert(clock, "cached.example.com")); err != nil {
		t.Fatal(err)
	}
	poll, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	// Two batches of 1,000 between two polls: 2,000 certificates, 4,000
	// names.
	for batch := range 2 {
		cs := make([]*Certificate, 1000)
		for i := range cs {
			n := strconv.Itoa(batch*1000 + i)
			cs[i] = testCert(clock, "imp"+n+".test", "www.imp"+n+".test")
		}
		if err := b.PutCertificates(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.CertChanges(ctx, poll.Next)
	if err != nil {
		t.Fatal(err)
	}
	if got.Reset || len(got.Names) != 0 || got.Next != poll.Next {
		t.Fatalf("one poll behind 2,000 new certificates: reset %v, %d names, next %+v; want nothing changed at %+v",
			got.Reset, len(got.Names), got.Next, poll.Next)
	}
}

// PutCertificates records what it replaced, in one entry for the batch.
func TestBadgerPutCertificatesRecordsReplacements(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	err := b.PutCertificates(ctx, []*Certificate{
		testCert(clock, "a.example.com", "www.a.example.com"),
		testCert(clock, "b.example.com"),
		testCert(clock, "*.c.example.com"),
	})
	if err != nil {
		t.Fatal(err)
	}
	poll, err := b.CertChanges(ctx, Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	err = b.PutCertificates(ctx, []*Certificate{
		testCert(clock, "a.example.com"),              // replaced, drops www.a
		testCert(clock, "new.example.com"),            // new, nothing served it
		testCert(clock, "b.example.com", "x.b.test"),  // replaced, gains x.b.test
		testCert(clock, "api.c.example.com"),          // new, its wildcard served it
		testCert(clock, "d.example.com", "d.example"), // new
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.CertChanges(ctx, poll.Next)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a.example.com", "www.a.example.com", "b.example.com", "x.b.test", "api.c.example.com"}
	if got.Reset || !slices.Equal(got.Names, want) || got.Next.Version != poll.Next.Version+1 {
		t.Fatalf("a batch replacing two certificates: %+v, want %q at version %d", got, want, poll.Next.Version+1)
	}

	// A batch replacing 1,000 certificates is one entry: a reader one
	// poll behind gets their names, not a reset.
	cs := make([]*Certificate, 1000)
	for i := range cs {
		cs[i] = testCert(clock, "r"+strconv.Itoa(i)+".test")
	}
	for range 2 {
		mid, _ := b.CertChanges(ctx, Cursor{})
		if err := b.PutCertificates(ctx, cs); err != nil {
			t.Fatal(err)
		}
		got, err = b.CertChanges(ctx, mid.Next)
		if err != nil {
			t.Fatal(err)
		}
	}
	if got.Reset || len(got.Names) != 1000 || got.Next.Version != poll.Next.Version+2 {
		t.Fatalf("a batch replacing 1,000 certificates: reset %v, %d names, version %d; want 1,000 names at version %d",
			got.Reset, len(got.Names), got.Next.Version, poll.Next.Version+2)
	}
}
