package sealed

import (
	"bytes"
	"context"
	"crypto/cipher"
	"fmt"
	"strings"
	"testing"

	"github.com/certserver/certserver/store"
)

// rotateAll runs Rotate from the start until done and sums its batches.
func rotateAll(t *testing.T, s *Store, limit int) (total, scanned, resealed int, failed []RecordError) {
	t.Helper()
	cursor := ""
	for calls := 0; ; calls++ {
		if calls > 1000 {
			t.Fatal("rotation does not end")
		}
		r, err := s.Rotate(context.Background(), cursor, limit)
		if err != nil {
			t.Fatal(err)
		}
		if r.Scanned > limit {
			t.Fatalf("batch of %d read %d records", limit, r.Scanned)
		}
		t.Logf("batch %q: %+v", cursor, r)
		total += r.Total
		scanned += r.Scanned
		resealed += r.Resealed
		failed = append(failed, r.Failed...)
		if r.Done {
			return
		}
		if r.Next == "" || r.Next == cursor {
			t.Fatalf("cursor %q after %q: rotation does not move on", r.Next, cursor)
		}
		cursor = r.Next
	}
}

func TestRotate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b := openBadger(t, dir)
	old := testKeyring(t, "k1")
	keys := map[string][]byte{}
	for i := range 7 {
		c := testCert(t, fmt.Sprintf("n%d.example.com", i))
		keys[c.ID] = c.KeyPEM
		put := Wrap(b, old).PutCertificate
		if i%3 == 0 {
			put = b.PutCertificate // stored before sealing was turned on
		}
		if err := put(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"acct1", "acct2"} {
		if err := Wrap(b, old).PutAccount(ctx, &store.Account{ID: id, KeyPEM: plainKey}); err != nil {
			t.Fatal(err)
		}
	}

	both := testKeyring(t, "k1", "k2")
	s := Wrap(b, both)
	total, scanned, resealed, failed := rotateAll(t, s, 3)
	if total != 9 || scanned != 9 || resealed != 9 || len(failed) != 0 {
		t.Errorf("rotation: total %d scanned %d resealed %d failed %v; want 9, 9, 9, none", total, scanned, resealed, failed)
	}
	// Again: nothing left to do.
	if _, scanned, resealed, _ = rotateAll(t, s, 4); scanned != 9 || resealed != 0 {
		t.Errorf("second rotation: scanned %d resealed %d; want 9, 0", scanned, resealed)
	}

	// The old key is gone from the keyring: everything still opens.
	newOnly := Wrap(b, testKeyring(t, "k1", "k2").without(t, "k1"))
	for id, want := range keys {
		c, err := newOnly.LookupCertificate(ctx, id)
		if err != nil || !bytes.Equal(c.KeyPEM, want) {
			t.Errorf("certificate %s after rotation: %v", id, err)
		}
	}
	for _, id := range []string{"acct1", "acct2"} {
		if a, err := newOnly.GetAccount(ctx, id); err != nil || !bytes.Equal(a.KeyPEM, plainKey) {
			t.Errorf("account %s after rotation: %v", id, err)
		}
	}
}

