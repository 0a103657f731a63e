package store

import (
	"bytes"
	"crypto/sha256"
	encasn1 "encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
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
// each intermediate's 32-byte digest), the key (keyRaw and the bytes, the
// code of the key's PEM type and its DER, or keyP256Scalar and the
// scalar), then NotBefore, NotAfter, Issuer,
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
// keyP256Scalar is a PRIVATE KEY block whose DER is p256PKCS8 of its
// scalar and of the public key in the leaf, as Go and lego write P-256
// keys: only the 32-byte scalar is stored, 106 bytes less.
var keyTypes = []string{1: "PRIVATE KEY", 2: "EC PRIVATE KEY", 3: "RSA PRIVATE KEY", keyP256Scalar: "PRIVATE KEY"}

const keyP256Scalar = 4

// keyMarkers are the markers of the PEM types of keyTypes, by code.
var keyMarkers = func() []pemMarkers {
	m := make([]pemMarkers, len(keyTypes))
	for code, typ := range keyTypes {
		if typ != "" {
			m[code] = markers(typ)
		}
	}
	return m
}()

// The DER of a PKCS #8 PrivateKeyInfo (RFC 5208 section 5) of a P-256
// key (RFC 5915) without curve parameters in the inner key, as
// x509.MarshalPKCS8PrivateKey writes it: p256PKCS8Head, the 32-byte
// scalar, p256PKCS8Mid, the 65-byte uncompressed public point.
var (
	p256PKCS8Head = []byte{0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13,
		0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
		0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
		0x04, 0x6d, 0x30, 0x6b, 0x02, 0x01, 0x01, 0x04, 0x20}
	p256PKCS8Mid = []byte{0xa1, 0x44, 0x03, 0x42, 0x00}
)

// p256PKCS8 returns the DER of the PKCS #8 P-256 key of scalar and point.
func p256PKCS8(scalar, point []byte) []byte {
	der := make([]byte, 0, len(p256PKCS8Head)+32+len(p256PKCS8Mid)+65)
	der = append(append(der, p256PKCS8Head...), scalar...)
	return append(append(der, p256PKCS8Mid...), point...)
}

// isP256PKCS8 says whether der is p256PKCS8 of its own scalar and of
// point, without building it.
func isP256PKCS8(der, point []byte) bool {
	head, mid := len(p256PKCS8Head), len(p256PKCS8Mid)
	return len(der) == head+32+mid+65 && len(point) == 65 &&
		bytes.Equal(der[:head], p256PKCS8Head) &&
		bytes.Equal(der[head+32:head+32+mid], p256PKCS8Mid) &&
		bytes.Equal(der[head+32+mid:], point)
}

// leafP256Point returns the uncompressed public point of a certificate's
// P-256 key; ok is false for any other key or a DER it cannot read.
func leafP256Point(der []byte) (point []byte, ok bool) {
	in := cryptobyte.String(der)
	var cert, tbs, spki, algo cryptobyte.String
	var oid, curve []byte
	var bits encasn1.BitString
	if !in.ReadASN1(&cert, cbasn1.SEQUENCE) || !cert.ReadASN1(&tbs, cbasn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!tbs.SkipASN1(cbasn1.INTEGER) || // serialNumber
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // signature
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // issuer
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // validity
		!tbs.SkipASN1(cbasn1.SEQUENCE) || // subject
		!tbs.ReadASN1(&spki, cbasn1.SEQUENCE) ||
		!spki.ReadASN1(&algo, cbasn1.SEQUENCE) ||
		!algo.ReadASN1Element((*cryptobyte.String)(&oid), cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(oid, oidECPublicKeyDER) ||
		!algo.ReadASN1Element((*cryptobyte.String)(&curve), cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(curve, oidP256DER) || !algo.Empty() ||
		!spki.ReadASN1BitString(&bits) || !spki.Empty() ||
		bits.BitLength != 65*8 || bits.Bytes[0] != 4 {
		return nil, false
	}
	return bits.Bytes, true
}

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
// decode. The intermediates' DER never refers to c.ChainPEM's memory. The
// chain and key of a value ParseCertificate returned, unchanged since, are
// not decoded again: what parsing decoded (c.parsed) is used instead.
func encodeCertificate(c *Certificate) ([]byte, []intermediate) {
	var (
		leaf    []byte
		inters  []intermediate
		compact bool
		keyType byte
		keyDER  []byte
		p256    bool // keyDER is p256PKCS8 of its scalar and the leaf's point
	)
	chain, key := c.parsed.of(c)
	if chain != nil {
		leaf, inters, compact = chain.leaf, chain.inters, chain.compact
	} else {
		leaf, inters, compact = splitChain(c.ChainPEM)
	}
	if key != nil {
		keyType, keyDER, p256 = key.code, key.der, key.p256
	} else {
		keyType, keyDER = compactKey(c.KeyPEM)
		if keyType == 1 && compact && len(keyDER) == len(p256PKCS8Head)+32+len(p256PKCS8Mid)+65 {
			point, ok := leafP256Point(leaf)
			p256 = ok && isP256PKCS8(keyDER, point)
		}
	}
	if keyType == 1 && compact && p256 {
		keyType, keyDER = keyP256Scalar, keyDER[len(p256PKCS8Head):len(p256PKCS8Head)+32]
	}
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

// encodeCertificateV1 is the certificate encoder of formatV1, as the
// store wrote records before formatV2: kept to write, in tests and
// benchmarks, the stores that the decoder and the upgrade must read
// (BadgerOptions.writeV1).
func encodeCertificateV1(c *Certificate) []byte {
	n := 64 + len(c.ID) + len(c.ChainPEM) + len(c.KeyPEM) + len(c.Issuer) + len(c.Serial) + len(c.Origin)
	for _, name := range c.Names {
		n += len(name) + 2
	}
	e := encoder{b: make([]byte, 0, n)}
	e.b = append(e.b, formatV1)
	e.str(c.ID)
	e.uint(uint64(len(c.Names)))
	for _, name := range c.Names {
		e.str(name)
	}
	e.bytes(c.ChainPEM)
	e.bytes(c.KeyPEM)
	encodeCertTail(&e, c)
	return e.b
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

// parsedChain is what ParseCertificate decoded of the chain it returned
// (pem), in the form splitChain gives it: the leaf's DER, the
// intermediates, and whether every block is the one appendPEM writes
// (compact; else the record stores the PEM as it is); and of the key it
// returned, when its fast path read it (key). It is kept in that
// Certificate (its parsed field) and nowhere else: no package state refers
// to one, so it lives exactly as long as the value. Once sealed it is
// only read, so a value may be encoded by several goroutines at once.
type parsedChain struct {
	sums
	leaf    []byte
	inters  []intermediate
	compact bool
	key     parsedKey
	// buf holds inters for chains of at most two intermediates (one
	// CA's, perhaps a cross-signed root), the most there usually are.
	buf [2]intermediate
}

// parsedKey is what ParseCertificate decoded of the key it returned (pem),
// in the form compactKey gives it (code, der), and whether the key is the
// PKCS #8 of its scalar and the leaf's public point (p256PKCS8). A zero
// parsedKey holds nothing.
type parsedKey struct {
	sums
	code byte
	der  []byte
	p256 bool
}

// sums is a PEM slice ParseCertificate returned and the hash of its bytes
// then.
type sums struct {
	pem []byte
	sum uint64
}

// pemSeed seeds the hashes of sums. It is chosen at random once per
// process and never changed, so that nobody can write a PEM that hashes
// like another.
var pemSeed = maphash.MakeSeed()

// add appends an intermediate of the chain. A chain the record stores as
// PEM (one intermediate too many, or one not in appendPEM's layout) refers
// to no intermediate: it has none to hand to the store.
func (p *parsedChain) add(k *knownIntermediate) {
	if len(p.inters) == maxChain || !k.canonical {
		p.compact, p.inters = false, nil
	}
	if p.compact {
		if p.inters == nil {
			p.inters = p.buf[:0]
		}
		p.inters = append(p.inters, k.intermediate)
	}
}

// seal hashes the chain and the key as they are now, for of to tell
// whether they changed since. ParseCertificate calls it last.
func (p *parsedChain) seal() {
	p.sums.seal()
	p.key.sums.seal()
}

// of returns what p says of c's chain and key, each only while it is the
// very slice ParseCertificate returned (same memory, same length) with
// the same bytes as then (the same seeded 64-bit hash): a chain or key a
// caller replaced, cut or changed in place since gets nil, and is decoded
// anew. The key's is taken only with the chain's, whose leaf it was
// matched against. p may be nil (a value ParseCertificate did not return,
// or one whose chain took the general path).
func (p *parsedChain) of(c *Certificate) (*parsedChain, *parsedKey) {
	if p == nil || !p.sums.holds(c.ChainPEM) {
		return nil, nil
	}
	if !p.key.sums.holds(c.KeyPEM) {
		return p, nil
	}
	return p, &p.key
}

// seal hashes s's slice as it is now.
func (s *sums) seal() {
	if len(s.pem) != 0 {
		s.sum = maphash.Bytes(pemSeed, s.pem)
	}
}

// holds says whether b is s's slice, holding the same bytes as when it was
// sealed. An empty s holds nothing.
func (s *sums) holds(b []byte) bool {
	return len(b) != 0 && len(s.pem) == len(b) && &s.pem[0] == &b[0] && maphash.Bytes(pemSeed, b) == s.sum
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
		if pemLen("CERTIFICATE", len(der)) != len(raw) {
			return nil, nil, false
		}
		buf = appendPEM(slices.Grow(buf[:0], len(raw)), "CERTIFICATE", der)
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
	for code, typ := range keyTypes[:keyP256Scalar] {
		if typ == "" {
			continue
		}
		body, raw, rest, ok := fastBlock(key, keyMarkers[code])
		if !ok || len(rest) != 0 {
			continue
		}
		der, ok := decodeBody(body)
		if !ok || len(der) == 0 || pemLen(typ, len(der)) != len(raw) || !bytes.Equal(appendPEM(make([]byte, 0, len(raw)), typ, der), raw) {
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
	l, err := decodeCertLayout(b, c)
	if err != nil {
		return err
	}
	var (
		inters [maxChain][]byte
		ninter int
	)
	for ; len(l.digests) > 0; l.digests = l.digests[digestSize:] {
		digest := [digestSize]byte(l.digests[:digestSize])
		p, ok := lookupIntermediate(src, digest)
		if !ok {
			c.ChainPEM, c.KeyPEM = nil, nil
			return fmt.Errorf("decode certificate %s: %w", c.ID, &missingIntermediate{digest})
		}
		inters[ninter] = p
		ninter++
	}
	key := l.key
	if l.keyType == keyP256Scalar {
		key = p256PKCS8(key, l.point)
	}
	// One allocation holds the chain and the key.
	n := len(l.chain)
	if l.leaf != nil {
		n = pemLen("CERTIFICATE", len(l.leaf))
		for _, p := range inters[:ninter] {
			n += len(p)
		}
	}
	if l.keyType == keyRaw {
		n += len(key)
	} else {
		n += pemLen(keyTypes[l.keyType], len(key))
	}
	pems := make([]byte, 0, n)
	if l.leaf != nil {
		pems = appendPEM(pems, "CERTIFICATE", l.leaf)
		for _, p := range inters[:ninter] {
			pems = append(pems, p...)
		}
	} else {
		pems = append(pems, l.chain...)
	}
	split := len(pems)
	if l.keyType == keyRaw {
		pems = append(pems, key...)
	} else {
		pems = appendPEM(pems, keyTypes[l.keyType], key)
	}
	c.ChainPEM, c.KeyPEM = pems[:split:split], pems[split:]
	return nil
}

// certLayout is where the chain and the key of a stored certificate lie
// in its record (slices of it): what decodeCertificate builds the PEM
// blocks from.
type certLayout struct {
	chain   []byte // the chain's PEM (formatV1, or formatV2 chainRaw)
	leaf    []byte // formatV2 chainDER: the leaf's DER,
	digests []byte // and its intermediates' digests, digestSize each
	keyType byte   // keyRaw (always, in formatV1) or an index into keyTypes
	key     []byte // the key's PEM (keyRaw), DER, or P-256 scalar
	point   []byte // keyP256Scalar: the leaf's public point
}

// decodeCertLayout decodes a stored certificate of either format into c
// but for its chain and key, whose place in b it returns, checked as far
// as they can be without looking up an intermediate: the one reading of
// the record layout, which lookups (decodeCertificate) and the scan
// (decodeCertSummary) share, so that both reject the same records.
func decodeCertLayout(b []byte, c *Certificate) (certLayout, error) {
	var l certLayout
	d := decoder{b: b}
	if len(b) == 0 || b[0] != formatV2 {
		if !d.format(formatV1) {
			return l, d.fail("certificate")
		}
		decodeCertHead(&d, c)
		l.chain, l.keyType, l.key = d.raw(), keyRaw, d.raw()
		decodeCertTail(&d, c)
		return l, d.fail("certificate")
	}
	d.b = d.b[1:]
	decodeCertHead(&d, c)
	switch d.byte() {
	case chainRaw:
		l.chain = d.raw()
	case chainDER:
		l.leaf = d.raw()
		n := d.uint()
		if n > maxChain || n*digestSize > uint64(len(d.b)) {
			d.err, d.b = errCorrupt, nil
			break
		}
		l.digests, d.b = d.b[:n*digestSize], d.b[n*digestSize:]
	default:
		d.err, d.b = errCorrupt, nil
	}
	l.keyType = d.byte()
	l.key = d.raw()
	if int(l.keyType) >= len(keyTypes) || (l.keyType != keyRaw && len(l.key) == 0) {
		d.err, d.b = errCorrupt, nil
	}
	if l.keyType == keyP256Scalar && d.err == nil {
		point, ok := leafP256Point(l.leaf)
		if !ok || len(l.key) != 32 {
			d.err, d.b = errCorrupt, nil
		}
		l.point = point
	}
	decodeCertTail(&d, c)
	return l, d.fail("certificate")
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
