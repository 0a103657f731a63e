package store

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The fast paths of ParseCertificate. An import parses hundreds of
// thousands of chains and keys written by the same few tools (certbot,
// lego, openssl), whose PEM is always laid out the same way. For that
// layout, and a P-256 key, the functions here give ParseCertificate's
// answer at a fraction of the cost of encoding/pem, encoding/asn1 and
// math/big. Each one only ever accepts: it reports ok for input the
// general path (parseChain, parseKey and the match check) accepts with the
// same result, and declines everything else, valid or not, for the
// general path to parse and, when it must, refuse in its own words.

// fastChain is parseChain for a chain of CERTIFICATE blocks in the layout
// of fastBlock, with nothing but line breaks around them. Every block is
// decoded and parsed as parseChain does it, but for an intermediate known
// by its PEM text (knownIntermediates): the same text decodes to the same
// certificate, which parsed before. It also returns what it decoded, for
// the record's encoding (parsedChain), with chain as its pem.
func fastChain(data []byte) (leaf *x509.Certificate, chain []byte, parsed *parsedChain, ok bool) {
	data = skipNewlines(data)
	chain = make([]byte, 0, len(data)+1)
	parsed = &parsedChain{compact: true}
	for len(data) > 0 {
		body, raw, rest, ok := fastBlock(data, certMarkers)
		if !ok {
			return nil, nil, nil, false
		}
		data = skipNewlines(rest)
		var known *knownIntermediate
		if leaf != nil {
			known, _ = knownIntermediates.get(body)
		}
		if known != nil {
			parsed.add(known)
		} else {
			der, ok := decodeBody(body)
			if !ok {
				return nil, nil, nil, false
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, nil, nil, false
			}
			if leaf == nil {
				leaf = c
				parsed.leaf = der
				parsed.compact = canonicalBody(body, der)
			} else {
				known := &knownIntermediate{intermediate: intermediate{digest: sha256.Sum256(der), der: der}, canonical: canonicalBody(body, der)}
				knownIntermediates.add(body, known)
				parsed.add(known)
			}
		}
		chain = appendBlock(chain, raw)
	}
	parsed.pem = chain
	return leaf, chain, parsed, leaf != nil
}

// canonicalBody says whether body, the base64 lines of a PEM block
// in the layout of fastBlock that decode to der, is the one appendPEM
// writes for der: lines of 64 characters, each ending in a line break, no
// carriage return, and the last group's unused bits zero (the decoder
// ignores them). Together with appendBlock's line break after the END
// line, the block is then byte for byte appendPEM's, as splitChain checks
// by encoding it again.
func canonicalBody(body, der []byte) bool {
	lines := (len(der) + pemLineBytes - 1) / pemLineBytes
	if len(der) == 0 || len(body) != base64.StdEncoding.EncodedLen(len(der))+lines ||
		bytes.IndexByte(body, '\r') >= 0 || bytes.Count(body, []byte{'\n'}) != lines {
		return false
	}
	for i := 64; i < len(body); i += 65 {
		if body[i] != '\n' {
			return false
		}
	}
	if body[len(body)-1] != '\n' {
		return false
	}
	// The last group of 1 to 3 bytes, its 4 characters before the last
	// line break.
	var group [4]byte
	base64.StdEncoding.Encode(group[:], der[(len(der)-1)/3*3:])
	return bytes.Equal(group[:], body[len(body)-5:len(body)-1])
}

// maxKnownIntermediates bounds knownIntermediates: a handful of CA
// intermediates sign nearly every certificate there is, so a few hundred
// is plenty, and at about 3 KB each (PEM and DER) the set stays around
// 1.5 MB.
const maxKnownIntermediates = 512

// knownIntermediates holds, by their PEM text (the base64 lines between
// BEGIN and END), intermediates that decoded and parsed, so that an import
// of many chains under the same intermediate decodes, parses and digests
// it once.
var knownIntermediates = knownSet{max: maxKnownIntermediates}

// fastKey is parseKey followed by the match check, for a key file of one
// PRIVATE KEY (PKCS #8) or EC PRIVATE KEY (SEC 1) block in the layout of
// fastBlock, with nothing but line breaks around it, holding the P-256 key
// of leaf. It returns a copy of the key's PEM block, and what it decoded
// of it for the record's encoding (parsedKey, with the copy as its pem).
// The key is read only as far as the check needs: its scalar, which times
// the base point must give the leaf's public key.
func fastKey(data []byte, leaf *x509.Certificate) (block []byte, parsed parsedKey, ok bool) {
	pub, isECDSA := leaf.PublicKey.(*ecdsa.PublicKey)
	if !isECDSA || pub.Curve != elliptic.P256() {
		return nil, parsedKey{}, false
	}
	data = skipNewlines(data)
	var d, der []byte
	body, raw, rest, ok := fastBlock(data, pkcs8Markers)
	if ok {
		var decoded bool
		der, decoded = decodeBody(body)
		d, ok = pkcs8P256Scalar(der)
		ok = ok && decoded
		parsed.code = 1 // keyTypes: PRIVATE KEY
	} else if body, raw, rest, ok = fastBlock(data, sec1Markers); ok {
		var decoded bool
		der, decoded = decodeBody(body)
		d, ok = sec1P256Scalar(der, true)
		ok = ok && decoded
		parsed.code = 2 // keyTypes: EC PRIVATE KEY
	}
	if !ok || len(skipNewlines(rest)) != 0 {
		return nil, parsedKey{}, false
	}
	// NewPrivateKey refuses a scalar of zero or not below the group order,
	// as x509 does.
	key, err := ecdh.P256().NewPrivateKey(d)
	if err != nil {
		return nil, parsedKey{}, false
	}
	want, err := pub.Bytes()
	if err != nil || !bytes.Equal(key.PublicKey().Bytes(), want) {
		return nil, parsedKey{}, false
	}
	block = appendBlock(nil, raw)
	if canonicalBody(body, der) {
		parsed.der = der
		parsed.p256 = parsed.code == 1 && isP256PKCS8(der, want)
	} else {
		parsed.code = keyRaw
	}
	parsed.pem = block
	return block, parsed, true
}

