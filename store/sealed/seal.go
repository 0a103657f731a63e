package sealed

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"

	"github.com/certserver/certserver/store"
)

// A sealed private key is stored as one PEM block in place of the key:
//
//	-----BEGIN CERTSERVER SEALED KEY-----
//	Format: 1
//	Key-Id: 20261205-3fa9c1
//
//	base64 of a 12-byte random nonce followed by the AES-256-GCM ciphertext
//	-----END CERTSERVER SEALED KEY-----
//
// The additional authenticated data binds the ciphertext to its format,
// its key ID and the record it belongs to (its kind and ID), so that a
// sealed key copied into another record, or relabelled with another key
// ID, does not open. A value that does not start with the block's
// beginning line is a key stored before sealing was turned on, and is
// read as it is.
const (
	sealedType   = "CERTSERVER SEALED KEY"
	formatHeader = "Format"
	keyIDHeader  = "Key-Id"
	formatV1     = "1"
)

// sealedPrefix starts every sealed value, sealedSuffix ends it (but for
// a final newline).
var (
	sealedPrefix = []byte("-----BEGIN " + sealedType + "-----")
	sealedSuffix = []byte("-----END " + sealedType + "-----")
)

// sealedBlock is a parsed sealed value.
type sealedBlock struct {
	format, keyID string
	// data is the nonce followed by the ciphertext.
	data []byte
}

// parseSealed reads a sealed value as Seal writes it (pem.EncodeToMemory):
// the beginning line, "Name: value" header lines, an empty line, base64
// lines, the end line. It is the one reader of the format, written for the
// certificate endpoint's path: a third of the time encoding/pem's general
// Decode takes, and no map.
func parseSealed(v []byte) (sealedBlock, bool) {
	var b sealedBlock
	rest, ok := bytes.CutPrefix(v, sealedPrefix)
	if !ok {
		return b, false
	}
	rest, ok = bytes.CutPrefix(rest, []byte("\n"))
	if !ok {
		return b, false
	}
	for {
		line, after, ok := bytes.Cut(rest, []byte("\n"))
		if !ok {
			return b, false
		}
		rest = after
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(": "))
		if !ok {
			return b, false
		}
		switch string(name) {
		case formatHeader:
			b.format = string(value)
		case keyIDHeader:
			b.keyID = string(value)
		}
	}
	body, ok := bytes.CutSuffix(bytes.TrimSuffix(rest, []byte("\n")), sealedSuffix)
	if !ok {
		return b, false
	}
	// Each line is whole base64 quanta (pem writes 64 characters a line),
	// so lines decode one after the other.
	b.data = make([]byte, base64.StdEncoding.DecodedLen(len(body)))
	n := 0
	for line := range bytes.SplitSeq(body, []byte("\n")) {
		m, err := base64.StdEncoding.Decode(b.data[n:], line)
		if err != nil {
			return b, false
		}
		n += m
	}
	b.data = b.data[:n]
	return b, true
}

// IsSealed reports whether v is a sealed key (as opposed to a plain one).
func IsSealed(v []byte) bool { return bytes.HasPrefix(v, sealedPrefix) }

// KeyID returns the ID of the key v is sealed under, and false when v is
// not a sealed key (a plain one) or is malformed.
func KeyID(v []byte) (string, bool) {
	b, ok := parseSealed(v)
	return b.keyID, ok && b.keyID != ""
}

// aad returns the additional authenticated data of a sealed key.
func aad(format, keyID string, kind store.KeyKind, id string) []byte {
	b := make([]byte, 0, 40+len(format)+len(keyID)+len(kind)+len(id))
	b = append(b, "certserver sealed key\x00"...)
	b = append(b, format...)
	b = append(b, 0)
	b = append(b, keyID...)
	b = append(b, 0)
	b = append(b, kind...)
	b = append(b, 0)
	return append(b, id...)
}

// Seal returns plain sealed under the current key for the record of kind
// and id. It never fails but for the system's random source.
func (kr *Keyring) Seal(kind store.KeyKind, id string, plain []byte) ([]byte, error) {
	aead := kr.aeads[kr.current]
	buf := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("seal %s %s: %w", kind, id, err)
	}
	ct := aead.Seal(buf, buf, plain, aad(formatV1, kr.current, kind, id))
	return pem.EncodeToMemory(&pem.Block{
		Type:    sealedType,
		Headers: map[string]string{formatHeader: formatV1, keyIDHeader: kr.current},
		Bytes:   ct,
	}), nil
}

// Open returns the private key of the record of kind and id from v as
// stored: v itself when it is plain, its plaintext when it is sealed. A
// sealed value that cannot be opened (kr nil, a key ID kr does not hold,
// tampered with, moved from another record) is an error wrapping ErrOpen
// that names the record and the key ID, and never the key.
func (kr *Keyring) Open(kind store.KeyKind, id string, v []byte) ([]byte, error) {
	if !IsSealed(v) {
		return v, nil
	}
	b, ok := parseSealed(v)
	if !ok {
		return nil, fmt.Errorf("%s %s: sealed key is malformed: %w", kind, id, ErrOpen)
	}
	format, keyID := b.format, b.keyID
	if format != formatV1 {
		return nil, fmt.Errorf("%s %s: sealed key has format %q, this certserver reads %q: %w", kind, id, format, formatV1, ErrOpen)
	}
	if kr == nil {
		return nil, fmt.Errorf("%s %s: private key is sealed under key %q and no key-encryption key file is configured ([store] key_encryption_key_file): %w", kind, id, keyID, ErrOpen)
	}
	aead := kr.aeads[keyID]
	if aead == nil {
		return nil, fmt.Errorf("%s %s: private key is sealed under key %q, which the key-encryption key file does not hold: %w", kind, id, keyID, ErrOpen)
	}
	if len(b.data) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%s %s: sealed key under key %q is truncated: %w", kind, id, keyID, ErrOpen)
	}
	n := aead.NonceSize()
	plain, err := aead.Open(b.data[n:n], b.data[:n], b.data[n:], aad(format, keyID, kind, id))
	if err != nil {
		return nil, fmt.Errorf("%s %s: sealed key does not authenticate under key %q (tampered with, or copied from another record): %w", kind, id, keyID, ErrOpen)
	}
	return plain, nil
}
