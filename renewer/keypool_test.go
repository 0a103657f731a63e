package renewer

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/sealed"
)

// keyIDOf returns the ID (store.PublicKeyID) of the key of c's leaf.
func keyIDOf(t *testing.T, c *store.Certificate) string {
	t.Helper()
	id, err := store.PublicKeyID(leafOf(t, c).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestKeyPoolWithPebble: with a pool of 2 keys, 6 names issued by a real
// Pebble share at most 2 public keys, one per slot, and each name's
// renewal before the rotation keeps its key. Past the rotation (a fake
// clock, no sleep) a renewal gets a new key, which the slot then gives
// the other names of the slot too. The pool lives in the store, sealed
// with the key-encryption key; without a pool every certificate has a
// key of its own.
func TestKeyPoolWithPebble(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	kr, err := sealed.ParseKeyring(strings.NewReader("k1 "+base64.StdEncoding.EncodeToString(make([]byte, sealed.KeySize))+"\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	st := sealed.Wrap(env.store, kr)
	clock := newFakeClock(time.Now())
	newIssuer := func(pool *KeyPool) *ACMEIssuer {
		is, err := NewACMEIssuer(ACMEConfig{
			Directory: env.ca.DirectoryURL, Email: "ops@example.test", AgreeTerms: true,
			HTTPClient: env.ca.HTTPClient(), Timeout: time.Minute, Now: clock.Now, KeyPool: pool,
		}, st, testLogger(t))
		if err != nil {
			t.Fatalf("NewACMEIssuer: %v", err)
		}
		return is
	}
	obtain := func(is *ACMEIssuer, name string, replaces *store.Certificate) *store.Certificate {
		t.Helper()
		// A certificate Pebble cannot find by its ARI identifier
		// (pebbleLosesSerial) is replaced by a plain order, as the
		// renewer does when the CA refuses the replacement: the key
		// comes from the pool all the same.
		o := Order{Name: name, Replaces: replaces, NoReplaces: replaces != nil && pebbleLosesSerial(t, replaces)}
		c, err := is.Obtain(t.Context(), o)
		if err != nil {
			t.Fatalf("Obtain %s: %v", name, err)
		}
		if err := env.ca.VerifyChain(t, c.ChainPEM, name); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return c
	}

	// Pebble's certificates live minutes, and the issuer refuses one
	// that expired by its clock: the rotation is as short.
	const size, rotation = 2, 2 * time.Minute
	is := newIssuer(&KeyPool{Size: size, Rotation: rotation})
	names := []string{"p0.example.test", "p1.example.test", "p2.example.test", "p3.example.test", "p4.example.test", "p5.example.test"}
	env.pointHere(names...)
	first := map[string]*store.Certificate{}
	slotKey := map[int]string{}
	for _, n := range names {
		c := obtain(is, n, nil)
		first[n] = c
		slot, id := PoolSlot(n, size), keyIDOf(t, c)
		if prev, ok := slotKey[slot]; ok && prev != id {
			t.Errorf("%s (slot %d) has key %.12s, another name of the slot %.12s", n, slot, id, prev)
		}
		slotKey[slot] = id
	}
	distinct := map[string]bool{}
	for _, c := range first {
		distinct[keyIDOf(t, c)] = true
	}
	if len(distinct) > size || len(distinct) != len(slotKey) {
		t.Errorf("6 names on a pool of %d: %d distinct keys over %d slots used, want one per slot", size, len(distinct), len(slotKey))
	}

	// The pool is in the store, its keys sealed like certificates'.
	raw, err := env.store.PoolKey(t.Context(), store.KeyECDSAP256, PoolSlot(names[0], size))
	if err != nil {
		t.Fatalf("the store's pool: %v", err)
	}
	if !sealed.IsSealed(raw.KeyPEM) || raw.ID != keyIDOf(t, first[names[0]]) {
		t.Errorf("stored pool key: sealed %v, ID %.12s; want sealed, the ID of %s's key", sealed.IsSealed(raw.KeyPEM), raw.ID, names[0])
	}

	// Renewals before the rotation keep the name's key.
	clock.Advance(rotation / 2)
	renewed := map[string]*store.Certificate{}
	for _, n := range names[:3] {
		c := obtain(is, n, first[n])
		renewed[n] = c
		if keyIDOf(t, c) != keyIDOf(t, first[n]) {
			t.Errorf("%s renewed before the rotation: a new key, want the pool key it had", n)
		}
	}

	// Past the rotation period a renewal gets a new key, and the slot
	// gives it to the other names of the slot.
	clock.Advance(rotation/2 + time.Second)
	n0 := names[0]
	c := obtain(is, n0, renewed[n0])
	rotated := keyIDOf(t, c)
	if rotated == keyIDOf(t, first[n0]) {
		t.Fatalf("%s renewed past the rotation kept its key, want a new one", n0)
	}
	for _, n := range names[1:] {
		if PoolSlot(n, size) != PoolSlot(n0, size) {
			continue
		}
		if id := keyIDOf(t, obtain(is, n, first[n])); id != rotated {
			t.Errorf("%s, of %s's slot, renewed past the rotation: key %.12s, want the slot's new %.12s", n, n0, id, rotated)
		}
		break
	}

	// Without a pool, every certificate has a key of its own.
	plain := newIssuer(nil)
	own := map[string]bool{}
	for _, n := range names[:3] {
		own[keyIDOf(t, obtain(plain, n, nil))] = true
	}
	if len(own) != 3 {
		t.Errorf("3 names without a pool: %d distinct keys, want 3", len(own))
	}
}

// TestPoolSlot: a name's slot is the first 8 bytes of the SHA-256 of the
// name modulo the size, so it is the same on every host and every run.
func TestPoolSlot(t *testing.T) {
	// sha256("example.com") starts a379a6f6eeafb9a5.
	if got, want := PoolSlot("example.com", 16), int(uint64(0xa379a6f6eeafb9a5)%16); got != want {
		t.Errorf("PoolSlot(example.com, 16) = %d, want %d", got, want)
	}
	for _, size := range []int{1, 2, 16, 1000} {
		if s := PoolSlot("shop.example.com", size); s < 0 || s >= size {
			t.Errorf("PoolSlot(_, %d) = %d, out of range", size, s)
		}
	}
}

// TestKeyPoolFollowsConfig: a change of key type takes a key from the
// pool of the new type (the old pool is left as it is), and a pool key
// that cannot be opened any more (sealed under a key-encryption key no
// longer configured) is replaced rather than failing every order of its
// slot.
func TestKeyPoolFollowsConfig(t *testing.T) {
	b := badgerStore(t)
	keyring := func(id string, fill byte) *sealed.Keyring {
		kr, err := sealed.ParseKeyring(strings.NewReader(id+" "+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{fill}, sealed.KeySize))+"\n"), "test")
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}
	issuer := func(kt store.KeyType, kr *sealed.Keyring) *ACMEIssuer {
		is, err := NewACMEIssuer(ACMEConfig{Directory: "https://ca.example.test/dir", KeyType: kt, KeyPool: &KeyPool{Size: 4}}, sealed.Wrap(b, kr), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		return is
	}
	keyOf := func(is *ACMEIssuer) (store.KeyType, string) {
		t.Helper()
		key, _, err := is.poolKey(t.Context(), testLogger(t), "shop.example.test")
		if err != nil {
			t.Fatalf("poolKey: %v", err)
		}
		id, err := store.PublicKeyID(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return store.KeyTypeOf(key.Public()), id
	}
	k1 := keyring("k1", 1)
	kt, p256 := keyOf(issuer(store.KeyECDSAP256, k1))
	if kt != store.KeyECDSAP256 {
		t.Fatalf("key type %s, want ecdsa-p256", kt)
	}
	if kt, _ := keyOf(issuer(store.KeyECDSAP384, k1)); kt != store.KeyECDSAP384 {
		t.Errorf("after a change to ecdsa-p384: a key of type %s", kt)
	}
	if _, again := keyOf(issuer(store.KeyECDSAP256, k1)); again != p256 {
		t.Errorf("back to ecdsa-p256: key %.12s, want the pool's %.12s", again, p256)
	}
	// Another key-encryption key: the slot's key cannot be opened.
	if _, other := keyOf(issuer(store.KeyECDSAP256, keyring("k2", 2))); other == p256 {
		t.Error("a pool key that cannot be opened was used")
	}
}

// TestKeyPoolKeptBeforeStore: an order's pool key that was taken out of
// the pool while the order ran (revoked for keyCompromise) fails the
// check made before its certificate is stored, even once another order
// filled the slot again; a key still in its slot, or replaced for its
// age (rotation), passes.
func TestKeyPoolKeptBeforeStore(t *testing.T) {
	b := badgerStore(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	is, err := NewACMEIssuer(ACMEConfig{Directory: "https://ca.example.test/dir", Now: func() time.Time { return now },
		KeyPool: &KeyPool{Size: 1, Rotation: 24 * time.Hour}}, b, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	take := func() *store.PoolKey {
		t.Helper()
		_, pk, err := is.poolKey(t.Context(), testLogger(t), "shop.example.test")
		if err != nil {
			t.Fatal(err)
		}
		return pk
	}
	pk := take()
	if err := is.poolKeyKept(t.Context(), pk); err != nil {
		t.Errorf("key still in its slot: %v", err)
	}
	if n, err := b.RemovePoolKey(t.Context(), pk.ID); err != nil || n != 1 {
		t.Fatalf("RemovePoolKey: %d, %v", n, err)
	}
	if err := is.poolKeyKept(t.Context(), pk); err == nil || !strings.Contains(err.Error(), "removed from the key pool") {
		t.Errorf("key removed, slot empty: %v, want it refused", err)
	}
	next := take()
	if next.ID == pk.ID {
		t.Fatal("the removed key came back")
	}
	if err := is.poolKeyKept(t.Context(), pk); err == nil {
		t.Error("key removed, slot filled again: the certificate on the removed key is kept")
	}
	now = now.Add(25 * time.Hour)
	if rotated := take(); rotated.ID == next.ID {
		t.Fatal("key not rotated")
	}
	if err := is.poolKeyKept(t.Context(), next); err != nil {
		t.Errorf("key rotated out: %v, want the certificate kept", err)
	}
}
