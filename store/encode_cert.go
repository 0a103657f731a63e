package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
)

// The certificate record (formatV2).
//
// A chain as ParseCertificate keeps it (CERTIFICATE blocks in the layout
// appendPEM writes, the layout of certbot, lego and openssl) is stored as
// the leaf's DER and the SHA-256 digest of each intermediate's DER; the
// intermediates themselves are stored once each, under their digest
// (badger_chains.go), since every certificate of one CA repeats them. A
// key of one PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block in that
// layout is stored as its DER. Anything else (a sealed key, a chain with
// text between its blocks, lines of another length) is stored as it is,
// so that ChainPEM and KeyPEM read back byte for byte as they were put.
//
// The record: formatV2, ID, the names (a count, then each), the chain
// (chainRaw and the bytes, or chainDER, the leaf's DER, a count and
// each intermediate's 32-byte digest), the key (keyRaw and the bytes, or
// the key's PEM type and its DER), then NotBefore, NotAfter, Issuer,
// Serial, KeyType, Source, Origin, RenewAt and StoredAt as formatV1 has
// them. For an ECDSA P-256 certificate of a Let's Encrypt-sized chain it
// is about 1,200 bytes where formatV1 took 3,500.

// How the chain and the key of a formatV2 record are stored.
const (
	chainRaw = 0 // the PEM as it is
	chainDER = 1 // the leaf's DER, then the digests of the intermediates
	keyRaw   = 0 // the PEM as it is
	// Above keyRaw: an index into keyTypes, then the key's DER.
)

// keyTypes are the PEM types of the keys kept as DER, by their code in a
// record (0 is keyRaw). Codes are stored: only add to the end.
var keyTypes = []string{1: "PRIVATE KEY", 2: "EC PRIVATE KEY", 3: "RSA PRIVATE KEY"}

// maxChain bounds the intermediates of one stored chain.
const maxChain = 16

// digestSize is the size of an intermediate's digest (SHA-256).
const digestSize = sha256.Size

// errMissingIntermediate is wrapped by the error of decodeCertificate when
// the record refers to an intermediate its source does not hold.
var errMissingIntermediate = errors.New("intermediate not found")

// missingIntermediate is the error of decodeCertificate for a record that
// refers to an intermediate its source does not hold: the caller may load
// it and decode again.
type missingIntermediate struct{ digest [digestSize]byte }

func (e *missingIntermediate) Error() string {
	return fmt.Sprintf("intermediate %x: %v", e.digest[:8], errMissingIntermediate)
}

func (e *missingIntermediate) Unwrap() error { return errMissingIntermediate }

// intermediate is one intermediate of a chain: its digest and its DER.
type intermediate struct {
	digest [digestSize]byte
	der    []byte
}

// encodeCertificate returns the stored form of c (formatV2) and the
// intermediates it refers to, which the store must hold for the record to
// decode. The intermediates' DER refers to c.ChainPEM's memory no longer
// than the call: it is decoded anew.
func encodeCertificate(c *Certificate) ([]byte, []intermediate) {
	leaf, inters, compact := splitChain(c.ChainPEM)
	keyType, keyDER := compactKey(c.KeyPEM)
	n := 64 + len(c.ID) + len(c.Issuer) + len(c.Serial) + len(c.Origin)
	if compact {
		n += len(leaf) + len(inters)*digestSize
	} else {
		n += len(c.ChainPEM)
	}
	if keyType == keyRaw {
		n += len(c.KeyPEM)
	} else {
		n += len(keyDER)
	}
	for _, name := range c.Names {
		n += len(name) + 2
	}
	e := encoder{b: make([]byte, 0, n)}
	e.b = append(e.b, formatV2)
	e.str(c.ID)
	e.uint(uint64(len(c.Names)))
	for _, name := range c.Names {
		e.str(name)
	}
	if compact {
		e.b = append(e.b, chainDER)
		e.bytes(leaf)
		e.uint(uint64(len(inters)))
		for _, in := range inters {
			e.b = append(e.b, in.digest[:]...)
		}
	} else {
		e.b = append(e.b, chainRaw)
		e.bytes(c.ChainPEM)
	}
	e.b = append(e.b, keyType)
	if keyType == keyRaw {
		e.bytes(c.KeyPEM)
	} else {
		e.bytes(keyDER)
	}
	encodeCertTail(&e, c)
	return e.b, inters
}

