package renewer

import (
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/sealed"
)

// TestFleetKeyPoolShared: two hosts of a fleet, each with its own
// connection to one PostgreSQL database, its own issuer and the fleet's
// key-encryption key, asking at the same moment for the keys of the same
// names, get the same key for each name: one pool for the fleet, filled
// once per slot. The keys are sealed in the database. A host that starts
// again (a new connection) finds the same keys; past the rotation the
// hosts, asking at once, agree on one new key per slot.
func TestFleetKeyPoolShared(t *testing.T) {
	t.Parallel()
	url := pgtest.Start(t).NewDatabase(t)
	kr, err := sealed.ParseKeyring(strings.NewReader("fleet "+base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", sealed.KeySize)))+"\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock(time.Now())
	const size = 3
	var raw *postgres.Store
	host := func() *ACMEIssuer {
		db, err := postgres.Open(t.Context(), postgres.Options{URL: url, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		raw = db
		is, err := NewACMEIssuer(ACMEConfig{Directory: "https://ca.example.test/dir", Now: clock.Now,
			KeyPool: &KeyPool{Size: size, Rotation: 24 * time.Hour}}, sealed.Wrap(db, kr), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return is
	}
	names := []string{"a.example.test", "b.example.test", "c.example.test", "d.example.test", "e.example.test", "f.example.test"}
	// keys asks every host for the key of every name at the same moment
	// and returns each name's key ID, failing unless the hosts agree.
	keys := func(hosts ...*ACMEIssuer) map[string]string {
		t.Helper()
		got := make([][]string, len(hosts))
		var wg sync.WaitGroup
		start := make(chan struct{})
		for h, is := range hosts {
			got[h] = make([]string, len(names))
			for i, n := range names {
				wg.Go(func() {
					<-start
					key, pk, err := is.poolKey(t.Context(), testLogger(t), n)
					if err != nil {
						t.Errorf("host %d, %s: %v", h+1, n, err)
						return
					}
					id, err := store.PublicKeyID(key.Public())
					if err != nil || !strings.Contains(string(pk.KeyPEM), "PRIVATE KEY") {
						t.Errorf("host %d, %s: key %v, PEM %.20q", h+1, n, err, pk.KeyPEM)
					}
					got[h][i] = id
				})
			}
		}
		close(start)
		wg.Wait()
		out := map[string]string{}
		for i, n := range names {
			for h := range hosts {
				if got[h][i] != got[0][i] {
					t.Errorf("%s: host %d has key %.12s, host 1 %.12s", n, h+1, got[h][i], got[0][i])
				}
			}
			out[n] = got[0][i]
		}
		return out
	}
	slotsOf := func(ids map[string]string) map[string]bool {
		t.Helper()
		distinct := map[string]bool{}
		for _, n := range names {
			distinct[ids[n]] = true
			for _, m := range names {
				if PoolSlot(n, size) == PoolSlot(m, size) && ids[n] != ids[m] {
					t.Errorf("%s and %s share slot %d but not a key", n, m, PoolSlot(n, size))
				}
			}
		}
		if len(distinct) > size {
			t.Errorf("%d distinct keys from a pool of %d", len(distinct), size)
		}
		return distinct
	}

	h1, h2 := host(), host()
	first := keys(h1, h2)
	slotsOf(first)
	k, err := raw.PoolKey(t.Context(), store.KeyECDSAP256, PoolSlot(names[0], size))
	if err != nil || !sealed.IsSealed(k.KeyPEM) || k.ID != first[names[0]] {
		t.Fatalf("the database's slot of %s: %+v, %v; want its key, sealed", names[0], k, err)
	}

	// A host started again finds the same pool.
	again := keys(host(), h2)
	for _, n := range names {
		if again[n] != first[n] {
			t.Errorf("%s after a restart: key %.12s, want %.12s", n, again[n], first[n])
		}
	}

	// Past the rotation, the hosts agree on one new key per slot.
	clock.Advance(24*time.Hour + time.Second)
	rotated := keys(h1, h2)
	for _, n := range names {
		if rotated[n] == first[n] {
			t.Errorf("%s past the rotation: the old key %.12s", n, first[n])
		}
	}
	slotsOf(rotated)
}
