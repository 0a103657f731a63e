package replica_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// syncCopy applies to local every change of pg after the copy's version,
// limit at a time, and checks that the copy ends at pg's latest version.
func syncCopy(t *testing.T, pg *postgres.Store, local *store.Badger, limit int) {
	t.Helper()
	ctx := context.Background()
	for {
		after, err := local.AppliedVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := pg.ChangesAfter(ctx, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) == 0 {
			break
		}
		if err := local.Apply(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	latest, err := pg.LatestVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if applied, _ := local.AppliedVersion(ctx); applied != latest {
		t.Fatalf("the copy applied version %d, the database is at %d", applied, latest)
	}
}

// sameLookups checks that every name is served by the same record, with
// the same key, on the copy as on the database.
func sameLookups(t *testing.T, what string, pg *postgres.Store, local *store.Badger, names ...string) {
	t.Helper()
	ctx := context.Background()
	for _, name := range names {
		want, err := pg.LookupCertificate(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := local.LookupCertificate(ctx, name)
		if err != nil {
			t.Fatalf("%s: the copy: %v", what, err)
		}
		if got.ID != want.ID || !bytes.Equal(got.KeyPEM, want.KeyPEM) {
			t.Errorf("%s: %s is served by %s (key %q) on the copy, by %s (key %q) in the database",
				what, name, got.ID, got.KeyPEM[len(got.KeyPEM)-12:], want.ID, want.KeyPEM[len(want.KeyPEM)-12:])
		}
	}
}

// A key rotation in the database (keys rotate on a fleet) reaches the
// local copies as new keys and nothing else: a name two records claim
// stays linked to the record the database links, on a copy that follows
// and on one that copies afresh, in batches of any size.
func TestKeyRewritesKeepTheLinksOfTheCopy(t *testing.T) {
	ctx := context.Background()
	pg := openPostgres(t, pgtest.New(t))
	// Both claim shared.test; the later write (a0.test, first in ID
	// order) wins it, and a rotation rewrites z0.test last.
	putAll(t, pg, []*store.Certificate{cert("z0.test", "shared.test")})
	putAll(t, pg, []*store.Certificate{cert("a0.test", "shared.test")})
	names := []string{"a0.test", "z0.test", "shared.test"}
	if got := served(t, pg, "shared.test"); got != "a0.test" {
		t.Fatalf("the database serves shared.test with %s, want a0.test", got)
	}
	follows := openBadger(t, t.TempDir())
	syncCopy(t, pg, follows, 100)
	sameLookups(t, "before the rotation", pg, follows, names...)

	rotated := func(round string) func(string, []byte) ([]byte, error) {
		return func(id string, key []byte) ([]byte, error) {
			return append(bytes.Clone(testKey), []byte("# "+round+" "+id)...), nil
		}
	}
	if _, err := pg.RewriteKeys(ctx, store.KeyOfCertificate, "", 10, rotated("one")); err != nil {
		t.Fatal(err)
	}
	syncCopy(t, pg, follows, 100)
	sameLookups(t, "after a rotation", pg, follows, names...)
	for _, limit := range []int{1, 2, 100} {
		fresh := openBadger(t, t.TempDir())
		syncCopy(t, pg, fresh, limit)
		sameLookups(t, "a copy made after a rotation", pg, fresh, names...)
	}

	// A full write after a rotation wins the name again; a rotation after
	// it changes nothing of that.
	putAll(t, pg, []*store.Certificate{cert("z0.test", "shared.test")})
	if _, err := pg.RewriteKeys(ctx, store.KeyOfCertificate, "", 10, rotated("two")); err != nil {
		t.Fatal(err)
	}
	if got := served(t, pg, "shared.test"); got != "z0.test" {
		t.Fatalf("the database serves shared.test with %s, want z0.test", got)
	}
	syncCopy(t, pg, follows, 1)
	sameLookups(t, "after a write and a second rotation", pg, follows, names...)
	for _, limit := range []int{1, 2, 100} {
		fresh := openBadger(t, t.TempDir())
		syncCopy(t, pg, fresh, limit)
		sameLookups(t, "a copy made after the second rotation", pg, fresh, names...)
	}
}
