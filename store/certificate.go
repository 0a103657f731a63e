package store

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/certserver/certserver/store/hostname"
)

// The reasons ParseCertificate refuses its input. They are wrapped with
// context; callers test for them with errors.Is.
var (
	// ErrNotCertificate: the chain holds no certificate, a block that is not
	// a certificate, or a certificate that does not parse.
	ErrNotCertificate = errors.New("not a certificate chain")
	// ErrBadKey: the key is missing, encrypted, of an unknown type or does
	// not parse.
	ErrBadKey = errors.New("unusable private key")
	// ErrKeyMismatch: the key is not the one of the leaf certificate.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
	// ErrNoNames: none of the leaf's names is a valid host name or pattern.
	ErrNoNames = errors.New("certificate names no valid host name")
	// ErrExpired: the leaf's NotAfter is before the time given.
	ErrExpired = errors.New("certificate expired")
)

// ParseCertificate builds a Certificate from a PEM chain (the leaf first,
// then its intermediates) and the leaf's PEM private key (PKCS #8, SEC 1 or
// PKCS #1), as found in an nginx or certbot directory.
//
// It fills every field it can learn from the input: ID, Names, ChainPEM,
// KeyPEM, NotBefore, NotAfter, Issuer, Serial and KeyType; the caller sets
// Source, Origin, RenewAt and StoredAt. Names are the leaf's DNS SANs (its
// CN when it has none) normalized with hostname.NormalizePattern,
// deduplicated, in certificate order; names that do not normalize are
// skipped. ChainPEM and KeyPEM are copies of the input's PEM blocks, with
// any text around them dropped.
//
// The error wraps ErrNotCertificate, ErrBadKey, ErrKeyMismatch, ErrNoNames or
// ErrExpired (leaf NotAfter before now), in that order of checking.
//
// Chains and P-256 keys as certbot and other tools write them take a fast
// path (fastChain, fastKey) that decodes an intermediate seen before only
// once and reads a key only as far as the match check needs; anything
// else, and anything refused, takes the general one. What the fast path
// decoded is kept in the returned value, and nowhere else, so that
// storing that value does not decode its PEM again.
func ParseCertificate(chainPEM, keyPEM []byte, now time.Time) (*Certificate, error) {
	leaf, chain, parsed, ok := fastChain(chainPEM)
	if !ok {
		parsed = nil
		var err error
		if leaf, chain, err = parseChain(chainPEM); err != nil {
			return nil, fmt.Errorf("parse chain: %w", err)
		}
	}
	keyBlock, parsedKey, ok := fastKey(keyPEM, leaf)
	if ok && parsed != nil {
		parsed.key = parsedKey
	}
	if !ok {
		key, block, err := parseKey(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("parse key: %w", err)
		}
		pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(leaf.PublicKey) {
			return nil, fmt.Errorf("parse key: %w", ErrKeyMismatch)
		}
		keyBlock = block
	}
	names := leafNames(leaf)
	if len(names) == 0 {
		return nil, fmt.Errorf("parse chain: leaf %q: %w", leaf.Subject.CommonName, ErrNoNames)
	}
	if leaf.NotAfter.Before(now) {
		return nil, fmt.Errorf("parse chain: %s expired at %s: %w",
			names[0], leaf.NotAfter.UTC().Format(time.RFC3339), ErrExpired)
	}
	if parsed != nil {
		parsed.seal()
	}
	return &Certificate{
		ID:        names[0],
		Names:     names,
		ChainPEM:  chain,
		KeyPEM:    keyBlock,
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
		Issuer:    leaf.Issuer.String(),
		Serial:    leaf.SerialNumber.Text(16),
		KeyType:   KeyTypeOf(leaf.PublicKey),
		parsed:    parsed,
	}, nil
}

// parseChain parses every certificate of a PEM chain and returns the first
// (the leaf) with a copy of the chain's PEM blocks. Text between blocks is
// dropped; any block that is not a certificate is an error.
func parseChain(data []byte) (*x509.Certificate, []byte, error) {
	var (
		leaf  *x509.Certificate
		chain []byte
	)
	for i := 0; ; i++ {
		block, raw, rest := nextBlock(data)
		if block == nil {
			if bytes.Contains(rest, []byte("-----BEGIN")) {
				return nil, nil, fmt.Errorf("block %d: malformed pem: %w", i+1, ErrNotCertificate)
			}
			break
		}
		data = rest
		if block.Type != "CERTIFICATE" {
			return nil, nil, fmt.Errorf("block %d is a %q, not a certificate: %w", i+1, block.Type, ErrNotCertificate)
		}
		if len(block.Headers) != 0 {
			return nil, nil, fmt.Errorf("block %d: unexpected pem headers: %w", i+1, ErrNotCertificate)
		}
		// Only the leaf is used, but every intermediate must parse.
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %d: %w: %w", i+1, ErrNotCertificate, err)
		}
		if leaf == nil {
			leaf = c
		}
		chain = appendBlock(chain, raw)
	}
	if leaf == nil {
		return nil, nil, fmt.Errorf("no certificate: %w", ErrNotCertificate)
	}
	return leaf, chain, nil
}

// knownSet holds intermediates by their PEM text, safe for concurrent
// use, at most max of them: adding one more to a full set empties it
// first.
type knownSet struct {
	max int
	mu  sync.Mutex
	m   map[string]*knownIntermediate
}