// DER encodings of the object identifiers fastKey knows (RFC 5480
// section 2.1.1): id-ecPublicKey and secp256r1.
var (
	oidECPublicKeyDER = []byte{0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01}
	oidP256DER        = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
)

// pkcs8P256Scalar returns the private scalar of a PKCS #8 PrivateKeyInfo
// (RFC 5208 section 5) of version 0 holding a P-256 key (RFC 5915
// section 2) and no attributes; ok is false for anything else.
func pkcs8P256Scalar(der []byte) (d []byte, ok bool) {
	in := cryptobyte.String(der)
	var info, algo, inner cryptobyte.String
	var version int
	var oid, curve []byte
	if !in.ReadASN1(&info, cbasn1.SEQUENCE) || !in.Empty() ||
		!info.ReadASN1Integer(&version) || version != 0 ||
		!info.ReadASN1(&algo, cbasn1.SEQUENCE) ||
		!algo.ReadASN1Element((*cryptobyte.String)(&oid), cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(oid, oidECPublicKeyDER) ||
		!algo.ReadASN1Element((*cryptobyte.String)(&curve), cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(curve, oidP256DER) || !algo.Empty() ||
		!info.ReadASN1(&inner, cbasn1.OCTET_STRING) || !info.Empty() {
		return nil, false
	}
	return sec1P256Scalar(inner, false)
}

// sec1P256Scalar returns the 32-byte private scalar of an ECPrivateKey
// (RFC 5915 section 3) of version 1 whose curve, when it names one, is
// P-256, and whose public key, when it has one, is a BIT STRING without
// unused bits; ok is false for anything else. needCurve says the curve must
// be named, as it must in a key file of its own (in PKCS #8 the algorithm
// names it).
func sec1P256Scalar(der []byte, needCurve bool) (d []byte, ok bool) {
	in := cryptobyte.String(der)
	var key, scalar, params, pub cryptobyte.String
	var version int
	var hasParams, hasPub bool
	var curve []byte
	if !in.ReadASN1(&key, cbasn1.SEQUENCE) || !in.Empty() ||
		!key.ReadASN1Integer(&version) || version != 1 ||
		!key.ReadASN1(&scalar, cbasn1.OCTET_STRING) || len(scalar) != 32 ||
		!key.ReadOptionalASN1(&params, &hasParams, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
		!key.ReadOptionalASN1(&pub, &hasPub, cbasn1.Tag(1).Constructed().ContextSpecific()) ||
		!key.Empty() {
		return nil, false
	}
	switch {
	case hasParams:
		if !params.ReadASN1Element((*cryptobyte.String)(&curve), cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(curve, oidP256DER) || !params.Empty() {
			return nil, false
		}
	case needCurve:
		return nil, false
	}
	if hasPub {
		var bits cryptobyte.String
		if !pub.ReadASN1(&bits, cbasn1.BIT_STRING) || !pub.Empty() || len(bits) == 0 || bits[0] != 0 {
			return nil, false
		}
	}
	return scalar, true
}

// pemMarkers are the BEGIN line and the start of the END line of the
// blocks of one PEM type.
type pemMarkers struct {
	begin []byte // "-----BEGIN TYPE-----\n"
	end   []byte // "\n-----END TYPE-----"
}

func markers(typ string) pemMarkers {
	return pemMarkers{begin: []byte("-----BEGIN " + typ + "-----\n"), end: []byte("\n-----END " + typ + "-----")}
}

var (
	certMarkers  = markers("CERTIFICATE")
	pkcs8Markers = markers("PRIVATE KEY")
	sec1Markers  = markers("EC PRIVATE KEY")
)

// fastBlock reads the PEM block data starts with when it is laid out as
// tools write it: its BEGIN line, lines of base64 (body, with their line
// breaks, not yet checked: decodeBody does it), its END line ending in a
// line break or the end of data. It returns the block's bytes (raw) and
// what follows it; ok is false for any other layout or type. When body
// decodes, pem.Decode reads the same block from data, without headers (a
// header line holds a colon, which base64 does not), with the same bytes.
func fastBlock(data []byte, m pemMarkers) (body, raw, rest []byte, ok bool) {
	if !bytes.HasPrefix(data, m.begin) {
		return nil, nil, nil, false
	}
	// From the BEGIN line's line break, so that an empty body is found.
	from := len(m.begin) - 1
	i := bytes.Index(data[from:], m.end)
	if i < 0 {
		return nil, nil, nil, false
	}
	end := from + i + len(m.end)
	switch {
	case end == len(data):
	case data[end] == '\n':
		end++
	default:
		return nil, nil, nil, false
	}
	return data[len(m.begin) : from+i+1], data[:end], data[end:], true
}

// decodeBody decodes the base64 lines of a PEM block as pem.Decode does
// (line breaks are skipped); ok is false when they are not base64.
func decodeBody(body []byte) ([]byte, bool) {
	der := make([]byte, base64.StdEncoding.DecodedLen(len(body)))
	n, err := base64.StdEncoding.Decode(der, body)
	if err != nil {
		return nil, false
	}
	return der[:n], true
}

// skipNewlines returns data after its leading line breaks.
func skipNewlines(data []byte) []byte {
	for len(data) > 0 && data[0] == '\n' {
		data = data[1:]
	}
	return data
}
