package store

import (
	"context"
	"slices"
	"strconv"
	"testing"
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
		want  []string
	}{
		{"a put names the record and its names",
			func() error { return b.PutCertificate(ctx, testCert(clock, "www.example.com", "example.com")) },
			[]string{"www.example.com", "example.com"}},
		{"a replacement names the names it has and the one it dropped",
			func() error { return b.PutCertificate(ctx, testCert(clock, "www.example.com", "shop.example.com")) },
			[]string{"www.example.com", "shop.example.com", "example.com"}},
		{"a delete names the record and its names",
			func() error { return b.DeleteCertificate(ctx, "www.example.com") },
			[]string{"www.example.com", "shop.example.com"}},
	} {
		if err := step.write(); err != nil {
			t.Fatal(err)
		}
		got := changes(cur)
		if got.Reset || !slices.Equal(got.Names, step.want) || got.Next.Version != cur.Version+1 {
			t.Fatalf("%s: %+v, want %q at version %d", step.desc, got, step.want, cur.Version+1)
		}
		cur = got.Next
	}
	if got := changes(Cursor{Epoch: cur.Epoch, Version: 0}); got.Reset || len(got.Names) != 3 {
		t.Fatalf("from the start: %+v, want the three names once each", got)
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
	for range MaxChangeWrites {
		if err := b.PutCertificate(ctx, testCert(clock, "churn.example.com")); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := b.CertChanges(ctx, first.Next); got.Reset || !slices.Equal(got.Names, []string{"churn.example.com"}) {
		t.Fatalf("exactly MaxChangeWrites behind: %+v, want churn.example.com", got)
	}
	if err := b.PutCertificate(ctx, testCert(clock, "churn.example.com")); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.CertChanges(ctx, first.Next); !got.Reset {
		t.Fatalf("one write more than kept: %+v, want a reset", got)
	}
	if _, err := b.db.NewTransaction(false).Get(changeKey(1)); err == nil {
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
	}
	if got, _ := b.CertChanges(ctx, mid.Next); !got.Reset {
		t.Fatalf("%d names behind: %d names, want a reset", MaxChanges+100, len(got.Names))
	}
}