// knownIntermediate is an intermediate of knownSet; canonical says its PEM
// text is the one appendPEM writes (canonicalBody).
type knownIntermediate struct {
	intermediate
	canonical bool
}

// get returns the intermediate of the PEM text b.
func (s *knownSet) get(b []byte) (*knownIntermediate, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.m[string(b)]
	return k, ok
}

// add puts the intermediate of the PEM text b in the set.
func (s *knownSet) add(b []byte, k *knownIntermediate) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil || len(s.m) >= s.max {
		s.m = make(map[string]*knownIntermediate, s.max)
	}
	s.m[string(b)] = k
}

// ParseKey parses a PEM private key file (PKCS #8, SEC 1 or PKCS #1, an
// "EC PARAMETERS" block before it allowed) and returns its key. It refuses,
// with an error wrapping ErrBadKey, what ParseCertificate refuses in a key:
// no key, more than one, an encrypted key, a block that is not a key, a key
// of a type other than RSA, ECDSA or Ed25519.
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	key, _, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	return key, nil
}

// parseKey parses the one private key of a PEM key file and returns it with
// a copy of its PEM block. An "EC PARAMETERS" block, which openssl writes
// before EC keys, is skipped; anything else besides the key is an error.
func parseKey(data []byte) (crypto.Signer, []byte, error) {
	var (
		key  crypto.Signer
		kept []byte
	)
	for {
		block, raw, rest := nextBlock(data)
		if block == nil {
			if bytes.Contains(rest, []byte("-----BEGIN")) {
				return nil, nil, fmt.Errorf("malformed pem: %w", ErrBadKey)
			}
			break
		}
		data = rest
		if block.Type == "EC PARAMETERS" {
			continue
		}
		if key != nil {
			return nil, nil, fmt.Errorf("more than one key: %w", ErrBadKey)
		}
		if len(block.Headers) != 0 {
			return nil, nil, fmt.Errorf("encrypted or annotated key: %w", ErrBadKey)
		}
		var (
			parsed any
			err    error
		)
		switch block.Type {
		case "PRIVATE KEY":
			parsed, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			parsed, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			parsed, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			return nil, nil, fmt.Errorf("%q is not a private key: %w", block.Type, ErrBadKey)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w: %w", block.Type, ErrBadKey, err)
		}
		switch k := parsed.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			key = k.(crypto.Signer)
		default:
			return nil, nil, fmt.Errorf("unsupported key type %T: %w", parsed, ErrBadKey)
		}
		kept = appendBlock(nil, raw)
	}
	if key == nil {
		return nil, nil, fmt.Errorf("no private key: %w", ErrBadKey)
	}
	return key, kept, nil
}

// pemBegin starts the BEGIN line of a PEM block.
var pemBegin = []byte("-----BEGIN")

// nextBlock decodes the first PEM block of data and returns it with the
// bytes of data it was decoded from and the rest. At the end of the blocks
// it returns a nil block and data unchanged.
func nextBlock(data []byte) (block *pem.Block, raw, rest []byte) {
	block, rest = pem.Decode(data)
	if block == nil {
		return nil, nil, data
	}
	// pem.Decode skips anything before the block's BEGIN line, the last
	// one before the end of the block, and consumes the block through the
	// end of its END line. It is found searching forward, as bytes.Index
	// does it many bytes at a time (bytes.LastIndex goes byte by byte,
	// through the whole block).
	end := len(data) - len(rest)
	start := bytes.Index(data[:end], pemBegin)
	if start < 0 { // cannot happen for a decoded block
		return block, data[:end], rest
	}
	for {
		next := bytes.Index(data[start+len(pemBegin):end], pemBegin)
		if next < 0 {
			return block, data[start:end], rest
		}
		start += len(pemBegin) + next
	}
}

// appendBlock appends the bytes of one PEM block to dst, ending it with a
// newline.
func appendBlock(dst, raw []byte) []byte {
	dst = append(dst, bytes.TrimRight(raw, " \t\r\n")...)
	return append(dst, '\n')
}

// leafNames returns the normalized, deduplicated names a leaf serves: its
// DNS SANs, or its CN when it has none. Names that do not normalize are
// skipped.
func leafNames(leaf *x509.Certificate) []string {
	candidates := leaf.DNSNames
	if len(candidates) == 0 && leaf.Subject.CommonName != "" {
		candidates = []string{leaf.Subject.CommonName}
	}
	names := make([]string, 0, len(candidates))
	seen := make(map[string]bool, len(candidates))
	for _, c := range candidates {
		n, err := hostname.NormalizePattern(c)
		if err != nil || seen[n] {
			continue
		}
		seen[n] = true
		names = append(names, n)
	}
	return names
}

// KeyTypeOf names the type of a public key: one of the KeyType constants,
// "rsaN" for an RSA key of N bits without a constant, "ecdsa" for a curve
// without one, KeyUnknown for any other key.
func KeyTypeOf(pub crypto.PublicKey) KeyType {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			return KeyECDSAP256
		case 384:
			return KeyECDSAP384
		case 521:
			return KeyECDSAP521
		}
		return "ecdsa"
	case *rsa.PublicKey:
		return KeyType(fmt.Sprintf("rsa%d", k.N.BitLen()))
	case ed25519.PublicKey:
		return KeyEd25519
	}
	return KeyUnknown
}