func TestRotateReportsWhatItCannotOpen(t *testing.T) {
	ctx := context.Background()
	b := openBadger(t, t.TempDir())
	t.Cleanup(func() { b.Close() })
	if err := Wrap(b, testKeyring(t, "lost")).PutCertificate(ctx, testCert(t, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := b.PutCertificate(ctx, testCert(t, "b.example.com")); err != nil {
		t.Fatal(err)
	}
	before, _ := b.GetCertificate(ctx, "a.example.com")
	s := Wrap(b, testKeyring(t, "k2"))
	_, scanned, resealed, failed := rotateAll(t, s, 10)
	if scanned != 2 || resealed != 1 || len(failed) != 1 {
		t.Fatalf("scanned %d resealed %d failed %v; want 2, 1, one", scanned, resealed, failed)
	}
	f := failed[0]
	if f.Kind != store.KeyOfCertificate || f.ID != "a.example.com" || !strings.Contains(f.Err.Error(), `"lost"`) {
		t.Errorf("failure %+v: want certificate a.example.com naming key \"lost\"", f)
	}
	after, _ := b.GetCertificate(ctx, "a.example.com")
	if !bytes.Equal(before.KeyPEM, after.KeyPEM) {
		t.Error("a record that could not be opened was rewritten")
	}
}

func TestRotateRefuses(t *testing.T) {
	b := openBadger(t, t.TempDir())
	t.Cleanup(func() { b.Close() })
	for _, tt := range []struct {
		desc   string
		s      *Store
		cursor string
		limit  int
		want   string
	}{
		{"no keyring", Wrap(b, nil), "", 10, "no key-encryption key file"},
		{"bad cursor", Wrap(b, testKeyring(t, "k1")), "domain/x", 10, `cursor "domain/x": malformed cursor`},
		{"bad limit", Wrap(b, testKeyring(t, "k1")), "", 0, "batch size 0"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			if _, err := tt.s.Rotate(context.Background(), tt.cursor, tt.limit); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
}

// without returns kr without the key id (for tests: a keyring whose old
// key was removed from the file).
func (kr *Keyring) without(t *testing.T, id string) *Keyring {
	t.Helper()
	out := &Keyring{aeads: map[string]cipher.AEAD{}}
	for _, k := range kr.ids {
		if k != id {
			out.aeads[k] = kr.aeads[k]
			out.ids = append(out.ids, k)
			out.current = k
		}
	}
	return out
}

// TestRotatePoolKeys: the keys of the key pool ([keys] reuse = "pool")
// are rotated with the rest, counted in Total, Scanned and Resealed, and
// open once the old key is gone from the keyring; a key that two slots
// hold is rewritten in both.
func TestRotatePoolKeys(t *testing.T) {
	ctx := context.Background()
	b := openBadger(t, t.TempDir())
	t.Cleanup(func() { b.Close() })
	old := Wrap(b, testKeyring(t, "k1"))
	if err := old.PutCertificate(ctx, testCert(t, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	slots := []struct {
		keyType store.KeyType
		slot    int
		id      string
	}{
		{store.KeyECDSAP256, 0, "id-c"}, {store.KeyECDSAP256, 1, "id-a"}, {store.KeyRSA2048, 0, "id-b"},
	}
	for _, s := range slots {
		k := &store.PoolKey{KeyType: s.keyType, Slot: s.slot, ID: s.id, KeyPEM: plainKey}
		if _, err := old.SwapPoolKey(ctx, "", k); err != nil {
			t.Fatal(err)
		}
	}
	// id-a also in a second slot, sealed as the first holds it.
	twin, err := b.PoolKey(ctx, store.KeyECDSAP256, 1)
	if err != nil {
		t.Fatal(err)
	}
	twin.Slot = 7
	if _, err := b.SwapPoolKey(ctx, "", twin); err != nil {
		t.Fatal(err)
	}

	s := Wrap(b, testKeyring(t, "k1", "k2"))
	total, scanned, resealed, failed := rotateAll(t, s, 2)
	if total != 4 || scanned != 4 || resealed != 4 || len(failed) != 0 {
		t.Errorf("rotation: total %d scanned %d resealed %d failed %v; want 4, 4, 4, none (a certificate and three pool keys)", total, scanned, resealed, failed)
	}
	if _, scanned, resealed, _ = rotateAll(t, s, 10); scanned != 4 || resealed != 0 {
		t.Errorf("second rotation: scanned %d resealed %d; want 4, 0", scanned, resealed)
	}
	newOnly := Wrap(b, testKeyring(t, "k1", "k2").without(t, "k1"))
	for _, s := range append(slots, struct {
		keyType store.KeyType
		slot    int
		id      string
	}{store.KeyECDSAP256, 7, "id-a"}) {
		k, err := newOnly.PoolKey(ctx, s.keyType, s.slot)
		if err != nil || k.ID != s.id || !bytes.Equal(k.KeyPEM, plainKey) {
			t.Errorf("pool key %s slot %d after rotation: %+v, %v; want %s opened", s.keyType, s.slot, k, err, s.id)
		}
	}
}

// TestRotatePoolKeyTwinSealedOtherwise: a key two slots hold, the first
// (by key type, then slot) already under the current key and the other
// still under the old one, is resealed in the other too, so that it
// opens once the old key is gone from the keyring.
func TestRotatePoolKeyTwinSealedOtherwise(t *testing.T) {
	ctx := context.Background()
	b := openBadger(t, t.TempDir())
	t.Cleanup(func() { b.Close() })
	k := &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: 1, ID: "id-a", KeyPEM: plainKey}
	if _, err := Wrap(b, testKeyring(t, "k1")).SwapPoolKey(ctx, "", k); err != nil {
		t.Fatal(err)
	}
	current := Wrap(b, testKeyring(t, "k1", "k2"))
	k = &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: 0, ID: "id-a", KeyPEM: plainKey}
	if _, err := current.SwapPoolKey(ctx, "", k); err != nil {
		t.Fatal(err)
	}
	rotateAll(t, current, 10)
	newOnly := Wrap(b, testKeyring(t, "k1", "k2").without(t, "k1"))
	for _, slot := range []int{0, 1} {
		k, err := newOnly.PoolKey(ctx, store.KeyECDSAP256, slot)
		if err != nil || k.ID != "id-a" || !bytes.Equal(k.KeyPEM, plainKey) {
			t.Errorf("pool key slot %d after rotation: %+v, %v; want id-a opened", slot, k, err)
		}
	}
}
