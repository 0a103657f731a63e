package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// testKeyPool checks store.KeyPool, for a store that has it: a slot is
// filled only when empty, replaced only when it holds the key named, and
// otherwise answers with what it holds; a removed key empties every slot
// that held it.
func testKeyPool(t *testing.T, x *suite) {
	p, ok := store.As[store.KeyPool](x.s)
	if !ok {
		return // an optional ability this store does not have
	}
	now := x.clock.Now()
	key := func(kt store.KeyType, slot int, id string) *store.PoolKey {
		return &store.PoolKey{KeyType: kt, Slot: slot, ID: id, KeyPEM: []byte("pem of " + id), CreatedAt: now}
	}
	swap := func(old string, k *store.PoolKey, want string) {
		t.Helper()
		got, err := p.SwapPoolKey(ctx(t), old, k)
		if err != nil {
			t.Fatalf("SwapPoolKey(%q, %s): %v", old, k.ID, err)
		}
		if got.ID != want || string(got.KeyPEM) != "pem of "+want || got.KeyType != k.KeyType || got.Slot != k.Slot || !got.CreatedAt.Equal(now) {
			t.Fatalf("SwapPoolKey(%q, %s) = %+v, want key %s", old, k.ID, got, want)
		}
	}
	holds := func(kt store.KeyType, slot int, want string) {
		t.Helper()
		got, err := p.PoolKey(ctx(t), kt, slot)
		switch {
		case want == "" && errors.Is(err, store.ErrNotFound):
		case want == "":
			t.Fatalf("PoolKey(%s, %d) = %v, %v; want ErrNotFound", kt, slot, got, err)
		case err != nil:
			t.Fatalf("PoolKey(%s, %d): %v", kt, slot, err)
		case got.ID != want || string(got.KeyPEM) != "pem of "+want || !got.CreatedAt.Truncate(time.Microsecond).Equal(now):
			t.Fatalf("PoolKey(%s, %d) = %+v, want key %s", kt, slot, got, want)
		}
	}
	p256, rsa := store.KeyECDSAP256, store.KeyRSA2048

	holds(p256, 0, "")
	swap("", key(p256, 0, "a"), "a")
	holds(p256, 0, "a")
	swap("", key(p256, 0, "b"), "a")      // filled meanwhile: not written
	swap("other", key(p256, 0, "b"), "a") // replaced meanwhile: not written
	swap("a", key(p256, 0, "b"), "b")
	holds(p256, 0, "b")
	holds(p256, 1, "")
	holds(rsa, 0, "")
	swap("", key(rsa, 0, "b"), "b") // the same ID in another pool
	swap("", key(p256, 1, "c"), "c")

	if n, err := p.RemovePoolKey(ctx(t), "b"); err != nil || n != 2 {
		t.Fatalf("RemovePoolKey(b) = %d, %v; want 2 slots", n, err)
	}
	holds(p256, 0, "")
	holds(rsa, 0, "")
	holds(p256, 1, "c")
	if n, err := p.RemovePoolKey(ctx(t), "b"); err != nil || n != 0 {
		t.Fatalf("RemovePoolKey(b) again = %d, %v; want 0", n, err)
	}
	// The key the caller read was removed meanwhile: its key fills the slot.
	swap("b", key(p256, 0, "d"), "d")
	holds(p256, 0, "d")

	for _, k := range []*store.PoolKey{
		nil,
		{KeyType: p256, Slot: 0, ID: "x"},
		{KeyType: p256, Slot: -1, ID: "x", KeyPEM: []byte("k")},
		{KeyType: "", Slot: 0, ID: "x", KeyPEM: []byte("k")},
		{KeyType: p256, Slot: 0, KeyPEM: []byte("k")},
	} {
		if _, err := p.SwapPoolKey(ctx(t), "d", k); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("SwapPoolKey(%+v) = %v, want ErrInvalid", k, err)
		}
	}
	holds(p256, 0, "d")
}
