package sealed

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// TestKeyPoolSealed: a pool key is sealed at rest under the current key
// and bound to its ID; read back it opens, and a sealed key moved to
// another ID reads as an error with the slot's ID, for the renewer to
// replace it.
func TestKeyPoolSealed(t *testing.T) {
	ctx := context.Background()
	b := openBadger(t, t.TempDir())
	s := Wrap(b, testKeyring(t, "k1"))
	t.Cleanup(func() { s.Close() })

	plain := []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	k := &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: 3, ID: "id-a", KeyPEM: bytes.Clone(plain), CreatedAt: time.Now()}
	got, err := s.SwapPoolKey(ctx, "", k)
	if err != nil || !bytes.Equal(got.KeyPEM, plain) || !bytes.Equal(k.KeyPEM, plain) {
		t.Fatalf("SwapPoolKey = %+v, %v; want the key in clear, the caller's record unchanged", got, err)
	}
	raw, err := b.PoolKey(ctx, store.KeyECDSAP256, 3)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := KeyID(raw.KeyPEM); !ok || id != "k1" {
		t.Fatalf("stored pool key is not sealed under k1:\n%s", raw.KeyPEM)
	}
	if got, err := s.PoolKey(ctx, store.KeyECDSAP256, 3); err != nil || !bytes.Equal(got.KeyPEM, plain) {
		t.Fatalf("PoolKey = %+v, %v; want the key opened", got, err)
	}
	// Another order's key, already in the slot, is returned opened.
	other := &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: 3, ID: "id-b", KeyPEM: []byte("other"), CreatedAt: time.Now()}
	if got, err := s.SwapPoolKey(ctx, "", other); err != nil || got.ID != "id-a" || !bytes.Equal(got.KeyPEM, plain) {
		t.Fatalf("SwapPoolKey on a filled slot = %+v, %v; want id-a opened", got, err)
	}

	// The sealed key moved under another ID does not open.
	raw.ID, raw.Slot = "id-moved", 4
	if _, err := b.SwapPoolKey(ctx, "", raw); err != nil {
		t.Fatal(err)
	}
	got, err = s.PoolKey(ctx, store.KeyECDSAP256, 4)
	if !errors.Is(err, ErrOpen) || got == nil || got.ID != "id-moved" || got.KeyPEM != nil {
		t.Fatalf("PoolKey of a moved key = %+v, %v; want ErrOpen with the slot's ID and no key", got, err)
	}
}
