package postgres_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/sealed"
)

// keyring returns a keyring of the keys named, each made of its seed, the
// last one current.
func keyring(t *testing.T, keys ...string) *sealed.Keyring {
	t.Helper()
	var text strings.Builder
	for _, k := range keys {
		text.WriteString(k + " " + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte(k[:1]), sealed.KeySize)) + "\n")
	}
	kr, err := sealed.ParseKeyring(strings.NewReader(text.String()), "test")
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// TestRotateKeys rotates the keys of a PostgreSQL store through the
// decorator, as `certserver keys rotate` does in a fleet: every key ends
// under the new key, each rewritten certificate takes a new version (so
// that the hosts' copies apply it, as a key rewrite alone), and with the old key gone from the
// keyring everything opens. A second rotation takes no version.
func TestRotateKeys(t *testing.T) {
	pg := open(t, nil)
	keys := map[string][]byte{}
	for i := range 5 {
		name := fmt.Sprintf("n%d.example.com", i)
		m := certtest.New(t, certtest.Template{DNSNames: []string{name}}, nil)
		c, err := store.ParseCertificate(m.ChainPEM, m.KeyPEM, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		keys[c.ID] = c.KeyPEM
		var st store.Store = pg // stored before sealing was turned on
		if i%2 == 1 {
			st = sealed.Wrap(pg, keyring(t, "a1"))
		}
		if err := st.PutCertificate(ctx(t), c); err != nil {
			t.Fatal(err)
		}
	}
	if err := sealed.Wrap(pg, keyring(t, "a1")).PutAccount(ctx(t), &store.Account{ID: "acct", Directory: "https://ca.test/dir", KeyPEM: keys["n0.example.com"]}); err != nil {
		t.Fatal(err)
	}
	before, err := pg.LatestVersion(ctx(t))
	if err != nil {
		t.Fatal(err)
	}

	s := sealed.Wrap(pg, keyring(t, "a1", "b2"))
	if _, scanned, resealed := rotateAll(t, s); scanned != 6 || resealed != 6 {
		t.Errorf("rotation: scanned %d resealed %d, want 6 and 6", scanned, resealed)
	}
	changes, err := pg.ChangesAfter(ctx(t), before, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 5 {
		t.Errorf("%d changes after the rotation, want the 5 certificates", len(changes))
	}
	for _, ch := range changes {
		if ch.Kind != store.ChangeRewriteKey || ch.Certificate != nil {
			t.Errorf("change %d is a %s, want a %s alone (a rotation changes no link)", ch.Version, ch.Kind, store.ChangeRewriteKey)
			continue
		}
		if id, _ := sealed.KeyID(ch.KeyPEM); id != "b2" {
			t.Errorf("change of %s carries a key under %q, want b2", ch.ID, id)
		}
	}
	// A copy made afresh gets each record at its write's version, with
	// its current key, then the key rewrites (the same keys again).
	changes, err = pg.ChangesAfter(ctx(t), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 10 {
		t.Errorf("%d changes for a fresh copy, want the 5 certificates and their 5 key rewrites", len(changes))
	}
	for _, ch := range changes {
		key, want := ch.KeyPEM, store.ChangeRewriteKey
		if ch.Version <= before {
			want = store.ChangePutCertificate
			if ch.Certificate != nil {
				key = ch.Certificate.KeyPEM
			}
		}
		if ch.Kind != want {
			t.Errorf("change %d for a fresh copy is a %s, want a %s", ch.Version, ch.Kind, want)
			continue
		}
		if id, _ := sealed.KeyID(key); id != "b2" {
			t.Errorf("change %d for a fresh copy carries a key under %q, want b2", ch.Version, id)
		}
	}
	after, _ := pg.LatestVersion(ctx(t))
	if _, scanned, resealed := rotateAll(t, s); scanned != 6 || resealed != 0 {
		t.Errorf("second rotation: scanned %d resealed %d, want 6 and 0", scanned, resealed)
	}
	if v, _ := pg.LatestVersion(ctx(t)); v != after {
		t.Errorf("a rotation that rewrote nothing took versions %d to %d", after, v)
	}

	newOnly := sealed.Wrap(pg, keyring(t, "b2"))
	for id, want := range keys {
		c, err := newOnly.LookupCertificate(ctx(t), id)
		if err != nil || !bytes.Equal(c.KeyPEM, want) {
			t.Errorf("%s after rotation: %v", id, err)
		}
	}
	if a, err := newOnly.GetAccount(ctx(t), "acct"); err != nil || !bytes.Equal(a.KeyPEM, keys["n0.example.com"]) {
		t.Errorf("account after rotation: %v", err)
	}
}

// TestRotatePoolKeys: `certserver keys rotate` in a fleet re-seals the
// fleet's key pool with the rest (counted), a key two slots hold in
// both, and with the old key gone from the keyring every pool key opens.
func TestRotatePoolKeys(t *testing.T) {
	pg := open(t, nil)
	plain := certtest.New(t, certtest.Template{DNSNames: []string{"pool.example.com"}}, nil).KeyPEM
	old := sealed.Wrap(pg, keyring(t, "a1"))
	type slot struct {
		keyType store.KeyType
		slot    int
		id      string
	}
	slots := []slot{{store.KeyECDSAP256, 0, "id-c"}, {store.KeyECDSAP256, 1, "id-a"}, {store.KeyRSA2048, 0, "id-b"}}
	for _, s := range slots {
		if _, err := old.SwapPoolKey(ctx(t), "", &store.PoolKey{KeyType: s.keyType, Slot: s.slot, ID: s.id, KeyPEM: plain, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	twin, err := pg.PoolKey(ctx(t), store.KeyECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	twin.Slot = 7
	if _, err := pg.SwapPoolKey(ctx(t), "", twin); err != nil {
		t.Fatal(err)
	}
	slots = append(slots, slot{store.KeyECDSAP256, 7, "id-a"})

	s := sealed.Wrap(pg, keyring(t, "a1", "b2"))
	if total, scanned, resealed := rotateAll(t, s); total != 3 || scanned != 3 || resealed != 3 {
		t.Errorf("rotation: total %d scanned %d resealed %d, want 3, 3, 3 (the pool's keys)", total, scanned, resealed)
	}
	if _, scanned, resealed := rotateAll(t, s); scanned != 3 || resealed != 0 {
		t.Errorf("second rotation: scanned %d resealed %d, want 3 and 0", scanned, resealed)
	}
	newOnly := sealed.Wrap(pg, keyring(t, "b2"))
	for _, s := range slots {
		k, err := newOnly.PoolKey(ctx(t), s.keyType, s.slot)
		if err != nil || k.ID != s.id || !bytes.Equal(k.KeyPEM, plain) {
			t.Errorf("pool key %s slot %d after rotation: %v; want %s opened", s.keyType, s.slot, err, s.id)
		}
	}
}

// TestRotatePoolKeyTwinSealedOtherwise: a key two slots hold, the first
// (by key type, then slot) already under the current key and the other
// still under the old one, is resealed in the other too, so that it
// opens once the old key is gone from the keyring.
func TestRotatePoolKeyTwinSealedOtherwise(t *testing.T) {
	pg := open(t, nil)
	plain := certtest.New(t, certtest.Template{DNSNames: []string{"pool.example.com"}}, nil).KeyPEM
	put := func(s *sealed.Store, slot int) {
		t.Helper()
		k := &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: slot, ID: "id-a", KeyPEM: plain, CreatedAt: time.Now()}
		if _, err := s.SwapPoolKey(ctx(t), "", k); err != nil {
			t.Fatal(err)
		}
	}
	put(sealed.Wrap(pg, keyring(t, "a1")), 1)
	current := sealed.Wrap(pg, keyring(t, "a1", "b2"))
	put(current, 0)
	rotateAll(t, current)
	newOnly := sealed.Wrap(pg, keyring(t, "b2"))
	for _, slot := range []int{0, 1} {
		k, err := newOnly.PoolKey(ctx(t), store.KeyECDSAP256, slot)
		if err != nil || k.ID != "id-a" || !bytes.Equal(k.KeyPEM, plain) {
			t.Errorf("pool key slot %d after rotation: %v; want id-a opened", slot, err)
		}
	}
}

// TestRewritePoolKeyErrorNamesTheKey: a pool slot the database refuses to
// rewrite fails the batch with an error naming the key.
func TestRewritePoolKeyErrorNamesTheKey(t *testing.T) {
	url := pgtest.New(t)
	pg := openURL(t, url, time.Now)
	k := &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: 0, ID: "id-refused", KeyPEM: []byte("key"), CreatedAt: time.Now()}
	if _, err := pg.SwapPoolKey(ctx(t), "", k); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx(t), `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
		CREATE TRIGGER refuse BEFORE UPDATE ON key_pool FOR EACH ROW EXECUTE FUNCTION refuse()`); err != nil {
		t.Fatal(err)
	}
	_, err = pg.RewriteKeys(ctx(t), store.KeyOfPool, "", 10, func(string, []byte) ([]byte, error) { return []byte("resealed"), nil })
	if err == nil || !strings.Contains(err.Error(), "pool key id-refused") {
		t.Fatalf("rewrite refused by the database: %v; want an error naming pool key id-refused", err)
	}
}

// rotateAll rotates every key of s from the start, in batches of 2, and
// returns the sums of the batches; a record that fails fails t.
func rotateAll(t *testing.T, s *sealed.Store) (total, scanned, resealed int) {
	t.Helper()
	cursor := ""
	for calls := 0; ; calls++ {
		if calls > 20 {
			t.Fatal("rotation does not end")
		}
		r, err := s.Rotate(ctx(t), cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Failed) > 0 {
			t.Fatalf("failed: %v", r.Failed)
		}
		total += r.Total
		scanned += r.Scanned
		resealed += r.Resealed
		if r.Done {
			return
		}
		cursor = r.Next
	}
}