// encodeCertTail encodes the fields both formats end with.
func encodeCertTail(e *encoder, c *Certificate) {
	e.time(c.NotBefore)
	e.time(c.NotAfter)
	e.str(c.Issuer)
	e.str(c.Serial)
	e.str(string(c.KeyType))
	e.str(string(c.Source))
	e.str(c.Origin)
	e.time(c.RenewAt)
	e.time(c.StoredAt)
}

// splitChain returns the leaf's DER and the intermediates of a chain of
// CERTIFICATE blocks each exactly as appendPEM writes it; ok is false for
// any other chain, which is stored as it is.
func splitChain(chain []byte) (leaf []byte, inters []intermediate, ok bool) {
	var buf []byte
	for rest := chain; len(rest) > 0; {
		body, raw, after, ok := fastBlock(rest, certMarkers)
		if !ok {
			return nil, nil, false
		}
		der, ok := decodeBody(body)
		if !ok || len(der) == 0 {
			return nil, nil, false
		}
		buf = appendPEM(buf[:0], "CERTIFICATE", der)
		if !bytes.Equal(buf, raw) {
			return nil, nil, false
		}
		if leaf == nil {
			leaf = der
		} else {
			if len(inters) == maxChain {
				return nil, nil, false
			}
			inters = append(inters, intermediate{digest: sha256.Sum256(der), der: der})
		}
		rest = after
	}
	return leaf, inters, leaf != nil
}

// compactKey returns the code of the PEM type and the DER of a key file
// of one block exactly as appendPEM writes it, of a type in keyTypes;
// else keyRaw.
func compactKey(key []byte) (byte, []byte) {
	for code, typ := range keyTypes {
		if typ == "" {
			continue
		}
		body, raw, rest, ok := fastBlock(key, markers(typ))
		if !ok || len(rest) != 0 {
			continue
		}
		der, ok := decodeBody(body)
		if !ok || len(der) == 0 || !bytes.Equal(appendPEM(nil, typ, der), raw) {
			return keyRaw, nil
		}
		return byte(code), der
	}
	return keyRaw, nil
}

// pemLineBytes is how many bytes of DER one line of PEM holds: 64
// characters of base64.
const pemLineBytes = 48

// appendPEM appends the PEM block of type typ holding der, as
// pem.EncodeToMemory writes one without headers: lines of 64 characters.
func appendPEM(dst []byte, typ string, der []byte) []byte {
	dst = append(dst, "-----BEGIN "...)
	dst = append(dst, typ...)
	dst = append(dst, "-----\n"...)
	for len(der) > 0 {
		n := min(len(der), pemLineBytes)
		dst = base64.StdEncoding.AppendEncode(dst, der[:n])
		dst = append(dst, '\n')
		der = der[n:]
	}
	dst = append(dst, "-----END "...)
	dst = append(dst, typ...)
	return append(dst, "-----\n"...)
}

// pemLen returns the length of what appendPEM appends.
func pemLen(typ string, derLen int) int {
	lines := (derLen + pemLineBytes - 1) / pemLineBytes
	return 2*len(typ) + len("-----BEGIN -----\n-----END -----\n") + base64.StdEncoding.EncodedLen(derLen) + lines
}

// intermediateSource gives the PEM block of the intermediate of a digest,
// from memory: no I/O.
type intermediateSource interface {
	intermediatePEM(digest [digestSize]byte) ([]byte, bool)
}

