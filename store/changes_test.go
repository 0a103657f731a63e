package store

import (
	"context"
	"slices"
	"testing"
)

func TestChangeLog(t *testing.T) {
	l := newChangeLog()
	start := l.since(Cursor{})
	if !start.Reset || start.Next.Epoch == "" {
		t.Fatalf("zero cursor: %+v, want a reset with an epoch", start)
	}
	l.record("a.test", "b.test", "a.test")
	got := l.since(start.Next)
	if got.Reset || !slices.Equal(got.Names, []string{"a.test", "b.test"}) || got.Next.Version != 3 {
		t.Fatalf("after three changes: %+v, want a.test, b.test at version 3", got)
	}
	if again := l.since(got.Next); again.Reset || len(again.Names) != 0 || again.Next != got.Next {
		t.Fatalf("nothing new: %+v", again)
	}
	for _, c := range []struct {
		desc   string
		cursor Cursor
	}{
		{"another epoch (the store was reopened)", Cursor{Epoch: "other", Version: 3}},
		{"a version from the future", Cursor{Epoch: got.Next.Epoch, Version: 4}},
	} {
		t.Run(c.desc, func(t *testing.T) {
			if r := l.since(c.cursor); !r.Reset || len(r.Names) != 0 {
				t.Fatalf("%+v, want a reset", r)
			}
		})
	}
	t.Run("history trimmed", func(t *testing.T) {
		for range MaxChanges {
			l.record("c.test")
		}
		if r := l.since(got.Next); r.Reset || !slices.Equal(r.Names, []string{"c.test"}) {
			t.Fatalf("exactly MaxChanges behind: %+v, want c.test", r)
		}
		l.record("d.test")
		if r := l.since(got.Next); !r.Reset {
			t.Fatalf("one change more than kept: %+v, want a reset", r)
		}
	})
}

func TestBadgerCertChanges(t *testing.T) {
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	ctx := context.Background()
	cur := b.CertChanges(Cursor{}).Next
	c := testCert(clock, "www.example.com", "example.com")
	if err := b.PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	got := b.CertChanges(cur)
	if !slices.Equal(got.Names, []string{"www.example.com", "example.com"}) {
		t.Fatalf("after a put: %v", got.Names)
	}
	cur = got.Next
	c2 := testCert(clock, "www.example.com", "shop.example.com")
	if err := b.PutCertificate(ctx, c2); err != nil {
		t.Fatal(err)
	}
	got = b.CertChanges(cur)
	if !slices.Equal(got.Names, []string{"www.example.com", "shop.example.com", "example.com"}) {
		t.Fatalf("after a replacement: %v, want the new names and the dropped one", got.Names)
	}
	cur = got.Next
	if err := b.DeleteCertificate(ctx, "www.example.com"); err != nil {
		t.Fatal(err)
	}
	got = b.CertChanges(cur)
	if !slices.Equal(got.Names, []string{"www.example.com", "shop.example.com"}) {
		t.Fatalf("after a delete: %v", got.Names)
	}
}
