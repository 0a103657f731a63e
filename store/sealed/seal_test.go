package sealed

import (
	"bytes"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/certserver/certserver/store"
)

var plainKey = []byte("-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n")

func testKeyring(t testing.TB, ids ...string) *Keyring {
	t.Helper()
	var text string
	for i, id := range ids {
		text += keyLine(id, bytes.Repeat([]byte{byte(i + 1)}, KeySize))
	}
	kr, err := ParseKeyring(strings.NewReader(text), "test")
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestSealOpen(t *testing.T) {
	kr := testKeyring(t, "k1", "k2")
	v, err := kr.Seal(store.KeyOfCertificate, "a.example.com", plainKey)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(v, plainKey[30:60]) {
		t.Fatal("sealed value holds the key")
	}
	if id, ok := KeyID(v); !ok || id != "k2" {
		t.Errorf("KeyID = %q, %v; want k2 (the current key)", id, ok)
	}
	v2, _ := kr.Seal(store.KeyOfCertificate, "a.example.com", plainKey)
	if bytes.Equal(v, v2) {
		t.Error("two seals of one key are equal: the nonce is not fresh")
	}
	got, err := kr.Open(store.KeyOfCertificate, "a.example.com", v)
	if err != nil || !bytes.Equal(got, plainKey) {
		t.Fatalf("Open = %q, %v; want the key back", got, err)
	}
	// A keyring holding k2 among others opens it too.
	if _, err := testKeyring(t, "k0", "k1", "k2", "k3").Open(store.KeyOfCertificate, "a.example.com", v); err == nil {
		// k2 of this keyring is another key (made from its position): it must not open.
		t.Error("a different key under the same ID opened the value")
	}
}

func TestOpenFailures(t *testing.T) {
	kr := testKeyring(t, "k1")
	v, err := kr.Seal(store.KeyOfCertificate, "a.example.com", plainKey)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a bit of the ciphertext.
	blk, _ := pem.Decode(v)
	blk.Bytes[len(blk.Bytes)/2] ^= 1
	tampered := pem.EncodeToMemory(blk)
	relabelled := bytes.Replace(v, []byte("Key-Id: k1"), []byte("Key-Id: k9"), 1)
	tests := []struct {
		desc string
		kr   *Keyring
		kind store.KeyKind
		id   string
		v    []byte
		want string
	}{
		{"moved to another certificate", kr, store.KeyOfCertificate, "b.example.com", v, `certificate b.example.com: sealed key does not authenticate under key "k1"`},
		{"moved to an account", kr, store.KeyOfAccount, "a.example.com", v, `account a.example.com: sealed key does not authenticate`},
		{"tampered", kr, store.KeyOfCertificate, "a.example.com", tampered, `does not authenticate under key "k1"`},
		{"unknown key", testKeyring(t, "k2"), store.KeyOfCertificate, "a.example.com", v, `sealed under key "k1", which the key-encryption key file does not hold`},
		{"relabelled", testKeyring(t, "k1", "k9"), store.KeyOfCertificate, "a.example.com", relabelled, `does not authenticate under key "k9"`},
		{"no keyring", nil, store.KeyOfCertificate, "a.example.com", v, `sealed under key "k1" and no key-encryption key file is configured`},
		{"truncated", kr, store.KeyOfCertificate, "a.example.com", v[:len(v)-40], `malformed`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got, err := tt.kr.Open(tt.kind, tt.id, tt.v)
			if err == nil {
				t.Fatalf("opened: %q", got)
			}
			if !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want ErrOpen saying %q", err, tt.want)
			}
		})
	}
}

func TestOpenPlain(t *testing.T) {
	for _, kr := range []*Keyring{nil, testKeyring(t, "k1")} {
		got, err := kr.Open(store.KeyOfCertificate, "a.example.com", plainKey)
		if err != nil || !bytes.Equal(got, plainKey) {
			t.Errorf("Open(plain) = %q, %v; want it as it is", got, err)
		}
	}
}

// BenchmarkOpen measures what sealing adds to every read of a key: opening
// a sealed PKCS #8 P-256 key (241 bytes), and passing a plain one through.
func BenchmarkOpen(b *testing.B) {
	kr := testKeyring(b, "k1")
	body := strings.Repeat("MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg", 4)[:184]
	key := []byte("-----BEGIN PRIVATE KEY-----\n" + body[:64] + "\n" + body[64:128] + "\n" + body[128:] + "\n-----END PRIVATE KEY-----\n")
	v, err := kr.Seal(store.KeyOfCertificate, "host000001.example.com", key)
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		v    []byte
	}{{"sealed", v}, {"plain", key}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := kr.Open(store.KeyOfCertificate, "host000001.example.com", tc.v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestSealOpenLengths: every length of key goes through the format (the
// base64 body's last line takes every length and padding).
func TestSealOpenLengths(t *testing.T) {
	kr := testKeyring(t, "k1")
	for n := range 300 {
		key := bytes.Repeat([]byte{'k'}, n)
		v, err := kr.Seal(store.KeyOfAccount, "acct", key)
		if err != nil {
			t.Fatal(err)
		}
		if blk, rest := pem.Decode(v); blk == nil || blk.Type != "CERTSERVER SEALED KEY" || len(rest) != 0 {
			t.Fatalf("length %d: not one PEM block", n)
		}
		got, err := kr.Open(store.KeyOfAccount, "acct", v)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("length %d: %q, %v", n, got, err)
		}
	}
}