// decodeCertificate decodes a stored certificate of either format into c,
// taking intermediates from src (nil: a record that refers to one fails).
// An intermediate src does not hold is an error wrapping
// *missingIntermediate.
func decodeCertificate(b []byte, c *Certificate, src intermediateSource) error {
	d := decoder{b: b}
	if len(b) > 0 && b[0] == formatV2 {
		return decodeCertificateV2(&d, c, src)
	}
	if !d.format(formatV1) {
		return d.fail("certificate")
	}
	decodeCertHead(&d, c)
	// One allocation holds both PEM blocks.
	chain, key := d.raw(), d.raw()
	pems := make([]byte, len(chain)+len(key))
	copy(pems, chain)
	copy(pems[len(chain):], key)
	c.ChainPEM, c.KeyPEM = pems[:len(chain):len(chain)], pems[len(chain):]
	decodeCertTail(&d, c)
	return d.fail("certificate")
}

// decodeCertificateV2 decodes a formatV2 record (d at its format byte).
func decodeCertificateV2(d *decoder, c *Certificate, src intermediateSource) error {
	d.b = d.b[1:]
	decodeCertHead(d, c)
	var (
		leaf   []byte
		chain  []byte
		inters [maxChain][]byte
		ninter int
	)
	switch d.byte() {
	case chainRaw:
		chain = d.raw()
	case chainDER:
		leaf = d.raw()
		n := d.uint()
		if n > maxChain || n*digestSize > uint64(len(d.b)) {
			d.err, d.b = errCorrupt, nil
			break
		}
		for i := range int(n) {
			var digest [digestSize]byte
			copy(digest[:], d.b[:digestSize])
			d.b = d.b[digestSize:]
			p, ok := lookupIntermediate(src, digest)
			if !ok {
				c.ChainPEM, c.KeyPEM = nil, nil
				return fmt.Errorf("decode certificate %s: %w", c.ID, &missingIntermediate{digest})
			}
			inters[i] = p
		}
		ninter = int(n)
	default:
		d.err, d.b = errCorrupt, nil
	}
	keyType := d.byte()
	key := d.raw()
	if int(keyType) >= len(keyTypes) || (keyType != keyRaw && len(key) == 0) {
		d.err, d.b = errCorrupt, nil
	}
	decodeCertTail(d, c)
	if d.err != nil {
		return d.fail("certificate")
	}
	// One allocation holds the chain and the key.
	n := len(chain)
	if leaf != nil {
		n = pemLen("CERTIFICATE", len(leaf))
		for _, p := range inters[:ninter] {
			n += len(p)
		}
	}
	if keyType == keyRaw {
		n += len(key)
	} else {
		n += pemLen(keyTypes[keyType], len(key))
	}
	pems := make([]byte, 0, n)
	if leaf != nil {
		pems = appendPEM(pems, "CERTIFICATE", leaf)
		for _, p := range inters[:ninter] {
			pems = append(pems, p...)
		}
	} else {
		pems = append(pems, chain...)
	}
	split := len(pems)
	if keyType == keyRaw {
		pems = append(pems, key...)
	} else {
		pems = appendPEM(pems, keyTypes[keyType], key)
	}
	c.ChainPEM, c.KeyPEM = pems[:split:split], pems[split:]
	return nil
}

// lookupIntermediate asks src, which may be nil.
func lookupIntermediate(src intermediateSource, digest [digestSize]byte) ([]byte, bool) {
	if src == nil {
		return nil, false
	}
	return src.intermediatePEM(digest)
}

// decodeCertHead decodes the ID and the names, which both formats start
// with.
func decodeCertHead(d *decoder, c *Certificate) {
	c.ID = d.str()
	if n := d.uint(); n <= uint64(len(d.b)) { // every name takes a byte at least
		c.Names = make([]string, n)
		for i := range c.Names {
			c.Names[i] = d.str()
		}
	} else {
		d.err = errCorrupt
	}
}

// decodeCertTail decodes the fields both formats end with.
func decodeCertTail(d *decoder, c *Certificate) {
	c.NotBefore = d.time()
	c.NotAfter = d.time()
	c.Issuer = d.str()
	c.Serial = d.str()
	c.KeyType = KeyType(d.str())
	c.Source = Source(d.str())
	c.Origin = d.str()
	c.RenewAt = d.time()
	c.StoredAt = d.time()
}
