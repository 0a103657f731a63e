// Package sealed encrypts the private keys a store.Store holds at rest:
// Wrap decorates a Store so that Certificate.KeyPEM and Account.KeyPEM are
// sealed with AES-256-GCM under a key-encryption key of a Keyring on every
// write and opened on every read, and Store.Rotate re-seals what is stored
// under the keyring's current key while the store serves.
package sealed

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// KeySize is the size of a key-encryption key: 32 bytes, AES-256.
const KeySize = 32

// maxKeyID bounds the length of a key ID.
const maxKeyID = 64

// Keyring holds the key-encryption keys of a store: the current one seals
// every new write, and every one of them opens what it sealed. It is read
// once, at start, and never changes; it is safe for concurrent use.
//
// Its file holds one key a line, "ID KEY", where ID is 1 to 64 letters,
// digits, '.', '_' or '-', unique in the file, and KEY is 32 random bytes
// in standard base64 (`certserver keys generate` prints such a line).
// Blank lines and lines starting with '#' are ignored. The last key is the
// current one: to rotate, append a new line, restart, run `certserver keys
// rotate`, then remove the old line. The file must not be readable by
// others than its owner and group.
type Keyring struct {
	aeads   map[string]cipher.AEAD
	ids     []string // in file order
	current string
}

// LoadKeyring reads the keyring file at path (see Keyring). A missing or
// unreadable file, one that others than its owner and group may read or
// write, and a malformed one are errors naming the file and, for a bad
// line, its number. No error holds key material.
func LoadKeyring(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key-encryption key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key-encryption key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("key-encryption key file %s: mode %04o lets other users at it: chmod 600 (or 640 for a group) %s", path, perm, path)
	}
	return ParseKeyring(f, path)
}

// ParseKeyring reads a keyring (see Keyring) from r; name names it in
// errors.
func ParseKeyring(r io.Reader, name string) (*Keyring, error) {
	kr := &Keyring{aeads: map[string]cipher.AEAD{}}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("key-encryption key file %s line %d: want \"ID KEY\", found %d fields", name, line, len(fields))
		}
		// No error quotes a field of a line that is not known to be
		// right: a line written "KEY ID", or with a key of another form,
		// would print the key.
		id := fields[0]
		if err := checkKeyID(id); err != nil {
			return nil, fmt.Errorf("key-encryption key file %s line %d: %w", name, line, err)
		}
		if kr.aeads[id] != nil {
			return nil, fmt.Errorf("key-encryption key file %s line %d: key ID %q appears twice", name, line, id)
		}
		key, err := base64.StdEncoding.DecodeString(fields[1])
		if err != nil {
			// The decoder's error names only a position, but say less.
			return nil, fmt.Errorf("key-encryption key file %s line %d: the key (second field) is not standard base64", name, line)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("key-encryption key file %s line %d: the key (second field) is %d bytes, want %d", name, line, len(key), KeySize)
		}
		aead, err := newAEAD(key)
		if err != nil {
			return nil, fmt.Errorf("key-encryption key file %s line %d: the key (second field): %w", name, line, err)
		}
		kr.aeads[id] = aead
		kr.ids = append(kr.ids, id)
		kr.current = id
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("key-encryption key file %s: %w", name, err)
	}
	if kr.current == "" {
		return nil, fmt.Errorf("key-encryption key file %s: no key in it: add one from 'certserver keys generate'", name)
	}
	return kr, nil
}

// newAEAD returns AES-256-GCM under key.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// checkKeyID checks the syntax of a key ID. Its errors do not quote the
// ID: what fails may be a key written where the ID belongs.
func checkKeyID(id string) error {
	const want = "1 to %d letters, digits, '.', '_' or '-'"
	if k, err := base64.StdEncoding.DecodeString(id); err == nil && len(k) == KeySize {
		return fmt.Errorf("the first field looks like a key, not a key ID: write \"ID KEY\", the ID ("+want+") first", maxKeyID)
	}
	if id == "" || len(id) > maxKeyID {
		return fmt.Errorf("the first field is not a valid key ID: %d characters, want "+want, len(id), maxKeyID)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("the first field is not a valid key ID: want "+want, maxKeyID)
		}
	}
	return nil
}

// Current returns the ID of the key that seals new writes.
func (kr *Keyring) Current() string { return kr.current }

// IDs returns the IDs of every key, in file order (the current one last).
func (kr *Keyring) IDs() []string { return slices.Clone(kr.ids) }

// GenerateKey returns a new keyring line "ID KEY": 32 bytes from
// crypto/rand under an ID made of the date of now and 6 random hex digits
// ("20261205-3fa9c1").
func GenerateKey(now time.Time) (string, error) {
	var b [KeySize + 3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	id := now.UTC().Format("20060102") + "-" + hex.EncodeToString(b[KeySize:])
	return id + " " + base64.StdEncoding.EncodeToString(b[:KeySize]), nil
}

// ErrOpen is wrapped by the error of every read of a private key that
// cannot be decrypted: sealed under a key the keyring does not hold (or
// with no keyring at all), tampered with, or moved from another record.
// The record is never served with another key instead.
var ErrOpen = errors.New("private key cannot be decrypted")
